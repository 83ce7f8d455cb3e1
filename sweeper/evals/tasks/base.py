"""The shape every downstream task has, and the registry they live in.

A task turns problems into model requests and scores the answers. Three shapes cover the study:
- `ProgramTask`: sample programs, run them with their tests in the sandbox, report pass@k. Its
  generations (a list per item of whole programs, bigcode-evaluation-harness format) can be scored
  again later without the model (`sweeper eval score`).
- `ChoiceTask`: rank fixed answers by log-likelihood (lm-evaluation-harness's multiple choice), the
  graded signal that micro models still give when they solve nothing.
- anything else overrides `evaluate` (explain's two stages, security's static analysis, YES/NO).

Prompts use the OctoPack format `Question: ...\\n\\nAnswer:\\n...` (bigcode-evaluation-harness's
"octocoder" prompt), which is how the Astraios models were instruction-tuned.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from sweeper.core.errors import UserError
from sweeper.core.registry import Registry
from sweeper.evals.decoding import Decoding, DecodingOverrides, sample
from sweeper.evals.languages import LANGUAGES, Language
from sweeper.evals.lm import LanguageModel
from sweeper.evals.metrics import Metric, pass_at_k_metrics
from sweeper.evals.problems import Problem, load_problems
from sweeper.evals.sandbox import Sandbox

if TYPE_CHECKING:
    from sweeper.evals.jvm_sandbox import JvmSandbox

PYTHON = LANGUAGES.get("python")


def humanevalpack_decoding(language: Language) -> Decoding:
    """HumanEvalPack's generative tasks as Astraios ran them (evaluation/humanevalfixtests.sh,
    humanevalexplain*.sh; HumanEvalSynthesize as OctoPack's scripts): n=20, T=0.2, top_p 0.95, 2048 tokens
    in all, the language's stop words; the scripts loop over python and java."""
    return Decoding(n_samples=20, temperature=0.2, max_length=2048, stop=language.stop,
                    source="Astraios HumanEvalPack scripts: n 20, T 0.2, max_length_generation 2048")


def generate_programs(lm: LanguageModel, decoding: Decoding, prompts: list[str], prefixes: list[str],
                      language: Language = PYTHON) -> list[list[str]]:
    """Sample completions per prompt and turn each into the program it makes with its prefix."""
    completions = sample(lm, prompts, decoding)
    return [[language.finish(prefix, c) for c in cs] for prefix, cs in zip(prefixes, completions, strict=True)]


@dataclass
class Context:
    """One evaluation run's settings and shared resources. Sampling settings left at None take each
    task's preset (`Task.decoding`)."""

    sandbox: Sandbox
    n_samples: int | None = None
    temperature: float | None = None
    limit: int | None = None  # first N problems only
    max_new_tokens: int | None = None  # a cap on new tokens instead of the preset's total length
    data: Path | None = None  # a local copy of the task's dataset (HumanEvalPack, ReCode, ...; else its source)
    jvm: JvmSandbox | None = None  # runs Java programs; made by the caller when a Java task is asked for

    def problems(self, need_bugs: bool = False, language: Language = PYTHON) -> list[Problem]:
        problems = load_problems(self.data, need_bugs, language.name)
        if not problems[0].task_id.startswith(f"{language.task_prefix}/"):
            raise UserError(f"{self.data}: expected HumanEvalPack's {language.name} split (task ids "
                            f"{language.task_prefix}/0, ...), got {problems[0].task_id}")
        return problems[: self.limit] if self.limit else problems

    def runner(self, language: Language) -> Sandbox | JvmSandbox:
        """The sandbox that executes the language's programs."""
        if language.runner == "python":
            return self.sandbox
        if self.jvm is None:
            raise UserError(f"{language.display} programs need the JVM sandbox, which this run did not start")
        return self.jvm

    @property
    def overrides(self) -> DecodingOverrides:
        return DecodingOverrides(self.n_samples, self.temperature, self.max_new_tokens)

    def decoding(self, preset: Decoding) -> Decoding:
        """The decoding a task with this preset uses in this run."""
        return self.overrides.apply(preset)[0]

    def settings(self) -> dict:
        return {"asked": self.overrides.record(), "limit": self.limit, "data": str(self.data) if self.data else None,
                "prompt": "octopack"}


@dataclass
class TaskResult:
    metrics: list[Metric]
    generations: list[list[str]] | None = None  # bigcode-evaluation-harness JSON: a list per item
    details: dict = field(default_factory=dict)  # small task-specific facts recorded with the scores
    artifacts: dict[str, object] = field(default_factory=dict)  # saved as <task>.<name>.json next to the generations


