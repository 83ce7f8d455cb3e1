"""The sweep on Ray, for real: local Ray, the micro-smoke ladder, real trials. Every test is bounded in time."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from grids import SMOKE

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]



@pytest.fixture
def smoke_space(write_space, smoke_ladder):
    return write_space(SMOKE)


def cells(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "cells.parquet")


def kill_when_checkpointed(out: Path, killed: dict, trial_prefix: str = "", timeout: float = 300) -> threading.Thread:
    """A thread that SIGKILLs the process reporting for a trial once it has passed its first checkpoint
    (step 5), as seen in the sweep's live files; it notes the trial and pid in `killed`."""

    def watch() -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for live in (out / "live").glob("*.json"):
                info = json.loads(live.read_text())
                if info["trial_id"].startswith(trial_prefix) and (info.get("steps") or 0) >= 5 and info.get("pid"):
                    os.kill(info["pid"], signal.SIGKILL)
                    killed[info["trial_id"]] = info["pid"]
                    return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_grid_runs_every_cell_then_a_rerun_trains_nothing(run_cli, smoke_space, tmp_path):
    out = tmp_path / "sweep"
    code, stdout, stderr = run_cli("launch", "grid", "--space", str(smoke_space), "--out", str(out),
                                   "--set", "scales=[xs, s, m, l]", "--tracking", "mlflow", "--eval-limit", "6")
    assert code == 0, stderr
    table = cells(out)
    assert table.height == 8 and set(table["status"]) == {"done"}
    assert table["final_val_loss"].is_finite().all()
    assert (table["final_val_loss"] < table["initial_val_loss"]).all()
    assert set(table["method"]) == {"fft", "lora"} and set(table["scale"]) == {"xs", "s", "m", "l"}
    assert table.filter(pl.col("method") == "fft")["trainable_params"].to_list() == table.filter(
        pl.col("method") == "fft")["total_params"].to_list()
    curves = pl.read_parquet(out / "curves.parquet")
    assert curves.group_by("trial_id").len()["len"].to_list() == [3] * 8  # steps 0, 5, 10
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["space"]["name"] == "smoke" and len(manifest["plan"]["cells"]) == 8
    evals = pl.read_parquet(out / "evals.parquet")  # the main job goes on: evaluation ...
    assert set(evals["cell_id"]) == set(table["cell_id"]) and evals["value"].is_not_null().all()
    assert (out / "analysis" / "report.md").is_file()  # ... and the report
    assert all(row["git_sha"] for row in table.iter_rows(named=True))
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    tracked = {"final_val_loss", "train_loss", "current_lr", "steps"}  # the ledger's names, and the schedule's
    assert len(runs) == 8 and all(tracked <= set(run.data.metrics) for run in runs)

    before = sorted(p.name for p in (out / "records").iterdir())
    code, stdout, _ = run_cli("launch", "grid", "--space", str(smoke_space), "--out", str(out),
                              "--set", "scales=[xs, s, m, l]", "--no-evaluate", "--no-report")
    assert code == 0
    assert sorted(p.name for p in (out / "records").iterdir()) == before  # no training, no duplicate

    code, stdout, _ = run_cli("status", "--out", str(out), "--json")
    summary = json.loads(stdout)
    assert summary["cells_done"] == summary["cells_total"] == 8
    assert summary["device_hours_used"] > 0


def test_per_cell_search_with_asha_keeps_a_finished_trial_per_cell(run_cli, smoke_space, tmp_path):
    out = tmp_path / "search"
    code, _, stderr = run_cli(
        "launch", "grid", "--space", str(smoke_space), "--out", str(out), "--methods", "lora", "--scales", "xs,s",
        "--set", "search.trials=3", "--set", "search.lr={low: 1.0e-4, high: 1.0e-1}",
        "--set", "early_stopping.grace_steps=5", "--set", "recipe.steps=15",
    )
    assert code == 0, stderr
    table = cells(out)
    assert table.height == 6
    assert set(table["status"]) <= {"done", "stopped-early", "diverged"}
    for cell_id, group in table.group_by("cell_id"):
        assert "done" in group["status"].to_list(), f"cell {cell_id} has no trial that ran to the end"
        assert group["lr"].n_unique() == 3 and group["lr"].is_between(1e-4, 1e-1).all()
    assert (out / "optuna.journal").is_file()


