"""ReCode (Wang et al. 2022, arXiv 2212.10264): HumanEval under perturbed prompts, as Astraios ran it.

The data are ReCode's released perturbed HumanEval (`RaymondLi/perturbed_humaneval` on the HF hub,
which bigcode-evaluation-harness loads, or a local copy of one category's jsonl[.gz] with `--data`).
Astraios ran the harness tasks `perturbed-humaneval-<category>-num_seeds_5`: seeds 0-4 of every
perturbation (deterministic perturbations have seed 0 only). The four categories and the Astraios
paper's columns:

- `recode-format` (Format): doc2comments, new_line_aftercode, new_line_afterdoc, new_lines,
  split_lines, tab_indent; the prompt holds the first half of the (reformatted) solution.
- `recode-natgen` (Syntax): dead code, for/while, operand swap, variable renames; partial code too.
- `recode-func-name` (Function): the entry point renamed (butter finger, camel case, synonyms, ...).
- `recode-nlaugmenter` (Docstring): the docstring reworded (back-translation, typos, synonyms, ...).

Protocol (the harness's `recode.py` on its `astraios` branch): prompt `"Question: Create a Python
script for this problem.\\n\\nAnswer: " + prompt.strip()`, greedy, one completion per row, at most
1024 tokens of prompt + completion (`max_length_generation`); the completion is cut at the first of
`\\nclass \\ndef \\n# \\n@ \\nprint \\nif` and the program is `prompt.strip() + completion` (no
import lines prepended, unlike HumanEvalPack's programs); it runs as
`program + "\\n\\n" + test + "\\ncheck(<entry_point>)"` with a 3 s limit.

Metric (ReCode's robust pass@1, the harness's `robust-pass-at-1`): for each perturbation type, the
mean over the HumanEval tasks of 1[the completions for all kept seeds pass] (with n samples per row:
the mean over samples i of 1[sample i passes for every seed]); the category score is the mean over
its perturbation types.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from sweeper.core.errors import UserError
from sweeper.core.hub import load_hub_dataset
from sweeper.evals.decoding import Decoding, sample
from sweeper.evals.lm import LanguageModel, cut_at_stop
from sweeper.evals.metrics import Metric
from sweeper.evals.problems import data_jsonl, read_jsonl
from sweeper.evals.tasks.base import TASKS, Context, Task, TaskResult

RECODE_ID = "RaymondLi/perturbed_humaneval"
RECODE_PARQUET_REVISION = "refs/convert/parquet"  # the hub's parquet export (datasets >= 4 runs no scripts)
NUM_SEEDS = 5  # the harness task `perturbed-humaneval-<category>-num_seeds_5` that Astraios ran
# The harness's prompt on its astraios branch, hard-wired there (its main branch: the stripped prompt alone).
PROMPT_PREFIX = "Question: Create a Python script for this problem.\n\nAnswer: "
STOP_WORDS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif")  # the harness's ReCode stop words
# Astraios evaluation/recode-*.sh: greedy, n=1, 1024 tokens of prompt + completion. Robust pass@1 is
# defined on one completion per row: an n override is not taken.
RECODE_DECODING = Decoding(n_samples=1, temperature=0.0, max_length=1024, stop=STOP_WORDS, fixed_sampling=True,
                           source="Astraios evaluation/recode-*.sh (greedy, n 1, max_length_generation 1024)")
HARNESS_TIMEOUT_S = 3.0  # code_eval's default timeout, which the ReCode task uses
FIELDS = ("task_id", "prompt", "entry_point", "test", "seed", "perturbation_name")

# The perturbation types of each category in the release (a guard against a file of another category).
PERTURBATIONS = {
    "format": ("doc2comments", "new_line_aftercode", "new_line_afterdoc", "new_lines", "split_lines",
               "tab_indent"),
    "natgen": ("DeadCodeInserterLast", "DeadCodeInserter", "ForWhileTransformer", "OperandSwap",
               "VarRenamerCB", "VarRenamerNaive", "VarRenamerRN"),
    "func_name": ("FuncRenameButterFinger", "FuncRenameCamelCase", "FuncRenameChangeChar",
                  "FuncRenameInflectionalVariation", "FuncRenameSwapChar", "FuncRenameSynonymSub"),
    "nlaugmenter": ("BackTranslation", "ButterFingersPerturbation", "ChangeCharCase",
                    "EnglishInflectionalVariation", "SwapCharactersPerturbation", "SynonymInsertion",
                    "SynonymSubstitution", "TenseTransformationFuture", "TenseTransformationPast",
                    "WhitespacePerturbation"),
}


@dataclass(frozen=True)
class ReCodeRow:
    """One perturbed prompt: HumanEval task `task_id` under perturbation `perturbation_name`, seed `seed`."""

    task_id: str
    prompt: str  # format/natgen: also the first half of the (perturbed) solution
    entry_point: str
    test: str  # defines check(candidate); the harness appends `check(<entry_point>)`
    seed: int
    perturbation_name: str
    canonical_solution: str = ""  # completes `prompt` (not its stripped form)

    @property
    def task_number(self) -> int:
        return task_number(self.task_id)


def task_number(task_id: str) -> int:
    tail = task_id.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def row_order(row: ReCodeRow) -> tuple[str, int, int]:
    """The release's order: files `humaneval_<perturbation>_s<seed>.jsonl` sorted by name (byte order, so
    `DeadCodeInserterLast` precedes `DeadCodeInserter`), then the file's rows (HumanEval/0..163). The
    harness's HF rows, filtered to seeds 0-4, come in this order (the Astraios generations match it)."""
    return f"{row.perturbation_name}_s{row.seed}.jsonl", row.seed, row.task_number


