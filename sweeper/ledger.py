"""The run ledger: every trial of a sweep, recorded so that nothing is lost or written twice.

A sweep folder holds:
    manifest.json        the resolved space and the plan it was launched with (+ provenance)
    records/             one JSON file per finished trial attempt, written atomically: the source of truth
    cells.parquet        one row per trial attempt (a view rebuilt from records/ after every trial)
    curves.parquet       cell id, trial id, step, tokens, train/val loss, lr, tokens/s
    live/                the latest metrics of running trials (for `sweeper status`)
    checkpoints/         trial checkpoints and final tuned weights (unless --storage points elsewhere)
    ray.log              Ray's own output
Only the driver writes here. A record is written once and never replaced: a retried trial gets a
new attempt number. `kill -9` at any moment leaves either the old view or the new one, and the
parquet views are rebuilt from records/ when the folder is opened again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from sweeper.errors import UserError
from sweeper.io import atomic_write, atomic_write_json

SCHEMA_VERSION = 1

CELL_COLUMNS: dict[str, Any] = {
    "schema_version": pl.Int64,
    "space": pl.String,
    "cell_id": pl.String,
    "trial_id": pl.String,
    "attempt": pl.Int64,
    "ladder": pl.String,
    "scale": pl.String,
    "method": pl.String,
    "method_config": pl.String,  # JSON
    "lr": pl.Float64,
    "hparams": pl.String,  # JSON: everything the trial's search chose
    "status": pl.String,  # done | stopped-early | diverged | failed
    "steps": pl.Int64,
    "tokens": pl.Int64,
    "initial_val_loss": pl.Float64,
    "final_val_loss": pl.Float64,
    "best_val_loss": pl.Float64,
    "trainable_params": pl.Int64,
    "total_params": pl.Int64,
    "wall_seconds": pl.Float64,
    "device_hours": pl.Float64,
    "checkpoint": pl.String,  # URI of the final tuned weights (done trials)
    "resumed_at": pl.String,  # JSON list of the steps this trial resumed from after a failure or a rerun
    "error": pl.String,
    "model_source": pl.String,
    "dataset_fingerprint": pl.String,
    "seed": pl.Int64,
    "git_sha": pl.String,
    "git_dirty": pl.Boolean,
    "versions": pl.String,  # JSON
    "hardware": pl.String,  # JSON: host, cpus, accelerator of the node that ran rank 0
    "started_at": pl.String,
    "finished_at": pl.String,
}

CURVE_COLUMNS: dict[str, Any] = {
    "cell_id": pl.String,
    "trial_id": pl.String,
    "attempt": pl.Int64,
    "step": pl.Int64,
    "tokens": pl.Int64,
    "train_loss": pl.Float64,
    "val_loss": pl.Float64,
    "lr": pl.Float64,
    "tokens_per_s": pl.Float64,
}

FINISHED = ("done", "stopped-early", "diverged")


class Ledger:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.records_dir = self.out / "records"
        self.live_dir = self.out / "live"

    @property
    def manifest_path(self) -> Path:
        return self.out / "manifest.json"

    def manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            raise UserError(f"{self.manifest_path}: not valid JSON; expected a sweep manifest") from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        # Key order kept: the space's methods and scales are listed in the order the grid runs them.
        atomic_write_json(self.manifest_path, {"schema_version": SCHEMA_VERSION, **manifest}, sort_keys=False)

    def records(self) -> list[dict[str, Any]]:
        """Every finished trial attempt, oldest first."""
        found = []
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except ValueError:
                raise UserError(f"{path}: corrupt ledger record (not JSON)") from None
        for record in found:
            if record["row"].get("schema_version", 0) > SCHEMA_VERSION:
                raise UserError(f"{self.out}: written by a newer sweeper (ledger schema "
                                f"{record['row']['schema_version']} > {SCHEMA_VERSION}); upgrade sweeper")
        return sorted(found, key=lambda r: r["row"]["finished_at"] or "")

    def next_attempt(self, trial_id: str) -> int:
        return len(list(self.records_dir.glob(f"{trial_id}.a*.json")))

    def record(self, row: dict[str, Any], curve: Iterable[dict[str, Any]]) -> None:
        """Write one finished trial attempt (never overwriting another), then refresh the views."""
        row = {column: row.get(column) for column in CELL_COLUMNS} | {"schema_version": SCHEMA_VERSION}
        path = self.records_dir / f"{row['trial_id']}.a{row['attempt']}.json"
        if path.exists():
            raise FileExistsError(f"{path}: a record of this trial attempt exists already")
        curve_rows = [{column: point.get(column) for column in CURVE_COLUMNS}
                      | {"cell_id": row["cell_id"], "trial_id": row["trial_id"], "attempt": row["attempt"]}
                      for point in curve]
        atomic_write_json(path, {"row": _finite(row), "curve": [_finite(p) for p in curve_rows]})
        (self.live_dir / f"{row['trial_id']}.json").unlink(missing_ok=True)
        self.rebuild_views()

    def rebuild_views(self) -> None:
        records = self.records()
        cells = pl.DataFrame([r["row"] for r in records], schema=CELL_COLUMNS)
        curves = pl.DataFrame([p for r in records for p in r["curve"]], schema=CURVE_COLUMNS)
        atomic_write(self.out / "cells.parquet", lambda tmp: cells.write_parquet(tmp))
        atomic_write(self.out / "curves.parquet", lambda tmp: curves.write_parquet(tmp))

    def rows(self) -> list[dict[str, Any]]:
        """The row of every finished trial attempt, oldest first (the records without their curves)."""
        return [record["row"] for record in self.records()]

    def update_live(self, trial_id: str, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.live_dir / f"{trial_id}.json", _finite(metrics))

    def live(self) -> list[dict[str, Any]]:
        rows = []
        for path in sorted(self.live_dir.glob("*.json")):
            try:
                rows.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # a live file is a hint, never a record
        return rows

    def clear_live(self) -> None:
        for path in self.live_dir.glob("*.json"):
            path.unlink(missing_ok=True)


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: store them as null (polars reads null as a missing float)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def read_cells(out: Path) -> pl.DataFrame:
    """cells.parquet of a sweep folder, as any user would read it (plain polars)."""
    path = Path(out) / "cells.parquet"
    if not path.is_file():
        raise UserError(f"{out}: no cells.parquet; expected a sweep folder made by `sweeper launch grid`")
    return pl.read_parquet(path)