@pytest.mark.timeout(240)
def test_more_seeds_add_replicates_to_a_finished_cell(run_cli, smoke_space, tmp_path):
    from sweeper.backend.runtime import start_ray, stop_ray

    out = tmp_path / "replicates"
    grid = ("launch", "grid", "--space", str(smoke_space), "--out", str(out), "--methods", "lora", "--scales", "xs",
            "--no-evaluate", "--no-report")
    started = start_ray(None)  # one Ray for both launches (a launch leaves up a Ray it did not start): ~20 s saved
    try:
        code, _, stderr = run_cli(*grid)
        assert code == 0, stderr
        [first] = (out / "records").iterdir()
        recorded = first.read_text()
        code, _, stderr = run_cli(*grid, "--set", "seeds=3")  # same cell id: the done replicate is kept
        assert code == 0, stderr
    finally:
        if started:
            stop_ray()
    assert first.read_text() == recorded
    table = cells(out).sort("seed")
    cell_id = table["cell_id"][0]
    assert table["trial_id"].to_list() == [f"{cell_id}-t0", f"{cell_id}-t0-s1", f"{cell_id}-t0-s2"]
    assert table["seed"].to_list() == [0, 1, 2] and set(table["status"]) == {"done"}
    assert table["final_val_loss"].n_unique() == 3  # the seeds trained differently
    code, stdout, _ = run_cli("status", "--out", str(out), "--json")
    [replicates] = json.loads(stdout)["replicates"]
    assert replicates["seeds_done"] == 3 and replicates["mean_val_loss"] == pytest.approx(
        table["final_val_loss"].mean()) and replicates["sd_val_loss"] == pytest.approx(table["final_val_loss"].std())


def test_a_killed_trial_worker_resumes_from_its_checkpoint(run_cli, smoke_space, tmp_path):
    out = tmp_path / "kill-worker"
    killed = {}
    killer = kill_when_checkpointed(out, killed)
    code, _, stderr = run_cli("launch", "grid", "--space", str(smoke_space), "--out", str(out),
                              "--methods", "fft", "--scales", "s", "--set", "recipe.steps=40")
    killer.join(timeout=5)
    assert killed, "the test never saw a checkpointed trial to kill"
    assert code == 0, stderr
    row = cells(out).row(0, named=True)
    assert row["status"] == "done"
    assert json.loads(row["resumed_at"]) and json.loads(row["resumed_at"])[0] >= 5


