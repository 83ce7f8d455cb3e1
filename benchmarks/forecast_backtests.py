"""Forecasts on real public scaling data: fit the smaller models, forecast the largest, score the result.

Each task writes the smaller models of a public table to a CSV and runs exactly what a user runs,
`sweeper fit CSV --x X --y Y [--by G] --predict ...` with the default law (here through
`analysis.pipeline.analyze`, the code behind the command); then scores the forecasts of the held-out
models against their observed values on three numbers:

- median |relative error| of the point forecast, next to a plain least-squares fit of the saturating
  power law E + A x^-alpha per group (scipy's curve_fit: the usual way to do it);
- coverage: the share of held-out truths inside the 95% intervals;
- mean interval score (Gneiting & Raftery 2007, eq. 43, alpha = 0.05) relative to the truth:
  (upper - lower + (2/alpha) (lower - y)+ + (2/alpha) (y - upper)+) / y. Lower is better; a miss by 1%
  of the value costs 0.4.

Tasks (Gadre et al. 2024's 104 models, `../shared/data/scaling/gadre2024_overtraining_104.csv`,
C4 validation loss vs parameters N, one curve per training set):
- gadre-m1: tokens = 20 N (multiplier 1), 3 training sets x 6 sizes; fit 10M-412M, forecast 1.4B and
  6.9B (3.5x and 17x); and fit 10M-1.4B, forecast 6.9B (4.8x); jointly (`--by dataset`) and each
  training set alone (no `--by`);
- gadre-m*: every other multiplier (0.25-32) with 4 sizes, 3 training sets; fit 10M-154M, forecast
  412M (2.7x); 24 held-out truths.
- chinchilla (reported apart): Epoch's extraction of Chinchilla's runs, the two-input default
  (`--x N,D`, the Chinchilla law alone); fit N < 1B, forecast the runs with N >= 1B.

    python benchmarks/forecast_backtests.py [--data ../shared/data] [--json out.json]
"""

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
from scipy.optimize import curve_fit

from analysis.pipeline import FORECAST, Options, analyze
from analysis.sources import load_source

ALPHA = 0.05


def gadre_tasks(data: Path) -> list[dict]:
    table = pl.read_csv(data / "scaling" / "gadre2024_overtraining_104.csv", infer_schema_length=None)
    table = table.with_columns(pl.col("chinchilla_multiplier").cast(pl.Float64))
    tasks = []
    m1 = table.filter(pl.col("chinchilla_multiplier") == 1.0).select("dataset", "N", "loss_c4_val")
    sizes = sorted(m1["N"].unique().to_list())
    tasks.append({"name": "gadre-m1 fit 4, forecast 2", "train": m1.filter(pl.col("N") <= sizes[3]),
                  "test": m1.filter(pl.col("N") > sizes[3])})
    tasks.append({"name": "gadre-m1 fit 5, forecast 1", "train": m1.filter(pl.col("N") <= sizes[4]),
                  "test": m1.filter(pl.col("N") > sizes[4])})
    for name in sorted(m1["dataset"].unique().to_list()):  # each training set alone: no --by
        one = m1.filter(pl.col("dataset") == name)
        for fitted in (4, 5):
            tasks.append({"name": f"gadre-m1 {name} alone, fit {fitted}", "by": None,
                          "train": one.filter(pl.col("N") <= sizes[fitted - 1]),
                          "test": one.filter(pl.col("N") > sizes[fitted - 1])})
    for multiplier in sorted(set(table["chinchilla_multiplier"].to_list()) - {1.0}):
        rows = table.filter(pl.col("chinchilla_multiplier") == multiplier).select("dataset", "N", "loss_c4_val")
        small = sorted(rows["N"].unique().to_list())
        if len(small) < 4:
            continue
        per_set = rows.group_by("dataset").len()
        if per_set["len"].min() < 4:
            continue
        tasks.append({"name": f"gadre-m{multiplier:g} fit 3, forecast 1",
                      "train": rows.filter(pl.col("N") <= small[2]), "test": rows.filter(pl.col("N") == small[3])})
    return tasks


def chinchilla_task(data: Path) -> dict:
    """Epoch's extraction of Chinchilla's runs (240 lowest-loss rows, as Epoch fits them): fit the models
    below 1B parameters, forecast every run of the larger ones at its own N and D (L = E + A/N^a + B/D^b)."""
    table = pl.read_csv(data / "scaling" / "chinchilla_epoch_svg_extracted.csv").sort("loss").head(240)
    table = table.select(pl.col("Model Size").alias("N"), (pl.col("Training FLOP") / (6 * pl.col("Model Size"))).alias("D"),
                         "loss")
    return {"name": "chinchilla fit N < 1B, forecast N >= 1B", "train": table.filter(pl.col("N") < 1e9),
            "test": table.filter(pl.col("N") >= 1e9)}


