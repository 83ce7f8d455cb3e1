"""The `local-code` source: docstring -> function pairs mined with `ast` from Python files: a folder
(`data.path`), installed packages (`data.packages`), or else the files a ladder holds out of pretraining.

Its own format (not OctoPack's commits): the instruction gives a function's signature and docstring,
as HumanEvalSynthesize does; the response is the function's code without the docstring.
"""

from __future__ import annotations

import ast
import hashlib
import textwrap
from pathlib import Path
from typing import Any

from sweeper.core.errors import UserError
from sweeper.core.io import package_roots, python_files
from sweeper.core.provenance import import_versions
from sweeper.data.base import SOURCES, Example, HashSplitSource
from sweeper.schema import DataConfig

# A 256-token sequence holds ~900 characters of Python: longer functions would mostly teach the
# model to continue code that was cut off.
MAX_FUNCTION_CHARS = 1500
MIN_DOCSTRING_CHARS = 20  # shorter ones ("Return x.") say too little to be an instruction
MAX_DOCSTRING_CHARS = 1000
# A package's test suite is full of deliberately odd code and asserts: not functions to learn to write.
PACKAGE_EXCLUDED_DIRS = ("__pycache__", "test", "tests")


class LocalCode(HashSplitSource):
    """Docstring -> function pairs from the files under `data.path` or of `data.packages`, else from the
    files it is handed (the ladder's code held out of pretraining)."""

    def _files(self, config: DataConfig, files: list[Path] | None) -> list[Path]:
        if config.packages:
            if config.path is not None:
                raise UserError("data.packages and data.path: give one (local-code mines a folder or installed packages)")
            roots = package_roots(config.packages, "data.packages")
            return [path for root in roots for path in python_files(root, PACKAGE_EXCLUDED_DIRS)]
        if config.path is None:
            if files is None:
                raise UserError("data.path: the local-code source needs a folder of Python files for this ladder "
                                "(only the micro ladders hold code of their own out of pretraining)")
            return files
        root = Path(config.path)
        if not root.is_dir():
            raise UserError(f"data.path {config.path!r}: not a folder (the local-code source mines its .py files)")
        return python_files(root, ("__pycache__",))

    def needs_files(self, config: DataConfig) -> bool:
        return config.path is None and not config.packages

    def identity(self, config: DataConfig, files: list[Path] | None) -> dict[str, Any]:
        identity: dict[str, Any] = {
            "files": sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in self._files(config, files))}
        if config.packages:
            identity["packages"] = import_versions(config.packages)
        return identity

    def examples(self, config: DataConfig, files: list[Path] | None) -> list[Example]:
        found = []
        for path in self._files(config, files):
            try:
                found += mine_functions(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # not Python 3 this interpreter can parse: nothing to mine
        if not found:
            raise UserError(f"data.source 'local-code': no documented functions found in {config.path or 'the corpus'}")
        return found


def mine_functions(source: str) -> list[Example]:
    """Every documented function (and method) of a module: the instruction gives its signature and
    docstring, as HumanEvalSynthesize does; the response is its code without the docstring."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    examples = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or len(node.body) < 2:
            continue
        docstring = ast.get_docstring(node)
        first = node.body[0]
        if not docstring or not MIN_DOCSTRING_CHARS <= len(docstring) <= MAX_DOCSTRING_CHARS:
            continue
        if first.lineno == node.lineno or first.end_lineno is None or node.end_lineno is None:
            continue  # docstring on the `def` line: cannot be cut out cleanly
        start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
        code = textwrap.dedent("".join(lines[start : first.lineno - 1] + lines[first.end_lineno : node.end_lineno]))
        if len(code) > MAX_FUNCTION_CHARS:
            continue
        returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
        signature = f"{node.name}({ast.unparse(node.args)}){returns}"
        instruction = f"Write a Python function `{signature}` to solve the following problem:\n{docstring}"
        examples.append(Example(instruction=instruction, response=code.rstrip() + "\n"))
    return examples


SOURCES.add("local-code", LocalCode())
