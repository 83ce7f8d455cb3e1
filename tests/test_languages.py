"""HumanEvalPack in Python and Java: prompts, stop words, cutting and the executed program as the harness
builds them (bigcode-evaluation-harness tasks/humanevalpack.py, octocoder prompt), on the real data."""

import gzip
import json
import shutil

import pytest

from sweeper.core.errors import UserError
from sweeper.core.paths import PROJECT_ROOT
from sweeper.evals.languages import LANGUAGES
from sweeper.evals.tasks import TASKS
from sweeper.evals.tasks.base import Context
from sweeper.evals.tasks.humanevalpack import fix_item, synthesize_item

SHARED = PROJECT_ROOT.parent / "shared" / "data" / "humanevalpack"
JAVA_PACK = SHARED / "java.jsonl.gz"
PYTHON_PACK = SHARED / "python.jsonl.gz"
needs_java_data = pytest.mark.skipif(not JAVA_PACK.is_file(), reason=f"{JAVA_PACK} is not present")
needs_jvm = pytest.mark.skipif(shutil.which("bwrap") is None or shutil.which("javac") is None,
                               reason="the JVM sandbox needs bubblewrap and a JDK")
JAVA = LANGUAGES.get("java")
PYTHON = LANGUAGES.get("python")


def java_problems(limit=None):
    return Context(sandbox=None, data=JAVA_PACK, limit=limit).problems(language=JAVA)


def test_the_two_languages_astraios_evaluated_are_registered():
    assert LANGUAGES.names() == ["python", "java"]
    assert PYTHON.stop == ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\nassert", "<|endoftext|>")
    assert JAVA.stop == ("<|endoftext|>",)  # the harness's Java list is empty; it appends end of text
    assert TASKS.get("humanevalsynthesize-java").decoding.stop == JAVA.stop
    assert TASKS.get("humanevalsynthesize").decoding.stop == PYTHON.stop


@needs_java_data
def test_java_prompts_are_the_harness_octocoder_prompts():
    problem = java_problems()[0]
    assert problem.task_id == "Java/0"
    assert synthesize_item(problem).prompt == f"Question: {problem.instruction.strip()}\n\nAnswer:\n{problem.prompt}".strip()
    context = problem.declaration + problem.buggy_solution + "\n" + problem.test
    expected = f"Question: Fix bugs in {problem.entry_point}.\n{context}\n\nAnswer:\n{problem.declaration}".strip()
    assert fix_item(problem).prompt == expected


@needs_java_data
def test_java_explain_asks_for_java_and_never_shows_the_javadoc():
    from sweeper.evals.tasks.explain import describe_prompt, synthesize_prompt

    problem = java_problems()[0]
    assert describe_prompt(problem).endswith(problem.declaration + problem.canonical_solution.rstrip() + "\n\nAnswer:")
    prompt = synthesize_prompt(problem, "Say whether two numbers are close.", JAVA)
    assert prompt == ("Question: Write functional code in Java according to the description.\nSay whether two numbers "
                      f"are close.\n\nAnswer:\n{problem.declaration}").rstrip()
    assert "Check if in given list" not in prompt  # the Javadoc's text


@needs_java_data
def test_java_completions_are_cut_where_the_class_closes():
    problems = java_problems()
    for problem in problems:
        trailing = "\n\npublic class Main {\n    public static void main(String[] a) {}\n}\n"
        sample = JAVA.finish(problem.prompt, problem.canonical_solution + trailing)
        assert sample == problem.prompt.rstrip() + problem.canonical_solution.rstrip(), problem.task_id
    prompt = problems[0].prompt
    # Unclosed, as the harness's remove_last_block leaves it (it counts the completion's braces only): kept up
    # to the last brace, cut before a main method the model began, closed when one `{` of its own is open.
    assert JAVA.finish(prompt, "\n        return true;\n    }") == prompt.rstrip() + "\n        return true;\n    }"
    opened = "\n        return true;\n    }\n    public static void main(String[] a) {\n"
    assert JAVA.finish(prompt, opened) == prompt.rstrip() + "\n        return true;\n    }\n    }"
    assert JAVA.finish(prompt, "\n        if (x) {\n            return 1;") == (
        prompt.rstrip() + "\n        if (x) {\n            return 1;\n}")
    assert JAVA.finish(prompt, "\n        return 1;<|endoftext|>}}") == prompt.rstrip() + "\n        return 1;"


def test_python_cutting_is_unchanged():
    prefix = "def f(x):\n    "
    assert PYTHON.finish(prefix, "\n    return x\n\ndef g():\n    pass") == "def f(x):\n    return x\n"
    assert PYTHON.finish(prefix, "\n    return x\nprint(f(1))") == "def f(x):\n    return x"


@needs_java_data
def test_the_java_program_is_code_eval_octopacks():
    problem = java_problems()[0]
    sample = problem.prompt + problem.canonical_solution + "\npublic class Main {\n    }"
    program = JAVA.executable(sample, problem.test)
    assert program == (problem.prompt + problem.canonical_solution).strip() + "\n" + problem.test


@needs_java_data
def test_a_python_split_given_to_a_java_task_is_refused():
    if not PYTHON_PACK.is_file():
        pytest.skip(f"{PYTHON_PACK} is not present")
    with pytest.raises(UserError, match="expected HumanEvalPack's java split"):
        Context(sandbox=None, data=PYTHON_PACK).problems(language=JAVA)


@needs_jvm
@needs_java_data
@pytest.mark.timeout(120)
def test_java_synthesize_and_fix_score_canonical_and_buggy_programs(run_cli, tmp_path):
    """`sweeper eval score` on Java generations: canonical programs pass, the human-written bugs fail."""
    with gzip.open(JAVA_PACK, "rt") as f:
        rows = [json.loads(line) for line in f][:4]  # the first four problems, as their own HumanEvalPack file
    data = tmp_path / "java.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    canonical = [[r["prompt"].rstrip() + r["canonical_solution"]] for r in rows]
    buggy = [[r["declaration"].rstrip() + r["buggy_solution"]] for r in rows]
    for task, generations, expected in (("humanevalsynthesize-java", canonical, 1.0),
                                        ("humanevalfix-java", buggy, 0.0)):
        path = tmp_path / f"{task}.json"
        path.write_text(json.dumps(generations))
        code, out, err = run_cli("eval", "score", "--task", task, "--generations", str(path), "--data", str(data),
                                 "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["metrics"] == [{"metric": "pass@1", "value": expected, "n": 4, "k": 1}]
        assert report["settings"]["jvm_sandbox"]["runner"].startswith("javac + java")
        assert report["settings"]["sandbox"] is None  # no Python sandbox started for Java
        assert sum(report["outcomes"].values()) == 4


def test_java_rows_of_the_released_shape_load():
    if not JAVA_PACK.is_file():
        pytest.skip(f"{JAVA_PACK} is not present")
    with gzip.open(JAVA_PACK, "rt") as f:
        rows = [json.loads(line) for line in f]
    problems = java_problems()
    assert len(problems) == len(rows) == 164
    assert all(p.buggy_solution and p.task_id == f"Java/{i}" for i, p in enumerate(problems))