def _launch(space: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sweeper", "launch", "grid", "--space", str(space), "--out", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def _wait_for_records(out: Path, count: int, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(list((out / "records").glob("*.json"))) >= count:
            return
        if process.poll() is not None:
            pytest.fail(f"launch ended early: {process.stdout.read()[-2000:]}")
        time.sleep(0.3)
    pytest.fail("no trial recorded in time")


def test_a_killed_driver_loses_nothing_and_a_rerun_completes(smoke_space, tmp_path):
    out = tmp_path / "kill-driver"
    first = _launch(smoke_space, out, "--set", "recipe.steps=30")
    _wait_for_records(out, 1, first)
    first.send_signal(signal.SIGKILL)  # the driver only: Ray's own processes must notice and go
    first.wait(timeout=30)
    recorded = {p.name: p.read_text() for p in (out / "records").glob("*.json")}
    second = _launch(smoke_space, out, "--set", "recipe.steps=30")
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output[-3000:]
    for name, text in recorded.items():
        assert (out / "records" / name).read_text() == text  # nothing recorded was lost or rewritten
    table = cells(out)
    assert table.height == 4 and set(table["status"]) == {"done"} and table["trial_id"].n_unique() == 4


def test_ctrl_c_leaves_a_ledger_that_status_reads_and_a_rerun_completes(run_cli, smoke_space, tmp_path):
    out = tmp_path / "interrupted"
    first = _launch(smoke_space, out, "--set", "recipe.steps=30")
    _wait_for_records(out, 1, first)
    first.send_signal(signal.SIGINT)
    output, _ = first.communicate(timeout=120)
    assert first.returncode != 0, output[-2000:]
    code, stdout, _ = run_cli("status", "--out", str(out), "--json")
    assert code == 0 and json.loads(stdout)["cells_done"] >= 1
    second = _launch(smoke_space, out, "--set", "recipe.steps=30")
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output[-3000:]
    assert set(cells(out)["status"]) == {"done"} and cells(out).height == 4


def test_bad_launch_input_is_refused_before_anything_is_written(run_cli, smoke_space, tmp_path):
    out = tmp_path / "never"
    code, _, err = run_cli("launch", "grid", "--space", str(smoke_space), "--out", str(out),
                           "--address", "127.0.0.1:1")
    assert code == 2 and "no Ray head reachable" in err and not out.exists()
    # /proc takes no new folder, whoever runs the test (root ignores permission bits).
    code, _, err = run_cli("launch", "grid", "--space", str(smoke_space), "--out", "/proc/sweeper-test/x")
    assert code == 2 and "not writable" in err
    file_parent = tmp_path / "a-file"
    file_parent.write_text("")
    code, _, err = run_cli("launch", "grid", "--space", str(smoke_space), "--out", str(file_parent / "x"))
    assert code == 2 and "is a file, expected a folder" in err


def test_resources_beyond_the_cluster_name_the_cell(run_cli, smoke_space, tmp_path):
    out = tmp_path / "too-big"
    code, _, err = run_cli("launch", "grid", "--space", str(smoke_space), "--out", str(out),
                           "--set", "resources.cpus_per_worker=64")
    assert code == 2
    assert "cell fft/xs" in err and "64 CPUs" in err
    assert not out.exists()


DISTRIBUTED = SMOKE.replace("scales: [xs, s]", "scales: [xs]").replace(
    "global_batch: 4, micro_batch: 4", "global_batch: 4, micro_batch: 2"
).replace("resources: {workers: 1, cpus_per_worker: 1}", "resources: {workers: 2, cpus_per_worker: 1}") + """\
overrides:
  - methods: [fft]
    set: {recipe.zero_stage: 3}
"""


def test_multi_worker_cells_run_ddp_and_deepspeed_and_survive_a_killed_worker(run_cli, write_space, smoke_ladder,
                                                                              tmp_path):
    """lora: 2-worker DDP through a Ray Train TorchTrainer, one worker killed mid-run (FailureConfig restarts
    the group, the loop resumes from its checkpoint); fft: DeepSpeed ZeRO-3 over 2 CPU workers (gloo)."""
    out = tmp_path / "distributed"
    space = write_space(DISTRIBUTED.replace("steps: 10", "steps: 20"))
    from sweeper.space import expand, load_space

    lora_id = next(c.id for c in expand(load_space(str(space))) if c.method == "lora")
    killed = {}
    killer = kill_when_checkpointed(out, killed, trial_prefix=lora_id)
    code, _, stderr = run_cli("launch", "grid", "--space", str(space), "--out", str(out), "--no-evaluate",
                              "--no-report")
    killer.join(timeout=5)
    assert code == 0, stderr
    table = cells(out)
    assert table.height == 2 and set(table["status"]) == {"done"}
    assert (table["final_val_loss"] < table["initial_val_loss"]).all()
    assert killed, "the test never saw a checkpointed Train worker to kill"
    lora = table.filter(pl.col("method") == "lora").row(0, named=True)
    assert json.loads(lora["resumed_at"]) and json.loads(lora["resumed_at"])[0] >= 5
    fft = table.filter(pl.col("method") == "fft").row(0, named=True)
    assert fft["trainable_params"] == fft["total_params"]  # counted from ZeRO-3's partitioned parameters


def test_a_failing_trial_is_recorded_as_failed_and_not_retried_past_max_retries(run_cli, smoke_space, tmp_path,
                                                                                 monkeypatch):
    faults = Path(__file__).parent / "faults"  # its sitecustomize makes the trials' final save raise
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(faults), os.environ.get("PYTHONPATH")])))
    out = tmp_path / "failing"
    args = ("launch", "grid", "--space", str(smoke_space), "--out", str(out), "--methods", "lora", "--scales",
            "xs", "--set", "max_retries=0")
    code, _, err = run_cli(*args)
    assert code == 1 and "failed 1 times" in err
    row = cells(out).row(0, named=True)
    assert row["status"] == "failed" and "injected fault" in row["error"]
    assert row["steps"] == 5  # the last report before the crash is kept
    code, _, err = run_cli(*args)  # given up after max_retries + 1 failures: not run again
    assert code == 1 and cells(out).height == 1


@pytest.mark.timeout(240)
def test_a_fresh_sweep_on_the_same_storage_never_touches_the_first_sweeps_weights(run_cli, smoke_space, tmp_path):
    """Two sweeps, one storage folder (as every sweep of a cluster.yaml shares its SWEEPER_STORAGE): the second
    (--fresh) trains the same trial key; it must write its own weights, not over the first sweep's."""
    from sweeper.backend.runtime import start_ray, stop_ray

    out, storage = tmp_path / "sweep", tmp_path / "shared"
    grid = ("launch", "grid", "--space", str(smoke_space), "--out", str(out), "--storage", str(storage),
            "--methods", "lora", "--scales", "xs", "--no-evaluate", "--no-report")
    started = start_ray(None)  # one Ray for both launches
    try:
        code, _, stderr = run_cli(*grid)
        assert code == 0, stderr
        [first] = cells(out)["checkpoint"].to_list()
        weights = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in Path(first).rglob("*") if p.is_file()}
        code, _, stderr = run_cli(*grid, "--fresh")
        assert code == 0, stderr
    finally:
        if started:
            stop_ray()
    [second_out] = [p for p in tmp_path.iterdir() if p.name.startswith("sweep-")]
    [second] = cells(second_out)["checkpoint"].to_list()
    assert first != second  # the first ledger still points at the first sweep's weights ...
    assert weights and all((p.read_bytes(), p.stat().st_mtime_ns) == v for p, v in weights.items())  # untouched
    ids = [json.loads((folder / "manifest.json").read_text())["sweep_id"] for folder in (out, second_out)]
    assert ids[0] != ids[1] and first.startswith(str(storage / ids[0])) and second.startswith(str(storage / ids[1]))
    assert json.loads(cells(second_out)["resumed_at"][0]) == []
