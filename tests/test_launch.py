"""What `launch grid` decides before Ray starts: the folder, a different config, the lock, what is left to run."""

import pytest

from sweeper.errors import UserError
from sweeper.launch import LaunchOptions, check_same_space, exclusive, pending_slots, resolve_out, trial_slots
from sweeper.ledger import Ledger
from sweeper.plan import make_plan
from sweeper.space import load_space

pytestmark = pytest.mark.usefixtures("plan_memo")  # the astraios plan counted once per session


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
    slots = trial_slots(plan.cells[:3])
    ledger = Ledger(tmp_path)
    done, failing, _ = slots
    ledger.record({"cell_id": done.cell.id, "trial_id": done.key, "attempt": 0, "status": "done",
                   "finished_at": "2026-01-01T00:00:00+00:00"}, [])
    for attempt in range(2):
        ledger.record({"cell_id": failing.cell.id, "trial_id": failing.key, "attempt": attempt,
                       "status": "failed", "finished_at": f"2026-01-01T00:00:0{attempt + 1}+00:00"}, [])
    todo, given_up = pending_slots(slots, ledger.rows(), max_retries=2)
    assert [s.key for s in todo] == [failing.key, slots[2].key] and given_up == []
    todo, given_up = pending_slots(slots, ledger.rows(), max_retries=1)
    assert [s.key for s in todo] == [slots[2].key] and [s.key for s in given_up] == [failing.key]


def test_status_shows_running_rates_and_trials_that_only_failed(tmp_path, capsys):
    from sweeper.launch import write_manifest
    from sweeper.status import collect, print_status

    plan = astraios_plan()
    ledger = Ledger(tmp_path)
    write_manifest(ledger, plan, "astraios")
    running, failed = trial_slots(plan.cells)[:2]
    ledger.update_live(running.key, {"trial_id": running.key, "step": 50, "tokens": 50 * running.cell.tokens_per_step,
                                     "val_loss": 1.5, "best_val_loss": 1.5, "tokens_per_s": 2048.0})
    ledger.record({"cell_id": failed.cell.id, "trial_id": failed.key, "attempt": 0, "status": "failed",
                   "finished_at": "2026-01-01T00:00:00+00:00"}, [])
    summary = collect(tmp_path)
    trials = {t["trial_id"]: t for t in summary["trials"]}
    assert trials[running.key]["status"] == "running" and trials[running.key]["tokens_per_s"] == 2048.0
    assert trials[failed.key]["status"] == "failed"
    print_status(summary)
    row = next(line for line in capsys.readouterr().out.splitlines() if running.cell.id in line)
    eta = (running.cell.train_tokens - 50 * running.cell.tokens_per_step) / 2048.0  # seconds
    assert "2.05e+03" in row and f"{int(eta) // 60}m{int(eta) % 60:02d}s" in row  # tok/s and ETA


SEARCH = ("search.trials=2", "search.lr={low: 1.0e-4, high: 1.0e-2}")


def test_replicates_are_trials_with_their_own_seed_and_replicate_0_keeps_its_key():
    from sweeper.space import expand

    cells = expand(load_space("astraios", ["seeds=3", "recipe.seed=7", *SEARCH]))[:2]
    slots = trial_slots(cells)
    assert len(slots) == 2 * 3 * 2 and len({s.key for s in slots}) == len(slots)
    for cell in cells:
        mine = [s for s in slots if s.cell == cell]
        assert [(s.seed, s.index) for s in mine] == [(seed, i) for seed in (7, 8, 9) for i in (0, 1)]
        assert [s.key for s in mine] == [f"{cell.id}-t0", f"{cell.id}-t1"] + [
            f"{cell.id}-t{i}-s{seed}" for seed in (8, 9) for i in (0, 1)]
    without = trial_slots(expand(load_space("astraios", ["recipe.seed=7", *SEARCH]))[:2])  # seeds: 1
    assert [s.key for s in slots if s.replicate == 0] == [s.key for s in without]


