import shutil
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smoke-cache")


@pytest.fixture(scope="session")
def plan_memo(tmp_path_factory) -> Path:
    """The on-disk memos of the astraios plan (resolved method configs, parameter counts), made once per
    session: counting 28 cells on the meta device takes ~2 s, which every planning test would pay again."""
    from sweeper.plan import make_plan
    from sweeper.space import load_space

    folder = tmp_path_factory.mktemp("plan-memo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SWEEPER_CACHE", str(folder))
        make_plan(load_space("astraios"))
    return folder


@pytest.fixture(autouse=True)
def isolated_cache(request, tmp_path_factory, monkeypatch):
    """Every test gets its own sweeper cache, except tests on the micro-smoke ladder, which share the
    session's (so that the ladder is pretrained once per test session). Tests that use `plan_memo` get
    a copy of its memo files in theirs."""
    if "smoke_ladder" in request.fixturenames:
        monkeypatch.setenv("SWEEPER_CACHE", str(request.getfixturevalue("smoke_cache")))
        return
    cache = tmp_path_factory.mktemp("cache")
    if "plan_memo" in request.fixturenames:
        for memo in request.getfixturevalue("plan_memo").glob("*.json"):
            shutil.copy(memo, cache / memo.name)
    monkeypatch.setenv("SWEEPER_CACHE", str(cache))


@pytest.fixture(scope="session")
def smoke_ladder(smoke_cache) -> str:
    """The `micro-smoke` ladder (the micro ladder with a few pretraining steps), built once per session."""
    from sweeper.ladders import get_ladder
    from sweeper.ladders.micro.build import build_ladder

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SWEEPER_CACHE", str(smoke_cache))
        build_ladder(get_ladder("micro-smoke"), workers=2)
    return "micro-smoke"


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run `sweeper ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from sweeper.cli.main import main

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
