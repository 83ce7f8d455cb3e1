"""Contracts of the registries without their own contract tests: ladders, data sources, evaluation tasks.

Every registered entry goes through the same checks (parametrized over the registry's names), so a new
entry is checked as soon as it is registered; entries that need a case of their own (a data source's
offline input, a task's metrics) fail `test_every_..._has_a_case` until one is written here. Nothing
here needs the network, model weights or pretraining: ladders are counted on the meta device, sources
mine temporary folders, tasks run on a scripted model.
"""

import inspect
import json
import math
import time
from pathlib import Path

import pytest
from codexglue_data import bigclonebench_folder, devign_folder
from repos import git, new_repo

from analysis.laws import LAWS
from sweeper.core.errors import UserError
from sweeper.core.paths import PROJECT_ROOT
from sweeper.core.registry import Registry
from sweeper.data import SOURCES, Example
from sweeper.evals.metrics import Metric
from sweeper.evals.perturb import PERTURBATIONS
from sweeper.evals.tasks import TASKS, Context, Task, TaskResult
from sweeper.evals.tasks.base import ChoiceTask, ProgramTask
from sweeper.evals.tasks.recode import PERTURBATIONS as RECODE_PERTURBATIONS
from sweeper.ladders import LADDERS, Ladder, count_parameters, get_ladder, meta_model
from sweeper.methods import METHODS
from sweeper.schema import DataConfig

