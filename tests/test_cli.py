import pytest

from sweeper.core.paths import PROJECT_ROOT

pytestmark = pytest.mark.usefixtures("plan_memo")  # the astraios plan counted once per session


def test_help_lists_every_command(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    for command in ("plan", "launch", "status", "methods", "ladder", "eval", "fit", "report"):
        assert command in out


def test_plan_prints_the_grid(run_cli):
    code, out, _ = run_cli("plan", "--space", "astraios", "--methods", "lora,fft", "--scales", "1b")
    assert code == 0
    assert "lora" in out and "fft" in out and "2 cells" in out


def test_dry_run_prints_the_plan_and_writes_nothing(run_cli, tmp_path):
    out_dir = tmp_path / "sweep"
    code, out, _ = run_cli("launch", "grid", "--space", "astraios", "--dry-run", "--out", str(out_dir))
    assert code == 0 and "28 cells" in out
    assert not out_dir.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plan", "--space", "/nope.yaml"], "file not found"),
        (["plan", "--space", "astraios", "--methods", "dora9"], "--methods: dora9 not in space"),
        (["plan", "--space", "astraios", "--scales", "2b"], "--scales: 2b not in space"),
        (["plan", "--space", "astraios", "--set", "recipe.nope=1"], "recipe has no field 'nope'"),
        (["launch", "grid", "--space", "astraios", "--budget-usd", "-3"], "--budget-usd: expected a non-negative"),
        (["launch", "grid", "--space", "astraios", "--budget-usd", "1"], "exceeds the budget"),
        (["plan", "--space", "astraios", "--methods", "ptuning", "--set", "data.seq_len=8180"],
         "data.seq_len: 8180 + 30 virtual tokens of ptuning exceeds the 8192 positions of starcoderbase/1b"),
    ],
)
def test_bad_input_exits_2_with_one_line(run_cli, tmp_path, args, expected):
    out_dir = tmp_path / "sweep"
    code, _, err = run_cli(*args, *(["--out", str(out_dir)] if args[0] == "launch" else []))
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out_dir.exists()


def test_cli_import_pulls_no_heavy_library():
    """`sweeper --help` stays instant because no command module imports torch & co. at import time."""
    import subprocess
    import sys

    code = "import sys, sweeper.cli; print(sorted(m for m in ('torch', 'ray', 'transformers', 'peft', 'polars', 'scipy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "[]"


def test_cluster_check_validates_the_file_and_the_grid_against_it(run_cli):
    code, out, err = run_cli("cluster", "check", str(PROJECT_ROOT / "cluster.yaml"), "--space", "astraios")
    assert code == 0, err
    assert "gpu-8x-a100" in out and "all 28 cells of space 'astraios' fit a node type" in out
    code, _, err = run_cli("cluster", "check", str(PROJECT_ROOT / "cluster.yaml"), "--space", "astraios", "--set", "overrides=[]")
    assert code == 2 and "cell fft/3b" in err and "fits no node type" in err
