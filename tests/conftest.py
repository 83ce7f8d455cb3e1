import sys
from pathlib import Path

import pytest

from sweeper.paths import PROJECT_ROOT

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own sweeper cache unless it asks for the shared session one."""
    monkeypatch.setenv("SWEEPER_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run `sweeper ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from sweeper.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["sweeper", *args])
        try:
            main()
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def write_space(tmp_path):
    """Write a YAML space (text) to a temp file and return its path."""

    def write(text: str, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
