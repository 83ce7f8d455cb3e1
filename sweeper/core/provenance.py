"""Where a result came from: code version, package versions, machine. Recorded with every result."""

import functools
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime

from sweeper.core.paths import PROJECT_ROOT

TRACKED_PACKAGES = (
    "sweeper", "torch", "transformers", "peft", "tokenizers", "datasets", "ray", "optuna", "deepspeed",
    "scipy", "numpy", "polars",
)


@functools.cache
def git_state() -> tuple[str, bool]:
    """(commit sha, dirty flag) of the sweeper checkout; ("unknown", False) outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return sha, dirty


@functools.cache
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def import_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """The installed version of each package named by import name (e.g. 'yaml' -> PyYAML's); None for
    one that no distribution provides (a folder on sys.path)."""
    distributions = importlib.metadata.packages_distributions()
    return {package: importlib.metadata.version(distributions[package][0]) if package in distributions else None
            for package in packages}


def hardware() -> dict[str, str | int]:
    """The machine this process runs on: host, CPU count, and the GPU torch sees in a process that
    uses torch (importing torch only to ask would cost seconds in analysis-only commands)."""
    info: dict[str, str | int] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpus": os.cpu_count() or 0,
        "accelerator": "cpu",
    }
    torch = sys.modules.get("torch")
    if torch is None:
        info["accelerator"] = "not probed (torch not loaded)"
    elif torch.cuda.is_available():
        info["accelerator"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info


def collect() -> dict:
    """Everything above in one JSON-serialisable dict, with a UTC timestamp."""
    sha, dirty = git_state()
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "versions": package_versions(),
        "hardware": hardware(),
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