class Task(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]  # one line for `--help` and the docs: what is measured and how
    decoding: ClassVar[Decoding | None] = None  # the paper's sampling for this task; None: it generates nothing
    # Bumped when what the task scores changes, so that records scored before are not taken for current
    # ones (the version is part of a record's name: `sweeper.evals.sweep.settings_key`).
    version: ClassVar[int] = 1

    def decoding_record(self, ctx: Context) -> dict:
        """What is recorded with the task's scores about its sampling: the decoding used and any
        override it did not take."""
        if self.decoding is None:
            return {"decoding": None}
        used, ignored = ctx.overrides.apply(self.decoding)
        return {"decoding": used.record(), **({"ignored_overrides": ignored} if ignored else {})}

    @abstractmethod
    def evaluate(self, lm: LanguageModel, ctx: Context) -> TaskResult: ...

    def score(self, generations: list[list[str]], ctx: Context) -> TaskResult:
        raise UserError(f"task {self.name!r} has no generations to score (it is scored while generating)")


@dataclass(frozen=True)
class ProgramItem:
    """One prompt of a program task: the model sees `prompt`; its completion is appended to `prefix`
    and the program is run with `test`."""

    prompt: str
    prefix: str
    test: str


class ProgramTask(Task):
    """Sample programs, execute them with their tests, report pass@k (k <= n)."""

    language: ClassVar[Language] = PYTHON
    decoding: ClassVar[Decoding | None] = humanevalpack_decoding(PYTHON)

    @abstractmethod
    def items(self, ctx: Context) -> list[ProgramItem]: ...

    def evaluate(self, lm: LanguageModel, ctx: Context) -> TaskResult:
        items = self.items(ctx)
        programs = generate_programs(lm, ctx.decoding(self.decoding), [item.prompt for item in items],
                                     [item.prefix for item in items], self.language)
        return self.score_items(items, programs, ctx)

    def score(self, generations: list[list[str]], ctx: Context) -> TaskResult:
        return self.score_items(self.items(ctx), generations, ctx)

    def score_items(self, items: list[ProgramItem], generations: list[list[str]], ctx: Context) -> TaskResult:
        check_generations(generations, len(items), self.name)
        results = run_programs(ctx.runner(self.language), items, generations, self.name, self.language)
        return TaskResult(self.metrics(results), generations)

    def metrics(self, results: list[list[bool]]) -> list[Metric]:
        return pass_at_k_metrics(results)


def check_generations(generations: object, expected: int, task: str) -> None:
    if not isinstance(generations, list) or not all(
        isinstance(samples, list) and samples and all(isinstance(s, str) for s in samples) for samples in generations
    ):
        raise UserError(f"{task}: generations must be a JSON list (one per problem) of non-empty lists of programs")
    if len(generations) != expected:
        raise UserError(f"{task}: expected generations for {expected} problems, got {len(generations)}")


def run_programs(
    sandbox: Sandbox | JvmSandbox, items: Sequence[ProgramItem], generations: list[list[str]], task: str,
    language: Language = PYTHON,
) -> list[list[bool]]:
    programs = [language.executable(sample, item.test) for item, samples in zip(items, generations, strict=True)
                for sample in samples]
    outcomes = iter(sandbox.run(programs, description=f"{task}: executing"))
    return [[next(outcomes).passed for _ in samples] for samples in generations]


@dataclass(frozen=True)
class Choice:
    """One multiple-choice item: the context, the candidate answers, and the index of the right one."""

    context: str
    options: tuple[str, ...]
    answer: int


class ChoiceTask(Task):
    """Rank candidate answers by log-likelihood (lm-evaluation-harness multiple choice).

    Metrics: `accuracy` (right answer has the highest summed log-likelihood), `accuracy_norm` (per
    token, which removes the length bias) and `nll` (mean nats per token of the right answer: a
    continuous signal even where accuracy is at chance)."""

    @abstractmethod
    def choices(self, ctx: Context) -> list[Choice]: ...

    def evaluate(self, lm: LanguageModel, ctx: Context) -> TaskResult:
        items = self.choices(ctx)
        requests = [(item.context, option) for item in items for option in item.options]
        scores = iter(lm.loglikelihood(requests))
        right = right_norm = 0
        nll_sum = 0.0
        for item in items:
            option_scores = [next(scores) for _ in item.options]
            totals = [total for total, _ in option_scores]
            per_token = [total / max(count, 1) for total, count in option_scores]
            right += max(range(len(totals)), key=totals.__getitem__) == item.answer
            right_norm += max(range(len(per_token)), key=per_token.__getitem__) == item.answer
            nll_sum += -per_token[item.answer]
        n = len(items)
        metrics = [Metric("accuracy", right / n, n), Metric("accuracy_norm", right_norm / n, n), Metric("nll", nll_sum / n, n)]
        return TaskResult(metrics, details={"options_per_item": max(len(i.options) for i in items)})


TASKS: Registry[type[Task]] = Registry("task")  # name -> task class (tasks hold no state)
