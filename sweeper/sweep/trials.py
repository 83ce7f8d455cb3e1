"""The trials of a grid and where each stands: to run, finished, failed, given up on (from the ledger's rows)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sweeper.schema import Cell, Trial
from sweeper.sweep.ledger import FINISHED
from sweeper.sweep.progress import TrialView


def grid_trials(cells: list[Cell]) -> list[Trial]:
    """Every trial of the grid: per cell, `seeds` replicates x `search.trials` search trials."""
    return [Trial(cell, index, replicate) for cell in cells for replicate in range(cell.seeds)
            for index in range(cell.search.trials)]


def pending_trials(trials: list[Trial], rows: list[dict[str, Any]], max_retries: int) -> tuple[list[Trial], list[Trial]]:
    """(trials to run, trials given up on after too many failures), from the ledger's rows."""
    finished = {row["trial_id"] for row in rows if row["status"] in FINISHED}
    failures = Counter(row["trial_id"] for row in rows if row["status"] == "failed")
    todo, given_up = [], []
    for trial in trials:
        if trial.trial_id in finished:
            continue
        (given_up if failures[trial.trial_id] > max_retries else todo).append(trial)
    return todo, given_up


def views(trials: list[Trial], rows: list[dict[str, Any]]) -> list[TrialView]:
    """A table row per trial: its finished attempt if any, else `failed` when it only failed, else pending."""
    finished = {row["trial_id"]: row for row in rows if row["status"] != "failed"}
    failed = {row["trial_id"] for row in rows if row["status"] == "failed"}
    result = []
    for trial in trials:
        cell = trial.cell
        view = TrialView(trial_id=trial.trial_id, cell_id=cell.id, method=cell.method, scale=cell.scale,
                         steps_total=cell.recipe.steps, tokens_total=cell.train_tokens, seed=trial.seed)
        row = finished.get(trial.trial_id)
        if row:
            view.status, view.step, view.tokens = row["status"], row["steps"] or 0, row["tokens"] or 0
            view.val_loss = row["final_val_loss"] if row["final_val_loss"] is not None else float("nan")
            view.best_val_loss = row["best_val_loss"] if row["best_val_loss"] is not None else float("nan")
        elif trial.trial_id in failed:
            view.status = "failed"
        result.append(view)
    return result
