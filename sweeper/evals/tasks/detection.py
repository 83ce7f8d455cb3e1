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
`-ll` variants compare the log-likelihoods of "YES" and "NO" after the prompt, contextually calibrated
(Zhao et al. 2021, "Calibrate Before Use", arXiv 2102.09690): uncalibrated, every micro model gave the
same answer to every pair (accuracy 0.5 on all 28 cells), a prior of the model, not a judgment of the
code. Metrics: accuracy and macro-F1 over the two classes.
"""

from __future__ import annotations

import math
import re
import string
from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from sweeper.data import octopack_prompt
from sweeper.evals.decoding import Decoding, sample
from sweeper.evals.lm import LanguageModel
from sweeper.evals.metrics import Metric, binary_scores
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


# Content-free inputs of Zhao et al. 2021 (section 4): each code field of the question replaced by one
# of them; the answers' distribution after these is the model's prior, averaged over the three.
CONTENT_FREE = ("N/A", "", "[MASK]")


class YesNoTask(Task):
    """A YES/NO question per item: `template` (str.format fields, each a piece of code) filled with
    each item's code, in the OctoPack prompt. Keeping template and content apart lets the `-ll`
    variants ask the same question about no code at all (contextual calibration)."""

    template: ClassVar[str]
    decoding = YES_NO_DECODING

    @abstractmethod
    def contents(self, ctx: Context) -> list[tuple[dict[str, str], int]]:
        """(the template's fields, label) per item; label 1 = the right answer is YES."""

    def prompt(self, fields: dict[str, str]) -> str:
        return octopack_prompt(self.template.format(**fields))

    def questions(self, ctx: Context) -> list[tuple[str, int]]:
        """(prompt, label) pairs; label 1 = the right answer is YES."""
        return [(self.prompt(fields), label) for fields, label in self.contents(ctx)]

    def content_free_prompts(self) -> list[str]:
        """The question with every code field replaced by each content-free input."""
        names = [name for _, name, _, _ in string.Formatter().parse(self.template) if name]
        return [self.prompt(dict.fromkeys(names, filler)) for filler in CONTENT_FREE]

    def evaluate(self, lm: LanguageModel, ctx: Context) -> TaskResult:
        questions = self.questions(ctx)
        answers = sample(lm, [prompt for prompt, _ in questions], ctx.decoding(self.decoding))
        predictions = [parse_yes_no(answer[0]) for answer in answers]
        parsed = sum(p is not None for p in predictions) / len(predictions)
        return TaskResult(
            binary_scores(predictions, [label for _, label in questions]),
            generations=[answer for answer in answers], details={"answered_yes_or_no": parsed},
        )


def two_way(log_no: float, log_yes: float) -> tuple[float, float]:
    """log (p_NO, p_YES) normalised over the two answers (a two-way softmax of their log-likelihoods)."""
    top = max(log_no, log_yes)
    total = top + math.log(math.exp(log_no - top) + math.exp(log_yes - top))
    return log_no - total, log_yes - total


def content_free_prior(normalised: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """log of the mean two-way distribution over the content-free inputs (Zhao et al.'s p_cf)."""
    if not normalised:
        raise ValueError("no content-free scores to average")
    return _log_mean_exp([no for no, _ in normalised]), _log_mean_exp([yes for _, yes in normalised])


def _log_mean_exp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values))


def calibrated_answer(normalised: tuple[float, float], prior: tuple[float, float]) -> int:
    """Zhao et al. 2021 eq. 1 with W = diag(p_cf)^-1, b = 0: the argmax of p / p_cf (in logs, which
    keeps priors near 0 finite); 1 = YES. A tie is NO, as the uncalibrated comparison (yes > no)."""
    return int(normalised[1] - prior[1] > normalised[0] - prior[0])


class YesNoLikelihood(Task):
    """The same questions, answered by comparing p("YES") and p("NO") after the prompt, each divided by
    its probability after the content-free questions. `accuracy_uncalibrated` (yes > no) shows what
    the calibration changed; the details give the prior and the share of YES answers either way."""

    base: type[YesNoTask]
    version = 2  # 1: uncalibrated (yes > no)

    def evaluate(self, lm: LanguageModel, ctx: Context) -> TaskResult:
        task = self.base()
        questions, free = task.questions(ctx), task.content_free_prompts()
        prompts = [prompt for prompt, _ in questions] + free
        scores = iter(lm.loglikelihood([(prompt, answer) for prompt in prompts for answer in ANSWERS]))
        normalised = [two_way(next(scores)[0], next(scores)[0]) for _ in prompts]
        real, prior = normalised[: len(questions)], content_free_prior(normalised[len(questions) :])
        labels = [label for _, label in questions]
        calibrated = [calibrated_answer(p, prior) for p in real]
        uncalibrated = [int(yes > no) for no, yes in real]
        accuracy = binary_scores(uncalibrated, labels)[0]
        details = {"content_free_prior": {"NO": math.exp(prior[0]), "YES": math.exp(prior[1])},
                   "content_free_inputs": list(CONTENT_FREE),
                   "yes_share": sum(calibrated) / len(calibrated),
                   "yes_share_uncalibrated": sum(uncalibrated) / len(uncalibrated)}
        return TaskResult([*binary_scores(calibrated, labels),
                           Metric("accuracy_uncalibrated", accuracy.value, accuracy.n)], details=details)


@TASKS.register("clone-detection-proxy")
class CloneDetection(YesNoTask):
    name = "clone-detection-proxy"
    summary = "stand-in for BigCloneBench, offline: are two HumanEval functions clones; accuracy, macro-F1"

    template = ("Code1: {code1}.\nCode2: {code2}.\n"
                "Is there a clone relation between the Code1 and Code2, and respond to YES or NO.")

    def contents(self, ctx: Context) -> list[tuple[dict[str, str], int]]:
        problems = ctx.problems()
        variants = [plain_function(variable_rename(p)) for p in problems]
        contents = []
        for index, problem in enumerate(problems):
            clone = index % 2 == 0  # alternate so that both classes are equally frequent
            other = variants[index] if clone else variants[(index + len(problems) // 2) % len(problems)]
            contents.append(({"code1": plain_function(problem), "code2": other}, int(clone)))
        return contents


@TASKS.register("defect-detection-proxy")
class DefectDetection(YesNoTask):
    name = "defect-detection-proxy"
    summary = "stand-in for Devign, offline: is a HumanEval solution the buggy one; accuracy, macro-F1"

    template = "Code: {code}.\nIs there a defect in the Code, and respond to YES or NO."

    def contents(self, ctx: Context) -> list[tuple[dict[str, str], int]]:
        contents = []
        for index, problem in enumerate(problems_with_bugs(ctx)):
            buggy = index % 2 == 1
            code = problem.prompt + (problem.buggy_solution if buggy else problem.canonical_solution)
            contents.append(({"code": code.strip()}, int(buggy)))
        return contents


@TASKS.register("clone-detection-proxy-ll")
class CloneDetectionLikelihood(YesNoLikelihood):
    name = "clone-detection-proxy-ll"
    summary = ("likelihood: clone-detection-proxy answered by p(YES) vs. p(NO), contextually calibrated "
               "(Zhao et al. 2021); accuracy and macro-F1")
    base = CloneDetection


@TASKS.register("defect-detection-proxy-ll")
class DefectDetectionLikelihood(YesNoLikelihood):
    name = "defect-detection-proxy-ll"
    summary = ("likelihood: defect-detection-proxy answered by p(YES) vs. p(NO), contextually calibrated "
               "(Zhao et al. 2021); accuracy and macro-F1")
    base = DefectDetection
