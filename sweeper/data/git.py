"""The `git` source: CommitPack-style pairs from the history of a local git repository.

Its own format: the instruction is the old version of a changed file (for a modified file) and the
commit message; the response is the new version of the file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from sweeper.core.errors import UserError
from sweeper.data.base import SOURCES, Example, HashSplitSource
from sweeper.schema import DataConfig

MAX_COMMITS = 5000  # most recent first: bounds the time on very long histories
MAX_FILE_BYTES = 3000  # old and new version each (a 256-token sequence holds ~900 characters)


class GitHistory(HashSplitSource):
    """CommitPack-style pairs mined from the history of a local git repository (files under `path`)."""

    def needs_files(self, config: DataConfig) -> bool:
        return False

    def identity(self, config: DataConfig, files: list[Path] | None = None) -> dict[str, Any]:
        root = self._repo(config)
        return {"head": _git(root, "rev-parse", "HEAD").strip(), "prefix": _git(root, "rev-parse", "--show-prefix")}

    def _repo(self, config: DataConfig) -> Path:
        if config.path is None:
            raise UserError("data.path: the git source needs the path of a local git repository")
        root = Path(config.path).expanduser()
        if not root.is_dir():
            raise UserError(f"data.path {config.path!r}: not a folder (expected a local git repository)")
        try:
            _git(root, "rev-parse", "--git-dir")
        except UserError:
            raise UserError(f"data.path {config.path!r}: not a git repository") from None
        try:
            _git(root, "rev-parse", "--verify", "HEAD")
        except UserError:
            raise UserError(f"data.path {config.path!r}: the git repository has no commits") from None
        return root

    def examples(self, config: DataConfig, files: list[Path] | None = None) -> list[Example]:
        root = self._repo(config)
        changes = _changed_blobs(root)
        blobs = _read_blobs(root, {sha for change in changes for sha in change[1:3] if sha})
        examples = []
        for message, old_sha, new_sha in changes:
            new = blobs.get(new_sha)
            old = blobs.get(old_sha) if old_sha else ""
            if new is None or old is None or not message:
                continue  # binary or too large
            instruction = f"{old.rstrip()}\n\n{message}" if old else message
            examples.append(Example(instruction=instruction, response=new))
        if not examples:
            raise UserError(f"data.path {config.path!r}: no commit changes a text file of at most {MAX_FILE_BYTES} bytes")
        return examples


def _git(root: Path, *args: str, stdin: bytes | None = None) -> str:
    return _git_bytes(root, *args, stdin=stdin).decode("utf-8", errors="replace")


def _git_bytes(root: Path, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], input=stdin, capture_output=True, timeout=300)
    except FileNotFoundError:
        raise UserError("the git source needs the `git` command, which is not installed") from None
    if done.returncode != 0:
        raise UserError(f"git {' '.join(args[:2])} in {root}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _changed_blobs(root: Path) -> list[tuple[str, str | None, str]]:
    """(message, old blob or None if added, new blob) for every file added or modified by the
    non-merge commits touching `root`, newest first. One `git log` for the whole history."""
    log = _git(root, "log", f"--max-count={MAX_COMMITS}", "--no-merges", "--no-renames", "--raw",
               "--no-abbrev", "--diff-filter=AM", "-z", "--format=%x1e%H%x00%B%x00", "--", ".")
    changes = []
    for record in log.split("\x1e")[1:]:
        parts = record.split("\x00", 2)
        if len(parts) < 3:
            continue
        _sha, message, raw = parts
        fields = raw.lstrip("\x00\n").split("\x00")
        for meta in fields[0::2]:
            if not meta.startswith(":"):
                continue
            _old_mode, _new_mode, old_sha, new_sha, status = meta[1:].split()
            changes.append((message.strip(), None if status == "A" else old_sha, new_sha))
    return changes


def _read_blobs(root: Path, shas: set[str]) -> dict[str, str]:
    """The text of every blob of at most MAX_FILE_BYTES that is UTF-8 without NUL bytes (submodule
    commits are not blobs of this repository: skipped)."""
    order = sorted(shas)
    checks = _git(root, "cat-file", "--batch-check", stdin="".join(f"{s}\n" for s in order).encode()).split("\n")
    small = []
    for sha, line in zip(order, checks, strict=False):
        fields = line.split()
        if len(fields) == 3 and fields[1] == "blob" and int(fields[2]) <= MAX_FILE_BYTES:
            small.append(sha)
    if not small:
        return {}
    data = _git_bytes(root, "cat-file", "--batch", stdin="".join(f"{s}\n" for s in small).encode())
    blobs, at = {}, 0
    for sha in small:
        header_end = data.index(b"\n", at)
        size = int(data[at:header_end].split()[2])
        content = data[header_end + 1 : header_end + 1 + size]
        at = header_end + 1 + size + 1
        if b"\x00" not in content:
            try:
                blobs[sha] = content.decode("utf-8")
            except UnicodeDecodeError:
                continue
    return blobs


SOURCES.add("git", GitHistory())
