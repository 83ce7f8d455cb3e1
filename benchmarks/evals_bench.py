"""Benchmarks of `sweeper.evals`; results and the commands that produced them are in evals.md.

    python benchmarks/evals_bench.py execution [--file F] [--baseline-sample 150]
        programs/s scoring one Astraios generations file (3,280 programs) in the sandbox, against
        one fresh interpreter per program run serially (`python -c program`, the same 3 s timeout)
    python benchmarks/evals_bench.py ab --other PATH [--rounds 4]
        the sandbox part of `execution` (same 150-program sample, then the whole file) for this checkout
        and another one (PATH: e.g. a copy of the tree before a change), alternating, each round in a
        fresh interpreter: a fair comparison on a machine whose load changes
    python benchmarks/evals_bench.py screen
        the sandbox's static screen over every released Astraios HumanEvalPack-Python generation
        (synthesize, fix, explain-synthesize; all sizes): programs rejected (with reasons) and ms per program
    python benchmarks/evals_bench.py generation
        tokens/s of greedy and sampled generation with a micro-"l"-sized model (random weights)
    python benchmarks/evals_bench.py tasks [--limit N] [--max-new-tokens 128] [--tasks a,b]
        seconds per task of `evaluate_model` with that model (greedy, one sample)
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sweeper.evals.problems import harness_program, load_humaneval, load_humanevalpack  # noqa: E402
from sweeper.evals.sandbox import Sandbox, SandboxLimits  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DEFAULT_FILE = DATA / "astraios/humanevalsynthesize-python/generations-humanevalsynthesizepython-starcoderbase-1b-fft.json.gz"
TIMEOUT_S = 3.0


def execution(file: Path, baseline_sample: int) -> dict:
    problems = load_humanevalpack(DATA / "humanevalpack/python.jsonl.gz")
    with gzip.open(file, "rt") as f:
        generations = json.load(f)
    programs = [harness_program(s, p.test) for p, samples in zip(problems, generations, strict=True) for s in samples]
    distinct = list(dict.fromkeys(programs))
    sample = random.Random(0).sample(distinct, baseline_sample)

    started = time.perf_counter()
    for program in sample:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=TIMEOUT_S)
    baseline = baseline_sample / (time.perf_counter() - started)

    with Sandbox(SandboxLimits(timeout_s=TIMEOUT_S)) as sandbox:
        started = time.perf_counter()
        sandbox.run(sample, description=None)
        same_sample = baseline_sample / (time.perf_counter() - started)
    with Sandbox(SandboxLimits(timeout_s=TIMEOUT_S)) as sandbox:
        started = time.perf_counter()
        outcomes = sandbox.run(programs, description=None)
        whole = time.perf_counter() - started
        workers = sandbox.n_workers
        isolation = sandbox.isolation
    return {
        "file": file.name, "programs": len(programs), "distinct_programs": len(distinct), "workers": workers,
        "baseline_fresh_interpreter_serial_programs_per_s": round(baseline, 2),
        "sandbox_same_sample_programs_per_s": round(same_sample, 2),
        "speedup_same_sample": round(same_sample / baseline, 1),
        "sandbox_whole_file_s": round(whole, 1),
        "sandbox_whole_file_programs_per_s": round(len(programs) / whole, 1),
        "pass@1": round(100 * sum(o.passed for o in outcomes) / len(outcomes), 2),
        "isolation": isolation,
    }


# The sandbox half of `execution`, run by `ab` in a fresh interpreter with the tree to measure first on
# sys.path (argv: tree, generations file, sample size): only the API both trees share.
SANDBOX_ONLY = """
import gzip, json, random, sys, time
sys.path.insert(0, sys.argv[1])
from sweeper.evals.problems import harness_program, load_humanevalpack
from sweeper.evals.sandbox import Sandbox, SandboxLimits
problems = load_humanevalpack(sys.argv[1] + "/../shared/data/humanevalpack/python.jsonl.gz")
with gzip.open(sys.argv[2], "rt") as f:
    generations = json.load(f)
programs = [harness_program(s, p.test) for p, samples in zip(problems, generations) for s in samples]
sample = random.Random(0).sample(list(dict.fromkeys(programs)), int(sys.argv[3]))
with Sandbox(SandboxLimits(timeout_s=3.0)) as sandbox:
    started = time.perf_counter()
    sandbox.run(sample, description=None)
    same_sample = len(sample) / (time.perf_counter() - started)
with Sandbox(SandboxLimits(timeout_s=3.0)) as sandbox:
    started = time.perf_counter()
    outcomes = sandbox.run(programs, description=None)
    whole = time.perf_counter() - started
print(json.dumps({"sandbox_same_sample_programs_per_s": round(same_sample, 1), "sandbox_whole_file_s": round(whole, 1),
                  "pass@1": round(100 * sum(o.passed for o in outcomes) / len(outcomes), 2)}))
