"""HumanEvalPack's generative tasks (synthesize, fix, fix on mutants) and their likelihood variants.

Prompts follow bigcode-evaluation-harness's `humanevalpack.py` with the "octocoder" prompt:
- synthesize: `Question: {instruction}\n\nAnswer:\n{prompt}`; the program is prompt + completion.
- fix (HumanEvalFixTests): `Question: Fix bugs in {f}.\n{declaration}{buggy solution}\n{tests}\n\n
  Answer:\n{declaration}`; the program is declaration + completion.
The octocoder prompt puts the instruction before the context (`instruction + "\n" + context`; the
harness's `get_prompt`), then strips the whole prompt at the end. The prompts are the same in every
language; stop words, cutting and the executed program are the language's (`sweeper.evals.languages`).
Python and Java are registered, the two languages Astraios evaluated; Java runs in the JVM sandbox.
"""

from __future__ import annotations

from sweeper.data import octopack_prompt
from sweeper.evals.languages import LANGUAGES
from sweeper.evals.mutate import failing_mutants
from sweeper.evals.problems import Problem
from sweeper.evals.tasks.base import (
    TASKS,
    Choice,
    ChoiceTask,
    Context,
    ProgramItem,
    ProgramTask,
    humanevalpack_decoding,
)

JAVA = LANGUAGES.get("java")


def synthesize_item(problem: Problem) -> ProgramItem:
    return ProgramItem(octopack_prompt(problem.instruction.strip(), problem.prompt), problem.prompt, problem.test)


def fix_item(problem: Problem) -> ProgramItem:
    assert problem.buggy_solution is not None
    context = problem.declaration + problem.buggy_solution + "\n" + problem.test
    question = f"Fix bugs in {problem.entry_point}.\n{context}"
    return ProgramItem(octopack_prompt(question, problem.declaration), problem.declaration, problem.test)


def continuation(prompt: str, prefix: str, solution: str) -> str:
    """What the model must produce after the (right-stripped) prompt for `prefix + solution`."""
    whole = prefix + solution
    return whole[len(prefix.rstrip()):] if prompt.endswith(prefix.rstrip()) else solution


def mutated_problems(ctx: Context) -> list[Problem]:
    """Problems with an injected bug that fails the tests (see sweeper.evals.mutate)."""
    return failing_mutants(ctx.problems(), ctx.sandbox)


@TASKS.register("humanevalsynthesize")
class Synthesize(ProgramTask):
    name = "humanevalsynthesize"
    summary = "write the function from its docstring; pass@k of the programs executed with HumanEval's tests"

    def items(self, ctx: Context) -> list[ProgramItem]:
        return [synthesize_item(p) for p in ctx.problems(language=self.language)]


@TASKS.register("humanevalfix")
class Fix(ProgramTask):
    name = "humanevalfix"
    summary = "fix HumanEvalPack's human-written bug given the tests (HumanEvalFixTests); pass@k"

    def items(self, ctx: Context) -> list[ProgramItem]:
        return [fix_item(p) for p in ctx.problems(need_bugs=True, language=self.language)]


@TASKS.register("humanevalsynthesize-java")
class SynthesizeJava(Synthesize):
    name = "humanevalsynthesize-java"
    summary = "HumanEvalSynthesize in Java: write the method from its Javadoc; pass@k, compiled and run in the JVM sandbox"
    language = JAVA
    decoding = humanevalpack_decoding(JAVA)


@TASKS.register("humanevalfix-java")
class FixJava(Fix):
    name = "humanevalfix-java"
    summary = "HumanEvalFixTests in Java: fix the human-written bug given the tests; pass@k in the JVM sandbox"
    language = JAVA
    decoding = humanevalpack_decoding(JAVA)


@TASKS.register("humanevalfix-mutated")
class FixMutated(ProgramTask):
    name = "humanevalfix-mutated"
    summary = "fix an injected bug (HumanEvalFix's six bug types, offline) given the tests; pass@k"

    def items(self, ctx: Context) -> list[ProgramItem]:
        return [fix_item(p) for p in mutated_problems(ctx)]


@TASKS.register("humanevalsynthesize-ll")
class SynthesizeLikelihood(ChoiceTask):
    name = "humanevalsynthesize-ll"
    summary = ("likelihood: rank the canonical solution above a buggy one and another problem's solution, "
               "after the synthesize prompt")

    def choices(self, ctx: Context) -> list[Choice]:
        problems = [p for p in problems_with_bugs(ctx) if p.buggy_solution is not None]
        items = []
        for index, problem in enumerate(problems):
            prompt = synthesize_item(problem).prompt
            # another problem's solution, when there is another problem (with one, it would be the answer)
            other = [problems[(index + 1) % len(problems)].canonical_solution] if len(problems) > 1 else []
            options = tuple(
                continuation(prompt, problem.prompt, solution)
                for solution in (problem.canonical_solution, problem.buggy_solution, *other)
            )
            items.append(Choice(prompt, options, 0))
        return items


@TASKS.register("humanevalfix-ll")
class FixLikelihood(ChoiceTask):
    name = "humanevalfix-ll"
    summary = "likelihood: after the fix prompt, rank the fixed (canonical) solution above the unchanged buggy one"

    def choices(self, ctx: Context) -> list[Choice]:
        items = []
        for problem in problems_with_bugs(ctx):
            prompt = fix_item(problem).prompt
            options = tuple(
                continuation(prompt, problem.declaration, solution)
                for solution in (problem.canonical_solution, problem.buggy_solution)
            )
            items.append(Choice(prompt, options, 0))
        return items


def problems_with_bugs(ctx: Context) -> list[Problem]:
    """HumanEvalPack's human-written bugs when a local copy is given, else the offline mutants."""
    return ctx.problems(need_bugs=True) if ctx.data is not None else mutated_problems(ctx)

