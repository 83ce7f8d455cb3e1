import json
import math

import polars as pl
import pytest

from sweeper.core.errors import UserError
from sweeper.sweep.ledger import CELL_COLUMNS, CURVE_COLUMNS, SCHEMA_VERSION, Ledger, read_cells


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
    assert ledger.record(row("abc-t0", status="failed"), []) == 0
    assert ledger.next_attempt("abc-t0") == 1
    assert ledger.record(row("abc-t0", attempt=1), []) == 1
    first = (tmp_path / "records" / "abc-t0.a1.json").read_text()
    assert ledger.record(row("abc-t0", attempt=1), []) == 2  # the ledger numbers attempts: a1 is kept
    assert (tmp_path / "records" / "abc-t0.a1.json").read_text() == first
    assert [row["status"] for row in ledger.rows()] == ["failed", "done", "done"]
    assert [row["attempt"] for row in ledger.rows()] == [0, 1, 2]


def test_attempts_never_collide_after_a_record_is_removed(tmp_path):
    """Attempt numbers were a count of record files: with a0 removed, the count (1) named a1, which exists."""
    ledger = Ledger(tmp_path)
    for attempt in range(2):
        ledger.record(row("abc-t0", attempt=attempt, status="failed"), [])
    (tmp_path / "records" / "abc-t0.a0.json").unlink()
    ledger.record(row("abc-t0", attempt=ledger.next_attempt("abc-t0")), [])  # as the Tune callback did
    assert [(r["attempt"], r["status"]) for r in ledger.rows()] == [(1, "failed"), (2, "done")]
    assert ledger.next_attempt("abc-t0") == 3 and ledger.next_attempt("abc-t1") == 0


def test_views_are_rebuilt_from_records(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.record(row("abc-t0"), [])
    (tmp_path / "cells.parquet").unlink()  # e.g. killed between the record and the view
    Ledger(tmp_path).rebuild_views()
    assert pl.read_parquet(tmp_path / "cells.parquet").height == 1


BAD_RECORDS = {
    "notjson-t0.a0.json": ("{not json", "not JSON"),
    "list-t0.a0.json": ("[]", "expected"),
    "nocurve-t0.a0.json": (json.dumps({"row": row("nocurve-t0")}), "expected"),
    "notrial-t0.a0.json": (json.dumps({"row": {**row("x-t0"), "trial_id": None}, "curve": []}), "trial_id"),
    "badtype-t0.a0.json": (json.dumps({"row": {**row("badtype-t0"), "steps": "ten"}, "curve": []}), "steps"),
    "badcurve-t0.a0.json": (json.dumps({"row": row("badcurve-t0"), "curve": [{"step": "x"}]}), "curve"),
}


def test_bad_records_are_quarantined_with_a_warning_and_the_rest_is_read(tmp_path, capsys):
    ledger = Ledger(tmp_path)
    ledger.record(row("abc-t0"), [{"step": 0, "val_loss": 3.0}])
    for name, (text, _) in BAD_RECORDS.items():
        (tmp_path / "records" / name).write_text(text)
    assert [r["trial_id"] for r in ledger.rows()] == ["abc-t0"]  # the good one, no exception
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == len(BAD_RECORDS)
    for name, (text, why) in BAD_RECORDS.items():
        [line] = [w for w in warnings if f"records/{name}" in w]
        assert line.startswith("warning: ") and why in line and "quarantine" in line
        assert not (tmp_path / "records" / name).exists()
        assert (tmp_path / "quarantine" / "records" / name).read_text() == text  # moved aside, never deleted
    ledger.rebuild_views()
    assert pl.read_parquet(tmp_path / "cells.parquet")["trial_id"].to_list() == ["abc-t0"]
    assert ledger.rows() and capsys.readouterr().err == ""  # warned once: the files are out of the way now
    # A quarantined attempt number is not given out again (its file may be fixed and moved back).
    assert ledger.record(row("notjson-t0"), []) == 1


def test_a_record_that_cannot_be_moved_aside_is_skipped_with_a_warning(tmp_path, capsys, monkeypatch):
    ledger = Ledger(tmp_path)
    ledger.record(row("abc-t0"), [])
    (tmp_path / "records" / "bad-t0.a0.json").write_text("{not json")
    import sweeper.sweep.ledger

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sweeper.sweep.ledger, "move_aside", refuse)  # e.g. `status` on someone else's folder
    assert [r["trial_id"] for r in ledger.rows()] == ["abc-t0"]
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("warning: ") and "bad-t0.a0.json" in line and "could not be moved" in line
    assert (tmp_path / "records" / "bad-t0.a0.json").exists()


