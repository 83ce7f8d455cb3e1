"""`--against`: the method ranking of one grid under two fair designs, side by side (issue 14 item 1)."""

import json

import polars as pl
import pytest
from test_analysis_sweep import _shift_loss, make_sweep


@pytest.fixture(scope="module")
def two_designs(tmp_path_factory):
    """One sweep at one learning rate for every method; the same grid searched per cell (3 trials), where
    the searched rates differ by method and (IA)3, with its own best rate, wins at the largest scale."""
    root = tmp_path_factory.mktemp("designs")
    shared = make_sweep(root / "shared-lr", evals=False)
    searched = make_sweep(root / "searched", seed=1, evals=False)
    _shift_loss(searched, "ia3", "l", -0.5)
    ledger = pl.read_parquet(searched / "cells.parquet")
    rates = {"fft": 1e-4, "lora": 3e-3, "ptuning": 1e-2, "ia3": 1e-2, "adapterh": 1e-3, "adapterp": 1e-3,
             "parallel": 1e-3}
    ledger.with_columns(pl.col("method").replace_strict(rates, return_dtype=pl.Float64).alias("lr")) \
        .write_parquet(searched / "cells.parquet")
    manifest = json.loads((searched / "manifest.json").read_text())
    manifest["space"]["search"] = {"trials": 3, "lr": {"low": 1e-4, "high": 1e-2}}
    (searched / "manifest.json").write_text(json.dumps(manifest))
    return shared, searched


def test_the_report_shows_the_ranking_under_both_designs(run_cli, two_designs, tmp_path):
    shared, searched = two_designs
    code, _, err = run_cli("report", str(shared), "--against", str(searched), "--bootstrap", "50",
                           "--out", str(tmp_path))
    assert code == 0, err
    markdown = (tmp_path / "report.md").read_text()
    section = markdown.split("## Method ranking under two designs: shared-lr and searched", 1)[1].split("\n## ", 1)[0]
    assert "shared-lr: Learning rate: one for every method" in section
    assert "searched: Learning rates: searched per cell (3 trials per cell)" in section
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert rows["xs"].endswith("| yes |") and rows["l"].endswith("| no |")  # ia3 wins only the searched l
    assert "| ia3 > fft" in rows["l"]
    assert "| ia3 | " in section and "| 0.01 |" in section  # the rate each method trained at


def test_fit_json_carries_both_designs(run_cli, two_designs):
    shared, searched = two_designs
    code, out, err = run_cli("fit", str(shared), "--against", str(searched), "--bootstrap", "0", "--json")
    assert code == 0, err
    designs = json.loads(out)["designs"]
    assert [d["sweep"] for d in designs["designs"]] == ["shared-lr", "searched"]
    largest = designs["scales"][-1]
    assert largest["scale"] == "l" and largest["orders"][1][0] == "ia3" and not largest["same_best"]
    assert designs["scales"][0]["kendall_tau"] > 0.5


def test_an_against_that_is_not_the_same_grid_is_a_one_line_error(run_cli, two_designs, tmp_path):
    shared, _ = two_designs
    table = tmp_path / "points.csv"
    pl.DataFrame({"n": [1.0, 2.0], "loss": [2.0, 1.0]}).write_csv(table)
    other = make_sweep(tmp_path / "other", evals=False)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["space"]["ladder"] = "starcoderbase"
    (other / "manifest.json").write_text(json.dumps(manifest))
    for against, expected in ((table, "not a sweep folder"), (other, "its ladder (starcoderbase) is not this sweep's")):
        out = tmp_path / f"out-{against.stem}"
        code, _, err = run_cli("report", str(shared), "--against", str(against), "--out", str(out))
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
        assert not out.exists()


def test_a_sweep_recorded_before_a_new_data_field_is_the_same_grid(run_cli, two_designs, tmp_path):
    shared, searched = two_designs
    for folder, data in ((shared, {"source": "local-code", "packages": []}), (searched, {"source": "local-code"})):
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["space"]["data"] = data
        (folder / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli("fit", str(shared), "--against", str(searched), "--bootstrap", "0", "--json")
    assert code == 0, err