"""


def ab(other: Path, rounds: int, file: Path, sample_size: int) -> dict:
    trees = {"this": ROOT, "other": Path(other).resolve()}
    rows: dict[str, list[dict]] = {name: [] for name in trees}
    for round_ in range(rounds):
        for name in list(trees) if round_ % 2 == 0 else list(reversed(trees)):
            with open("/proc/loadavg") as f:
                load = float(f.read().split()[0])
            done = subprocess.run([sys.executable, "-c", SANDBOX_ONLY, str(trees[name]), str(file), str(sample_size)],
                                  capture_output=True, text=True, cwd=trees[name], check=True)
            rows[name].append({**json.loads(done.stdout.strip().splitlines()[-1]), "load_before": load})

    def median(name: str, key: str) -> float:
        values = sorted(row[key] for row in rows[name])
        return values[len(values) // 2]

    keys = ("sandbox_same_sample_programs_per_s", "sandbox_whole_file_s")
    return {"rounds": rows, "median": {name: {key: median(name, key) for key in keys} for name in trees}}


def screen_released() -> dict:
    from sweeper.evals.sandbox_screen import screen

    problems = load_humanevalpack(DATA / "humanevalpack/python.jsonl.gz")
    seen: dict[str, str | None] = {}
    files = total = 0
    started = time.perf_counter()
    for folder in ("humanevalsynthesize-python", "humanevalfixtests-python", "humanevalexplainsynthesize-python"):
        for path in sorted((DATA / "astraios" / folder).glob("*.json.gz")):
            with gzip.open(path, "rt") as f:
                generations = json.load(f)
            files += 1
            if folder.startswith("humanevalexplain"):  # 20 descriptions per problem, one program each
                pairs = [(problems[j // 20], g[0]) for j, g in enumerate(generations)]
            else:
                pairs = [(p, s) for p, samples in zip(problems, generations, strict=True) for s in samples]
            for problem, sample in pairs:
                total += 1
                program = harness_program(sample, problem.test)
                if program not in seen:
                    seen[program] = screen(program)
    seconds = time.perf_counter() - started
    rejected = [reason for reason in seen.values() if reason is not None]
    return {"files": files, "programs": total, "distinct_programs": len(seen), "rejected": len(rejected),
            "reasons": sorted(set(rejected)), "ms_per_distinct_program_incl_loading": round(1000 * seconds / len(seen), 3)}


def micro_model():
    """A GPTBigCode of the micro ladder's largest scale ("l": 5 layers, 128 wide, 512 positions) with
    random weights and a 4,096-token BPE tokenizer trained on HumanEval: speed does not depend on
    what the weights know."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTBigCodeForCausalLM, PreTrainedTokenizerFast

    from sweeper.ladders import Arch, LoadedModel, count_parameters

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([p.canonical_program + p.test for p in load_humaneval()], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    arch = Arch(n_layer=5, n_embd=128, n_head=8, n_inner=512, vocab_size=4096, n_positions=512)
    torch.manual_seed(0)
    model = GPTBigCodeForCausalLM(arch.hf_config())
    return LoadedModel(model, tokenizer, "benchmark:micro-l-random"), count_parameters(model)[1]


def generation() -> dict:
    import torch

    from sweeper.evals.lm import HFLanguageModel

    loaded, parameters = micro_model()
    # No eos: random weights would stop at random; suppressing it makes every sequence full length.
    loaded.model.generation_config.suppress_tokens = [loaded.tokenizer.eos_token_id]
    lm = HFLanguageModel(loaded, batch_size=8)
    prompts = [p.prompt for p in load_humaneval()[:8]]
    results = {"parameters": parameters, "torch_threads": torch.get_num_threads()}
    lm.generate(prompts[:1], n=1, temperature=0.0, max_new_tokens=4, stop=())  # warm-up, not timed
    for label, n, temperature in (("greedy_batch8", 1, 0.0), ("sampled_batch8_n4", 4, 0.8)):
        started = time.perf_counter()
        outputs = lm.generate(prompts, n=n, temperature=temperature, max_new_tokens=128, stop=())
        seconds = time.perf_counter() - started
        tokens = sum(len(loaded.tokenizer(c)["input_ids"]) for samples in outputs for c in (samples[:1] if temperature == 0 else samples))
        results[f"{label}_tokens_per_s"] = round(tokens / seconds, 1)
    return results


def tasks(limit: int | None, max_new_tokens: int, only: list[str] | None) -> dict:
    import os
    import tempfile

    from sweeper.evals.evaluate import evaluate_model
    from sweeper.evals.tasks import TASKS

    os.environ.setdefault("SWEEPER_CACHE", tempfile.mkdtemp(prefix="sweeper-bench-"))
    loaded, parameters = micro_model()
    out = Path(tempfile.mkdtemp(prefix="sweeper-bench-out-"))
    names = only or [name for name in TASKS.names() if name != "humanevalfix"]  # needs HumanEvalPack's bugs
    with Sandbox() as sandbox:
        # Mutants are built once and cached: time that separately from the tasks that use them.
        from sweeper.evals.mutate import failing_mutants

        started = time.perf_counter()
        failing_mutants(load_humaneval()[:limit] if limit else load_humaneval(), sandbox)
        mutants_s = time.perf_counter() - started
        evaluate_model(loaded, names, n_samples=1, temperature=0.0, limit=limit, batch_size=8, out_dir=out,
                       max_new_tokens=max_new_tokens, sandbox=sandbox)
    seconds = json.loads((out / "timings.json").read_text())["seconds_per_task"]
    return {"parameters": parameters, "limit": limit, "max_new_tokens": max_new_tokens,
            "mutants_first_build_s": round(mutants_s, 1), "seconds_per_task": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["execution", "ab", "screen", "generation", "tasks"])
    parser.add_argument("--other", type=Path, default=None, help="ab: the other checkout")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--baseline-sample", type=int, default=150)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--tasks", default=None, help="only these tasks: a,b")
    args = parser.parse_args()
    if args.part == "execution":
        result = execution(args.file, args.baseline_sample)
    elif args.part == "ab":
        if args.other is None:
            parser.error("ab needs --other PATH")
        result = ab(args.other, args.rounds, args.file, args.baseline_sample)
    elif args.part == "screen":
        result = screen_released()
    elif args.part == "generation":
        result = generation()
    else:
        result = tasks(args.limit, args.max_new_tokens, args.tasks.split(",") if args.tasks else None)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
