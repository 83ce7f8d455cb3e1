"""`sweeper fit` / `sweeper report` end to end on a synthetic sweep folder drawn from a known law."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analysis import solver

METHODS = ("fft", "lora", "ptuning", "ia3", "adapterh", "adapterp", "parallel")
SCALES = {"xs": 2.0e6, "s": 6.0e6, "m": 1.8e7, "l": 5.4e7}  # total parameters of a micro-like ladder
TRUE_ALPHA = 0.3
# Per-method floor and amplitude of loss = E + A * N^-alpha.
TRUE_E = dict(zip(METHODS, (1.20, 1.26, 1.45, 1.38, 1.30, 1.31, 1.29), strict=True))
TRUE_A = dict(zip(METHODS, (60.0, 64.0, 75.0, 70.0, 66.0, 66.0, 65.0), strict=True))
TRAINABLE_SHARE = dict(zip(METHODS, (1.0, 0.01, 0.0005, 0.0002, 0.02, 0.01, 0.015), strict=True))


def true_loss(method: str, total: float) -> float:
    return TRUE_E[method] + TRUE_A[method] * total ** -TRUE_ALPHA


def make_sweep(folder: Path, noise: float = 0.005, seed: int = 0, evals: bool = True,
               methods: tuple[str, ...] = METHODS, scales: dict[str, float] | None = None) -> Path:
    """A sweep folder with the ledger's columns: two trials per cell (the better one `done`, the other
    a worse `done` or a `diverged` trial), losses from the known law with log-normal noise."""
    scales = scales or SCALES
    rng = np.random.default_rng(seed)
    rows, eval_rows = [], []
    for method in methods:
        for scale, total in scales.items():
            cell_id = f"{method}-{scale}"
            loss = true_loss(method, total) * float(np.exp(rng.normal(0.0, noise)))
            trainable = int(total * TRAINABLE_SHARE[method])
            for trial, (status, value) in enumerate((("done", loss), ("diverged" if scale == "m" else "done", loss + 0.3))):
                rows.append({
                    "schema_version": 1, "space": "micro", "cell_id": cell_id, "trial_id": f"{cell_id}-t{trial}",
                    "ladder": "micro", "scale": scale, "method": method, "method_config": "{}",
                    "lr": 1e-4 * (trial + 1), "status": status, "steps": 200, "tokens": 1_600_000,
                    "final_val_loss": value, "best_val_loss": value - 0.01, "trainable_params": trainable,
                    "total_params": int(total) + (0 if method == "fft" else trainable), "wall_seconds": 10.0,
                    "device_hours": 0.003, "dataset_fingerprint": "abc", "seed": 0, "git_sha": "0" * 40,
                    "git_dirty": False, "versions": "{}", "hardware": "{}", "checkpoint": None,
                })
            # Downstream: pass@1 = 1 - err with Gadre et al.'s link err = eps - k exp(-gamma L); a flat
            # insecure rate (no signal: the link must be skipped with a note, not fail the report).
            pass_at_1 = 1.0 - (0.95 - 40.0 * np.exp(-3.0 * loss)) + rng.normal(0.0, 0.003)
            eval_rows.append({"cell_id": cell_id, "trial_id": f"{cell_id}-t0", "method": method, "scale": scale,
                              "task": "humanevalsynthesize-python", "metric": "pass@1", "value": float(pass_at_1),
                              "n": 20, "k": 1, "settings": "{}"})
            eval_rows.append({"cell_id": cell_id, "trial_id": f"{cell_id}-t0", "method": method, "scale": scale,
                              "task": "security", "metric": "insecure_rate", "value": 0.0,
                              "n": 20, "k": 1, "settings": "{}"})
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(folder / "cells.parquet")
    if evals:
        pl.DataFrame(eval_rows).write_parquet(folder / "evals.parquet")
    (folder / "manifest.json").write_text(json.dumps({"space": {"name": "micro", "ladder": "micro"}, "plan": {}}))
    return folder

SCALING = Path(__file__).resolve().parents[2] / "shared" / "data" / "scaling"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return make_sweep(tmp_path_factory.mktemp("sweeps") / "micro")


def test_fit_on_a_sweep_folder_recovers_the_law(run_cli, sweep, tmp_path):
    out = tmp_path / "fit"
    code, stdout, err = run_cli("fit", str(sweep), "--bootstrap", "200", "--out", str(out), "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert (result["x"], result["y"], result["by"], result["law"]) == (["total_params"], "final_val_loss", "method", "power")
    assert result["scales"] == list(SCALES)  # ordered by size, not by name
    assert result["provenance"]["git_sha"] and result["options"]["bootstrap"] == 200
    rows = pl.DataFrame(result["results"], infer_schema_length=None)
    joint_alpha = rows.filter((pl.col("section") == "parameter") & (pl.col("fit") == "joint")
                              & (pl.col("name") == "alpha") & (pl.col("x") == "total_params")).row(0, named=True)
    assert joint_alpha["lower"] <= TRUE_ALPHA <= joint_alpha["upper"]
    assert joint_alpha["estimate"] == pytest.approx(TRUE_ALPHA, rel=0.15)
    predictions = rows.filter((pl.col("section") == "prediction") & (pl.col("x") == "total_params"))
    assert set(predictions["label"]) == {"34B-equivalent", "70B-equivalent"}
    fft = predictions.filter((pl.col("group") == "fft") & (pl.col("label") == "70B-equivalent")
                             & (pl.col("fit") == "joint")).row(0, named=True)
    largest = SCALES["l"] * 70 / 15.5
    assert fft["at"] == pytest.approx(largest)
    assert fft["lower"] <= true_loss("fft", largest) <= fft["upper"]
    # The alternative x of the paper, and the paper's findings as numbers. No "34B-equivalent" against
    # trainable parameters: a multiple of the largest trainable count is no real model's.
    assert "trainable_params" in set(rows["x"].drop_nulls())
    assert rows.filter((pl.col("section") == "prediction") & (pl.col("x") == "trainable_params")).height == 0
    assert rows.filter(pl.col("section") == "ranking").height == len(SCALES) - 1
    spearman = rows.filter((pl.col("section") == "correlation") & (pl.col("name") == "humanevalsynthesize-python/pass@1"))
    assert spearman["estimate"][0] < -0.9  # lower loss, higher pass@1
    downstream = rows.filter(pl.col("section") == "downstream")
    assert downstream.height == 2 * len(METHODS) and (downstream["lower"] <= downstream["estimate"]).all()
    assert {p.name for p in out.iterdir()} >= {"results.parquet", "results.csv", "results.json",
                                                "curves-total_params.png", "curves-trainable_params.png"}
    assert pl.read_parquet(out / "results.parquet").height == rows.height


def test_fit_holdout_largest_reports_the_error_on_the_largest_scale(run_cli, sweep, tmp_path):
    code, stdout, _ = run_cli("fit", str(sweep), "--holdout-largest", "--bootstrap", "100", "--json",
                               "--out", str(tmp_path))
    assert code == 0
    rows = pl.DataFrame(json.loads(stdout)["results"], infer_schema_length=None)
    backtest = rows.filter(pl.col("section") == "backtest")
    # The forecast backtests itself on the held-out scale: the whole procedure, on the smaller scales alone.
    forecast = backtest.filter(pl.col("fit") == "forecast")
    assert set(forecast["group"]) == set(METHODS) and set(forecast["label"]) == {"l"}
    assert ((forecast["lower"] <= forecast["estimate"]) & (forecast["estimate"] <= forecast["upper"])).all()
    backtest = backtest.filter(pl.col("fit") != "forecast")
    # The trainable-parameter view is backtested too (it is not extrapolated: see the next test).
    assert backtest.filter(pl.col("x") == "trainable_params").height == backtest.height // 2
    backtest = backtest.filter(pl.col("x") == "total_params")
    held_out = backtest.filter(pl.col("group") != "all")
    assert set(held_out["label"]) == {"l"} and held_out.height == 2 * len(METHODS)
    for row in held_out.iter_rows(named=True):
        truth = true_loss(row["group"], row["at"])
        assert row["observed"] == pytest.approx(truth, rel=0.03)
        assert row["relative_error"] == pytest.approx((row["estimate"] - row["observed"]) / row["observed"])
    summary = backtest.filter(pl.col("group") == "all")
    assert set(summary["fit"]) == {"independent", "joint"} and (summary["estimate"] < 0.05).all()


def test_report_writes_markdown_and_self_contained_html(run_cli, sweep, tmp_path):
    code, _, err = run_cli("report", str(sweep), "--bootstrap", "100", "--out", str(tmp_path))
    assert code == 0, err
    markdown = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for heading in ("Extrapolation", "Fitted parameters", "Joint vs. independent", "Backtest", "Ranking stability",
                    "Downstream scores", "Two-step prediction", "Provenance"):
        assert heading in markdown and heading in page, heading
    assert "![" in markdown and "(curves-total_params.png)" in markdown
    assert page.count("data:image/png;base64,") == len(list(tmp_path.glob("*.png"))) >= 4
    assert "every score is 0: no link to fit" in markdown  # the flat security metric, reported not fitted
    # Which score is which: pass@1 is executed, the insecure rate comes from generated code.
    assert "| humanevalsynthesize-python / pass@1 | executed |" in markdown
    assert "| security / insecure_rate | generated |" in markdown
    assert "No extrapolation against `trainable_params`" in markdown
    assert "observed inside the interval for" in markdown  # the backtest says how often its intervals held


def test_fit_on_the_chinchilla_csv_with_derived_columns(run_cli, tmp_path):
    code, stdout, err = run_cli(
        "fit", str(SCALING / "chinchilla_epoch_svg_extracted.csv"), "--x", "Model Size,D", "--y", "loss",
        "--define", 'D="Training FLOP" / (6 * "Model Size")', "--where", "loss < 3.42", "--bootstrap", "0",
        "--predict", "7e10:1.4e12", "--out", str(tmp_path), "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["law"] == "chinchilla"
    rows = pl.DataFrame(result["results"], infer_schema_length=None)
    params = dict(rows.filter(pl.col("section") == "parameter").select("name", "estimate").iter_rows())
    assert params["E"] == pytest.approx(1.82, rel=0.01) and params["alpha"] == pytest.approx(0.348, rel=0.01)
    fit_row = rows.filter(pl.col("section") == "fit").row(0, named=True)
    assert (fit_row["n_points"], fit_row["dof"], fit_row["converged"]) == (240, 235, True)
    prediction = rows.filter(pl.col("section") == "prediction").row(0, named=True)
    assert prediction["label"] == "7e+10:1.4e+12" and 1.9 < prediction["estimate"] < 2.0


def _table(tmp_path: Path, rows: dict) -> str:
    path = tmp_path / "runs.csv"
    pl.DataFrame(rows).write_csv(path)
    return str(path)


def _expect_user_error(run_cli, args, *fragments) -> str:
    code, _, err = run_cli(*args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_misspelled_column_lists_the_columns(run_cli, sweep, tmp_path):
    _expect_user_error(run_cli, ["fit", str(sweep), "--y", "final_val_los", "--out", str(tmp_path / "o")],
                       "no column 'final_val_los'", "did you mean 'final_val_loss'", "columns: ", "status", "total_params")
    assert not (tmp_path / "o").exists()


def test_nan_rows_are_reported_and_dropped_only_when_asked(run_cli, tmp_path):
    source = _table(tmp_path, {"n": [1e6, 1e7, 1e8, 1e9, 1e10], "loss": [3.0, 2.6, float("nan"), 2.2, 2.1]})
    _expect_user_error(run_cli, ["fit", source, "--x", "n", "--y", "loss", "--out", str(tmp_path / "o")],
                       "1 of 5 rows", "row 2", "--drop-invalid")
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli("fit", source, "--x", "n", "--y", "loss", "--drop-invalid", "--bootstrap", "50",
                            "--out", str(tmp_path / "o"))
    assert code == 0 and "dropped 1 of 5 rows" in err


def test_non_positive_x_is_refused_for_a_power_law(run_cli, tmp_path):
    source = _table(tmp_path, {"n": [0.0, 1e7, 1e8, 1e9], "loss": [3.0, 2.6, 2.4, 2.2]})
    _expect_user_error(run_cli, ["fit", source, "--x", "n", "--y", "loss"], "'n' must be > 0", "row 0")


def test_too_few_points_names_the_minimum(run_cli, tmp_path):
    source = _table(tmp_path, {"n": [1e7, 1e8], "loss": [2.6, 2.4]})
    _expect_user_error(run_cli, ["fit", source, "--x", "n", "--y", "loss"], "2 points", "at least 3")


def test_no_degrees_of_freedom_is_said_loudly(run_cli, tmp_path):
    source = _table(tmp_path, {"n": [1e7, 1e8, 1e9], "loss": [2.6, 2.4, 2.3]})
    code, _, err = run_cli("fit", source, "--x", "n", "--y", "loss", "--out", str(tmp_path / "o"))
    assert code == 0 and "UNDERDETERMINED" in err and "no interval" in err


def test_empty_ledger_and_ledger_without_done_trials(run_cli, tmp_path):
    empty = make_sweep(tmp_path / "empty", evals=False)
    pl.read_parquet(empty / "cells.parquet").head(0).write_parquet(empty / "cells.parquet")
    _expect_user_error(run_cli, ["fit", str(empty)], "ledger is empty")
    failed = make_sweep(tmp_path / "failed", evals=False)
    ledger = pl.read_parquet(failed / "cells.parquet").with_columns(pl.lit("failed").alias("status"))
    ledger.write_parquet(failed / "cells.parquet")
    _expect_user_error(run_cli, ["fit", str(failed)], "no trial finished", "failed 56")


def test_non_converged_fit_is_an_error_not_a_result(run_cli, sweep, tmp_path, monkeypatch):
    monkeypatch.setattr(solver, "MAX_ITERATIONS", 1)
    _expect_user_error(run_cli, ["fit", str(sweep), "--bootstrap", "0", "--out", str(tmp_path / "o")],
                       "did not converge")
    assert not (tmp_path / "o").exists()


def test_unknown_law_and_bad_predict(run_cli, sweep):
    _expect_user_error(run_cli, ["fit", str(sweep), "--law", "powr"], "unknown law 'powr'", "chinchilla")
    _expect_user_error(run_cli, ["fit", str(sweep), "--predict", "big"], "--predict", "'big'")
    _expect_user_error(run_cli, ["fit", str(sweep), "--law", "chinchilla"], "takes 2 x column(s)")


def test_missing_source(run_cli, tmp_path):
    _expect_user_error(run_cli, ["fit", str(tmp_path / "nope")], "no such file or sweep folder")
    _expect_user_error(run_cli, ["fit", str(tmp_path)], "not a sweep folder")


def test_commands_module_imports_nothing_heavy():
    probe = ("import sys, analysis.commands; heavy = {'numpy', 'polars', 'scipy', 'matplotlib', 'torch'}; "
             "print(sorted(heavy & set(sys.modules)))")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "[]"


def _shift_loss(folder: Path, method: str, scale: str, shift: float) -> None:
    """Add `shift` to the final loss of every trial of one cell of a sweep folder's ledger."""
    ledger = pl.read_parquet(folder / "cells.parquet")
    cell = (pl.col("method") == method) & (pl.col("scale") == scale)
    loss = pl.when(cell).then(pl.col("final_val_loss") + shift).otherwise(pl.col("final_val_loss"))
    ledger.with_columns(loss.alias("final_val_loss")).write_parquet(folder / "cells.parquet")


