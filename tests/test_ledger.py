import json
import math

import polars as pl
import pytest

from sweeper.errors import UserError
from sweeper.ledger import CELL_COLUMNS, CURVE_COLUMNS, SCHEMA_VERSION, Ledger, read_cells


def row(trial_id: str, attempt: int = 0, status: str = "done", loss: float = 2.5) -> dict:
    return {"cell_id": trial_id.split("-")[0], "trial_id": trial_id, "attempt": attempt, "status": status,
            "method": "lora", "scale": "s", "final_val_loss": loss, "best_val_loss": loss, "steps": 10,
            "tokens": 1000, "finished_at": f"2026-01-01T00:00:0{attempt}+00:00"}


def test_record_writes_views_readable_by_plain_polars(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.record(row("abc-t0"), [{"step": 0, "val_loss": 3.0}, {"step": 10, "val_loss": 2.5, "train_loss": math.nan}])
    cells = pl.read_parquet(tmp_path / "cells.parquet")
    curves = pl.read_parquet(tmp_path / "curves.parquet")
    assert cells.columns == list(CELL_COLUMNS)
    assert curves.columns == list(CURVE_COLUMNS)
    assert cells["schema_version"].to_list() == [SCHEMA_VERSION]
    assert curves["val_loss"].to_list() == [3.0, 2.5]
    assert curves["train_loss"].to_list() == [None, None]  # NaN is stored as null
    assert read_cells(tmp_path)["trial_id"].to_list() == ["abc-t0"]


def test_a_record_is_never_overwritten_and_retries_get_new_attempts(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.record(row("abc-t0", status="failed"), [])
    assert ledger.next_attempt("abc-t0") == 1
    ledger.record(row("abc-t0", attempt=1), [])
    with pytest.raises(FileExistsError):
        ledger.record(row("abc-t0", attempt=1), [])
    assert [row["status"] for row in ledger.rows()] == ["failed", "done"]
    assert [row["attempt"] for row in ledger.rows()] == [0, 1]


def test_views_are_rebuilt_from_records(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.record(row("abc-t0"), [])
    (tmp_path / "cells.parquet").unlink()  # e.g. killed between the record and the view
    Ledger(tmp_path).rebuild_views()
    assert pl.read_parquet(tmp_path / "cells.parquet").height == 1


def test_corrupt_record_and_newer_schema_are_refused(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.record(row("abc-t0"), [])
    bad = tmp_path / "records" / "zzz-t0.a0.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="corrupt ledger record"):
        ledger.records()
    bad.write_text(json.dumps({"row": {**row("zzz-t0"), "schema_version": SCHEMA_VERSION + 1}, "curve": []}))
    with pytest.raises(UserError, match="newer sweeper"):
        ledger.records()


def test_live_files_are_hints_and_cleared_by_the_record(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.update_live("abc-t0", {"trial_id": "abc-t0", "step": 3, "val_loss": math.inf})
    assert ledger.live() == [{"trial_id": "abc-t0", "step": 3, "val_loss": None}]
    ledger.record(row("abc-t0"), [])
    assert ledger.live() == []


def test_read_cells_of_a_non_sweep_folder(tmp_path):
    with pytest.raises(UserError, match=r"no cells\.parquet"):
        read_cells(tmp_path)
