"""How often do the single-law bootstrap intervals (the report's parameter tables) hold the truth?

A 4-scale x 7-method design with K seeds per cell, a saturating power law whose exponent the methods
share (each with its own floor and coefficient), log-normal run noise. The joint power-law fit (the
law of the truth) is bootstrapped in three ways and judged at 2.2x the largest scale (the
34B-equivalent of a 15.5B ladder) against the noiseless curve:

  points      every point of a method resampled with replacement (sweeper's scheme)
  two-stage   a method's cells (scales) resampled, then each drawn cell's replicates
  replicates  only the replicates within each cell, every scale kept
  cells       a method's cells resampled, each drawn cell with all its replicates

    python benchmarks/bootstrap_coverage.py --draws 100 --seeds 3 [--resamples 300] [--noise 0.003]
"""

import argparse
import json
import time

import numpy as np

from analysis import bootstrap
from analysis.fitting import FitData, fit
from analysis.laws import LAWS

SCALES = np.array([1e9, 3e9, 7e9, 15.5e9])
TARGET = 34e9
GROUPS = 7


def cell_labels(groups: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(n,) label per point shared by the replicates of one cell (a method at one scale), 0..cells-1."""
    return np.unique(np.column_stack([groups, x]), axis=0, return_inverse=True)[1].reshape(-1)


def intact_cell_counts(groups: np.ndarray, cells: np.ndarray, n_resamples: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Each method's cells resampled; a cell drawn k times gives each of its replicates count k."""
    first = np.unique(cells, return_index=True)[1]  # one point per cell, in label order
    return bootstrap.resample_counts(groups[first], n_resamples, rng)[:, cells]


def two_stage_counts(groups: np.ndarray, cells: np.ndarray, n_resamples: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Cells resampled as above, then a cell drawn k times has its m replicates drawn k m times."""
    drawn = intact_cell_counts(groups, cells, n_resamples, rng)
    counts = np.zeros_like(drawn)
    for label in np.unique(cells):
        members = np.flatnonzero(cells == label)
        counts[:, members] = rng.multinomial(drawn[:, members[0]].astype(int) * len(members),
                                             np.full(len(members), 1.0 / len(members)))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=300)
    parser.add_argument("--noise", type=float, default=0.003)
    parser.add_argument("--json", help="write the figures here as well")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    law = LAWS.get("power")
    groups = np.repeat(np.arange(GROUPS), len(SCALES) * args.seeds)
    x = np.tile(np.repeat(SCALES, args.seeds), GROUPS)
    schemes = ("points", "two-stage", "replicates", "cells")
    inside = {scheme: [] for scheme in schemes}
    width = {scheme: [] for scheme in schemes}
    started = time.perf_counter()
    for _ in range(args.draws):
        E = rng.uniform(1.0, 2.0, GROUPS)
        alpha = np.full(GROUPS, rng.uniform(0.2, 0.4))
        reducible = rng.uniform(0.15, 0.5, GROUPS)
        A = E * reducible / (1 - reducible) * SCALES[0] ** alpha
        y = (E[groups] + A[groups] * x ** -alpha[groups]) * np.exp(rng.normal(0, args.noise, len(x)))
        data = FitData(X=x[:, None], y=y, groups=groups, group_names=tuple(f"m{g}" for g in range(GROUPS)))
        result = fit(law, data)
        cells = cell_labels(groups, x)
        counts = {
            "points": bootstrap.resample_counts(groups, args.resamples, rng),
            "two-stage": two_stage_counts(groups, cells, args.resamples, rng),
            "replicates": bootstrap.resample_counts(cells, args.resamples, rng),
            "cells": intact_cell_counts(groups, cells, args.resamples, rng),
        }
        for scheme in schemes:
            boot = bootstrap.run(result, counts[scheme])
            for g in range(GROUPS):
                low, high = bootstrap.prediction_interval(result, boot, f"m{g}", np.array([[TARGET]]))
                truth = E[g] + A[g] * TARGET ** -alpha[g]
                inside[scheme].append(bool(low[0] <= truth <= high[0]))
                width[scheme].append(float((high[0] - low[0]) / truth))
    figures = {
        scheme: {"inside_95": float(np.mean(inside[scheme])), "median_width": float(np.nanmedian(width[scheme]))}
        for scheme in schemes
    }
    print(f"{args.draws} draws x {GROUPS} methods, {len(SCALES)} scales x {args.seeds} seeds, "
          f"noise {args.noise:.1%}, {args.resamples} resamples, {time.perf_counter() - started:.0f} s")
    for scheme, figure in figures.items():
        print(f"  {scheme:<11} 95% intervals holding the curve at 2.2x: {figure['inside_95']:.1%}  "
              f"median width {figure['median_width']:.2%}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "figures": figures}, handle, indent=2)


if __name__ == "__main__":
    main()
