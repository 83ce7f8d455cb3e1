"""What `launch grid` decides before Ray starts: the folder, a different config, the lock, what is left to run."""

from pathlib import Path

import pytest

from sweeper.core.errors import UserError
from sweeper.plan import make_plan
from sweeper.space import load_space
from sweeper.sweep.launch import LaunchOptions, check_same_space, exclusive, resolve_out
from sweeper.sweep.ledger import Ledger
from sweeper.sweep.trials import grid_trials, pending_trials

pytestmark = pytest.mark.usefixtures("plan_memo")  # the astraios plan counted once per session


def fake_report(trial, *, steps: int, final_val_loss: float = float("nan"), checkpoint: str | None = None):
    """The last report of a trial that trained `steps` steps (what a worker would send through Ray)."""
    from sweeper.schema import TrialReport

    return TrialReport(
        status="done", steps=steps, tokens=steps * trial.cell.tokens_per_step, initial_val_loss=2.0,
        final_val_loss=final_val_loss, best_val_loss=final_val_loss, tokens_per_s=1.0, train_loss=1.5, current_lr=1e-4,
        trainable_params=1, total_params=2, dataset_fingerprint="data", model_source="base", wall_seconds=1.0,
        checkpoint=checkpoint, resumed_at=(), hardware="{}", pid=1, curve=())


def astraios_plan(*sets: str):
    return make_plan(load_space("astraios", list(sets)))


def test_fresh_starts_a_new_folder_next_to_a_used_one(tmp_path):
    out = tmp_path / "sweep"
    assert resolve_out("micro", LaunchOptions(out=str(out), fresh=True)) == out  # nothing there yet
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    fresh = resolve_out("micro", LaunchOptions(out=str(out), fresh=True))
    assert fresh.parent == tmp_path and fresh.name.startswith("sweep-") and fresh != out
    assert resolve_out("micro", LaunchOptions(out=str(out))) == out


def test_a_folder_holding_another_config_is_refused_unless_forced(tmp_path):
    plan = astraios_plan()
    ledger = Ledger(tmp_path)
    ledger.write_manifest({"space": {"name": "astraios"},
                           "cells": [{"id": c.id, "method": c.method, "scale": c.scale} for c in plan.cells]})
    check_same_space(ledger, plan, force=False)  # the same grid again: fine
    check_same_space(ledger, astraios_plan("budget_usd=1000"), force=False)  # not part of any cell
    changed = astraios_plan("recipe.lr=3e-4")
    with pytest.raises(UserError, match="holds cell fft/1b with a different config"):
        check_same_space(ledger, changed, force=False)
    check_same_space(ledger, changed, force=True)
    with pytest.raises(UserError, match="holds space 'astraios', not 'other'"):
        check_same_space(ledger, astraios_plan("name=other"), force=False)


def test_one_driver_per_folder(tmp_path):
    with (exclusive(tmp_path), pytest.raises(UserError, match="another sweeper is running on this folder"),
          exclusive(tmp_path)):
        pass
    with exclusive(tmp_path):  # released again
        pass


def test_what_is_left_to_run(tmp_path):
    plan = astraios_plan()
    slots = grid_trials(plan.cells[:3])
    ledger = Ledger(tmp_path)
    done, failing, _ = slots
    ledger.record({"cell_id": done.cell.id, "trial_id": done.trial_id, "attempt": 0, "status": "done",
                   "finished_at": "2026-01-01T00:00:00+00:00"}, [])
    for attempt in range(2):
        ledger.record({"cell_id": failing.cell.id, "trial_id": failing.trial_id, "attempt": attempt,
                       "status": "failed", "finished_at": f"2026-01-01T00:00:0{attempt + 1}+00:00"}, [])
    todo, given_up = pending_trials(slots, ledger.rows(), max_retries=2)
    assert [s.trial_id for s in todo] == [failing.trial_id, slots[2].trial_id] and given_up == []
    todo, given_up = pending_trials(slots, ledger.rows(), max_retries=1)
    assert [s.trial_id for s in todo] == [slots[2].trial_id] and [s.trial_id for s in given_up] == [failing.trial_id]


