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
