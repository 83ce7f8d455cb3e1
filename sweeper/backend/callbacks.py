"""Tune's events, seen from the driver: ledger records, live metrics, the live table, and trackers."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from ray import tune

from sweeper.backend.search import RUNNING, PerCellASHA
from sweeper.schema import Trial, TrialReport
from sweeper.sweep.folder import SweepFolder
from sweeper.sweep.ledger import Ledger, live_metrics, trial_row
from sweeper.sweep.progress import LiveTable


class LedgerCallback(tune.Callback):
    """Records every finished trial attempt in the ledger (one row, one curve) and keeps the live table."""

    def __init__(self, ledger: Ledger, scheduler: PerCellASHA, provenance: dict[str, Any], table: LiveTable,
                 space_hash: str | None = None):
        self.ledger, self.scheduler = ledger, scheduler
        self.provenance, self.table = provenance, table
        self.space_hash = space_hash  # the launch's space, recorded with every row (manifest `launches`)
        self.last: dict[str, TrialReport] = {}  # by Ray trial id
        self.started: dict[str, float] = {}
        self.finished: list[str] = []  # sweeper trial ids

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment folder (for Tuner.restore, which sweeper
        # does not use: it resumes from its own ledger); the live terminal table cannot be pickled.
        return {key: value for key, value in self.__dict__.items() if key != "table"}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started[trial.trial_id] = time.time()
        self.table.update(_trial(trial).trial_id, status=RUNNING)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        report = TrialReport.from_metrics(result)
        self.last[trial.trial_id] = report
        mine = _trial(trial)
        self.ledger.update_live(mine.trial_id, live_metrics(mine, report))
        self.table.update(mine.trial_id, status=RUNNING, step=report.steps, tokens=report.tokens,
                          val_loss=report.final_val_loss, best_val_loss=report.best_val_loss,
                          tokens_per_s=report.tokens_per_s)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        report = self.last.get(trial.trial_id)
        status = report.status if report else None
        if status == RUNNING and trial.trial_id in self.scheduler.stopped:
            status = "stopped-early"
        if status in ("done", "diverged", "stopped-early"):
            self._record(trial, status, report)
        else:
            self.table.update(_trial(trial).trial_id, status="pending")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _error_text(trial)
        lines = [line for line in error.strip().splitlines() if line.strip()]
        self._record(trial, "failed", self.last.get(trial.trial_id), error=lines[-1] if lines else error)

    def _record(self, ray_trial: Any, status: str, report: TrialReport | None, error: str | None = None) -> None:
        trial = _trial(ray_trial)
        started = self.started.get(ray_trial.trial_id)
        now = time.time()
        row = trial_row(trial, report, status, error=error, provenance=self.provenance, space_hash=self.space_hash,
                        started_at=started, finished_at=now)
        self.ledger.record(row, report.curve if report else [])
        self.finished.append(trial.trial_id)
        self.table.update(trial.trial_id, status=status, step=report.steps if report else 0,
                          tokens=report.tokens if report else 0,
                          val_loss=report.final_val_loss if report else math.nan,
                          best_val_loss=report.best_val_loss if report else math.nan)


def _trial(ray_trial: Any) -> Trial:
    return ray_trial.config["trial"]


def _error_text(trial: Any) -> str:
    """The trial's error trace. Tune writes it to the trial's local folder first and syncs it to
    storage later, so `trial.get_error()` (which reads storage) is still empty when the callback runs."""
    local = trial.error_file
    if local and Path(local).is_file():
        return Path(local).read_text()
    return str(trial.get_error() or "unknown error (Tune recorded no trace)")


def tracking_callbacks(tracking: str | None, folder: SweepFolder, experiment: str) -> list[Any]:
    """Experiment tracking through Ray Tune's own logger callbacks."""
    if tracking is None:
        return []
    if tracking == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        # MLflow 3 keeps its file store read-only: a local SQLite file is its local backend now.
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{folder.mlflow_db.resolve()}"
        return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment, save_artifact=False)]
    if tracking == "wandb":
        from ray.air.integrations.wandb import WandbLoggerCallback

        return [WandbLoggerCallback(project=experiment)]
    if tracking == "tensorboard":
        from ray.tune.logger import TBXLoggerCallback

        return [TBXLoggerCallback()]
    raise ValueError(f"unknown tracker {tracking!r} (the launcher checks --tracking against TRACKERS)")
