"""evaluate_model on a tiny random GPTBigCode with a BPE tokenizer trained here."""

import json

import pytest
import torch

from sweeper.core.paths import PROJECT_ROOT
from sweeper.evals.evaluate import evaluate_model
from sweeper.evals.languages import LANGUAGES
from sweeper.evals.lm import HFLanguageModel
from sweeper.evals.problems import load_humaneval
from sweeper.evals.sandbox import Sandbox
from sweeper.evals.tasks import TASKS
from sweeper.ladders import Arch, LoadedModel

PACK = PROJECT_ROOT.parent / "shared" / "data" / "humanevalpack" / "python.jsonl.gz"


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTBigCodeForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator([p.canonical_program for p in load_humaneval()[:60]], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    arch = Arch(n_layer=2, n_embd=64, n_head=4, n_inner=256, vocab_size=len(tokenizer), n_positions=256)
    torch.manual_seed(0)
    return LoadedModel(GPTBigCodeForCausalLM(arch.hf_config()), tokenizer, "test:tiny-random")


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(allow_weak=True) as box:
        yield box


def test_loglikelihood_matches_a_direct_forward_pass(tiny):
    lm = HFLanguageModel(tiny, batch_size=2)
    requests = [("def add(a, b):\n", "    return a + b\n"), ("x =", " 1"), ("Question: hi\n\nAnswer:", "\nYES")]
    scores = lm.loglikelihood(requests)
    for (context, continuation), (total, count) in zip(requests, scores, strict=True):
        ids = tiny.tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        context_len = len(tiny.tokenizer(context, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logprobs = torch.log_softmax(tiny.model(torch.tensor([ids])).logits[0].float(), -1)
        expected = sum(float(logprobs[i - 1, ids[i]]) for i in range(context_len, len(ids)))
        assert count == len(ids) - context_len
        assert total == pytest.approx(expected, abs=1e-4)


def test_long_prompts_are_cut_from_the_left(tiny):
    lm = HFLanguageModel(tiny, batch_size=2)
    long_prompt = "x = 1\n" * 400  # far beyond 256 positions
    [[completion]] = lm.generate([long_prompt], n=1, temperature=0.0, max_new_tokens=1000, stop=())
    assert isinstance(completion, str)
    [(total, count)] = lm.loglikelihood([(long_prompt, "y = 2\n" * 300)])
    assert count == lm.context_size - 1 and total < 0


def test_sampling_gives_n_samples_and_is_seeded(tiny):
    lm = HFLanguageModel(tiny, batch_size=2)
    first = lm.generate(["def f(", "import"], n=3, temperature=1.0, max_new_tokens=8, stop=())
    again = HFLanguageModel(tiny, batch_size=2).generate(["def f(", "import"], n=3, temperature=1.0, max_new_tokens=8, stop=())
    assert [len(samples) for samples in first] == [3, 3] and first == again


# Benchmarks with data of their own (CodeXGLUE, AATK, ReCode): `data` below is HumanEvalPack, so they run
# on a scripted model with their own copies in tests/test_registries.py instead.
JAVA = LANGUAGES.get("java")
OWN_DATA = ("sweeper.evals.tasks.codexglue", "sweeper.evals.tasks.aatk", "sweeper.evals.tasks.recode")


def test_evaluate_model_every_task(tiny, sandbox, tmp_path):
    # Python tasks on HumanEvalPack's Python split; the Java ones have their own data (tests/test_languages.py)
    tasks = [name for name in TASKS.names() if (name != "humanevalfix" or PACK.is_file())
             and TASKS.get(name).__module__ not in OWN_DATA and getattr(TASKS.get(name), "language", None) != JAVA]
    rows = evaluate_model(
        tiny, tasks, n_samples=2, temperature=0.8, limit=2, batch_size=4, out_dir=tmp_path / "out",
        data=PACK if PACK.is_file() else None, max_new_tokens=24, sandbox=sandbox,
    )
    assert {row["task"] for row in rows} == set(tasks)
    for row in rows:
        assert set(row) == {"task", "metric", "value", "n", "k", "settings"}
        settings = json.loads(row["settings"])
        assert settings["model"] == "test:tiny-random"
        assert settings["asked"] == {"n_samples": 2, "temperature": 0.8, "max_new_tokens": 24}
        decoding = settings["decoding"]  # None for the likelihood tasks; the detection proxies stay greedy, n 1
        assert decoding is None or (decoding["n_samples"], decoding["max_new_tokens"]) in ((2, 24), (1, 24))
        if row["metric"] != "nll" and row["value"] == row["value"]:  # NaN: security with no valid completion
            assert 0.0 <= row["value"] <= 1.0, row
    by_key = {(row["task"], row["metric"]): row for row in rows}
    assert by_key[("humanevalsynthesize", "pass@1")]["n"] == 2
    assert by_key[("humanevalsynthesize-ll", "nll")]["value"] > 0
    generations = json.loads((tmp_path / "out" / "generations_humanevalsynthesize.json").read_text())
    assert len(generations) == 2 and all(len(samples) == 2 for samples in generations)
    assert generations[0][0].startswith(load_humaneval()[0].prompt.rstrip())
    assert set(json.loads((tmp_path / "out" / "timings.json").read_text())["seconds_per_task"]) == set(tasks)


def test_evaluate_model_rejects_bad_settings(tiny):
    from sweeper.core.errors import UserError

    with pytest.raises(UserError, match="unknown task"):
        evaluate_model(tiny, ["nope"], n_samples=1, temperature=0.0)
    with pytest.raises(UserError, match="n-samples"):
        evaluate_model(tiny, ["humanevalsynthesize"], n_samples=0, temperature=0.0)


def test_prompt_tuning_models_stay_within_their_positions(tiny):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import GPTBigCodeForCausalLM

    arch = Arch(n_layer=2, n_embd=64, n_head=4, n_inner=256, vocab_size=len(tiny.tokenizer), n_positions=96)
    torch.manual_seed(0)
    model = get_peft_model(
        GPTBigCodeForCausalLM(arch.hf_config()),
        PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8),
    )
    lm = HFLanguageModel(LoadedModel(model, tiny.tokenizer, "test:ptuning"), batch_size=2)
    assert lm.context_size == 96 - 8
    long_prompt = "def f(x):\n    return x\n" * 40
    outputs = lm.generate([long_prompt, "import"], n=2, temperature=0.7, max_new_tokens=500, stop=())
    assert [len(samples) for samples in outputs] == [2, 2]
    [(total, count)] = lm.loglikelihood([(long_prompt, "y = 2\n" * 100)])
    assert count == lm.context_size - 1 and total < 0
