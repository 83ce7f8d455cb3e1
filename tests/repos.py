"""Throwaway git repositories for the tests of the `git` data source."""

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def new_repo(path: Path) -> Path:
    """An empty repository at `path` with a committer configured (CI machines have none)."""
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    return path