def test_one_underdetermined_method_does_not_stop_the_report(run_cli, tmp_path):
    """Three scales, and lora's loss rises at the largest: no saturating power law fits lora's points,
    but the report still comes out, says so, and uses the joint fit for lora."""
    sweep = make_sweep(tmp_path / "sweep", scales={name: SCALES[name] for name in ("xs", "s", "m")})
    _shift_loss(sweep, "lora", "m", 0.5)
    out = tmp_path / "report"
    code, _, err = run_cli("report", str(sweep), "--bootstrap", "50", "--out", str(out))
    assert code == 0, err
    assert "warning: UNDERDETERMINED: final_val_loss vs total_params, lora: the points cannot pin down" in err
    markdown = (out / "report.md").read_text()
    assert "UNDERDETERMINED: final_val_loss vs total_params, lora" in markdown  # in the report's warnings too
    assert "| lora | independent | underdetermined | underdetermined |" in markdown  # extrapolation, no numbers
    assert "| lora | independent | underdetermined | — | — |" in markdown  # parameters, no numbers
    assert "No comparison: the independent fits are incomplete (lora: underdetermined)" in markdown
    # Without m only two scales are left: the backtest says it is not possible instead of failing.
    assert "### Backtest: predicting m without it\n\nNot possible: fitted without m" in markdown
    rows = pl.read_parquet(out / "results.parquet").filter(pl.col("x") == "total_params")
    predictions = rows.filter(pl.col("section") == "prediction")
    # lora's own fit fails; the joint fit and the forecast (which averages the candidates that fit) predict it.
    assert sorted(predictions.filter(pl.col("group") == "lora")["fit"].unique().to_list()) == ["forecast", "joint"]
    assert set(predictions.filter(pl.col("fit") == "independent")["group"]) == set(METHODS) - {"lora"}
    failed = rows.filter((pl.col("section") == "fit") & (pl.col("group") == "lora") & (pl.col("fit") == "independent"))
    assert failed["estimate"].to_list() == [None] and failed["note"][0].startswith("UNDERDETERMINED")


