"""Per-task decoding presets (the Astraios release scripts), the run's overrides, and what is recorded."""

import json

import pytest

from sweeper.evals.decoding import Decoding, DecodingOverrides, sample
from sweeper.evals.tasks import TASKS
from sweeper.evals.tasks.base import ChoiceTask, Context

# (n, temperature, max_length_generation) per task, from bigcode-project/astraios evaluation/*.sh
PAPER = {
    "humanevalsynthesize": (20, 0.2, 2048),
    "humanevalfix": (20, 0.2, 2048),
    "humanevalexplain": (20, 0.2, 2048),
    "aatk-dow": (20, 0.2, 1024),
    "recode-format": (1, 0.0, 1024),
    "recode-natgen": (1, 0.0, 1024),
    "recode-func-name": (1, 0.0, 1024),
    "recode-nlaugmenter": (1, 0.0, 1024),
    "defect-detection": (1, 0.0, None),
    "clone-detection": (1, 0.0, None),
}


def test_the_papers_tasks_decode_as_its_scripts():
    for name, (n, temperature, max_length) in PAPER.items():
        preset = TASKS.get(name).decoding
        assert (preset.n_samples, preset.temperature, preset.max_length) == (n, temperature, max_length), name
    assert TASKS.get("aatk-dow").decoding.stop == ()  # aatk.py passes no stop words
    assert TASKS.get("recode-format").decoding.stop == ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif")
    assert TASKS.get("humanevalsynthesize").decoding.stop[-1] == "<|endoftext|>"
    assert TASKS.get("defect-detection").decoding.stop == ("\n",)


def test_every_generative_task_has_a_preset_and_likelihood_tasks_none():
    for name in TASKS.names():
        task = TASKS.get(name)
        likelihood = issubclass(task, ChoiceTask) or name.endswith("-ll")
        assert (task.decoding is None) == likelihood, name


PRESET = Decoding(n_samples=20, temperature=0.2, max_length=2048, stop=("\n",), source="script")
FIXED = Decoding(n_samples=1, temperature=0.0, max_length=1024, stop=(), source="protocol", fixed_sampling=True)


def test_overrides_replace_the_preset_and_say_so():
    assert DecodingOverrides().apply(PRESET) == (PRESET, {})
    used, ignored = DecodingOverrides(n_samples=1, temperature=0.0).apply(PRESET)
    assert (used.n_samples, used.temperature, used.max_length, ignored) == (1, 0.0, 2048, {})
    assert used.source == "script, overridden: n_samples, temperature"
    capped, _ = DecodingOverrides(max_new_tokens=64).apply(PRESET)
    assert (capped.max_length, capped.max_new_tokens) == (None, 64)  # a cap replaces the total length
    assert DecodingOverrides(n_samples=20, temperature=0.2).apply(PRESET)[0] == PRESET  # the preset's own values


def test_a_protocol_with_its_own_sampling_keeps_it_and_records_what_it_did_not_take():
    used, ignored = DecodingOverrides(n_samples=5, temperature=0.8, max_new_tokens=16).apply(FIXED)
    assert (used.n_samples, used.temperature, used.max_new_tokens) == (1, 0.0, 16)
    assert ignored == {"n_samples": 5, "temperature": 0.8}
    record = TASKS.get("recode-format")().decoding_record(Context(sandbox=None, n_samples=5))
    assert record["ignored_overrides"] == {"n_samples": 5} and record["decoding"]["n_samples"] == 1


def test_the_record_names_the_sampling():
    record = PRESET.record()
    assert record == {"n_samples": 20, "temperature": 0.2, "top_p": 0.95, "max_length_generation": 2048,
                      "max_new_tokens": None, "stop": ["\n"], "source": "script"}
    assert FIXED.record()["top_p"] is None  # greedy: no nucleus
    json.dumps(record)


class Recorder:
    """A model double that counts its prompts' tokens as characters and records each call."""

    class Tokenizer:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(text)}

    def __init__(self):
        self.tokenizer = self.Tokenizer()
        self.calls = []

    def generate(self, prompts, *, n, temperature, max_new_tokens, stop, max_prompt_tokens=None):
        self.calls.append((list(prompts), n, max_new_tokens))
        return [[f"{prompt}:{i}" for i in range(n)] for prompt in prompts]