def run_chinchilla(task: dict) -> list[dict]:
    """The two-input default (`--x N,D`: the Chinchilla law alone), forecasting each held-out run."""
    points = [(row["N"], row["D"]) for row in task["test"].iter_rows(named=True)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.csv"
        task["train"].write_csv(path)
        analysis = analyze(load_source(path), Options(x=("N", "D"), y="loss", predict=tuple(points), bootstrap=0))
    forecasts = [p for p in analysis.main.predictions if p.kind == FORECAST]
    return [{"task": task["name"], "group": "all", "N": row["N"], "truth": row["loss"], "estimate": p.estimate,
             "lower": p.lower, "upper": p.upper, "plain": float("nan"), "warnings": len(analysis.warnings)}
            for row, p in zip(task["test"].iter_rows(named=True), forecasts, strict=True)]


def plain_least_squares(train: pl.DataFrame, group: str, x: float) -> float:
    """E + A x^-alpha by scipy's curve_fit in y units, on log x scaled to the data (a fair plain fit)."""
    rows = train.filter(pl.col("dataset") == group)
    n, y = rows["N"].to_numpy(), rows["loss_c4_val"].to_numpy()
    scale = n.min()

    def law(v, E, A, alpha):
        return E + A * (v / scale) ** -alpha

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            params, _ = curve_fit(law, n, y, p0=(y.min() * 0.5, y.max() - y.min() * 0.5, 0.3), maxfev=20000)
        except RuntimeError:
            return float("nan")
    return float(law(x, *params))


def run_task(task: dict, bootstrap: int) -> list[dict]:
    sizes = sorted(task["test"]["N"].unique().to_list())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.csv"
        task["train"].write_csv(path)
        by = task.get("by", "dataset")
        options = Options(x=("N",), y="loss_c4_val", by=by, predict=tuple((s,) for s in sizes), bootstrap=bootstrap)
        analysis = analyze(load_source(path), options)
    results = []
    for row in task["test"].iter_rows(named=True):
        group = row["dataset"] if by else "all"
        forecast = next(p for p in analysis.main.predictions
                        if p.kind == FORECAST and p.group == group and p.X[0] == row["N"])
        truth = row["loss_c4_val"]
        plain = plain_least_squares(task["train"], row["dataset"], row["N"])
        results.append({"task": task["name"], "group": row["dataset"], "N": row["N"], "truth": truth,
                        "estimate": forecast.estimate, "lower": forecast.lower, "upper": forecast.upper,
                        "plain": plain, "warnings": len(analysis.warnings)})
    return results


def score(rows: list[dict]) -> dict:
    truth = np.array([r["truth"] for r in rows])
    estimate, lower, upper = (np.array([r[k] for r in rows]) for k in ("estimate", "lower", "upper"))
    plain = np.array([r["plain"] for r in rows])
    interval_score = (upper - lower + (2 / ALPHA) * np.maximum(lower - truth, 0)
                      + (2 / ALPHA) * np.maximum(truth - upper, 0)) / truth
    return {"truths": len(rows), "median_abs_error": float(np.median(np.abs(estimate / truth - 1))),
            "plain_median_abs_error": float(np.nanmedian(np.abs(plain / truth - 1))) if np.isfinite(plain).any()
            else float("nan"),
            "coverage": float(np.mean((lower <= truth) & (truth <= upper))),
            "mean_interval_score": float(interval_score.mean()),
            "median_width": float(np.median((upper - lower) / truth))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples of the single-law fits (not the forecast)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for task in gadre_tasks(Path(args.data)):
        task_rows = run_task(task, args.bootstrap)
        rows += task_rows
        s = score(task_rows)
        print(f"{task['name']}: {s['truths']} truths, median error {s['median_abs_error']:.2%} "
              f"(plain LS {s['plain_median_abs_error']:.2%}), coverage {s['coverage']:.0%}, "
              f"interval score {s['mean_interval_score']:.3f}, median width {s['median_width']:.1%}", flush=True)
    chinchilla = run_chinchilla(chinchilla_task(Path(args.data)))
    s = score(chinchilla)
    print(f"{chinchilla[0]['task']} (not in ALL: another law and quantity): {s['truths']} truths, median error "
          f"{s['median_abs_error']:.2%}, coverage {s['coverage']:.0%}, interval score {s['mean_interval_score']:.3f}, "
          f"median width {s['median_width']:.1%}", flush=True)
    total = score(rows)
    print(f"ALL: {total['truths']} truths, median error {total['median_abs_error']:.2%} (plain LS "
          f"{total['plain_median_abs_error']:.2%}), coverage {total['coverage']:.0%}, mean interval score "
          f"{total['mean_interval_score']:.3f}, median width {total['median_width']:.1%}; "
          f"{time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "total": total}, indent=1))


if __name__ == "__main__":
    main()
