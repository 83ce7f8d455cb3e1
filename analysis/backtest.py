"""Backtest: fit without the largest scale, predict it, and report the error (absolute and relative).

This is the honest check of an extrapolation: the same law and procedure, one scale shorter, judged on
a scale it has not seen. Intervals come from the same bootstrap, so the report can say whether the
observed value fell inside the predicted 95% interval. A fit that fails without the largest scale (too
few scales left) is reported by the backtest, never raised: the backtest is a check on the analysis,
and one that cannot be made is said so.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analysis import bootstrap
from analysis.curves import INDEPENDENT, JOINT, Curves, describe_failures, fit_curves
from analysis.fitting import FitData
from analysis.laws import Law


@dataclass(frozen=True)
class HeldOut:
    kind: str  # INDEPENDENT or JOINT
    group: str
    X: np.ndarray  # (d,) inputs of the held-out point
    observed: float
    predicted: float
    lower: float  # NaN when the fit had no degrees of freedom to bootstrap
    upper: float

    @property
    def error(self) -> float:
        return self.predicted - self.observed

    @property
    def relative_error(self) -> float:
        return self.error / self.observed


@dataclass(frozen=True)
class Backtest:
    held_out_level: str
    curves: Curves  # the fits without the held-out scale
    points: list[HeldOut]
    note: str = ""  # why there are no points, when there are none

    def inside(self, kind: str) -> tuple[int, int]:
        """(held-out points inside their interval, points with an interval) for one kind of fit."""
        judged = [p for p in self.points if p.kind == kind and np.isfinite(p.lower)]
        return sum(p.lower <= p.observed <= p.upper for p in judged), len(judged)

    def mean_abs_relative_error(self, kind: str) -> float:
        errors = [abs(p.relative_error) for p in self.points if p.kind == kind]
        return float(np.mean(errors)) if errors else float("nan")

    def kinds(self) -> list[str]:
        return [kind for kind in (INDEPENDENT, JOINT) if any(p.kind == kind for p in self.points)]


def run_backtest(
    law: Law, data: FitData, levels: np.ndarray, level_names: list[str], n_resamples: int,
    rng: np.random.Generator, confidence: float, step: Callable[[str], None] = lambda _: None,
) -> Backtest:
    """Hold out every point at the largest level (scale), fit the rest, predict the held-out points with
    `confidence` bootstrap intervals."""
    largest = int(levels.max())
    train_mask = levels < largest
    train = data.subset(train_mask)
    counts = bootstrap.resample_counts(train.groups, n_resamples, rng)
    curves = fit_curves(law, train, counts, f"backtest without {level_names[largest]}", step)
    points = []
    for row in np.flatnonzero(~train_mask):
        group = data.group_names[data.groups[row]]
        if group not in train.group_names:
            continue  # no smaller scale of this group to fit
        for curve in (curves.independent.get(group), curves.joint):
            if curve is None:
                continue
            x = data.X[row : row + 1]
            lower, upper = bootstrap.prediction_interval(curve.fit, curve.boot, group, x, confidence)
            points.append(HeldOut(
                kind=curve.kind, group=group, X=data.X[row], observed=float(data.y[row]),
                predicted=float(curve.fit.predict(x, group)[0]), lower=float(lower[0]), upper=float(upper[0]),
            ))
    note = "" if points else (f"fitted without {level_names[largest]}, "
                              + (describe_failures(curves) or "no group has a smaller scale"))
    return Backtest(held_out_level=level_names[largest], curves=curves, points=points, note=note)