def test_status_shows_running_rates_and_trials_that_only_failed(tmp_path, capsys):
    from sweeper.sweep.launch import write_manifest
    from sweeper.sweep.status import collect, print_status

    plan = astraios_plan()
    ledger = Ledger(tmp_path)
    write_manifest(ledger, plan, "astraios")
    running, failed = grid_trials(plan.cells)[:2]
    ledger.update_live(running.trial_id, {"trial_id": running.trial_id, "steps": 50,
                                          "tokens": 50 * running.cell.tokens_per_step, "final_val_loss": 1.5,
                                          "best_val_loss": 1.5, "tokens_per_s": 2048.0})
    ledger.record({"cell_id": failed.cell.id, "trial_id": failed.trial_id, "attempt": 0, "status": "failed",
                   "finished_at": "2026-01-01T00:00:00+00:00"}, [])
    summary = collect(tmp_path)
    trials = {t["trial_id"]: t for t in summary["trials"]}
    assert trials[running.trial_id]["status"] == "running" and trials[running.trial_id]["tokens_per_s"] == 2048.0
    assert trials[failed.trial_id]["status"] == "failed"
    print_status(summary)
    row = next(line for line in capsys.readouterr().out.splitlines() if running.cell.id in line)
    eta = (running.cell.train_tokens - 50 * running.cell.tokens_per_step) / 2048.0  # seconds
    assert "2.05e+03" in row and f"{int(eta) // 60}m{int(eta) % 60:02d}s" in row  # tok/s and ETA


SEARCH = ("search.trials=2", "search.lr={low: 1.0e-4, high: 1.0e-2}")


def test_replicates_are_trials_with_their_own_seed_and_replicate_0_keeps_its_key():
    from sweeper.space import expand

    cells = expand(load_space("astraios", ["seeds=3", "recipe.seed=7", *SEARCH]))[:2]
    slots = grid_trials(cells)
    assert len(slots) == 2 * 3 * 2 and len({s.trial_id for s in slots}) == len(slots)
    for cell in cells:
        mine = [s for s in slots if s.cell == cell]
        assert [(s.seed, s.index) for s in mine] == [(seed, i) for seed in (7, 8, 9) for i in (0, 1)]
        assert [s.trial_id for s in mine] == [f"{cell.id}-t0", f"{cell.id}-t1"] + [
            f"{cell.id}-t{i}-s{seed}" for seed in (8, 9) for i in (0, 1)]
    without = grid_trials(expand(load_space("astraios", ["recipe.seed=7", *SEARCH]))[:2])  # seeds: 1
    assert [s.trial_id for s in slots if s.replicate == 0] == [s.trial_id for s in without]


def test_each_replicate_searches_its_own_lr_and_trains_and_records_with_its_seed(tmp_path):
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from sweeper.backend.callbacks import LedgerCallback
    from sweeper.backend.search import CellTrialSearcher, PerCellASHA
    from sweeper.sweep.progress import LiveTable
    from sweeper.sweep.trials import views

    plan = astraios_plan("seeds=2", *SEARCH)
    slots = grid_trials(plan.cells[:1])
    scheduler = PerCellASHA()
    searcher = CellTrialSearcher(slots, {}, tmp_path / "optuna.journal", scheduler)
    configs = [searcher.suggest(f"tune-{n}") for n in range(len(slots))]
    cell = slots[0].cell
    assert [c["trial"].trial_id for c in configs] == [s.trial_id for s in slots]
    assert [c["trial"].seed for c in configs] == [0, 0, 1, 1]
    assert sorted(searcher.studies) == sorted({cell.id, f"{cell.id}-s1"})  # replicate 0 keeps the cell's study
    lrs = [c["trial"].lr for c in configs]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs) and len(set(lrs)) == 4
    assert all(c["trial"].recipe.lr == c["trial"].lr for c in configs)  # the optimizer's lr is the search's

    ledger = Ledger(tmp_path)
    table = LiveTable(views(slots, []), "t", console=Console(file=io.StringIO()))
    provenance = {"git_sha": "0" * 40, "git_dirty": False, "versions": {}, "hardware": {}}
    recorder = LedgerCallback(ledger, scheduler, provenance, table)
    trial = SimpleNamespace(trial_id="tune-3", config=configs[3])
    recorder._record(trial, "done", fake_report(configs[3]["trial"], steps=200, final_val_loss=1.0))
    assert ledger.rows()[0]["seed"] == 1 and ledger.rows()[0]["trial_id"] == f"{cell.id}-t1-s1"


