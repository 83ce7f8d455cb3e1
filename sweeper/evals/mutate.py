"""Bugs injected into HumanEval's canonical solutions, by HumanEvalFix's six bug types.

HumanEvalFix (Muennighoff et al. 2023, OctoPack) has one human-written bug per problem, of one of
six types: missing logic, excess logic, value misuse, operator misuse, variable misuse, function
misuse. `humanevalfix-mutated` rebuilds such a set offline: each mutator below edits one AST node of
the canonical solution in place in the source text (everything else keeps its formatting), and a
mutant is kept only if it compiles and *fails* the problem's tests in the sandbox.

Mutants are deterministic; the accepted ones are cached on disk by the hash of the problems.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

from sweeper.core.io import atomic_write_json
from sweeper.core.paths import cache_dir
from sweeper.evals.problems import Problem, harness_program, with_buggy
from sweeper.evals.sandbox import Sandbox

BUG_TYPES = (
    "operator misuse", "value misuse", "variable misuse", "function misuse", "missing logic", "excess logic",
)
MUTATOR_VERSION = 1  # bump when a mutator changes: it is part of the cache key

SWAPPED_BINOPS = {
    ast.Add: "-", ast.Sub: "+", ast.Mult: "+", ast.Div: "*", ast.FloorDiv: "/", ast.Mod: "//", ast.Pow: "*",
}
SWAPPED_COMPARES = {
    ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=", ast.GtE: ">", ast.Eq: "!=", ast.NotEq: "==",
    ast.In: "not in", ast.NotIn: "in", ast.Is: "is not", ast.IsNot: "is",
}
SWAPPED_FUNCTIONS = {
    "min": "max", "max": "min", "any": "all", "all": "any", "sorted": "reversed", "int": "round",
    "round": "int", "floor": "ceil", "ceil": "floor",
}
SWAPPED_METHODS = {
    "lower": "upper", "upper": "lower", "startswith": "endswith", "endswith": "startswith",
    "isupper": "islower", "islower": "isupper", "isdigit": "isalpha", "isalpha": "isdigit",
    "find": "rfind", "index": "count", "append": "extend", "pop": "copy",
}
NEEDS_PARENS = (ast.BinOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Lambda, ast.UnaryOp)


@dataclass(frozen=True)
class Mutant:
    bug_type: str
    solution: str  # the mutated canonical solution (completes the problem's prompt)


class _Source:
    """Character offsets of AST positions (which count UTF-8 bytes within a line)."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col: int) -> int:
        return self.starts[lineno - 1] + len(self.lines[lineno - 1].encode()[:col].decode(errors="ignore"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def code(self, node: ast.AST) -> str:
        start, end = self.span(node)
        text = self.text[start:end]
        return f"({text})" if isinstance(node, NEEDS_PARENS) else text


def mutants(problem: Problem) -> list[Mutant]:
    """Every candidate mutant of the canonical solution that compiles, in a deterministic order."""
    text = problem.prompt + problem.canonical_solution
    source = _Source(text)
    body_start = len(problem.prompt)
    tree = ast.parse(text)
    found: list[Mutant] = []
    seen: set[str] = set()
    for bug_type, start, end, replacement in _edits(tree, source, problem.entry_point):
        if start < body_start:
            continue
        mutated = text[:start] + replacement + text[end:]
        solution = mutated[body_start:]
        if solution in seen or solution == problem.canonical_solution:
            continue
        try:
            compile(mutated, "<mutant>", "exec")
        except (SyntaxError, ValueError):
            continue
        seen.add(solution)
        found.append(Mutant(bug_type, solution))
    return found


def _edits(tree: ast.AST, source: _Source, entry_point: str) -> Iterator[tuple[str, int, int, str]]:
    local_names = sorted({
        node.id for node in ast.walk(tree)
        if isinstance(node, ast.Name) and node.id != entry_point and not hasattr(builtins, node.id)
    } | {arg.arg for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) for arg in node.args.args})
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and type(node.op) in SWAPPED_BINOPS:
            new = f"{source.code(node.left)} {SWAPPED_BINOPS[type(node.op)]} {source.code(node.right)}"
            yield ("operator misuse", *source.span(node), new)
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in SWAPPED_COMPARES:
            new = f"{source.code(node.left)} {SWAPPED_COMPARES[type(node.ops[0])]} {source.code(node.comparators[0])}"
            yield ("operator misuse", *source.span(node), new)
        elif isinstance(node, ast.BoolOp):
            other = " or " if isinstance(node.op, ast.And) else " and "
            yield ("operator misuse", *source.span(node), other.join(source.code(v) for v in node.values))
            if isinstance(node.op, ast.And):  # drop the last condition
                kept = " and ".join(source.code(v) for v in node.values[:-1])
                yield ("missing logic", *source.span(node), kept)
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            yield ("value misuse", *source.span(node), repr(node.value + 1))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in local_names:
            others = [name for name in local_names if name != node.id]
            if others:
                replacement = others[(local_names.index(node.id)) % len(others)]
                yield ("variable misuse", *source.span(node), replacement)
        elif isinstance(node, ast.Call):
            yield from _function_misuse(node, source)
        if isinstance(node, ast.FunctionDef | ast.For | ast.While | ast.If | ast.With):
            yield from _statement_edits(node, source)


def _function_misuse(node: ast.Call, source: _Source) -> Iterator[tuple[str, int, int, str]]:
    func = node.func
    if isinstance(func, ast.Name) and func.id in SWAPPED_FUNCTIONS:
        yield ("function misuse", *source.span(func), SWAPPED_FUNCTIONS[func.id])
    elif isinstance(func, ast.Attribute) and func.attr in SWAPPED_METHODS:
        yield ("function misuse", *source.span(func), f"{source.code(func.value)}.{SWAPPED_METHODS[func.attr]}")


def _statement_edits(node: ast.AST, source: _Source) -> Iterator[tuple[str, int, int, str]]:
    """Delete a statement (missing logic) or do one twice (excess logic); whole lines only."""
    body = node.body
    for statement in body:
        first, last = statement.lineno, statement.end_lineno
        start, end = source.starts[first - 1], source.starts[last]
        lines = source.text[start:end]
        if len(body) > 1 and not isinstance(statement, ast.Return):
            yield ("missing logic", start, end, "")
        if isinstance(statement, ast.AugAssign | ast.Expr) and not isinstance(getattr(statement, "value", None), ast.Constant):
            yield ("excess logic", start, end, lines + lines)


def failing_mutants(problems: list[Problem], sandbox: Sandbox, per_type: int = 2) -> list[Problem]:
    """One mutant per problem that fails the tests; problems without one are left out. Bug types are
    tried in an order rotated by the problem's index, so that the six types are spread evenly."""

    key = hashlib.sha256(
        json.dumps([MUTATOR_VERSION, per_type, [(p.task_id, p.canonical_program, p.test) for p in problems]]).encode()
    ).hexdigest()[:16]
    cache = cache_dir() / "evals" / f"mutants-{key}.json"
    if cache.is_file():
        chosen = json.loads(cache.read_text())
    else:
        chosen = _choose(problems, sandbox, per_type)
        atomic_write_json(cache, chosen)
    by_id = {p.task_id: p for p in problems}
    return [with_buggy(by_id[task_id], solution, bug_type) for task_id, bug_type, solution in chosen]


def _choose(problems: list[Problem], sandbox: Sandbox, per_type: int) -> list[list[str]]:
    candidates: list[list[Mutant]] = []
    for index, problem in enumerate(problems):
        order = BUG_TYPES[index % len(BUG_TYPES):] + BUG_TYPES[: index % len(BUG_TYPES)]
        by_type = {bug_type: [] for bug_type in order}
        for mutant in mutants(problem):
            if len(by_type[mutant.bug_type]) < per_type:
                by_type[mutant.bug_type].append(mutant)
        candidates.append([m for bug_type in order for m in by_type[bug_type]])
    programs = [harness_program(p.prompt + m.solution, p.test) for p, ms in zip(problems, candidates, strict=True) for m in ms]
    outcomes = iter(sandbox.run(programs, description="humanevalfix-mutated: testing mutants"))
    chosen = []
    for problem, ms in zip(problems, candidates, strict=True):
        failed = [m for m in ms if not next(outcomes).passed]
        if failed:
            chosen.append([problem.task_id, failed[0].bug_type, failed[0].solution])
    return chosen
