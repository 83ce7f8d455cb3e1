"""HumanEvalExplain: describe the canonical solution, then write the code back from the description.

Stage 1 (bigcode's ExplainDescribe): `Question: Provide a concise natural language description of the
code using at most {len(docstring)} characters.\n{declaration}{canonical solution}\n\nAnswer:`, stopped
at the language's stop words (the harness's); the description is cut to that many characters, and code lines it
copies (> 20 characters) are removed.
Stage 2 (ExplainSynthesize): `Question: Write functional code in Python (Java) according to the description.\n
{description}\n\nAnswer:\n{declaration}`: the declaration has no docstring, and the prompt is
checked not to contain the original docstring, so the code can only come from the description.
As the harness's octocoder prompt does, the instruction comes first, then the context.
One program is sampled per description; n descriptions per problem give pass@k as usual. Both stages
decode as Astraios' scripts do (T=0.2, 2048 tokens; n=20 descriptions, one program each).
"""

from __future__ import annotations

from dataclasses import replace

from sweeper.data import octopack_prompt
from sweeper.evals.decoding import sample
from sweeper.evals.languages import LANGUAGES, Language
from sweeper.evals.lm import LanguageModel
from sweeper.evals.problems import Problem
from sweeper.evals.tasks.base import (
    PYTHON,
    TASKS,
    Context,
    ProgramItem,
    ProgramTask,
    TaskResult,
    humanevalpack_decoding,
)

JAVA = LANGUAGES.get("java")

MIN_COPIED_LINE = 20  # bigcode's remove_code: longer solution lines found in a description are dropped


class DocstringLeak(RuntimeError):
    """A stage-2 prompt contains the original docstring: the task would measure copying, not explaining."""


def describe_prompt(problem: Problem) -> str:
    question = (
        f"Provide a concise natural language description of the code using at most {len(problem.docstring)} "
        f"characters.\n{problem.declaration}{problem.canonical_solution}"
    )
    return octopack_prompt(question)


def clean_description(text: str, problem: Problem) -> str:
    text = text.strip()[: len(problem.docstring)].rstrip()
    for line in problem.canonical_solution.split("\n"):
        line = line.strip()
        if len(line) > MIN_COPIED_LINE and line in text:
            text = text.replace(line, "")
    return text


def synthesize_prompt(problem: Problem, description: str, language: Language = PYTHON) -> str:
    prompt = octopack_prompt(
        f"Write functional code in {language.display} according to the description.\n{description}",
        problem.declaration,
    )
    check_no_leak(prompt, problem, description)
    return prompt


def check_no_leak(prompt: str, problem: Problem, description: str) -> None:
    """The docstring may reach stage 2 only through the model's own description."""
    scaffold = prompt.replace(description, "") if description else prompt
    leaked = [line.strip() for line in problem.docstring.splitlines() if len(line.strip()) > MIN_COPIED_LINE]
    if any(line in scaffold for line in leaked) or (problem.docstring.strip() and problem.docstring.strip() in scaffold):
        raise DocstringLeak(f"{problem.task_id}: the explain-synthesize prompt contains the original docstring")


@TASKS.register("humanevalexplain")
class Explain(ProgramTask):
    name = "humanevalexplain"
    summary = "describe the code, then rewrite it from the description alone; pass@k of the rewrites"

    def items(self, ctx: Context) -> list[ProgramItem]:
        # Scoring saved programs needs only the tests: the prompts of stage 2 depend on the descriptions.
        return [ProgramItem("", p.declaration, p.test) for p in ctx.problems(language=self.language)]

    def score(self, generations: list, ctx: Context) -> TaskResult:
        """Also the harness's ExplainSynthesize file: one `[program]` per description, problem-major
        (k descriptions per problem: entry j belongs to problem j // k), regrouped into k programs each."""
        items = self.items(ctx)
        k, rest = divmod(len(generations), len(items))
        if k > 1 and not rest and all(isinstance(g, list) and len(g) == 1 for g in generations):
            generations = [[g[0] for g in generations[i * k:(i + 1) * k]] for i in range(len(items))]
        return self.score_items(items, generations, ctx)

    def evaluate(self, lm: LanguageModel, ctx: Context) -> TaskResult:
        problems = ctx.problems(language=self.language)
        decoding = ctx.decoding(self.decoding)
        descriptions = sample(lm, [describe_prompt(p) for p in problems], decoding)
        cleaned = [[clean_description(d, p) for d in ds] for p, ds in zip(problems, descriptions, strict=True)]
        prompts = [synthesize_prompt(p, d, self.language) for p, ds in zip(problems, cleaned, strict=True) for d in ds]
        completions = iter(sample(lm, prompts, replace(decoding, n_samples=1)))
        programs = [[self.language.finish(p.declaration, next(completions)[0]) for _ in ds]
                    for p, ds in zip(problems, descriptions, strict=True)]
        result = self.score(programs, ctx)
        result.artifacts["descriptions"] = cleaned
        return result


@TASKS.register("humanevalexplain-java")
class ExplainJava(Explain):
    name = "humanevalexplain-java"
    summary = "HumanEvalExplain in Java: describe the method, rewrite it from the description; pass@k in the JVM sandbox"
    language = JAVA
    decoding = humanevalpack_decoding(JAVA)