def test_a_sweep_where_nothing_can_be_fitted_is_one_error(run_cli, tmp_path):
    sweep = make_sweep(tmp_path / "sweep", scales={name: SCALES[name] for name in ("xs", "s")})
    _expect_user_error(run_cli, ["report", str(sweep), "--out", str(tmp_path / "o")],
                       "nothing could be fitted", "fft, lora", "underdetermined (2 points for 3 parameters)",
                       "the joint fit: underdetermined (14 points for 15 parameters)")
    assert not (tmp_path / "o").exists()


def test_a_single_group_that_cannot_be_pinned_down_is_an_error(run_cli, tmp_path):
    source = _table(tmp_path, {"n": [1e7, 1e8, 1e9], "loss": [2.6, 2.4, 2.9]})  # no decreasing law fits
    _expect_user_error(run_cli, ["fit", source, "--x", "n", "--y", "loss", "--out", str(tmp_path / "o")],
                       "cannot pin down the 3 parameters")
    assert not (tmp_path / "o").exists()


def test_a_backtest_asked_for_on_a_single_curve_that_cannot_be_made_is_an_error(run_cli, tmp_path):
    source = _table(tmp_path, {"n": [1e7, 1e8, 1e9], "loss": [2.6, 2.4, 2.3]})
    _expect_user_error(run_cli, ["fit", source, "--x", "n", "--y", "loss", "--holdout-largest", "--out", str(tmp_path / "o")], "--holdout-largest", "underdetermined (2 points for 3 parameters)")
    # Not asked for (the report always backtests): the report comes out and says why there is no backtest.
    code, _, err = run_cli("report", source, "--x", "n", "--y", "loss", "--out", str(tmp_path / "r"))
    assert code == 0 and "no backtest: fitted without 1e+09" in err
    assert "Not possible: fitted without 1e+09" in (tmp_path / "r" / "report.md").read_text()