def test_status_summarises_the_replicates_of_a_cell(tmp_path, capsys):
    from sweeper.sweep.launch import write_manifest
    from sweeper.sweep.status import collect, print_status

    plan = astraios_plan("seeds=3", *SEARCH)
    ledger = Ledger(tmp_path)
    write_manifest(ledger, plan, "astraios")
    slots = grid_trials(plan.cells[:2])
    # cell 0: per seed the better lr trial counts (1.0, 1.2, 1.1); cell 1: one seed done, no spread
    outcomes = {(0, 0, 0): 1.0, (0, 0, 1): 1.5, (0, 1, 0): 1.3, (0, 1, 1): 1.2, (0, 2, 1): 1.1, (1, 0, 0): 2.0}
    by_slot = {(plan.cells.index(s.cell), s.replicate, s.index): s for s in slots}
    for n, (where, loss) in enumerate(outcomes.items()):
        slot = by_slot[where]
        ledger.record({"cell_id": slot.cell.id, "trial_id": slot.trial_id, "attempt": 0, "status": "done",
                       "final_val_loss": loss, "seed": slot.seed, "finished_at": f"2026-01-01T00:00:0{n}+00:00"}, [])
    diverged = by_slot[0, 2, 0]
    ledger.record({"cell_id": diverged.cell.id, "trial_id": diverged.trial_id, "attempt": 0, "status": "diverged",
                   "final_val_loss": 0.5, "seed": diverged.seed, "finished_at": "2026-01-01T00:00:09+00:00"}, [])
    summary = collect(tmp_path)
    assert len(summary["trials"]) == 28 * 3 * 2
    assert {t["trial_id"]: t["seed"] for t in summary["trials"]}[diverged.trial_id] == 2
    [replicates] = summary["replicates"]
    assert (replicates["cell_id"], replicates["seeds"], replicates["seeds_done"]) == (plan.cells[0].id, 3, 3)
    assert replicates["val_loss_by_seed"] == {"0": 1.0, "1": 1.2, "2": 1.1}
    assert replicates["mean_val_loss"] == pytest.approx(1.1) and replicates["sd_val_loss"] == pytest.approx(0.1)
    print_status(summary)
    out = capsys.readouterr().out
    assert "1.1 ± 0.1 (3 seeds)" in out and "t1-s2" in out


# -- launch_grid without Ray: what it decides about storage, the manifest and the ledger ----------