def test_each_replicate_searches_its_own_lr_and_trains_and_records_with_its_seed(tmp_path):
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from sweeper.launch import views
    from sweeper.progress import LiveTable
    from sweeper.tune import CellTrialSearcher, LedgerCallback, PerCellASHA, _trial_from

    plan = astraios_plan("seeds=2", *SEARCH)
    slots = trial_slots(plan.cells[:1])
    scheduler = PerCellASHA()
    searcher = CellTrialSearcher(slots, {"store": None}, tmp_path / "optuna.journal", scheduler)
    configs = [searcher.suggest(f"tune-{n}") for n in range(len(slots))]
    cell = slots[0].cell
    assert [c["trial_key"] for c in configs] == [s.key for s in slots]
    assert [_trial_from(c).seed for c in configs] == [0, 0, 1, 1]
    assert sorted(searcher.studies) == sorted({cell.id, f"{cell.id}-s1"})  # replicate 0 keeps the cell's study
    assert all(1e-4 <= c["lr"] <= 1e-2 for c in configs) and len({c["lr"] for c in configs}) == 4

    ledger = Ledger(tmp_path)
    table = LiveTable(views(slots, []), "t", console=Console(file=io.StringIO()))
    provenance = {"git_sha": "0" * 40, "git_dirty": False, "versions": {}, "hardware": {}}
    recorder = LedgerCallback(ledger, {s.key: s for s in slots}, scheduler, provenance, table)
    trial = SimpleNamespace(trial_id="tune-3", config=configs[3])
    recorder._record(trial, "done", {"step": 200, "val_loss": 1.0})
    assert ledger.rows()[0]["seed"] == 1 and ledger.rows()[0]["trial_id"] == f"{cell.id}-t1-s1"


def test_status_summarises_the_replicates_of_a_cell(tmp_path, capsys):
    from sweeper.launch import write_manifest
    from sweeper.status import collect, print_status

    plan = astraios_plan("seeds=3", *SEARCH)
    ledger = Ledger(tmp_path)
    write_manifest(ledger, plan, "astraios")
    slots = trial_slots(plan.cells[:2])
    # cell 0: per seed the better lr trial counts (1.0, 1.2, 1.1); cell 1: one seed done, no spread
    outcomes = {(0, 0, 0): 1.0, (0, 0, 1): 1.5, (0, 1, 0): 1.3, (0, 1, 1): 1.2, (0, 2, 1): 1.1, (1, 0, 0): 2.0}
    by_slot = {(plan.cells.index(s.cell), s.replicate, s.index): s for s in slots}
    for n, (where, loss) in enumerate(outcomes.items()):
        slot = by_slot[where]
        ledger.record({"cell_id": slot.cell.id, "trial_id": slot.key, "attempt": 0, "status": "done",
                       "final_val_loss": loss, "seed": slot.seed, "finished_at": f"2026-01-01T00:00:0{n}+00:00"}, [])
    diverged = by_slot[0, 2, 0]
    ledger.record({"cell_id": diverged.cell.id, "trial_id": diverged.key, "attempt": 0, "status": "diverged",
                   "final_val_loss": 0.5, "seed": diverged.seed, "finished_at": "2026-01-01T00:00:09+00:00"}, [])
    summary = collect(tmp_path)
    assert len(summary["trials"]) == 28 * 3 * 2
    assert {t["trial_id"]: t["seed"] for t in summary["trials"]}[diverged.key] == 2
    [replicates] = summary["replicates"]
    assert (replicates["cell_id"], replicates["seeds"], replicates["seeds_done"]) == (plan.cells[0].id, 3, 3)
    assert replicates["val_loss_by_seed"] == {"0": 1.0, "1": 1.2, "2": 1.1}
    assert replicates["mean_val_loss"] == pytest.approx(1.1) and replicates["sd_val_loss"] == pytest.approx(0.1)
    print_status(summary)
    out = capsys.readouterr().out
    assert "1.1 ± 0.1 (3 seeds)" in out and "t1-s2" in out
