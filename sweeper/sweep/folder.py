"""`SweepFolder`: every path of a sweep folder, in one place (what is where, and who writes it).

    manifest.json        the sweep id, every launch (its space, resolved cells, time, provenance, checkpoint
                         path) and the latest launch's space and plan                        (launch)
    records/             one JSON file per finished trial attempt: the source of truth       (ledger)
    quarantine/records/  records that could not be read, moved aside                         (ledger)
    cells.parquet        one row per trial attempt (a view rebuilt from records/)            (ledger)
    curves.parquet       cell id, trial id, step, tokens, train/val loss, lr, tokens/s       (ledger)
    live/                the latest metrics of running trials (for `sweeper status`)         (ledger)
    checkpoints/<sweep id>/  trial checkpoints and final tuned weights (unless --storage)    (train)
    optuna.journal       the per-cell lr searches                                           (backend)
    ray_results/, ray.log, mlflow.db   Ray's own results and output, the local MLflow store (backend)
    evals/<cell>/records/<task>.<settings>.json   one record per (trial, task, settings)     (evals)
    evals/<cell>/<task>.<settings>/               generations (bigcode-evaluation-harness format)
    evals.parquet        every evaluation row, rebuilt from the records                      (evals)
    analysis/            `sweeper report`'s tables, figures and report                       (analysis)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_SPACE = "micro"  # what `sweeper launch grid` runs with no --space
SWEEPS = Path("sweeps")  # where sweep folders go by default, relative to the working directory


@dataclass(frozen=True)
class SweepFolder:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def default(cls, space_name: str = DEFAULT_SPACE) -> SweepFolder:
        """`sweeps/<space name>`: where a launch writes without --out, and what `status` reads by default."""
        return cls(SWEEPS / space_name)

    def fresh(self) -> SweepFolder:
        """A new folder next to this one (`--fresh`): the same name with a UTC time stamp."""
        return SweepFolder(self.root.with_name(f"{self.root.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def records(self) -> Path:
        return self.root / "records"

    def record(self, trial_id: str, attempt: int) -> Path:
        return self.records / f"{trial_id}.a{attempt}.json"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine" / "records"

    @property
    def cells(self) -> Path:
        return self.root / "cells.parquet"

    @property
    def curves(self) -> Path:
        return self.root / "curves.parquet"

    @property
    def live(self) -> Path:
        return self.root / "live"

    def live_file(self, trial_id: str) -> Path:
        return self.live / f"{trial_id}.json"

    @property
    def checkpoints(self) -> Path:
        """The default checkpoint storage of a one-node sweep (its sweep id is added below it)."""
        return self.root / "checkpoints"

    @property
    def optuna_journal(self) -> Path:
        return self.root / "optuna.journal"

    @property
    def ray_results(self) -> Path:
        return self.root / "ray_results"

    @property
    def ray_log(self) -> Path:
        return self.root / "ray.log"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def evals(self) -> Path:
        return self.root / "evals"

    def eval_record(self, cell_id: str, task: str, settings: str) -> Path:
        return self.evals / cell_id / "records" / f"{task}.{settings}.json"

    def eval_outputs(self, cell_id: str, task: str, settings: str) -> Path:
        return self.evals / cell_id / f"{task}.{settings}"

    def eval_records(self) -> list[Path]:
        return sorted(self.evals.glob("*/records/*.json"))

    @property
    def evals_table(self) -> Path:
        return self.root / "evals.parquet"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"