def test_bad_values_in_one_group_are_still_an_error(run_cli, tmp_path):
    sweep = make_sweep(tmp_path / "sweep", evals=False)
    _shift_loss(sweep, "ia3", "s", -100.0)
    _expect_user_error(run_cli, ["fit", str(sweep), "--bootstrap", "0"], "y must be > 0")


def test_a_score_that_does_not_track_the_loss_gets_no_two_step_prediction(run_cli, sweep, tmp_path):
    folder = tmp_path / "sweep"
    shutil.copytree(sweep, folder)
    evals = pl.read_parquet(folder / "evals.parquet")
    # A likelihood-ranked yes/no task whose accuracy is noise around chance, whatever the loss.
    cells = evals.filter(pl.col("task") == "security")
    noise = np.random.default_rng(3).integers(16, 25, cells.height) / 40
    flat = cells.with_columns(pl.lit("defect-detection-ll").alias("task"), pl.lit("accuracy").alias("metric"),
                              pl.Series("value", noise), pl.lit('{"options_per_item": 2}').alias("settings"))
    pl.concat([evals, flat]).write_parquet(folder / "evals.parquet")
    out = tmp_path / "report"
    code, _, err = run_cli("report", str(folder), "--bootstrap", "50", "--out", str(out))
    assert code == 0, err
    markdown = (out / "report.md").read_text()
    assert "| defect-detection-ll / accuracy | likelihood (chance 0.50) |" in markdown
    assert "Two-step prediction: humanevalsynthesize-python / pass@1" in markdown
    assert "Two-step prediction: defect-detection-ll" not in markdown
    rows = pl.read_parquet(out / "results.parquet")
    assert set(rows.filter(pl.col("section") == "downstream")["name"]) == {"humanevalsynthesize-python/pass@1"}
    correlation = rows.filter((pl.col("section") == "correlation") & (pl.col("name") == "defect-detection-ll/accuracy"))
    assert correlation["p_value"][0] >= 0.05 and "does not track the loss" in correlation["note"][0]


