"""The run ledger: every trial of a sweep, recorded so that nothing is lost or written twice.

It owns the ledger's columns (`CELL_COLUMNS`, `CURVE_COLUMNS`), how a trial's report becomes a row
(`trial_row`), and which trial is a cell's result (`best_trials`). Where its files live: `SweepFolder`.

Only the driver writes records (and a reader only ever moves a bad one aside). A record is written
once and never replaced: the ledger numbers a trial's attempts itself, one above any number used in
records/ or quarantine/, and creates the file exclusively. `kill -9` at any moment leaves either the
old view or the new one, and the parquet views are rebuilt from records/ when the folder is opened again.

The sweep id names this sweep's checkpoints on storage that many sweeps share (`<storage>/<sweep id>/`):
a folder launched again keeps its id, `--fresh` (a new folder) gets a new one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import sys
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from sweeper.core.errors import UserError
from sweeper.core.io import atomic_write, atomic_write_json, create_json, move_aside
from sweeper.schema import Trial, TrialReport, without_neutral_defaults
from sweeper.sweep.folder import SweepFolder

# Not bumped for `space_hash`: a column added as optional is read as null from older records, and older
# sweepers ignore it; a version bump would make them refuse a ledger they can read.
SCHEMA_VERSION = 1

CELL_COLUMNS: dict[str, Any] = {
    "schema_version": pl.Int64,
    "space": pl.String,
    "space_hash": pl.String,  # the launched space that produced the row (manifest.json `launches`)
    "cell_id": pl.String,
    "trial_id": pl.String,
    "attempt": pl.Int64,
    "ladder": pl.String,
    "scale": pl.String,
    "method": pl.String,
    "method_config": pl.String,  # JSON
    "lr": pl.Float64,
    "hparams": pl.String,  # JSON: everything the trial's search chose
    "precision": pl.String,  # recipe.precision: fp32 | bf16 | fp16 (null in records written before it)
    "base_quantization": pl.String,  # recipe.base_quantization: none | int8 (null likewise)
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
STATUSES = (*FINISHED, "failed")


def new_sweep_id() -> str:
    """Time-ordered (sweeps list in launch order on storage) and random (two launches in one second differ)."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def space_hash(space: dict[str, Any]) -> str:
    """Fingerprint of a resolved space (its JSON dump): two launches with the same hash ran the same space."""
    return hashlib.sha256(json.dumps(without_neutral_defaults(space), sort_keys=True).encode()).hexdigest()[:12]


