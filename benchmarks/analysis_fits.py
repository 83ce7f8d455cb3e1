"""Timing of the scaling-law fits (goals: 28-point grid + 1000 resamples <= 5 s; the 28-point forecast
with full uncertainty (ensemble, backtests, calibration check on 200 simulated draws) <= 5 s;
Chinchilla's 240 points <= 10 s). Prints a Markdown table; numbers go to benchmarks/analysis.md with
the command.

    python benchmarks/analysis_fits.py [--repeats 3] [--resamples 1000] [--chinchilla PATH]
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import polars as pl

from analysis import bootstrap
from analysis.compare import compare
from analysis.curves import fit_curves
from analysis.fitting import FitData, fit
from analysis.forecast import Design, Target, backtest_largest, candidates, forecast, simulate_coverage
from analysis.laws import LAWS

DEFAULT_CHINCHILLA = Path(__file__).resolve().parents[2] / "shared/data/scaling/chinchilla_epoch_svg_extracted.csv"


def grid_28(seed: int = 0) -> FitData:
    """7 methods x 4 scales drawn from E_m + A_m N^-0.3 with 1% log-normal noise (the Astraios grid shape)."""
    rng = np.random.default_rng(seed)
    n = np.tile(np.geomspace(1e9, 15.5e9, 4), 7)
    groups = np.repeat(np.arange(7), 4)
    y = (1.0 + 0.05 * groups + 300.0 * n ** -0.3) * np.exp(rng.normal(0.0, 0.01, len(n)))
    return FitData(X=n[:, None], y=y, groups=groups, group_names=tuple(f"method{i}" for i in range(7)))


def chinchilla(path: Path) -> FitData:
    table = pl.read_csv(path).sort("loss").head(240)
    n = table["Model Size"].to_numpy()
    return FitData.single(np.column_stack([n, table["Training FLOP"].to_numpy() / (6 * n)]), table["loss"].to_numpy())


def timed(task, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        task()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--chinchilla", type=Path, default=DEFAULT_CHINCHILLA)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    grid = grid_28()
    power = LAWS.get("power")
    grid_counts = bootstrap.resample_counts(grid.groups, args.resamples, rng)
    curves = fit_curves(power, grid, grid_counts, "grid")
    ch = chinchilla(args.chinchilla)
    law = LAWS.get("chinchilla")
    ch_fit = fit(law, ch)
    ch_counts = bootstrap.resample_counts(np.zeros(len(ch.y)), args.resamples, rng)
    design = Design(X=grid.X, groups=grid.groups, group_names=grid.group_names, levels=np.tile(np.arange(4), 7))
    targets = [Target(g, label, np.array([15.5e9 * m])) for g in range(7) for label, m in (("34B", 34 / 15.5),
                                                                                           ("70B", 70 / 15.5))]

    def full_forecast():
        result = forecast(design, grid.y, targets, candidates(None, 1, 7), 0.95)
        simulate_coverage(design, result, 0.95)
        backtest_largest(design, grid.y, candidates(None, 1, 7), 0.95)

    rows = [
        ("28-point forecast: 5 candidate fits x 3 folds, weights, drift, 200-draw calibration check, "
         "leave-largest-out backtest", timed(full_forecast, args.repeats), "5 s"),
        ("28-point grid: 7 independent + 1 joint fit, no bootstrap",
         timed(lambda: fit_curves(power, grid, np.empty((0, 28)), "grid"), args.repeats), "-"),
        (f"28-point grid: 7 independent + 1 joint fit, {args.resamples} resamples each",
         timed(lambda: fit_curves(power, grid, grid_counts, "grid"), args.repeats), "5 s"),
        ("28-point grid: leave-one-out + AIC comparison", timed(lambda: compare(curves), args.repeats), "-"),
        ("Chinchilla 240 points: multi-start fit", timed(lambda: fit(law, ch), args.repeats), "10 s"),
        (f"Chinchilla 240 points: fit + {args.resamples} resamples",
         timed(lambda: bootstrap.run(fit(law, ch), ch_counts), args.repeats), "-"),
    ]
    print(f"Chinchilla fit: {ch_fit.params('all')} (converged: {ch_fit.converged})")
    print("| task | median seconds | goal |\n|---|---|---|")
    for name, seconds, goal in rows:
        print(f"| {name} | {seconds:.2f} | {goal} |")


if __name__ == "__main__":
    main()
