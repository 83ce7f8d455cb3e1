"""What `sweeper fit` reads: a sweep folder (its ledger) or any CSV / parquet table.

A sweep folder holds `cells.parquet` (one row per trial), and optionally `evals.parquet` (downstream
scores) and `manifest.json` (paths: `SweepFolder`). A cell's result is its best `done` trial (lowest
final validation loss, `sweeper.sweep.ledger.best_trials`, the rule evaluation uses too); the other trials were the learning-rate search and are not points of the scaling curve. A cell run
with replicates (`seeds: K`) has one result per seed, each the best of that seed's own search: the
points of one cell then differ only by run-to-run noise, which the fit needs to see (`cell_id` and
`seed` tell them apart). A ledger without a `seed` column gives one point per cell.
"""

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from sweeper.core.errors import UserError, first_line
from sweeper.sweep.folder import SweepFolder
from sweeper.sweep.ledger import best_trials, describe_spaces


@dataclass(frozen=True)
class Source:
    path: Path
    is_sweep: bool
    table: pl.DataFrame  # one row per point (a sweep: one row per cell and seed, its best done trial)
    evals: pl.DataFrame | None  # a sweep's downstream scores, one row per cell x task x metric
    manifest: dict
    trials: int  # rows read (a sweep: trials of every status)
    statuses: dict[str, int]  # a sweep: trials per status
    spaces: tuple[str, ...] = ()  # a sweep launched with several spaces: one line per space, its rows

    @property
    def name(self) -> str:
        return self.path.name if self.is_sweep else self.path.stem


def load_source(path: str | Path) -> Source:
    """Read a sweep folder or a table; a missing, unreadable or empty source is a UserError."""
    path = Path(path)
    if path.is_dir():
        folder = SweepFolder(path)
        if not folder.cells.is_file():
            raise UserError(f"{path}: not a sweep folder (no {folder.cells.name}) and not a CSV or parquet file")
        return _load_sweep(folder)
    if not path.is_file():
        raise UserError(f"{path}: no such file or sweep folder")
    table = read_table(path)
    if table.height == 0:
        raise UserError(f"{path}: the table has no rows")
    return Source(path=path, is_sweep=False, table=table, evals=None, manifest={}, trials=table.height,
                  statuses={})


def read_table(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            _check_unique_header(path)
            return pl.read_csv(path, infer_schema_length=None)
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise UserError(f"{path}: cannot read it as {suffix[1:]}: {first_line(err)}") from None
    raise UserError(f"{path}: expected a .csv or .parquet file or a sweep folder")


def _check_unique_header(path: Path) -> None:
    """polars renames a repeated CSV column to NAME_duplicated_0: which of the two is meant is the
    user's to say, so a repeated name is an error, not a silent choice."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle), [])
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise UserError(f"{path}: column(s) {', '.join(map(repr, repeated))} appear more than once in the header; "
                        "expected unique column names")


def _load_sweep(folder: SweepFolder) -> Source:
    ledger = folder.cells
    trials = read_table(ledger)
    if trials.height == 0:
        raise UserError(f"{ledger}: the ledger is empty: no trial has been recorded yet")
    require_columns(trials, ["cell_id", "status", "final_val_loss"], str(ledger))
    statuses = dict(trials.group_by("status").len().sort("status").iter_rows())
    cells = best_trials(trials)
    if cells.height == 0:
        counts = ", ".join(f"{status} {n}" for status, n in statuses.items())
        raise UserError(f"{ledger}: no trial finished (`done`) with a validation loss; trials: {counts}")
    evals = read_table(folder.evals_table) if folder.evals_table.is_file() else None
    manifest = json.loads(folder.manifest.read_text()) if folder.manifest.is_file() else {}
    return Source(path=folder.root, is_sweep=True, table=cells, evals=evals, manifest=manifest,
                  trials=trials.height, statuses=statuses, spaces=tuple(describe_spaces(manifest, trials.to_dicts())))


def require_columns(table: pl.DataFrame, names: list[str], where: str) -> None:
    """Every name must be a column; the error lists the columns (and the closest one, if any)."""
    for name in names:
        if name not in table.columns:
            close = difflib.get_close_matches(name, table.columns, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{where}: no column {name!r}{hint}; columns: {', '.join(table.columns)}")


def require_numeric(table: pl.DataFrame, names: list[str], where: str) -> None:
    for name in names:
        dtype = table.schema[name]
        if not (dtype.is_numeric() or dtype == pl.Null):
            raise UserError(f"{where}: column {name!r} must be numeric, but it holds {dtype}")


def add_columns(table: pl.DataFrame, definitions: list[str], where: str) -> pl.DataFrame:
    """`NAME=SQL expression` (polars SQL), e.g. D="Training FLOP" / (6 * "Model Size")."""
    for definition in definitions:
        name, sep, expression = definition.partition("=")
        if not sep or not name.strip() or not expression.strip():
            raise UserError(f"--define {definition!r}: expected NAME=EXPRESSION")
        try:
            table = table.with_columns(pl.sql_expr(expression).cast(pl.Float64).alias(name.strip()))
        except pl.exceptions.PolarsError as err:
            raise UserError(f"{where}: --define {definition!r}: {first_line(err)}") from None
    return table


def filter_rows(table: pl.DataFrame, condition: str | None, where: str) -> pl.DataFrame:
    """Keep the rows where a polars SQL condition holds, e.g. `loss < 3.42`."""
    if not condition:
        return table
    try:
        kept = table.filter(pl.sql_expr(condition))
    except pl.exceptions.PolarsError as err:
        raise UserError(f"{where}: --where {condition!r}: {first_line(err)}") from None
    if kept.height == 0:
        raise UserError(f"{where}: --where {condition!r} keeps no row")
    return kept
