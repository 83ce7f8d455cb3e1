"""`humaneval-line-end`: items from HumanEval's canonical solutions, line cutting, exact-match scores."""

import pytest

from sweeper.core.errors import UserError
from sweeper.data import octopack_prompt
from sweeper.evals.problems import load_humaneval
from sweeper.evals.sandbox import Sandbox
from sweeper.evals.tasks import TASKS, Context
from sweeper.evals.tasks.line_end import line_end_item, line_end_metrics, written_line


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(allow_weak=True) as box:  # not used to run anything: Context needs one
        yield box


class ScriptedLM:
    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def generate(self, prompts, *, n, temperature, max_new_tokens, stop, max_prompt_tokens=None):
        self.calls.append((n, temperature, max_new_tokens, tuple(stop)))
        return [[self.answer(p)] * n for p in prompts]


def test_the_item_closes_the_solutions_first_line_that_ends_in_brackets_or_a_colon():
    problem = load_humaneval()[0]  # solution: "    for idx, elem in enumerate(numbers):\n ..."
    item = line_end_item(problem)
    assert item.target == "):"
    head = "    for idx, elem in enumerate(numbers"
    assert item.prompt == octopack_prompt(problem.instruction.strip(), problem.prompt + head)
    assert item.prompt.startswith("Question: Write a Python function `has_close_elements(")


def test_every_item_is_a_line_of_the_canonical_solution():
    problems = load_humaneval()
    items = [line_end_item(p) for p in problems]
    assert sum(item is not None for item in items) >= 150
    for problem, item in zip(problems, items, strict=True):
        if item is None:
            continue
        answer = item.prompt.split("\n\nAnswer:\n", 1)[1]
        program = problem.prompt + problem.canonical_solution
        assert program.startswith(answer + item.target), problem.task_id
        assert program[len(answer + item.target):].lstrip(" ").startswith("\n"), problem.task_id  # the line's end
        assert 1 <= len(item.target) <= 4 and item.target.strip(")]}: ") == "", item.target


def test_a_line_that_is_only_a_bracket_gives_no_item():
    problem = load_humaneval()[0]
    from dataclasses import replace

    assert line_end_item(replace(problem, canonical_solution="    return [\n        1,\n    ]\n")) is None


def test_written_line_and_scores():
    assert written_line("):  \n        x = 1\n") == "):"
    assert written_line("") == ""
    [exact] = line_end_metrics(["):", ") :", "]", ""], ["):", "):", ")", ")"])
    assert (exact.name, exact.value, exact.n) == ("exact_match", 0.25, 4)
    with pytest.raises(ValueError):
        line_end_metrics([], [])


def test_the_task_samples_one_greedy_line_and_scores_it(sandbox):
    ctx = Context(sandbox, n_samples=5, temperature=0.8, limit=6)
    task = TASKS.get("humaneval-line-end")()
    targets = {item.prompt: item.target for item in task.items(ctx)}
    right = ScriptedLM(lambda prompt: targets[prompt] + "\n        more code\n")
    result = task.evaluate(right, ctx)
    assert {m.name: m.value for m in result.metrics} == {"exact_match": 1.0}
    assert right.calls == [(1, 0.0, 8, ("\n",))]  # fixed sampling: the run's n and temperature are not taken
    wrong = task.evaluate(ScriptedLM(lambda prompt: "."), ctx)
    assert [m.value for m in wrong.metrics] == [0.0] and wrong.details == {"distinct_answers": 1}
    assert task.score(result.generations, ctx).metrics == result.metrics
    assert len(targets) == 5  # Python/2's solution (`return number % 1.0`) closes nothing: no item
    with pytest.raises(UserError, match="humaneval-line-end: expected generations for 5 problems, got 1"):
        task.score([["x"]], ctx)