def test_sample_budgets_each_prompt_and_repeats_only_greedy_prompts_once():
    lm = Recorder()
    out = sample(lm, ["aa", "bbbb", "aa"], Decoding(n_samples=2, temperature=0.2, max_length=10, stop=(), source=""))
    assert out == [["aa:0", "aa:1"], ["bbbb:0", "bbbb:1"], ["aa:0", "aa:1"]]
    assert lm.calls == [(["aa", "aa"], 2, 8), (["bbbb"], 2, 6)]  # sampled prompts are each drawn, largest budget first
    lm = Recorder()
    greedy = sample(lm, ["aa", "bbbb", "aa"], FIXED)
    assert greedy == [["aa:0"], ["bbbb:0"], ["aa:0"]] and sum(len(c[0]) for c in lm.calls) == 2


def test_eval_tasks_lists_each_preset(run_cli):
    code, out, _ = run_cli("eval", "tasks")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "[n 20, T 0.2]" in lines["humanevalsynthesize"] and "[n 1, greedy]" in lines["recode-format"]
    assert "[likelihood, no sampling]" in lines["humanevalfix-ll"]
    code, out, _ = run_cli("eval", "tasks", "--json")
    assert json.loads(out)[0]["decoding"] is None or "n_samples" in json.loads(out)[0]["decoding"]


@pytest.mark.parametrize("value", ["-1", "inf", "nan"])
def test_a_bad_temperature_is_refused(run_cli, value, tmp_path):
    code, _, err = run_cli("eval", "--out", str(tmp_path), "--temperature", value)
    assert code == 2 and "--temperature" in err and "Traceback" not in err


def test_an_evaluation_record_is_named_by_the_decoding_used_not_the_options():
    from sweeper.evals.sweep import settings_key

    # a likelihood task decodes nothing: one record whatever the options
    assert settings_key("humanevalfix-ll", None, None, 5) == settings_key("humanevalfix-ll", 1, 0.0, 5)
    # the preset asked for explicitly is the preset
    assert settings_key("humanevalsynthesize", None, None, 5) == settings_key("humanevalsynthesize", 20, 0.2, 5)
    assert settings_key("humanevalsynthesize", None, None, 5) != settings_key("humanevalsynthesize", 1, 0.0, 5)
    assert settings_key("humanevalsynthesize", 1, 0.0, 5) != settings_key("humanevalsynthesize", 1, 0.0, 6)
    # ReCode keeps its own sampling: the same record under any n
    assert settings_key("recode-format", 5, None, None) == settings_key("recode-format", None, None, None)


def test_scoring_again_with_other_settings_moves_the_earlier_record_aside(tmp_path, capsys):
    from sweeper.evals.sweep import _supersede_other_settings
    from sweeper.sweep.folder import SweepFolder

    folder = SweepFolder(tmp_path)
    old, new, other_task = (folder.eval_record("cell", task, key) for task, key in
                            (("humanevalfix", "aaa"), ("humanevalfix", "bbb"), ("humanevalfix-java", "ccc")))
    for path in (old, new, other_task):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[]")
    _supersede_other_settings(folder, "cell", "humanevalfix", "bbb")
    assert not old.exists() and new.exists() and other_task.exists()
    assert list((old.parent.parent / "superseded").iterdir())
    assert "scored again with other settings" in capsys.readouterr().err
    assert folder.eval_records() == sorted([new, other_task])


def test_a_task_whose_scoring_changed_names_its_records_anew():
    """The YES/NO likelihood tasks became calibrated (version 2): a record scored before is not current."""
    import hashlib
    import json as json_module

    from sweeper.evals.sweep import SETTINGS_KEY_VERSION, settings_key
    from sweeper.evals.tasks import TASKS

    assert TASKS.get("clone-detection-proxy-ll").version == 2
    before = hashlib.sha256(json_module.dumps([SETTINGS_KEY_VERSION, "clone-detection-proxy-ll", None, 40],
                                              sort_keys=True).encode()).hexdigest()[:10]
    assert settings_key("clone-detection-proxy-ll", None, None, 40) != before
    # a version-1 task keeps the name its records had before tasks had versions
    same = hashlib.sha256(json_module.dumps([SETTINGS_KEY_VERSION, "humanevalfix-ll", None, 40],
                                            sort_keys=True).encode()).hexdigest()[:10]
    assert settings_key("humanevalfix-ll", None, None, 40) == same