def recode_prompt(row: ReCodeRow) -> str:
    return PROMPT_PREFIX + row.prompt.strip()


def recode_program(row: ReCodeRow, completion: str) -> str:
    """The whole program a completion makes (what the harness saves as the generation)."""
    return row.prompt.strip() + cut_at_stop(completion, STOP_WORDS)


def recode_test_program(program: str, row: ReCodeRow) -> str:
    """What code_eval executes: the program, the row's tests, the call of `check` (no import lines)."""
    return program + "\n" + "\n" + row.test + "\n" + f"check({row.entry_point})"


def load_recode(category: str, data: Path | None = None) -> list[ReCodeRow]:
    """The rows of one ReCode category, seeds 0-4, in the release's order; from `data` (the category's
    jsonl[.gz], or a folder holding `<category>.jsonl[.gz]`) else from the HF hub."""
    if category not in PERTURBATIONS:
        raise ValueError(f"unknown ReCode category {category!r}")
    return list(_load(category, str(data) if data is not None else None))


@functools.cache
def _load(category: str, data: str | None) -> tuple[ReCodeRow, ...]:
    if data is not None:
        path = data_jsonl(Path(data), category, f"ReCode {category} data")
        source, raw = str(path), read_jsonl(path)
    else:
        source, raw = RECODE_ID, _from_hub(category)
    rows = []
    for index, item in enumerate(raw):
        missing = [field for field in FIELDS if not isinstance(item, dict) or field not in item]
        if missing:
            raise UserError(f"{source}: row {index + 1} is not a ReCode row: missing {', '.join(missing)}")
        try:
            seed = int(item["seed"])
        except (TypeError, ValueError):
            raise UserError(f"{source}: row {index + 1}: seed {item['seed']!r} is not an integer") from None
        if seed >= NUM_SEEDS:
            continue
        rows.append(ReCodeRow(str(item["task_id"]), item["prompt"], item["entry_point"], item["test"], seed,
                              str(item["perturbation_name"]), item.get("canonical_solution") or ""))
    if not rows:
        raise UserError(f"{source}: no ReCode rows with seed < {NUM_SEEDS}")
    _check_category(rows, category, source)
    _check_unique(rows, source)
    rows.sort(key=row_order)
    return tuple(rows)


