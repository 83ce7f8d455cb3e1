"""Files: atomic writes (a reader sees the old file or the new one, never half of one), a writable-folder
check before work starts, and the Python files under a folder or an installed package.

Write to a temporary file in the same directory, fsync, then `os.replace` (atomic on POSIX), then
fsync the directory: the rename lives in the directory, and until that is on disk a crash can undo
it (the file a caller was told is written would be gone, or the old one back).
"""

import errno
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweeper.core.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make the renames and links made in `folder` durable. Some filesystems (a few network and FUSE
    mounts) cannot fsync a directory: there it is a no-op, as it is for every program on them."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _publish(path: Path, write: Callable[[Path], None], exclusive: bool) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if exclusive:
            _link_exclusive(tmp, path)
            tmp.unlink(missing_ok=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _link_exclusive(source: Path, target: Path) -> None:
    """Give `source` the name `target` unless `target` exists (FileExistsError). A hard link is atomic and
    exclusive; where hard links are not supported (some FUSE/SMB mounts), a check then a rename: only
    one writer per folder (the driver, holding the folder's lock) publishes there, so nothing races it.
    `source` may be gone afterwards (renamed): callers unlink it with missing_ok."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if target.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(target)) from None
        os.replace(source, target)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` and move the result over `path` only if it succeeded.

    The result gets the permissions an ordinary `open(path, "w")` would give (mkstemp makes 0600)."""
    _publish(path, write, exclusive=False)


def atomic_create(path: Path, write: Callable[[Path], None]) -> None:
    """`atomic_write`, but never over an existing file: FileExistsError when `path` exists."""
    _publish(path, write, exclusive=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _json_text(obj: Any, sort_keys: bool = True) -> str:
    return json.dumps(obj, indent=2, sort_keys=sort_keys, default=str) + "\n"


def atomic_write_json(path: Path, obj: Any, sort_keys: bool = True) -> None:
    atomic_write_text(path, _json_text(obj, sort_keys))


def create_json(path: Path, obj: Any) -> None:
    """Write a JSON file that must not exist yet (a ledger record): FileExistsError when it does."""
    atomic_create(path, lambda tmp: tmp.write_text(_json_text(obj)))


def move_aside(path: Path, folder: Path) -> Path:
    """Move `path` into `folder` under its own name (or `<name>.1`, `.2`, ... when taken), never over another
    file and never deleting it; returns where it went. Link then unlink: at every moment the file has a name."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        target = folder / (path.name if n == 0 else f"{path.name}.{n}")
        try:
            _link_exclusive(path, target)
        except FileExistsError:
            continue
        path.unlink(missing_ok=True)
        fsync_dir(folder)
        fsync_dir(path.parent)
        return target
    raise FileExistsError(errno.EEXIST, "no free name to move the file to", str(folder / path.name))


def check_writable(out: Path) -> None:
    """The folder, or the nearest existing parent it would be made in, must take a new folder: tried
    for real (and removed at once), since permission bits say nothing for root or read-only mounts."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"--out {out}: {probe} is a file, expected a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sweeper-probe-", dir=probe))
    except OSError as err:
        raise UserError(f"--out {out}: {probe} is not writable ({err.strerror})") from None


def python_files(root: Path, exclude_dirs: tuple[str, ...] = ()) -> list[Path]:
    """Every `.py` file under `root`, skipping excluded directory names, in sorted path order."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in exclude_dirs)
        found.extend(Path(folder) / name for name in sorted(names) if name.endswith(".py"))
    return found


def package_roots(packages: tuple[str, ...], field: str) -> list[Path]:
    """The source folders of installed packages named by import name; `field` names the setting in the
    error for one that is not installed (or is a single module, which has no folder)."""
    roots = []
    for package in packages:
        try:
            spec = importlib.util.find_spec(package) if package else None
        except (ImportError, ValueError):  # a dotted name whose parent is not installed
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"{field}: {package!r} is not an installed package (expected an import name, e.g. 'rich')")
        roots.extend(Path(location) for location in spec.submodule_search_locations)
    return roots