class NoRay:
    """Stands in for Ray in `launch_grid`: a "trial" either finishes (final weights saved through the real
    CheckpointStore, recorded through the real LedgerCallback) or is interrupted after a checkpoint at step 5.
    `runs` keeps what each launch was given and which trials found a checkpoint to resume from."""

    def __init__(self) -> None:
        self.runs: list[dict] = []
        self.interrupt = False
        self.on_start = None  # called when Ray "starts": lets a test act between the checks and the lock

    def start_ray(self, address):
        if self.on_start:
            self.on_start()
        return False

    def run_trials(self, todo, *, ledger, store, provenance, table, **kwargs):
        import inspect
        import tempfile
        from pathlib import Path
        from types import SimpleNamespace

        from sweeper.backend.callbacks import LedgerCallback
        from sweeper.backend.search import PerCellASHA
        from sweeper.train.artifacts import CheckpointStore

        checkpoints = CheckpointStore(store)
        resumed = {slot.trial_id: checkpoints.latest(slot.trial_id) for slot in todo}
        self.runs.append({"out": ledger.out, "store": store, "resumed": resumed, **kwargs})
        extra = {k: kwargs[k] for k in inspect.signature(LedgerCallback).parameters if k in kwargs}
        recorder = LedgerCallback(ledger, PerCellASHA(), provenance, table, **extra)
        for n, slot in enumerate(todo):
            with tempfile.TemporaryDirectory() as scratch:
                weights = Path(scratch)
                (weights / "weights.txt").write_text(f"trained by {ledger.out.name}")
                if self.interrupt:
                    checkpoints.upload(slot.trial_id, 5, weights)
                    checkpoints.commit(slot.trial_id, 5)
                    continue
                final = checkpoints.save_final(slot.trial_id, weights)
            trial = SimpleNamespace(trial_id=f"tune-{n}", config={"trial": slot})
            recorder._record(trial, "done", fake_report(slot, steps=slot.cell.recipe.steps, final_val_loss=1.0,
                                                        checkpoint=final))
        return recorder.finished


@pytest.fixture
def no_ray(monkeypatch):
    import sweeper.backend.cluster
    import sweeper.backend.driver
    import sweeper.backend.runtime
    import sweeper.sweep.launch

    fake = NoRay()
    monkeypatch.delenv("SWEEPER_STORAGE", raising=False)
    monkeypatch.setattr(sweeper.sweep.launch, "prepare_base_models", lambda plan: None)
    monkeypatch.setattr(sweeper.sweep.launch, "memory_plan", lambda plan: {})
    monkeypatch.setattr(sweeper.backend.cluster, "check_cells_fit", lambda *args: None)
    monkeypatch.setattr(sweeper.backend.runtime, "start_ray", fake.start_ray)
    monkeypatch.setattr(sweeper.backend.runtime, "stop_ray", lambda: None)
    monkeypatch.setattr(sweeper.backend.runtime, "cluster_node_types", lambda: [])
    monkeypatch.setattr(sweeper.backend.runtime, "alive_nodes", lambda: 1)
    monkeypatch.setattr(sweeper.backend.driver, "run_trials", fake.run_trials)
    return fake


def one_cell(*sets: str):
    from sweeper.space import select

    return make_plan(select(load_space("astraios", list(sets)), ["lora"], ["1b"]))


def manifest_of(out):
    import json

    return json.loads((out / "manifest.json").read_text())