REGISTRIES = {"ladders": LADDERS, "sources": SOURCES, "tasks": TASKS, "methods": METHODS, "laws": LAWS}
PACK = PROJECT_ROOT.parent / "shared" / "data" / "humanevalpack" / "python.jsonl.gz"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """The HF hub and datasets cannot be reached: whatever would download fails instead."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")


# -- every registry -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_registry_is_non_empty_and_unknown_names_list_the_valid_ones(kind):
    registry = REGISTRIES[kind]
    assert isinstance(registry, Registry)
    names = registry.names()
    assert names and len(set(names)) == len(names) and list(registry) == names
    assert all(isinstance(name, str) and name and name == name.strip() for name in names)
    with pytest.raises(UserError) as err:
        registry.get("nope")
    assert "'nope'" in str(err.value) and all(name in str(err.value) for name in names)
    with pytest.raises(ValueError, match="twice"):
        registry.add(names[0], registry.get(names[0]))


# -- ladders ------------------------------------------------------------------------------------

def is_hub_ladder(ladder: Ladder) -> bool:
    return all(scale.hf_id for scale in ladder.scales.values())


@pytest.mark.parametrize("name", LADDERS.names())
def test_ladder_describes_itself(name):
    ladder = get_ladder(name)
    assert isinstance(ladder, Ladder) and ladder is LADDERS.get(name)
    assert ladder.name == name
    assert isinstance(ladder.description, str) and ladder.description.strip()
    assert isinstance(ladder.scales, dict) and ladder.scales
    assert type(ladder).load is not Ladder.load, "every ladder must say how to load a scale"
    # Either every scale is on the hub (hf_id) or none is (the ladder builds its own weights).
    hub_ids = [scale.hf_id for scale in ladder.scales.values()]
    assert all(hub_ids) or not any(hub_ids), hub_ids
    assert len(set(hub_ids)) == len(hub_ids) or not any(hub_ids)


@pytest.mark.parametrize("name", LADDERS.names())
def test_ladder_scales_build_and_count(name):
    from transformers import GPTBigCodeConfig

    ladder = get_ladder(name)
    sizes = []
    for key, scale in ladder.scales.items():
        assert scale.name == key
        assert scale.pretrain_tokens > 0
        arch = scale.arch
        assert arch.n_embd % arch.n_head == 0, f"{key}: n_embd must split into n_head heads"
        config = arch.hf_config()
        assert isinstance(config, GPTBigCodeConfig)
        assert (config.n_layer, config.n_embd, config.n_head, config.n_inner, config.vocab_size,
                config.n_positions, config.multi_query) == (
            arch.n_layer, arch.n_embd, arch.n_head, arch.n_inner, arch.vocab_size, arch.n_positions,
            arch.multi_query)
        trainable, total = count_parameters(meta_model(arch))
        assert total > 0 and trainable == total, key
        # The tied embedding alone is a lower bound of the count.
        assert total > arch.vocab_size * arch.n_embd, key
        sizes.append(total)
    names = [scale.name for scale in ladder.scales.values()]
    assert len(set(names)) == len(names)
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), f"scales not listed smallest first: {sizes}"


@pytest.mark.parametrize("name", LADDERS.names())
def test_unknown_scale_lists_the_valid_ones(name):
    ladder = get_ladder(name)
    with pytest.raises(UserError) as err:
        ladder.scale("nope")
    message = str(err.value)
    assert "'nope'" in message and name in message
    assert all(scale in message for scale in ladder.scales)
    for key in ladder.scales:
        assert ladder.scale(key) is ladder.scales[key]


@pytest.mark.parametrize("name", LADDERS.names())
def test_ladder_instruction_files(name):
    files = get_ladder(name).instruction_files()
    if files is None:
        return
    assert isinstance(files, list) and files
    for path in files:
        assert isinstance(path, Path) and path.suffix == ".py" and path.is_file(), path
    assert len(set(files)) == len(files)


@pytest.mark.parametrize("name", LADDERS.names())
def test_ladder_tokenizer_and_prepare(name, offline, monkeypatch):
    ladder = get_ladder(name)
    assert callable(ladder.local_tokenizer) and callable(ladder.prepare)
    inspect.signature(ladder.local_tokenizer).bind("scale")
    inspect.signature(ladder.prepare).bind(["scale"])
    if not is_hub_ladder(ladder):
        # A ladder that builds its own weights has its tokenizer at hand and builds before a sweep.
        assert type(ladder).local_tokenizer is not Ladder.local_tokenizer
        assert type(ladder).prepare is not Ladder.prepare
        return

    def no_load(*args, **kwargs):
        raise AssertionError("a hub ladder must not load anything here")

    monkeypatch.setattr(type(ladder), "load", no_load)
    for scale in ladder.scales:
        assert ladder.local_tokenizer(scale) is None
    started = time.perf_counter()
    assert ladder.prepare(list(ladder.scales)) is None
    assert time.perf_counter() - started < 1.0


def test_default_evaluation_tasks_name_registered_ladders_and_tasks():
    from sweeper.evals.sweep import DEFAULT_TASKS, PAPER_TASKS

    assert set(DEFAULT_TASKS) <= set(LADDERS.names())
    assert {task for tasks in DEFAULT_TASKS.values() for task in tasks} | set(PAPER_TASKS) <= set(TASKS.names())


# -- data sources -------------------------------------------------------------------------------

MODULE_A = '''
def add(a: int, b: int) -> int:
    """Return the sum of the two integers a and b."""
    return a + b


def shout(text: str) -> str:
    """Return the text in upper case, followed by an exclamation mark."""
    return text.upper() + "!"
'''

MODULE_B = '''
class Stack:
    def push(self, item):
        """Put the item on top of the stack and return the new size."""
        self.items.append(item)
        return len(self.items)


def mean(values: list[float]) -> float:
    """Return the arithmetic mean of a non-empty list of numbers."""
    return sum(values) / len(values)
'''


def local_code_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    (folder / "pkg").mkdir(parents=True)
    (folder / "a.py").write_text(MODULE_A)
    (folder / "pkg" / "b.py").write_text(MODULE_B)
    (folder / "pkg" / "empty.py").write_text("X = 1\n")
    return folder


def case_local_code_path(tmp_path):
    folder = local_code_folder(tmp_path)

    def change():
        (folder / "a.py").write_text(MODULE_A.replace("sum of the two", "total of both"))

    return DataConfig(source="local-code", path=str(folder)), None, change


def case_local_code_files(tmp_path):
    folder = local_code_folder(tmp_path)
    files = sorted(folder.rglob("*.py"))

    def change():
        (folder / "pkg" / "b.py").write_text(MODULE_B.replace("arithmetic mean", "average"))

    return DataConfig(source="local-code"), files, change


def case_git(tmp_path):
    repo = new_repo(tmp_path / "repo")
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Add an adder")
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n")
    git(repo, "commit", "-q", "-am", "Add subtraction")

    def change():
        (repo / "calc.py").write_text("def add(a, b):\n    return b + a\n")
        git(repo, "commit", "-q", "-am", "Swap the operands")

    return DataConfig(source="git", path=str(repo)), None, change


def write_oasst(copy, conversations):
    """bigcode/oasst-octopack's layout and schema: one conversation per line of oasst_octopack.jsonl."""
    folder = copy / "oasst-octopack"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"conversations": [{"text": text, "role": role} for role, text in messages], "lang": "en"}
            for messages in conversations]
    (folder / "oasst_octopack.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def case_commitpackft(tmp_path):
    """A local copy in the hub's layout: commitpackft/data/<language>/data.jsonl + oasst-octopack."""
    copy = tmp_path / "copy"
    python = copy / "commitpackft" / "data" / "python"
    python.mkdir(parents=True)
    rows = [
        {"commit": "a" * 40, "old_file": "x.py", "new_file": "x.py", "old_contents": "x = 1\n",
         "new_contents": "x = 2\n", "subject": "Set x", "message": "Set x to two", "lang": "Python",
         "license": "mit", "repos": "dev/x"},
        {"commit": "b" * 40, "old_file": "p.py", "new_file": "p.py", "old_contents": "",
         "new_contents": "print(1)\n", "subject": "Print one", "message": "Print one", "lang": "Python",
         "license": "mit", "repos": "dev/p"},
    ]
    data = python / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    write_oasst(copy, [[("user", "Say hi"), ("assistant", "hi")]])

    def change():
        rows[0]["subject"] = "Set x to 2"  # OctoPack's question is the subject (then the old file)
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))

    return DataConfig(source="commitpackft", path=str(copy)), None, change