def test_a_sweep_with_replicates_gives_one_point_per_cell_and_seed(tmp_path):
    from analysis.sources import load_source

    # (cell, trial id, seed, status, final val loss): per seed, the best done lr trial is the point.
    trials = [
        ("a", "a-t0", 0, "done", 1.0), ("a", "a-t1", 0, "done", 1.5),
        ("a", "a-t0-s1", 1, "done", 1.3), ("a", "a-t1-s1", 1, "done", 1.2),
        ("a", "a-t0-s2", 2, "diverged", 0.5), ("a", "a-t1-s2", 2, "done", 1.1),
        ("b", "b-t0", 0, "done", 2.0), ("b", "b-t1", 0, "done", 1.9),
    ]
    ledger = pl.DataFrame(
        [{"cell_id": c, "trial_id": t, "seed": seed, "status": status, "final_val_loss": loss, "lr": 1e-3}
         for c, t, seed, status, loss in trials])
    (tmp_path / "replicated").mkdir()
    ledger.write_parquet(tmp_path / "replicated" / "cells.parquet")
    points = load_source(tmp_path / "replicated").table
    assert set(points.columns) == set(ledger.columns) and points.height == 4
    assert points.select("cell_id", "seed", "trial_id").rows() == [
        ("a", 0, "a-t0"), ("a", 1, "a-t1-s1"), ("a", 2, "a-t1-s2"), ("b", 0, "b-t1")]

    (tmp_path / "old").mkdir()  # a ledger without seeds: the best done trial per cell, as before replicates
    ledger.drop("seed").write_parquet(tmp_path / "old" / "cells.parquet")
    old = load_source(tmp_path / "old").table
    assert old.select("cell_id", "trial_id").rows() == [("a", "a-t0"), ("b", "b-t1")]
