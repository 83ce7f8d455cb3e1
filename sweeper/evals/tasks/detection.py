"""Stand-ins for the paper's code-comprehension benchmarks (the real ones: `codexglue`), as YES/NO questions.

Offline, built from HumanEval (BigCloneBench and Devign are Java and C and need a download); the micro
study's signal where the real benchmarks give none at that size, never the paper's numbers:
- `clone-detection-proxy`: two functions, both renamed `func` with docstrings removed. Clones: a canonical
  solution and its variable-renamed variant (both pass the tests, see `sweeper.evals.perturb`). Not
  clones: a canonical solution and the renamed variant of another problem's. Half and half.
- `defect-detection-proxy`: a prompt (the docstring is the specification) with its canonical solution (no
  defect) or its bug (HumanEvalPack's with `--data`, else an injected one that fails the tests).

Prompts follow bigcode-evaluation-harness's instruct CodeXGLUE tasks in the OctoPack format. The
generative variants parse the first line of a greedy answer (YES / NO; anything else is wrong); the
`-ll` variants compare the log-likelihoods of "YES" and "NO" after the prompt. Metrics: accuracy and
macro-F1 over the two classes.
"""

from __future__ import annotations

import re
from abc import abstractmethod

from sweeper.data import octopack_prompt
from sweeper.evals.decoding import Decoding, sample
from sweeper.evals.lm import LanguageModel
from sweeper.evals.metrics import binary_scores
from sweeper.evals.perturb import variable_rename
from sweeper.evals.problems import Problem
from sweeper.evals.tasks.base import TASKS, Context, Task, TaskResult
from sweeper.evals.tasks.humanevalpack import problems_with_bugs

ANSWERS = ("\nNO", "\nYES")  # index = label: 0 = no, 1 = yes; OctoPack answers start on a new line
ANSWER_TOKENS = 8
# One greedy answer per question, as the real detection tasks (codexglue.DETECTION_DECODING).
YES_NO_DECODING = Decoding(n_samples=1, temperature=0.0, max_length=None, max_new_tokens=ANSWER_TOKENS,
                           stop=("\nQuestion:", "<|endoftext|>"), fixed_sampling=True,
                           source="sweeper proxy: greedy, n 1, like the paper's detection tasks")


def parse_yes_no(text: str) -> int | None:
    """bigcode's CodeXGLUE parsing: the first sentence says yes or no, not both."""
    first = text.strip().lower().replace(",", ".").split(".")[0]
    yes, no = bool(re.search(r"\byes\b", first)), bool(re.search(r"\bno\b", first))
    return 1 if yes and not no else 0 if no and not yes else None


def plain_function(problem: Problem) -> str:
    """The solution as a bare function named `func`: no docstring, no name to give the problem away."""
    code = problem.declaration + problem.canonical_solution
    return re.sub(rf"\b{re.escape(problem.entry_point)}\b", "func", code).strip()


class YesNoTask(Task):
    @abstractmethod
    def questions(self, ctx: Context) -> list[tuple[str, int]]:
        """(prompt, label) pairs; label 1 = the right answer is YES."""

    decoding = YES_NO_DECODING

    def evaluate(self, lm: LanguageModel, ctx: Context) -> TaskResult:
        questions = self.questions(ctx)
        answers = sample(lm, [prompt for prompt, _ in questions], ctx.decoding(self.decoding))
        predictions = [parse_yes_no(answer[0]) for answer in answers]
        parsed = sum(p is not None for p in predictions) / len(predictions)
        return TaskResult(
            binary_scores(predictions, [label for _, label in questions]),
            generations=[answer for answer in answers], details={"answered_yes_or_no": parsed},
        )


class YesNoLikelihood(Task):
    """The same questions, answered by comparing log p("YES") and log p("NO") after the prompt."""

    base: type[YesNoTask]

    def evaluate(self, lm: LanguageModel, ctx: Context) -> TaskResult:
        questions = self.base().questions(ctx)
        scores = iter(lm.loglikelihood([(prompt, answer) for prompt, _ in questions for answer in ANSWERS]))
        predictions = []
        for _ in questions:
            no, yes = next(scores)[0], next(scores)[0]
            predictions.append(1 if yes > no else 0)
        return TaskResult(binary_scores(predictions, [label for _, label in questions]))


@TASKS.register("clone-detection-proxy")
class CloneDetection(YesNoTask):
    name = "clone-detection-proxy"
    summary = "stand-in for BigCloneBench, offline: are two HumanEval functions clones; accuracy, macro-F1"

    def questions(self, ctx: Context) -> list[tuple[str, int]]:
        problems = ctx.problems()
        variants = [plain_function(variable_rename(p)) for p in problems]
        questions = []
        for index, problem in enumerate(problems):
            clone = index % 2 == 0  # alternate so that both classes are equally frequent
            other = variants[index] if clone else variants[(index + len(problems) // 2) % len(problems)]
            question = (
                f"Code1: {plain_function(problem)}.\nCode2: {other}.\n"
                "Is there a clone relation between the Code1 and Code2, and respond to YES or NO."
            )
            questions.append((octopack_prompt(question), int(clone)))
        return questions


@TASKS.register("defect-detection-proxy")
class DefectDetection(YesNoTask):
    name = "defect-detection-proxy"
    summary = "stand-in for Devign, offline: is a HumanEval solution the buggy one; accuracy, macro-F1"

    def questions(self, ctx: Context) -> list[tuple[str, int]]:
        questions = []
        for index, problem in enumerate(problems_with_bugs(ctx)):
            buggy = index % 2 == 1
            code = problem.prompt + (problem.buggy_solution if buggy else problem.canonical_solution)
            question = f"Code: {code.strip()}.\nIs there a defect in the Code, and respond to YES or NO."
            questions.append((octopack_prompt(question), int(buggy)))
        return questions


@TASKS.register("clone-detection-proxy-ll")
class CloneDetectionLikelihood(YesNoLikelihood):
    name = "clone-detection-proxy-ll"
    summary = "likelihood: clone-detection-proxy answered by log p(YES) vs. log p(NO); accuracy and macro-F1"
    base = CloneDetection


@TASKS.register("defect-detection-proxy-ll")
class DefectDetectionLikelihood(YesNoLikelihood):
    name = "defect-detection-proxy-ll"
    summary = "likelihood: defect-detection-proxy answered by log p(YES) vs. log p(NO); accuracy and macro-F1"
    base = DefectDetection