def case_oasst(tmp_path):
    copy = tmp_path / "copy"
    conversations = [[("user", f"Question {n}?"), ("assistant", f"Answer {n}.")] for n in range(40)]
    write_oasst(copy, conversations)

    def change():
        write_oasst(copy, conversations[:-1])

    return DataConfig(source="oasst", path=str(copy)), None, change


def case_guanaco_commits(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "copy" / "guanaco-commits" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"prompt": ["Say hi", "Add one"], "completion": ["hi", "x + 1"]}),
                   folder / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"prompt": ["Say bye"], "completion": ["bye"]}), folder / "test-00000-of-00001.parquet")

    def change():
        pq.write_table(pa.table({"prompt": ["Say hello"], "completion": ["hello"]}),
                       folder / "test-00000-of-00001.parquet")

    return DataConfig(source="guanaco-commits", path=str(tmp_path / "copy")), None, change


# source name -> ways to run it offline: (config, files, a function that changes the data it mines)
SOURCE_CASES = {
    "local-code": {"path": case_local_code_path, "files": case_local_code_files},
    "git": {"repo": case_git},
    "commitpackft": {"local-copy": case_commitpackft},
    "guanaco-commits": {"local-copy": case_guanaco_commits},
    "oasst": {"local-copy": case_oasst},
}
SOURCE_RUNS = [(source, case) for source in SOURCES.names() for case in SOURCE_CASES.get(source, {"missing": None})]


def test_every_registered_source_has_an_offline_case():
    assert sorted(SOURCE_CASES) == sorted(SOURCES.names())


@pytest.mark.parametrize("name", SOURCES.names())
def test_source_takes_config_and_files(name):
    source = SOURCES.get(name)
    assert isinstance(source.drop_tail, bool)
    assert isinstance(source.needs_files(DataConfig(source=name)), bool)
    for method in ("identity", "splits"):
        function = getattr(source, method, None)
        assert callable(function), f"{name}.{method}"
        parameters = list(inspect.signature(function).parameters)
        assert parameters == ["config", "files"], f"{name}.{method}{parameters}"
        inspect.signature(function).bind(DataConfig(source=name), None)


