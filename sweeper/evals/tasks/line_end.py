"""`humaneval-line-end`: a sweeper task, not a paper benchmark. Finish one line of a HumanEval solution.

A generative signal scored by exact match, for the micro models, whose likelihood-ranked tasks measure
much what their training loss measures. For each of the first `limit` problems, one item: the OctoPack
prompt of HumanEvalSynthesize (`octopack_prompt(instruction, answer start)`), the answer start being
the problem's prompt, the canonical solution's lines before the target line, and the target line up
to its closing run (the brackets and colon that end it, e.g. `for n in numbers` -> `:`, `len(numbers`
-> `)`). The model writes greedily until the end of the line; the item passes when what it wrote
equals the closing run (trailing whitespace stripped). Metric: `exact_match` (a whitespace-blind
variant scored the same on all 28 cells of the micro grid, so it is not reported).

Why the end of a line and not the whole next line: on the micro ladder (xs ... l, pretrained on the
standard library), greedy whole lines of HumanEval matched 0 of 164 problems at every scale for every
rule tried (first line of the solution, first with >= 8 characters, second, last, last `return`),
and the rest of a line after its first word matched at most 1 of 164. The closing run matched 5 of
156 problems for xs and 22 of 156 for l: above zero, far from saturated, and rising with scale; it
asks for bracket matching and Python's statement syntax in context, which the micro models are
learning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sweeper.data import octopack_prompt
from sweeper.evals.decoding import Decoding, sample
from sweeper.evals.lm import LanguageModel
from sweeper.evals.metrics import Metric
from sweeper.evals.problems import Problem
from sweeper.evals.tasks.base import TASKS, Context, Task, TaskResult, check_generations

CLOSING_RUN = re.compile(r"[)\]}:]+$")  # the brackets and colon at the end of a line of code
# Closing runs are 1-4 characters (1-3 tokens): 8 new tokens let a model show it writes more than that.
LINE_END_DECODING = Decoding(n_samples=1, temperature=0.0, max_length=None, max_new_tokens=8, stop=("\n",),
                             fixed_sampling=True, source="sweeper humaneval-line-end: greedy, n 1, one line")


@dataclass(frozen=True)
class LineEnd:
    prompt: str
    target: str  # what the model must write after the (right-stripped) prompt to end the line


def line_end_item(problem: Problem) -> LineEnd | None:
    """The item of the solution's first line that ends in a closing run after some code (a line that
    is only a closing bracket gives nothing to close); None when no line does."""
    lines = problem.canonical_solution.splitlines(keepends=True)
    for index, line in enumerate(lines):
        code = line.rstrip()
        match = CLOSING_RUN.search(code)
        head = code[: match.start()].rstrip() if match else ""
        if match and head.strip():
            question = problem.instruction.strip()
            prompt = octopack_prompt(question, problem.prompt + "".join(lines[:index]) + head)
            return LineEnd(prompt, code[len(head):])
    return None


def written_line(completion: str) -> str:
    """The rest of the line the completion writes: up to its first line break, trailing space removed."""
    return completion.split("\n", 1)[0].rstrip()


def line_end_metrics(written: list[str], targets: list[str]) -> list[Metric]:
    if len(written) != len(targets) or not targets:
        raise ValueError("written lines and targets must be non-empty and of equal length")
    exact = sum(w == t for w, t in zip(written, targets, strict=True))
    return [Metric("exact_match", exact / len(targets), len(targets))]


@TASKS.register("humaneval-line-end")
class LineEndTask(Task):
    name = "humaneval-line-end"
    summary = ("sweeper task, not a paper benchmark: finish a line of a HumanEval solution (its closing "
               "brackets/colon) after the synthesize prompt, greedy; exact match")
    decoding = LINE_END_DECODING

    def items(self, ctx: Context) -> list[LineEnd]:
        return [item for item in map(line_end_item, ctx.problems()) if item is not None]

    def evaluate(self, lm: LanguageModel, ctx: Context) -> TaskResult:
        generations = sample(lm, [item.prompt for item in self.items(ctx)], ctx.decoding(self.decoding))
        return self.score(generations, ctx)

    def score(self, generations: list[list[str]], ctx: Context) -> TaskResult:
        items = self.items(ctx)
        check_generations(generations, len(items), self.name)
        written = [written_line(samples[0]) for samples in generations]
        distinct = len(set(written))
        return TaskResult(line_end_metrics(written, [item.target for item in items]), generations,
                          details={"distinct_answers": distinct})
