"""ReCode-style semantics-preserving perturbations of HumanEval problems (Wang et al. 2022, ReCode).

Each perturbation maps a problem to a problem whose prompt reads differently but asks for the same
function; prompt, canonical solution and test are changed together, so the perturbed canonical
program still passes (the test suite checks it for all 164 problems). One deterministic variant per
kind (ReCode samples several with seeds; one per kind keeps the micro evaluation cheap):

- `function_rename`: the entry point in camelCase (`has_close_elements` -> `hasCloseElements`).
- `variable_rename`: the parameters become `var_0`, `var_1`, ... in code (docstring untouched).
- `formatting`: blank lines inserted after the signature and inside the docstring.
- `dead_code`: an unreachable loop inserted at the start of the function body.
- `docstring_paraphrase`: common docstring phrasings reworded ("Return" -> "Give back", ...).
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Callable

from sweeper.core.registry import Registry
from sweeper.evals.problems import Problem, problem_from_prompt

Perturbation = Callable[[Problem], Problem]
PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")

# Whole-phrase rewordings, tried in this order; examples (lines with >>>) are never touched.
PARAPHRASES = (
    ("Return ", "Give back "), ("return ", "give back "), ("returns ", "gives back "),
    ("Given ", "Provided "), ("given ", "provided "), ("Write a function", "Implement a function"),
    ("Check if", "Determine whether"), ("check if", "determine whether"), ("You are given", "You receive"),
)


def _rebuild(problem: Problem, prompt: str, solution: str, entry_point: str | None = None, test: str | None = None) -> Problem:
    entry_point = entry_point or problem.entry_point
    test = (test or problem.test).replace(f"check({problem.entry_point})", f"check({entry_point})")
    return problem_from_prompt(problem.task_id, prompt, entry_point, solution, test)


def _rename_names(code: str, mapping: dict[str, str]) -> str:
    """Rename NAME tokens (not attributes after a dot, not text inside strings or comments)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    lines = code.splitlines(keepends=True)
    edits = []
    for index, token in enumerate(tokens):
        after_dot = index > 0 and tokens[index - 1].string == "."
        if token.type == tokenize.NAME and token.string in mapping and not after_dot:
            edits.append((token.start, token.end, mapping[token.string]))
    for (row, col), (_, end_col), new in reversed(edits):
        line = lines[row - 1]
        lines[row - 1] = line[:col] + new + line[end_col:]
    return "".join(lines)


@PERTURBATIONS.register("function_rename")
def function_rename(problem: Problem) -> Problem:
    old = problem.entry_point
    parts = old.split("_")
    new = parts[0] + "".join(part.title() for part in parts[1:]) if len(parts) > 1 else f"{old}Fn"
    pattern = re.compile(rf"\b{re.escape(old)}\b(?=\s*\()")
    # Some tests call the function by name as well as through check(candidate).
    return _rebuild(
        problem, pattern.sub(new, problem.prompt), pattern.sub(new, problem.canonical_solution), new,
        pattern.sub(new, problem.test),
    )


@PERTURBATIONS.register("variable_rename")
def variable_rename(problem: Problem) -> Problem:
    function = problem.signature.split("(", 1)[1].rsplit(")", 1)[0]
    parameters = [part.split(":")[0].split("=")[0].strip().lstrip("*") for part in _split_top_level(function)]
    mapping = {name: f"var_{i}" for i, name in enumerate(p for p in parameters if p and p != "/")}
    program = _rename_names(problem.prompt + problem.canonical_solution, mapping)
    prompt_end = len(_rename_names(problem.prompt + "    pass\n", mapping)) - len("    pass\n")
    return _rebuild(problem, program[:prompt_end], program[prompt_end:])


def _split_top_level(arguments: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in arguments:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current] if current.strip() else parts


def _docstring_lines(problem: Problem) -> tuple[int, int]:
    """0-based [first, last] line of the entry point's docstring in the prompt."""
    lines = problem.prompt.splitlines()
    quote_lines = [i for i, line in enumerate(lines) if '"""' in line or "'''" in line]
    return quote_lines[-2] if len(quote_lines) > 1 else quote_lines[-1], quote_lines[-1]


@PERTURBATIONS.register("formatting")
def formatting(problem: Problem) -> Problem:
    lines = problem.prompt.splitlines(keepends=True)
    first, last = _docstring_lines(problem)
    if first == last:
        return _rebuild(problem, problem.prompt.replace('"""', '"""\n', 1), problem.canonical_solution)
    reformatted = [*lines[:first], "\n", *lines[first:last], "\n", *lines[last:]]
    return _rebuild(problem, "".join(reformatted), problem.canonical_solution)


@PERTURBATIONS.register("dead_code")
def dead_code(problem: Problem) -> Problem:
    last_line = problem.prompt.rstrip("\n").splitlines()[-1]
    indent = last_line[: len(last_line) - len(last_line.lstrip())] or "    "
    dead = f"{indent}for _ in range(0):\n{indent}    pass\n"
    return _rebuild(problem, problem.prompt.rstrip("\n") + "\n" + dead, problem.canonical_solution)


@PERTURBATIONS.register("docstring_paraphrase")
def docstring_paraphrase(problem: Problem) -> Problem:
    lines = problem.prompt.splitlines(keepends=True)
    first, last = _docstring_lines(problem)
    for index in range(first, last + 1):
        if ">>>" not in lines[index]:
            for old, new in PARAPHRASES:
                lines[index] = lines[index].replace(old, new)
    return _rebuild(problem, "".join(lines), problem.canonical_solution)