@pytest.mark.parametrize(("name", "case"), SOURCE_RUNS)
def test_source_runs_offline(name, case, tmp_path, offline):
    assert case != "missing", f"no offline case for data source {name!r}"
    source = SOURCES.get(name)
    config, files, change = SOURCE_CASES[name][case](tmp_path)
    assert config.source == name

    identity = source.identity(config, files)
    assert isinstance(identity, dict) and identity
    assert json.loads(json.dumps(identity)) == identity, "identity must be plain JSON (it is part of a cache key)"
    assert source.identity(config, files) == identity, "identity must be deterministic"

    train, val = source.splits(config, files)
    assert train and val, "a split to train on and one to validate on"
    assert not set(train) & set(val) or name == "guanaco-commits", "an example is never on both sides"
    for example in train + val:
        assert isinstance(example, Example)
        assert isinstance(example.instruction, str) and example.instruction.strip()
        assert isinstance(example.response, str) and example.response.strip()
    assert source.splits(config, files) == (train, val), "splits must be deterministic"

    change()
    assert source.identity(config, files) != identity, "identity must change when the mined data changes"
    assert source.splits(config, files) != (train, val)


def test_local_code_mines_the_files_it_is_handed(tmp_path):
    source = SOURCES.get("local-code")
    folder = local_code_folder(tmp_path)
    by_path = source.examples(DataConfig(source="local-code", path=str(folder)), None)
    by_files = source.examples(DataConfig(source="local-code"), sorted(folder.rglob("*.py")))
    assert set(by_path) == set(by_files) and len(by_path) == 4
    only_a = source.examples(DataConfig(source="local-code"), [folder / "a.py"])
    assert {e.instruction.split("`")[1].split("(")[0] for e in only_a} == {"add", "shout"}


def test_unknown_data_source_names_the_valid_ones():
    from sweeper.space import load_space

    with pytest.raises(UserError) as err:
        load_space("micro", ["data.source=nope"])
    message = str(err.value)
    assert "'nope'" in message and all(name in message for name in SOURCES.names())


# -- evaluation tasks ---------------------------------------------------------------------------

LIMIT = 2
PASS = {"pass@1": LIMIT}
CHOICE = {"accuracy": LIMIT, "accuracy_norm": LIMIT, "nll": LIMIT}
YES_NO = {"accuracy": LIMIT, "macro_f1": LIMIT}
YES_NO_CALIBRATED = {**YES_NO, "accuracy_uncalibrated": LIMIT}
DETECTION = {"accuracy": LIMIT, "macro_f1": LIMIT, "valid_rate": LIMIT, "valid_accuracy": LIMIT, "valid_f1": LIMIT}
# task -> {metric: items it scores with `limit=LIMIT`, one sample each, on `VALID` below}
TASK_METRICS = {
    "humanevalsynthesize": PASS,
    "humanevalfix": PASS,
    "humanevalsynthesize-java": PASS,
    "humanevalfix-java": PASS,
    "humanevalexplain-java": PASS,
    "humanevalfix-mutated": PASS,
    "humanevalexplain": PASS,
    "robustness-proxy": {"robust_pass@1": LIMIT, "nominal_pass@1": LIMIT,
                   "perturbed_pass@1": LIMIT * len(PERTURBATIONS.names())},
    "humanevalsynthesize-ll": CHOICE,
    "humanevalfix-ll": CHOICE,
    "clone-detection-proxy": YES_NO,
    "defect-detection-proxy": YES_NO,
    "clone-detection-proxy-ll": YES_NO_CALIBRATED,
    "defect-detection-proxy-ll": YES_NO_CALIBRATED,
    "security-proxy": {"insecure_rate": LIMIT, "valid_rate": LIMIT},
    "humaneval-line-end": {"exact_match": LIMIT},
    "defect-detection": DETECTION,
    "clone-detection": DETECTION,
    # the first two DoW scenarios (CWE-502-0, CWE-502-2: Python, judged by bandit here), one completion each
    **{f"recode-{category.replace('_', '-')}": {"robust_pass@1": LIMIT, **{f"robust_pass@1/{name}": LIMIT
                                                                     for name in names}}
       for category, names in RECODE_PERTURBATIONS.items()},
    "aatk-dow": {"valid_rate": 2, "insecure_rate": 2, "valid_rate/DoW/CWE-502-0": 1, "insecure_rate/DoW/CWE-502-0": 1,
                 "valid_rate/DoW/CWE-502-2": 1, "insecure_rate/DoW/CWE-502-2": 1},
}
# Tasks whose data is not HumanEvalPack: a copy in the real files' schema (tests/codexglue_data.py).
AATK_SCENARIOS = PACK.parent.parent / "aatk" / "scenario_dow.jsonl.gz"
RECODE = PACK.parent.parent / "recode"
JAVA_PACK = PACK.parent / "java.jsonl.gz"
TASK_DATA = {"defect-detection": devign_folder, "clone-detection": bigclonebench_folder,
             "aatk-dow": lambda tmp_path: AATK_SCENARIOS,
             "humanevalsynthesize-java": lambda tmp_path: JAVA_PACK, "humanevalfix-java": lambda tmp_path: JAVA_PACK,
             "humanevalexplain-java": lambda tmp_path: JAVA_PACK,
             **{name: (lambda tmp_path: RECODE) for name in TASKS.names() if name.startswith("recode-")}}


