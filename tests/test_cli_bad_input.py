"""Every usage mistake ends in one line on stderr naming the field or file and what was expected,
exit code 2, no traceback and nothing written (issue 11, section 4). One table of bad inputs, run
in-process through `sweeper.cli.main`, so that a traceback fails the test rather than printing."""

from pathlib import Path

import pytest

from sweeper.core.paths import PROJECT_ROOT

pytestmark = pytest.mark.usefixtures("plan_memo")


def _csv(folder: Path, text: str, name: str = "table.csv") -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


GOOD_CSV = "n,loss\n1e6,3.2\n1e7,2.9\n1e8,2.7\n1e9,2.6\n"

# (arguments, text the error must contain); {tmp} is the test's folder, {csv} a good table in it.
CASES = [
    # typer's own usage errors: unknown option, wrong type, missing and extra arguments
    (["plan", "--nope"], "No such option: --nope"),
    (["plan", "--gpu-memory-gib", "abc"], "--gpu-memory-gib"),
    (["launch", "grid", "--budget-usd", "abc"], "--budget-usd"),
    (["launch", "grid", "--nope", "1"], "No such option: --nope"),
    (["fit"], "Missing argument"),
    (["plan", "extra"], "unexpected extra argument"),
    (["fit", "{csv}", "--bootstrap", "-1"], "--bootstrap"),
    (["launch", "nope"], "No such command"),
    # non-finite and absurd numbers
    (["plan", "--gpu-memory-gib", "inf"], "--gpu-memory-gib: expected a positive finite number"),
    (["plan", "--gpu-memory-gib", "nan"], "--gpu-memory-gib: expected a positive finite number"),
    (["plan", "--gpu-memory-gib", "-1"], "--gpu-memory-gib: expected a positive finite number"),
    (["plan", "--set", "recipe.lr=.inf"], "recipe.lr"),
    (["plan", "--set", "recipe.lr=nan"], "recipe.lr"),
    (["plan", "--set", "recipe.steps=1e39"], "recipe.steps"),
    (["launch", "grid", "--budget-usd", "inf"], "--budget-usd"),
    (["launch", "grid", "--budget-usd", "nan"], "--budget-usd"),
    # a dry run still checks what a real run would refuse
    (["launch", "grid", "--dry-run", "--budget-usd", "-5"], "--budget-usd: expected a non-negative"),
    (["launch", "grid", "--dry-run", "--tracking", "nope"], "--tracking"),
    (["launch", "grid", "--tracking", "nope"], "--tracking"),
    # output folders that cannot be used, checked before any work
    (["launch", "grid", "--out", "{tmp}/afile"], "afile"),
    (["launch", "grid", "--out", "{tmp}/afile/sub"], "afile"),
    (["fit", "{csv}", "--x", "n", "--y", "loss", "--out", "{tmp}/afile"], "afile"),
    (["report", "{csv}", "--x", "n", "--y", "loss", "--out", "{tmp}/afile/sub"], "afile"),
    # tables
    (["fit", "{tmp}/dup.csv", "--x", "n", "--y", "loss"], "dup.csv"),
    (["fit", "{csv}", "--x", "n", "--y", "loss", "--predict", "-5"], "--predict"),
    (["fit", "{csv}", "--x", "n", "--y", "loss", "--predict", "abc"], "--predict"),
    (["fit", "{csv}", "--x", "n", "--y", "loss", "--predict", "inf"], "--predict"),
    (["fit", "{tmp}/missing.csv", "--x", "n", "--y", "loss"], "missing.csv"),
    # spaces
    (["plan", "--space", "{tmp}/escape.yaml"], "name"),
    (["plan", "--space", "{tmp}/unhashable.yaml"], "unhashable.yaml"),
    (["plan", "--space", "{tmp}/list.yaml"], "list.yaml"),
    # folders that are not sweeps
    (["status", "--out", "{tmp}/afile"], "afile"),
    # given but empty, or not what the option takes
    (["plan", "--methods", ""], "--methods ''"),
    (["plan", "--scales", ","], "--scales ','"),
    (["launch", "grid", "--dry-run", "--address", "bad:port:x"], "--address"),
    (["launch", "grid", "--dry-run", "--storage", ""], "--storage"),
    (["fit", "{csv}", "--x", "n", "--y", "loss", "--predict", ","], "--predict"),
    (["fit", "{csv}", "--x", "n", "--y", "loss", "--seed", "-1"], "--seed"),
    # scoring generations
    (["eval", "score", "--task", "humanevalsynthesize", "--generations", "{tmp}/null.json"], "null.json"),
    (["eval", "score", "--task", "humanevalsynthesize", "--generations", "{tmp}/null.json",
      "--timeout", "nan"], "--timeout"),
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("not a folder\n")
    _csv(tmp_path, GOOD_CSV)
    _csv(tmp_path, "n,loss,loss\n1e6,3.2,3.2\n1e7,2.9,2.9\n1e8,2.7,2.7\n", "dup.csv")
    micro = (PROJECT_ROOT / "search_spaces" / "micro.yaml").read_text()
    (tmp_path / "escape.yaml").write_text(micro.replace("name: micro", "name: ../../x", 1))
    (tmp_path / "unhashable.yaml").write_text("? [a, b]\n: 1\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "null.json").write_text("null\n")
    return tmp_path


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_usage_mistake_is_one_line_and_exit_2(run_cli, folder, args, expected):
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    filled = [a.format(tmp=folder, csv=folder / "table.csv") for a in args]
    if filled[:2] == ["launch", "grid"] and "--out" not in filled:
        filled += ["--out", str(folder / "sweep")]
    code, _, err = run_cli(*filled)
    assert code == 2, (code, err)
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert expected in err, err
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before, "something was written"


def test_a_command_group_alone_prints_its_help(run_cli):
    code, out, err = run_cli("launch")
    assert code == 2 and "grid" in out and err == ""