def test_two_sweeps_on_one_storage_folder_never_share_a_checkpoint_path(tmp_path, no_ray):
    """Checkpoints were keyed by trial only: a second sweep on the same storage resumed the first's unfinished
    trial and overwrote its final weights (the first ledger then pointed at the second sweep's weights)."""
    from sweeper.sweep.launch import launch_grid
    from sweeper.train.artifacts import CheckpointStore

    plan, shared = one_cell(), tmp_path / "shared"
    [key] = [slot.trial_id for slot in grid_trials(plan.cells)]
    no_ray.interrupt = True
    first = launch_grid(plan, "astraios", LaunchOptions(out=str(tmp_path / "a"), storage=str(shared)))
    no_ray.interrupt = False
    second = launch_grid(plan, "astraios", LaunchOptions(out=str(tmp_path / "b"), storage=str(shared)))
    assert no_ray.runs[1]["resumed"] == {key: None}  # not the other sweep's step-5 checkpoint
    a_id, b_id = manifest_of(first.out)["sweep_id"], manifest_of(second.out)["sweep_id"]
    assert a_id != b_id
    assert [run["store"] for run in no_ray.runs] == [str(shared / a_id), str(shared / b_id)]
    assert CheckpointStore(shared / a_id).latest(key) == "step-000005"  # not removed by the other's commit

    launch_grid(plan, "astraios", LaunchOptions(out=str(tmp_path / "a"), storage=str(shared)))  # a resumes ...
    assert no_ray.runs[2]["store"] == str(shared / a_id) and no_ray.runs[2]["resumed"] == {key: "step-000005"}
    fresh = launch_grid(plan, "astraios", LaunchOptions(out=str(tmp_path / "a"), storage=str(shared), fresh=True))
    c_id = manifest_of(fresh.out)["sweep_id"]  # ... and --fresh is a new sweep: it starts from nothing
    assert fresh.out != first.out and c_id not in (a_id, b_id) and no_ray.runs[3]["resumed"] == {key: None}
    finals = {out: Ledger(out).rows()[0]["checkpoint"] for out in (first.out, second.out, fresh.out)}
    assert len(set(finals.values())) == 3
    for out, uri in finals.items():
        assert (Path(uri) / "weights.txt").read_text() == f"trained by {out.name}"


def test_the_default_storage_is_keyed_by_the_sweep_id_too(tmp_path, no_ray):
    from sweeper.sweep.launch import launch_grid

    result = launch_grid(one_cell(), "astraios", LaunchOptions(out=str(tmp_path / "a")))
    sweep_id = manifest_of(result.out)["sweep_id"]
    assert no_ray.runs[0]["store"] == str((result.out / "checkpoints" / sweep_id).resolve())
    [launch] = manifest_of(result.out)["launches"]
    assert launch["sweep_id"] == sweep_id and launch["checkpoints"] == no_ray.runs[0]["store"]


def old_folder(out, plan):
    """A sweep folder as sweeper wrote it before sweep ids: no sweep_id, launches without their space."""
    from sweeper.sweep.launch import write_manifest

    ledger = Ledger(out)
    write_manifest(ledger, plan, "astraios")
    manifest = manifest_of(out)
    manifest.pop("sweep_id", None)
    manifest["launches"] = [{"at": "2025-01-01T00:00:00+00:00", "argv": [], "git_sha": "0" * 40}]
    ledger.write_manifest({k: v for k, v in manifest.items() if k != "schema_version"})


def test_a_folder_made_before_sweep_ids_still_resumes_its_own_checkpoints(tmp_path, no_ray):
    """Its own OUT/checkpoints is inside the folder: no other sweep wrote there, so the unkeyed trial
    folders are its own and stay in use (recorded in the manifest)."""
    from sweeper.sweep.launch import launch_grid
    from sweeper.train.artifacts import CheckpointStore

    plan, out = one_cell(), tmp_path / "old"
    [key] = [slot.trial_id for slot in grid_trials(plan.cells)]
    old_folder(out, plan)
    legacy = CheckpointStore(out / "checkpoints")
    with __import__("tempfile").TemporaryDirectory() as scratch:
        legacy.upload(key, 5, Path(scratch))
    legacy.commit(key, 5)
    launch_grid(plan, "astraios", LaunchOptions(out=str(out)))
    manifest = manifest_of(out)
    assert manifest["sweep_id"] and manifest["legacy_checkpoints"] is True
    assert no_ray.runs[0]["store"] == str((out / "checkpoints").resolve())
    assert no_ray.runs[0]["resumed"] == {key: "step-000005"}
    assert manifest["launches"][0]["space_hash"]  # the old manifest's space, kept with the launch that wrote it
    assert len({launch["space_hash"] for launch in manifest["launches"]}) == 1
    launch_grid(plan, "astraios", LaunchOptions(out=str(out)))  # the same id and store from now on
    again = manifest_of(out)
    assert again["sweep_id"] == manifest["sweep_id"] and again["launches"][-1]["checkpoints"] == no_ray.runs[0]["store"]