def test_a_record_of_a_newer_schema_is_refused_not_quarantined(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.record(row("abc-t0"), [])
    newer = tmp_path / "records" / "zzz-t0.a0.json"
    newer.write_text(json.dumps({"row": {**row("zzz-t0"), "schema_version": SCHEMA_VERSION + 1}, "curve": []}))
    with pytest.raises(UserError, match="newer sweeper"):
        ledger.records()
    assert newer.exists()


def test_atomic_writes_fsync_the_folder_after_the_rename(tmp_path, monkeypatch):
    """A rename is durable only once its folder is fsynced: else a crash can lose a record that was 'written'."""
    import os
    import stat

    from sweeper.core import io

    events = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(
        "fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))[1])
    monkeypatch.setattr(os, "link", lambda a, b: (events.append("rename"), real_link(a, b))[1])
    io.atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert events == ["fsync-file", "rename", "fsync-dir"]
    events.clear()
    Ledger(tmp_path).record(row("abc-t0"), [])  # the record, then the two parquet views
    assert events[:3] == ["fsync-file", "rename", "fsync-dir"]
    assert events.count("rename") == 3 and events.count("fsync-dir") >= 3
    assert all(events[i + 1] == "fsync-dir" for i, e in enumerate(events) if e == "rename")


def test_live_files_are_hints_and_cleared_by_the_record(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.update_live("abc-t0", {"trial_id": "abc-t0", "step": 3, "val_loss": math.inf})
    assert ledger.live() == [{"trial_id": "abc-t0", "step": 3, "val_loss": None}]
    ledger.record(row("abc-t0"), [])
    assert ledger.live() == []


def test_read_cells_of_a_non_sweep_folder(tmp_path):
    with pytest.raises(UserError, match=r"no cells\.parquet"):
        read_cells(tmp_path)


def test_a_record_is_created_exclusively_even_where_hard_links_are_not_supported(tmp_path, monkeypatch):
    import errno
    import os

    from sweeper.core import io

    io.create_json(tmp_path / "r.json", {"a": 1})
    with pytest.raises(FileExistsError):
        io.create_json(tmp_path / "r.json", {"a": 2})

    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)  # e.g. some FUSE / SMB mounts
    with pytest.raises(FileExistsError):
        io.create_json(tmp_path / "r.json", {"a": 3})
    io.create_json(tmp_path / "s.json", {"a": 4})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "s.json"]  # no temporary file left
    moved = io.move_aside(tmp_path / "s.json", tmp_path / "aside")
    (tmp_path / "s.json").write_text("again")
    assert io.move_aside(tmp_path / "s.json", tmp_path / "aside") == moved.with_name("s.json.1")
    assert moved.read_text() == '{\n  "a": 4\n}\n' and not (tmp_path / "s.json").exists()


def test_describe_spaces_says_which_rows_belong_to_which_space():
    """What `sweeper report` can print (analysis/sources.py calls it with the rows of cells.parquet)."""
    from sweeper.sweep.ledger import describe_spaces, space_hash

    old, new = {"name": "g", "recipe": {"lr": 1e-4}}, {"name": "g", "recipe": {"lr": 3e-4}}
    launches = [{"at": "t1", "space_hash": space_hash(old), "space": old, "cells": ["a"]},
                {"at": "t2", "space_hash": space_hash(new), "space": new, "cells": ["b"]},
                {"at": "t3", "space_hash": space_hash(new), "space": new, "cells": ["b"]}]
    rows = [{"cell_id": "a", "space_hash": space_hash(old)}, {"cell_id": "b", "space_hash": space_hash(new)},
            {"cell_id": "a"}, {"cell_id": "z"}]  # the last two: rows from before rows named their space
    first, second, unknown = describe_spaces({"space": new, "launches": launches}, rows)
    assert first.startswith(f"space {space_hash(old)} ('g', 1 launch t1)") and first.endswith(
        f"2 trial attempts (space_hash = '{space_hash(old)}')")
    assert f"2 launches t2 .. t3; vs {space_hash(old)}: recipe.lr: 0.0001 -> 0.0003" in second
    assert second.endswith(f"1 trial attempt (space_hash = '{space_hash(new)}')")
    assert unknown.startswith("1 trial attempt of no launched space")
    assert describe_spaces({"space": new, "launches": launches[1:]}, rows) == []  # one space: nothing to say
    assert describe_spaces({"space": old, "cells": [{"id": "a"}]}, rows) == []  # a manifest from before launches


def test_one_rule_picks_a_cells_result_and_a_tie_goes_to_the_lower_trial_id(tmp_path):
    """`best_trials` is the rule; evaluation (`tuned_models`) and analysis (`load_source`) both use it, so a tie
    can no longer make the two pick different trials (and the join drop the cell's scores)."""
    from analysis.sources import load_source
    from sweeper.evals.sweep import tuned_models
    from sweeper.sweep.ledger import best_trials, result_id

    ledger = Ledger(tmp_path)
    records = [  # (trial id, seed, loss); cell "bbb" ties between t2 and t1, recorded in that order
        ("bbb-t2", 0, 2.0), ("aaa-t0", 0, 3.0), ("bbb-t1", 0, 2.0), ("aaa-t1", 0, 2.5), ("aaa-t0-s1", 1, 2.7),
        ("bbb-t0", 0, 2.4),
    ]
    for n, (trial_id, seed, loss) in enumerate(records):
        ledger.record({**row(trial_id, loss=loss), "seed": seed, "checkpoint": f"/ckpt/{trial_id}",
                       "finished_at": f"2026-01-01T00:00:{n:02d}+00:00"}, [])
    ledger.record({**row("ccc-t0", status="diverged", loss=0.1), "seed": 0}, [])  # not a result: not done
    picked = best_trials(pl.read_parquet(tmp_path / "cells.parquet"))
    assert picked["trial_id"].to_list() == ["bbb-t1", "aaa-t1", "aaa-t0-s1"]  # ledger order of the winners
    assert [r["trial_id"] for r in tuned_models(ledger, None)] == picked["trial_id"].to_list()
    assert load_source(tmp_path).table["trial_id"].to_list() == picked["trial_id"].to_list()
    assert [result_id(r) for r in picked.to_dicts()] == ["bbb", "aaa", "aaa-s1"]


def test_an_eval_record_of_another_trial_is_moved_aside_not_trusted(tmp_path, capsys):
    from sweeper.evals.sweep import _recorded
    from sweeper.sweep.folder import SweepFolder

    folder = SweepFolder(tmp_path)
    path = folder.eval_record("aaa", "humanevalsynthesize-ll", "k")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([{"trial_id": "aaa-t0", "value": 0.5}]))
    assert _recorded(folder, {"cell_id": "aaa", "trial_id": "aaa-t0", "seed": 0}, "humanevalsynthesize-ll", "k")
    assert not _recorded(folder, {"cell_id": "aaa", "trial_id": "aaa-t1", "seed": 0}, "humanevalsynthesize-ll", "k")
    assert not path.exists() and (tmp_path / "evals" / "aaa" / "superseded" / path.name).is_file()
    assert "moved to" in capsys.readouterr().err