class Ledger:
    def __init__(self, out: Path | SweepFolder):
        self.folder = out if isinstance(out, SweepFolder) else SweepFolder(Path(out))
        self.out = self.folder.root

    def manifest(self) -> dict[str, Any] | None:
        try:
            manifest = json.loads(self.folder.manifest.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            raise UserError(f"{self.folder.manifest}: not valid JSON; expected a sweep manifest") from None
        if not isinstance(manifest, dict):
            raise UserError(f"{self.folder.manifest}: expected a sweep manifest (a JSON object)")
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        # Key order kept: the space's methods and scales are listed in the order the grid runs them.
        atomic_write_json(self.folder.manifest, {"schema_version": SCHEMA_VERSION, **manifest}, sort_keys=False)

    def records(self) -> list[dict[str, Any]]:
        """Every finished trial attempt, oldest first. A file that is not a record is quarantined (moved
        aside with a one-line warning) and the others are read: one bad file must not hide a sweep."""
        found = []
        for path in sorted(self.folder.records.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except FileNotFoundError:
                continue  # moved aside by another reader since the listing
            except ValueError:  # UnicodeDecodeError included
                self._quarantine(path, "not JSON")
                continue
            _refuse_newer(record, self.out)
            problem = shape_problem(record)
            if problem:
                self._quarantine(path, problem)
                continue
            found.append(record)
        return sorted(found, key=lambda r: r["row"]["finished_at"] or "")

    def _quarantine(self, path: Path, why: str) -> None:
        try:
            target = move_aside(path, self.folder.quarantine)
        except FileNotFoundError:
            return  # another reader moved it first, and warned
        except OSError as err:  # e.g. `sweeper status` on a folder it may not write
            warn(f"{path}: {why}; skipped (could not be moved to {self.folder.quarantine}: {err.strerror or err})")
            return
        warn(f"{path}: {why}; moved to the quarantine, {target} (fix it and move it back to count it)")

    def next_attempt(self, trial_id: str) -> int:
        """One above every attempt number of the trial in records/ or the quarantine: a number never
        counts files (one removed would make it an existing one) and is never given out twice."""
        number = re.compile(rf"{re.escape(trial_id)}\.a(\d+)\.json")
        used = [int(match.group(1)) for folder in (self.folder.records, self.folder.quarantine)
                for path in folder.glob(f"{trial_id}.a*.json*") if (match := number.match(path.name))]
        return max(used, default=-1) + 1

    def record(self, row: dict[str, Any], curve: Iterable[dict[str, Any]]) -> int:
        """Write one finished trial attempt under the next free attempt number (never overwriting another),
        then refresh the views; returns the attempt number. The row's own `attempt` is not used."""
        points = list(curve)
        for attempt in itertools.count(self.next_attempt(row["trial_id"])):
            full = {column: row.get(column) for column in CELL_COLUMNS} | {"schema_version": SCHEMA_VERSION,
                                                                           "attempt": attempt}
            curve_rows = [{column: point.get(column) for column in CURVE_COLUMNS}
                          | {"cell_id": full["cell_id"], "trial_id": full["trial_id"], "attempt": attempt}
                          for point in points]
            try:
                create_json(self.folder.record(full['trial_id'], attempt),
                            {"row": _finite(full), "curve": [_finite(p) for p in curve_rows]})
            except FileExistsError:
                continue  # taken since the count (only if a second writer ignored the lock): the next one
            break
        self.folder.live_file(row['trial_id']).unlink(missing_ok=True)
        self.rebuild_views()
        return attempt

    def rebuild_views(self) -> None:
        records = self.records()
        cells = pl.DataFrame([r["row"] for r in records], schema=CELL_COLUMNS)
        curves = pl.DataFrame([p for r in records for p in r["curve"]], schema=CURVE_COLUMNS)
        atomic_write(self.folder.cells, lambda tmp: cells.write_parquet(tmp))
        atomic_write(self.folder.curves, lambda tmp: curves.write_parquet(tmp))

    def rows(self) -> list[dict[str, Any]]:
        """The row of every finished trial attempt, oldest first (the records without their curves)."""
        return [record["row"] for record in self.records()]

    def update_live(self, trial_id: str, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.folder.live_file(trial_id), _finite(metrics))

    def live(self) -> list[dict[str, Any]]:
        rows = []
        for path in sorted(self.folder.live.glob("*.json")):
            try:
                rows.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # a live file is a hint, never a record
        return rows

    def clear_live(self) -> None:
        for path in self.folder.live.glob("*.json"):
            path.unlink(missing_ok=True)


def warn(message: str) -> None:
    """One line on stderr: something was wrong and sweeper went on (a bad record, a migrated folder)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _refuse_newer(record: Any, out: Path) -> None:
    row = record.get("row") if isinstance(record, dict) else None
    version = row.get("schema_version") if isinstance(row, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise UserError(f"{out}: written by a newer sweeper (ledger schema {version} > {SCHEMA_VERSION}); "
                        "upgrade sweeper")


_KINDS = {pl.Int64: "an integer", pl.Float64: "a number", pl.String: "a string", pl.Boolean: "true or false"}


def _fits(value: Any, dtype: Any) -> bool:
    """Whether polars can put `value` in a column of `dtype` (None is a missing value in any column)."""
    if value is None:
        return True
    if dtype == pl.Boolean or isinstance(value, bool):
        return dtype == pl.Boolean and isinstance(value, bool)
    if dtype == pl.Int64:
        return isinstance(value, int) and -(2**63) <= value < 2**63
    if dtype == pl.Float64:
        return isinstance(value, int | float)
    return isinstance(value, str)


def _field_problem(where: str, value: Any, dtype: Any) -> str | None:
    if _fits(value, dtype):
        return None
    shown = repr(value)
    return f"{where} is {shown if len(shown) <= 40 else shown[:37] + '...'}, expected {_KINDS[dtype]}"


def shape_problem(record: Any) -> str | None:
    """Why a parsed record file is not a ledger record (None when it is one): what `rebuild_views` needs."""
    if not (isinstance(record, dict) and isinstance(record.get("row"), dict) and isinstance(record.get("curve"), list)):
        return 'not a ledger record (expected {"row": {...}, "curve": [...]})'
    row = record["row"]
    for key in ("cell_id", "trial_id", "status"):
        if not (isinstance(row.get(key), str) and row[key]):
            return f"row.{key} is {row.get(key)!r}, expected a non-empty string"
    if row["status"] not in STATUSES:
        return f"row.status is {row['status']!r}, expected one of {', '.join(STATUSES)}"
    if row.get("attempt") is None:
        return "row.attempt is missing, expected an integer"
    for column, dtype in CELL_COLUMNS.items():
        problem = _field_problem(f"row.{column}", row.get(column), dtype)
        if problem:
            return problem
    for index, point in enumerate(record["curve"]):
        if not isinstance(point, dict):
            return f"curve[{index}] is {type(point).__name__}, expected a mapping"
        for column, dtype in CURVE_COLUMNS.items():
            problem = _field_problem(f"curve[{index}].{column}", point.get(column), dtype)
            if problem:
                return problem
    return None


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: store them as null (polars reads null as a missing float)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def read_cells(out: Path) -> pl.DataFrame:
    """cells.parquet of a sweep folder, as any user would read it (plain polars)."""
    path = SweepFolder(Path(out)).cells
    if not path.is_file():
        raise UserError(f"{out}: no cells.parquet; expected a sweep folder made by `sweeper launch grid`")
    return pl.read_parquet(path)


# -- a trial's row, and a cell's result ---------------------------------------------------------------


def trial_row(trial: Trial, report: TrialReport | None, status: str, *, error: str | None,
              provenance: dict[str, Any], space_hash: str | None, started_at: float | None,
              finished_at: float) -> dict[str, Any]:
    """The ledger row of one finished trial attempt: the trial's last report (None when it failed before its
    first), what the trial was, and the driver's provenance. No attempt number: `Ledger.record` gives it."""
    cell = trial.cell
    measured = {column: getattr(report, column) for column in REPORTED} if report else {}
    wall = (report.wall_seconds if report else None) or finished_at - (started_at or finished_at)
    r = cell.resources
    devices = r.workers * (r.gpus_per_worker or r.cpus_per_worker)
    lr = trial.recipe.lr
    return {
        **measured,
        "space": cell.space, "space_hash": space_hash, "cell_id": cell.id, "trial_id": trial.trial_id,
        "ladder": cell.ladder, "scale": cell.scale, "method": cell.method,
        "method_config": json.dumps(cell.method_config, sort_keys=True),
        "lr": lr, "hparams": json.dumps({"lr": lr}), "precision": trial.recipe.precision,
        "base_quantization": trial.recipe.base_quantization, "status": status, "error": error,
        "wall_seconds": wall, "device_hours": wall * devices / 3600,
        "resumed_at": json.dumps(list(report.resumed_at) if report else []),
        "seed": trial.seed, "git_sha": provenance["git_sha"], "git_dirty": provenance["git_dirty"],
        "versions": json.dumps(provenance["versions"], sort_keys=True),
        "hardware": (report.hardware if report else None) or json.dumps(provenance["hardware"], sort_keys=True),
        "started_at": _iso(started_at), "finished_at": _iso(finished_at),
    }


# The columns a trial's report fills as they are (TrialReport's fields of the same names).
REPORTED = ("steps", "tokens", "initial_val_loss", "final_val_loss", "best_val_loss", "trainable_params",
            "total_params", "checkpoint", "model_source", "dataset_fingerprint")
LIVE = ("steps", "tokens", "final_val_loss", "best_val_loss", "tokens_per_s", "status", "pid", "hardware")


def live_metrics(trial: Trial, report: TrialReport) -> dict[str, Any]:
    """What `live/<trial id>.json` holds while a trial runs (ledger names)."""
    return {"trial_id": trial.trial_id, "cell_id": trial.cell.id, **{key: getattr(report, key) for key in LIVE}}


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def best_trials(trials: pl.DataFrame) -> pl.DataFrame:
    """A cell's result: the best `done` trial of each cell and seed (lowest final validation loss, ties
    broken by the lower trial id), in ledger order. The other trials were the lr search. A ledger
    without a `seed` column gives one result per cell. The one rule: evaluation and analysis both use it."""
    done = trials.filter((pl.col("status") == "done") & pl.col("final_val_loss").is_not_null())
    point = ["cell_id", "seed"] if "seed" in done.columns else ["cell_id"]
    return (
        done.with_row_index("ledger_row")
        .sort(["final_val_loss", "trial_id"])
        .group_by(point, maintain_order=True)
        .first()
        .sort("ledger_row")
        .drop("ledger_row")
    )


def result_id(row: dict[str, Any]) -> str:
    """Names a cell's result for one seed: the cell id for the first replicate (whose trial ids carry no
    seed, `Trial.trial_id`), `<cell id>-s<seed>` for the others, as `Trial.search_id` does."""
    replicate0 = "-s" not in row["trial_id"].removeprefix(row["cell_id"])
    return row["cell_id"] if replicate0 else f"{row['cell_id']}-s{row['seed']}"


# -- the spaces launched in one folder -------------------------------------------------------------


@dataclass(frozen=True)
class LaunchedSpace:
    """One space launched in a sweep folder, over all its launches (a rerun of the same space adds one)."""

    hash: str
    space: dict[str, Any]
    cells: tuple[str, ...]  # cell ids of its grid (empty if a launch before sweeper recorded them)
    launches: int
    first_at: str | None
    last_at: str | None
    device_hours_planned: float | None  # its latest launch's plan
    resolved_cells: tuple[dict[str, Any], ...] = ()  # its latest launch's cells, resolved (none before they were kept)

    @property
    def name(self) -> str:
        return str(self.space.get("name", "?"))


def launched_spaces(manifest: dict[str, Any]) -> list[LaunchedSpace]:
    """The spaces of a folder's launches, in the order first launched. A manifest from before launches kept
    their space has one: the manifest's own `space` (the last launch's)."""
    found: dict[str, LaunchedSpace] = {}
    launches = manifest.get("launches") or []
    for launch in launches:
        key = launch.get("space_hash")
        if key is None or not isinstance(launch.get("space"), dict):
            continue
        before = found.get(key)
        found[key] = LaunchedSpace(
            hash=key, space=launch["space"], cells=tuple(launch.get("cells") or (before.cells if before else ())),
            launches=(before.launches if before else 0) + 1, first_at=before.first_at if before else launch.get("at"),
            last_at=launch.get("at"), device_hours_planned=launch.get("device_hours_planned"),
            resolved_cells=tuple(launch.get("resolved_cells") or ()))
    if not found and isinstance(manifest.get("space"), dict):
        key = space_hash(manifest["space"])
        found[key] = LaunchedSpace(
            hash=key, space=manifest["space"], cells=tuple(c["id"] for c in manifest.get("cells") or ()),
            launches=max(1, len(launches)), first_at=launches[0].get("at") if launches else None,
            last_at=launches[-1].get("at") if launches else None,
            device_hours_planned=(manifest.get("plan") or {}).get("totals", {}).get("device_hours"))
    return list(found.values())


def row_space(row: dict[str, Any], spaces: list[LaunchedSpace]) -> str | None:
    """The hash of the space a ledger row belongs to: the one it recorded, else (rows recorded before rows
    named their space) the latest launched space whose grid holds its cell; None when no space does."""
    recorded = row.get("space_hash")
    if recorded is not None and any(s.hash == recorded for s in spaces):
        return recorded
    return next((s.hash for s in reversed(spaces) if row.get("cell_id") in s.cells), None)


def space_changes(before: dict[str, Any], after: dict[str, Any], shown: int = 3) -> str:
    """What differs from one space to another, as `key.path: old -> new` (at most `shown`, then a count)."""
    changes: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in [*a, *(k for k in b if k not in a)]:
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif a != b:
            changes.append(f"{path}: {json.dumps(a)} -> {json.dumps(b)}")

    walk(before, after, "")
    more = f" (+{len(changes) - shown} more)" if len(changes) > shown else ""
    return ", ".join(changes[:shown]) + more


def describe_spaces(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """One line per space when a folder holds rows of more than one (none otherwise): which rows are whose.
    For `sweeper report` (analysis/sources.py) as for any reader of cells.parquet."""
    spaces = launched_spaces(manifest)
    if len(spaces) < 2:
        return []
    counts = Counter(row_space(row, spaces) for row in rows)
    lines = []
    for index, s in enumerate(spaces):
        changed = f"; vs {spaces[0].hash}: {space_changes(spaces[0].space, s.space)}" if index else ""
        when = s.first_at if s.first_at == s.last_at else f"{s.first_at} .. {s.last_at}"
        lines.append(f"space {s.hash} ({s.name!r}, {plural(s.launches, 'launch')} {when}{changed}):"
                     f" {plural(counts[s.hash], 'trial attempt')} (space_hash = '{s.hash}')")
    if counts[None]:
        lines.append(f"{plural(counts[None], 'trial attempt')} of no launched space (recorded before spaces were kept)")
    return lines


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith(('s', 'sh', 'ch')) else 's'}"