def test_a_folder_made_before_sweep_ids_on_shared_storage_gets_its_own_path(tmp_path, no_ray, capsys):
    """On shared storage an unkeyed trial folder may be another sweep's: never resumed from, with a warning."""
    from sweeper.sweep.launch import launch_grid
    from sweeper.train.artifacts import CheckpointStore

    plan, out, shared = one_cell(), tmp_path / "old", tmp_path / "shared"
    [key] = [slot.trial_id for slot in grid_trials(plan.cells)]
    old_folder(out, plan)
    with __import__("tempfile").TemporaryDirectory() as scratch:
        CheckpointStore(shared).upload(key, 5, Path(scratch))
    CheckpointStore(shared).commit(key, 5)
    launch_grid(plan, "astraios", LaunchOptions(out=str(out), storage=str(shared)))
    manifest = manifest_of(out)
    assert not manifest.get("legacy_checkpoints")
    assert no_ray.runs[0]["store"] == str(shared / manifest["sweep_id"]) and no_ray.runs[0]["resumed"] == {key: None}
    assert "warning:" in capsys.readouterr().err


def test_the_space_check_runs_under_the_folder_lock(tmp_path, no_ray):
    """Another driver may change the folder between an unlocked check and the lock (here: a --force launch
    with another lr that finished while this one started Ray); only a check under the lock sees it."""
    from sweeper.sweep.launch import launch_grid, write_manifest

    out = tmp_path / "sweep"
    launch_grid(one_cell(), "astraios", LaunchOptions(out=str(out)))
    no_ray.on_start = lambda: write_manifest(Ledger(out), one_cell("recipe.lr=3e-4"), "astraios")
    with pytest.raises(UserError, match="holds cell lora/1b with a different config"):
        launch_grid(one_cell(), "astraios", LaunchOptions(out=str(out)))
    assert len(no_ray.runs) == 1