def _from_hub(category: str) -> list[dict]:
    what = f"{RECODE_ID} ({category}) from the HF hub"
    instead = (f"the ReCode task needs its data: pass --data PATH to a local copy of the category's rows "
               f"({category}.jsonl[.gz] from ReCode's release, or a folder holding it)")
    try:  # the parquet export: no loading script to run
        return list(load_hub_dataset(what, instead, RECODE_ID, data_dir=category, revision=RECODE_PARQUET_REVISION,
                                     split="test"))
    except UserError:
        return list(load_hub_dataset(what, instead, RECODE_ID, category, split="test"))  # older datasets run the script


def _normal(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _check_category(rows: list[ReCodeRow], category: str, source: str) -> None:
    known = {_normal(name) for name in PERTURBATIONS[category]}
    found = {row.perturbation_name for row in rows}
    if not any(k in _normal(name) or _normal(name) in k for name in found for k in known):
        raise UserError(f"{source}: not ReCode {category} data "
                        f"(its perturbations: {', '.join(sorted(found))})")


def _check_unique(rows: list[ReCodeRow], source: str) -> None:
    seen: set[tuple[str, str, int]] = set()
    for row in rows:
        key = (row.perturbation_name, row.task_id, row.seed)
        if key in seen:
            raise UserError(f"{source}: {row.task_id} appears twice under {row.perturbation_name} "
                            f"seed {row.seed}")
        seen.add(key)


def limit_rows(rows: list[ReCodeRow], limit: int | None) -> list[int]:
    """Indices of the rows of the first `limit` HumanEval tasks (every perturbation and seed of them),
    so that the robust metric still sees all seeds of each task kept."""
    if not limit:
        return list(range(len(rows)))
    keep = set(sorted({row.task_number for row in rows})[:limit])
    return [index for index, row in enumerate(rows) if row.task_number in keep]


def robust_pass_at_1(rows: list[ReCodeRow], passed: list[list[bool]]) -> dict[str, tuple[float, int]]:
    """Per perturbation type (in row order): (robust pass@1, tasks). `passed[i][j]`: sample j of row i.
    A task's score is the mean over samples j of 1[sample j passes under every seed] (the harness's)."""
    table: dict[str, dict[str, dict[int, list[bool]]]] = defaultdict(lambda: defaultdict(dict))
    for row, results in zip(rows, passed, strict=True):
        table[row.perturbation_name][row.task_id][row.seed] = results
    scores = {}
    for name, tasks in table.items():
        total = 0.0
        for seeds in tasks.values():
            columns = list(zip(*seeds.values(), strict=True))
            total += sum(all(column) for column in columns) / len(columns)
        scores[name] = (total / len(tasks), len(tasks))
    return scores


def check_recode_generations(generations: object, expected: int, task: str) -> None:
    if not isinstance(generations, list) or not all(
        isinstance(samples, list) and samples and all(isinstance(s, str) for s in samples)
        for samples in generations
    ):
        raise UserError(f"{task}: generations must be a JSON list (one per ReCode row) of non-empty lists "
                        "of programs")
    if len(generations) != expected:
        raise UserError(f"{task}: expected generations for {expected} ReCode rows (seeds 0-{NUM_SEEDS - 1}, "
                        f"in the release's order), got {len(generations)}")
    if len({len(samples) for samples in generations}) > 1:
        raise UserError(f"{task}: every ReCode row needs the same number of programs (robust pass compares "
                        "sample j across seeds)")


class ReCode(Task):
    """One ReCode category: greedy completions of the perturbed prompts, robust pass@1 per perturbation."""

    category: ClassVar[str]  # the release's (and HF's) name: format, natgen, func_name, nlaugmenter

    def rows(self, ctx: Context) -> list[ReCodeRow]:
        rows = load_recode(self.category, ctx.data)
        return [rows[index] for index in limit_rows(rows, ctx.limit)]

    decoding = RECODE_DECODING

    def evaluate(self, lm: LanguageModel, ctx: Context) -> TaskResult:
        rows = self.rows(ctx)
        prompts = [recode_prompt(row) for row in rows]
        completions = sample(lm, prompts, ctx.decoding(self.decoding))  # greedy: a prompt repeated across seeds runs once
        generations = [[recode_program(row, answers[0])] for row, answers in zip(rows, completions, strict=True)]
        result = self.score_rows(rows, generations, ctx)
        result.details["distinct_prompts"] = len(set(prompts))
        return result

    def score(self, generations: list[list[str]], ctx: Context) -> TaskResult:
        everything = load_recode(self.category, ctx.data)
        kept = limit_rows(everything, ctx.limit)
        if ctx.limit and isinstance(generations, list) and len(generations) == len(everything) != len(kept):
            generations = [generations[index] for index in kept]  # a whole file scored on the first tasks
        return self.score_rows([everything[index] for index in kept], generations, ctx)

    def score_rows(self, rows: list[ReCodeRow], generations: list[list[str]], ctx: Context) -> TaskResult:
        check_recode_generations(generations, len(rows), self.name)
        programs = [recode_test_program(sample, row) for row, samples in zip(rows, generations, strict=True)
                    for sample in samples]
        outcomes = iter(ctx.sandbox.run(programs, description=f"{self.name}: executing"))
        passed = [[next(outcomes).passed for _ in samples] for samples in generations]
        per_type = robust_pass_at_1(rows, passed)
        tasks = len({row.task_id for row in rows})
        mean = sum(value for value, _ in per_type.values()) / len(per_type)
        metrics = [Metric("robust_pass@1", mean, tasks, 1)]
        metrics += [Metric(f"robust_pass@1/{name}", value, n, 1) for name, (value, n) in per_type.items()]
        details = {
            "benchmark": f"ReCode {self.category} ({RECODE_ID}), seeds 0-{NUM_SEEDS - 1}",
            "rows": len(rows), "tasks": tasks, "perturbation_types": len(per_type),
            "seeds": {name: len({r.seed for r in rows if r.perturbation_name == name}) for name in per_type},
            "prompt": "octocoder (Question: Create a Python script for this problem. Answer: <prompt>)",
            "program": "prompt.strip() + completion, then tests and check(entry_point); no import lines",
            "harness_timeout_s": HARNESS_TIMEOUT_S,
        }
        return TaskResult(metrics, generations, details)


@TASKS.register("recode-format")
class ReCodeFormat(ReCode):
    name = "recode-format"
    category = "format"
    summary = ("ReCode format perturbations (doc2comments, new lines, split lines, tab indent) of "
               "partial-code HumanEval; robust pass@1 over 5 seeds per perturbation type, greedy "
               "(Astraios' ReCode Format column)")


@TASKS.register("recode-natgen")
class ReCodeNatgen(ReCode):
    name = "recode-natgen"
    category = "natgen"
    summary = ("ReCode syntax perturbations (dead code, for/while, operand swap, variable renames) of "
               "partial-code HumanEval; robust pass@1 over 5 seeds per perturbation type, greedy "
               "(Astraios' ReCode Syntax column)")


@TASKS.register("recode-func-name")
class ReCodeFuncName(ReCode):
    name = "recode-func-name"
    category = "func_name"
    summary = ("ReCode function-name perturbations (typos, camel case, synonyms) of HumanEval; robust "
               "pass@1 over 5 seeds per perturbation type, greedy (Astraios' ReCode Function column)")


@TASKS.register("recode-nlaugmenter")
class ReCodeNLAugmenter(ReCode):
    name = "recode-nlaugmenter"
    category = "nlaugmenter"
    summary = ("ReCode docstring perturbations (NL-Augmenter: back-translation, typos, synonyms, tense) of "
               "HumanEval; robust pass@1 over 5 seeds per perturbation type, greedy "
               "(Astraios' ReCode Docstring column)")