class ScriptedLM:
    """A test double of `LanguageModel`: one fixed completion for every prompt, a length-based
    log-likelihood for every continuation; records which of the two a task asked for."""

    def __init__(self, completion: str):
        self.completion = completion
        self.calls: set[str] = set()

    def generate(self, prompts, *, n, temperature, max_new_tokens, stop, max_prompt_tokens=None):
        self.calls.add("generate")
        assert n >= 1 and max_new_tokens >= 1 and temperature >= 0
        return [[self.completion] * n for _ in prompts]

    def loglikelihood(self, requests):
        self.calls.add("loglikelihood")
        return [(-0.5 * len(continuation), max(1, len(continuation))) for _, continuation in requests]


VALID = "\n    return None\n"  # parses after every prompt (fails every test)
GARBAGE = "\n    return (\n"  # parses nowhere


@pytest.fixture(scope="module")
def sandbox():
    from sweeper.evals.sandbox import Sandbox

    with Sandbox(allow_weak=True) as box:  # the checks here do not depend on the isolation level
        yield box


def test_every_registered_task_has_a_case():
    assert sorted(TASK_METRICS) == sorted(TASKS.names())


@pytest.mark.parametrize("name", TASKS.names())
def test_task_declares_what_the_base_class_requires(name):
    task_class = TASKS.get(name)
    assert inspect.isclass(task_class) and issubclass(task_class, Task)
    assert not inspect.isabstract(task_class), f"{name}: abstract methods {task_class.__abstractmethods__}"
    assert task_class.name == name
    summary = task_class.summary
    assert isinstance(summary, str) and summary.strip() and "\n" not in summary, "one line for --help"
    assert (name.endswith("-ll")) == summary.startswith("likelihood:"), summary
    task = task_class()  # tasks hold no state: built without arguments
    assert callable(task.evaluate) and callable(task.score)
    others = [TASKS.get(other).summary for other in TASKS.names() if other != name]
    assert summary not in others


@pytest.fixture(scope="module")
def jvm():
    """The JVM sandbox, for the Java tasks; None where bubblewrap or a JDK is missing (they are skipped)."""
    from sweeper.evals.jvm_sandbox import JvmSandbox

    box = JvmSandbox()
    try:
        box.start()
    except UserError:
        yield None
        return
    yield box
    box.close()


def run_task(name, lm, sandbox, tmp_path, jvm=None):
    """Evaluate the task offline on `lm`; a task that needs data gets a copy (HumanEvalPack's own bugs: the
    shared one; CodeXGLUE's: one in its schema)."""
    language = getattr(TASKS.get(name), "language", None)
    if language is not None and language.runner == "jvm" and jvm is None:
        pytest.skip(f"{name} needs the JVM sandbox (bubblewrap and a JDK)")
    ctx = Context(sandbox, n_samples=1, temperature=0.0, limit=LIMIT, max_new_tokens=32, jvm=jvm)
    try:
        return ctx, TASKS.get(name)().evaluate(lm, ctx)
    except UserError as err:
        if "--data" not in str(err):
            raise
    if name in TASK_DATA:
        data = TASK_DATA[name](tmp_path)
    elif PACK.is_file():
        data = PACK
    else:
        pytest.skip(f"{name} needs HumanEvalPack, and the shared copy {PACK} is not present")
    ctx = Context(sandbox, n_samples=1, temperature=0.0, limit=LIMIT, max_new_tokens=32, data=data, jvm=jvm)
    return ctx, TASKS.get(name)().evaluate(lm, ctx)