def test_a_trial_is_recorded_after_one_of_its_records_was_removed(tmp_path):
    """The callback numbered attempts by counting records: with one removed it hit an existing number and raised
    FileExistsError, after which that trial could never be recorded."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from sweeper.backend.callbacks import LedgerCallback
    from sweeper.backend.search import PerCellASHA
    from sweeper.sweep.progress import LiveTable
    from sweeper.sweep.trials import views

    [slot] = grid_trials(one_cell().cells)
    ledger = Ledger(tmp_path)
    table = LiveTable(views([slot], []), "t", console=Console(file=io.StringIO()))
    provenance = {"git_sha": "0" * 40, "git_dirty": False, "versions": {}, "hardware": {}}
    recorder = LedgerCallback(ledger, PerCellASHA(), provenance, table)
    trial = SimpleNamespace(trial_id="tune-0", config={"trial": slot})
    for _ in range(2):
        recorder._record(trial, "failed", fake_report(slot, steps=3), error="boom")
    (tmp_path / "records" / f"{slot.trial_id}.a0.json").unlink()
    recorder._record(trial, "done", fake_report(slot, steps=200, final_val_loss=1.0))
    recorder._record(trial, "done", fake_report(slot, steps=200, final_val_loss=1.0))
    assert [(r["attempt"], r["status"]) for r in ledger.rows()] == [(1, "failed"), (2, "done"), (3, "done")]


def test_status_and_launch_go_on_past_a_bad_record(tmp_path, no_ray, capsys):
    import json

    from sweeper.sweep.launch import launch_grid
    from sweeper.sweep.status import collect

    plan, out = one_cell(), tmp_path / "sweep"
    launch_grid(plan, "astraios", LaunchOptions(out=str(out)))
    bad = {"zzz-t0.a0.json": "{not json", "yyy-t0.a0.json": json.dumps({"row": {"trial_id": "yyy-t0"}})}
    for name, text in bad.items():
        (out / "records" / name).write_text(text)
    capsys.readouterr()
    summary = collect(out)
    assert summary["attempts_recorded"] == 1 and summary["cells_done"] == 1
    err = capsys.readouterr().err
    assert all(f"warning: {out / 'records' / name}" in err for name in bad) and len(err.strip().splitlines()) == 2
    assert sorted(p.name for p in (out / "quarantine" / "records").iterdir()) == sorted(bad)
    (out / "records" / "xxx-t0.a0.json").write_text("[1, 2]")  # one more, for the launch to meet
    result = launch_grid(plan, "astraios", LaunchOptions(out=str(out), force=True))
    assert result.recorded == 0 and result.pending == 0 and (out / "quarantine" / "records" / "xxx-t0.a0.json").exists()


def test_force_with_a_changed_space_keeps_both_spaces_and_status_says_which_rows_are_whose(tmp_path, no_ray, capsys):
    from sweeper.sweep.launch import launch_grid
    from sweeper.sweep.status import collect, print_status

    out = tmp_path / "sweep"
    first, changed = one_cell(), one_cell("recipe.lr=3e-4")
    launch_grid(first, "astraios", LaunchOptions(out=str(out)))
    launch_grid(changed, "astraios", LaunchOptions(out=str(out), force=True))
    launch_grid(changed, "astraios", LaunchOptions(out=str(out)))  # a rerun: nothing new, the same space
    manifest = manifest_of(out)
    hashes = [launch["space_hash"] for launch in manifest["launches"]]
    assert len(hashes) == 3 and hashes[0] != hashes[1] == hashes[2]
    assert manifest["launches"][0]["space"]["recipe"]["lr"] == 1e-4
    assert manifest["launches"][1]["space"]["recipe"]["lr"] == 3e-4
    assert manifest["space"]["recipe"]["lr"] == 3e-4  # the latest, as before
    rows = Ledger(out).rows()
    assert {r["cell_id"]: r["space_hash"] for r in rows} == {first.cells[0].id: hashes[0],
                                                             changed.cells[0].id: hashes[1]}
    summary = collect(out)
    assert [(s["space_hash"], s["trials"], s["attempts_recorded"], s["launches"]) for s in summary["spaces"]] == [
        (hashes[0], 1, 1, 1), (hashes[1], 1, 1, 2)]
    assert {t["cell_id"]: t["space_hash"] for t in summary["trials"]} == {
        first.cells[0].id: hashes[0], changed.cells[0].id: hashes[1]}
    assert summary["cells_done"] == summary["cells_total"] == 2
    capsys.readouterr()
    print_status(summary)
    printed = capsys.readouterr().out
    assert f"space {hashes[0]}" in printed and f"space {hashes[1]}" in printed and "2 spaces" in printed
    block = printed[printed.index(f"space {hashes[0]}"):printed.index(f"space {hashes[1]}")]
    assert first.cells[0].id in block and changed.cells[0].id not in block


def test_status_shows_a_recorded_trial_that_no_launched_grid_holds(tmp_path):
    from sweeper.sweep.launch import write_manifest
    from sweeper.sweep.status import collect

    ledger = Ledger(tmp_path)
    write_manifest(ledger, one_cell(), "astraios")
    ledger.record({"cell_id": "feedc0ffee00", "trial_id": "feedc0ffee00-t0", "status": "done", "method": "fft",
                   "scale": "1b", "steps": 7, "final_val_loss": 2.0, "finished_at": "2026-01-01T00:00:00+00:00"}, [])
    summary = collect(tmp_path)
    [orphan] = [t for t in summary["trials"] if t["trial_id"] == "feedc0ffee00-t0"]
    assert (orphan["status"], orphan["step"], orphan["val_loss"], orphan["space_hash"]) == ("done", 7, 2.0, "unknown")
    assert [s["space_hash"] for s in summary["spaces"]][-1] == "unknown" and summary["attempts_recorded"] == 1
