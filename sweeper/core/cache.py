"""Content-addressed cache entries (one directory per key, whose `meta.json` records the sha256 of
every other file in it), and the content hash as a coin (`hash_fraction`) behind every split.

An entry is built in a temporary directory next to its final place and renamed into place only
when complete (a rename is atomic on POSIX), so a killed build never leaves a half entry that looks
valid. Reading an entry re-hashes its files: a file that changed, a missing file or an unreadable
`meta.json` raises `CorruptEntry`, and the caller rebuilds; a damaged entry is never used.
"""

import contextlib
import fcntl
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sweeper.core.io import atomic_write_json

META = "meta.json"


class CorruptEntry(Exception):
    """A cache entry exists but cannot be trusted; the message says why."""


def digest(obj: Any) -> str:
    """sha256 of a JSON-serialisable object in canonical form (sorted keys): the cache keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def load_entry(path: Path) -> dict[str, Any] | None:
    """The metadata of the intact entry at `path`; None if there is none; `CorruptEntry` if damaged."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        meta = json.loads((path / META).read_text())
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptEntry(f"{path / META}: unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(files, dict) or not files:
        raise CorruptEntry(f"{path / META}: lists no files")
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise CorruptEntry(f"{file}: missing")
        if sha256_file(file) != expected:
            raise CorruptEntry(f"{file}: sha256 does not match the one recorded when it was written")
    return meta


def load_intact(path: Path, on_corrupt: Callable[[CorruptEntry], None] | None = None) -> dict[str, Any] | None:
    """`load_entry`, with a damaged entry taken as missing (the caller rebuilds it; `on_corrupt` may say so)."""
    try:
        return load_entry(path)
    except CorruptEntry as err:
        if on_corrupt is not None:
            on_corrupt(err)
        return None


def commit_entry(path: Path, fill: Callable[[Path], dict[str, Any]], *, replace: bool = False) -> dict[str, Any]:
    """Build the entry at `path`: `fill(tmp_dir)` writes its files and returns its metadata; the
    sha256 of every file is added under `files`, then the directory is renamed into place. An
    intact entry already at `path` (built concurrently) is kept unless `replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        meta = dict(fill(tmp))
        meta["files"] = {
            file.relative_to(tmp).as_posix(): sha256_file(file)
            for file in sorted(tmp.rglob("*"))
            if file.is_file() and file.name != META
        }
        atomic_write_json(tmp / META, meta)
        _move_into_place(tmp, path, replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _move_into_place(tmp: Path, path: Path, replace: bool) -> None:
    """Rename `tmp` to `path`. An entry already there is moved aside first and deleted after,
    unless it is intact and not to be replaced."""
    if path.exists():
        try:
            if load_entry(path) is not None and not replace:
                return
        except CorruptEntry:
            pass
        trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".trash", dir=path.parent))
        path.rename(trash / "old")
        tmp.rename(path)
        shutil.rmtree(trash, ignore_errors=True)
        return
    tmp.rename(path)


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for building `path`, so that concurrent processes (cells of one grid
    starting together) build an entry once and the others wait and then read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def hash_fraction(sha256_hex: str) -> float:
    """A content hash as a number in [0, 1): the deterministic coin behind every split."""
    return int(sha256_hex[:12], 16) / 16**12