@pytest.mark.parametrize("completion", [VALID, GARBAGE], ids=["valid", "garbage"])
@pytest.mark.parametrize("name", TASKS.names())
def test_task_runs_end_to_end_on_a_scripted_model(name, completion, sandbox, jvm, offline, tmp_path):
    assert name in TASK_METRICS, f"no expected metrics for task {name!r}"
    lm = ScriptedLM(completion)
    ctx, result = run_task(name, lm, sandbox, tmp_path, jvm)
    assert isinstance(result, TaskResult)
    # Likelihood variants rank fixed answers; the others sample.
    assert lm.calls == ({"loglikelihood"} if name.endswith("-ll") else {"generate"})

    assert all(isinstance(metric, Metric) for metric in result.metrics)
    names = [metric.name for metric in result.metrics]
    assert len(set(names)) == len(names)
    expected = TASK_METRICS[name]
    assert set(names) == set(expected)
    for metric in result.metrics:
        assert isinstance(metric.value, float | int) and not isinstance(metric.value, bool), metric
        assert isinstance(metric.n, int) and 0 <= metric.n <= expected[metric.name], metric
        assert not math.isinf(metric.value), metric
        assert math.isnan(metric.value) == (metric.n == 0), f"NaN exactly when nothing was scored: {metric}"
        if metric.k is not None:
            # `pass@1`, or a breakdown of it such as ReCode's `robust_pass@1/<perturbation>`
            assert 1 <= metric.k <= ctx.n_samples and metric.name.split("/")[0].endswith(f"@{metric.k}"), metric
        if completion == VALID:
            assert metric.n == expected[metric.name], metric

    task = TASKS.get(name)()
    json.dumps(result.details)
    json.dumps(result.artifacts)
    if result.generations is not None:
        assert isinstance(result.generations, list) and result.generations
        assert all(isinstance(samples, list) and len(samples) == ctx.n_samples and
                   all(isinstance(s, str) for s in samples) for samples in result.generations)
        items = task.items(ctx) if isinstance(task, ProgramTask) else None
        # one entry per item generated for: a program task's items, else the rows a task reports, else its items scored
        generated = len(items) if items is not None else result.details.get("rows", max(m.n for m in result.metrics))
        assert len(result.generations) == generated

    # What `sweeper eval score` does: a task that scores saved generations gives the same metrics again;
    # a task scored while generating says so.
    if type(task).score is Task.score:
        with pytest.raises(UserError, match=name):
            task.score([["x"]] * LIMIT, ctx)
    else:
        assert result.generations is not None
        again = task.score(result.generations, ctx)
        assert [(m.name, m.n, m.k) for m in again.metrics] == [(m.name, m.n, m.k) for m in result.metrics]
        assert all(a.value == b.value or (math.isnan(a.value) and math.isnan(b.value))
                   for a, b in zip(again.metrics, result.metrics, strict=True))


CHOICE_TASKS = [name for name in TASKS.names() if issubclass(TASKS.get(name), ChoiceTask)]
@pytest.mark.parametrize(("name", "limit"), [(name, limit) for name in CHOICE_TASKS for limit in (1, LIMIT)])
def test_choice_items_rank_distinct_answers(name, limit, sandbox, offline):
    """A tie between the right answer and a copy of it counts as right (the first maximum wins)."""
    items = TASKS.get(name)().choices(Context(sandbox, limit=limit))  # offline: injected bugs
    assert items
    for item in items:
        assert len(item.options) >= 2 and 0 <= item.answer < len(item.options)
        assert len(set(item.options)) == len(item.options), item.context[-80:]


def test_every_security_scenario_accepts_a_valid_completion():
    """`VALID` parses after every scenario's code: otherwise no completion of it can count as valid."""
    import ast

    from sweeper.evals.tasks.security import SCENARIOS

    broken = []
    for scenario in SCENARIOS:
        try:
            ast.parse(scenario.code.rstrip() + VALID)
        except SyntaxError:
            broken.append(scenario.signature)
    assert broken == []
