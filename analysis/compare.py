"""Joint vs. independent fits: leave-one-out prediction error and AIC.

Leave-one-out: refit without each point in turn (a batch of weighted refits started from the full fit)
and predict it; the error is the residual in the fit's own space (log residual ~ relative error for
loss laws). A point whose removal leaves the law unidentifiable cannot be predicted and is counted.

AIC needs a likelihood. A Huber loss with a threshold of 1e-3 on residuals of ~1e-2 is an absolute-
error fit, the maximum-likelihood fit under Laplace noise, so loss laws use the Laplace likelihood
(scale = mean |r|); least-squares links use the Gaussian one. Both count the noise scale as a parameter.
AICc adds the small-sample correction (Hurvich & Tsai 1989), which matters at 28 points.
"""

from dataclasses import dataclass

import numpy as np

from analysis.curves import INDEPENDENT, JOINT, Curves
from analysis.fitting import Fit, predict
from analysis.solver import identifiable, minimize


@dataclass(frozen=True)
class Comparison:
    kind: str
    params: int
    points: int
    loo_mean_abs_error: float  # NaN when no point could be left out
    loo_predicted: int  # points that could be left out and predicted
    aic: float
    aicc: float  # NaN when points <= params + 1


def loo_errors(fit: Fit) -> np.ndarray:
    """Leave-one-out residual of every point (n,), NaN where leaving it out leaves the law unidentifiable."""
    problem = fit.problem
    n = len(problem.y)
    weights = 1.0 - np.eye(n)
    start = np.repeat(fit.theta[None, :], n, axis=0)
    errors = np.full(n, np.nan)
    pinned = identifiable(problem, start, weights)
    if not pinned.any():
        return errors
    solution = minimize(problem, start[pinned], weights[pinned])
    for row, point in enumerate(np.flatnonzero(pinned)):
        if not solution.converged[row]:
            continue
        group = int(problem.groups[point])
        value = predict(problem, solution.theta[row : row + 1], group, problem.X[point : point + 1])[0, 0]
        observed = problem.y[point]
        errors[point] = np.log(value / observed) if problem.law.log_residuals else value - observed
    return errors


def information_criteria(residuals: np.ndarray, params: int, log_residuals: bool) -> tuple[float, float]:
    """(AIC, AICc) of residuals under Laplace (log-residual Huber fits) or Gaussian (least squares) noise."""
    n = len(residuals)
    k = params + 1  # the noise scale
    if log_residuals:
        scale = max(float(np.mean(np.abs(residuals))), 1e-300)
        log_likelihood = -n * (np.log(2.0 * scale) + 1.0)
    else:
        variance = max(float(np.mean(residuals**2)), 1e-300)
        log_likelihood = -0.5 * n * (np.log(2.0 * np.pi * variance) + 1.0)
    aic = 2.0 * k - 2.0 * log_likelihood
    aicc = aic + 2.0 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else float("nan")
    return aic, aicc


def _residuals(fit: Fit) -> np.ndarray:
    residual, _ = fit.problem.evaluate(fit.theta[None, :])
    return residual[0]


def compare(curves: Curves) -> list[Comparison]:
    """Independent fits (all groups together) vs. the joint fit, on the same points; the leave-one-out
    error is averaged over the points that both can predict. No comparison when either side is
    incomplete (a single group, or a failed fit): AIC on different sets of points means nothing."""
    if curves.joint is None or curves.failures:
        return []
    n = len(curves.data.y)
    fits = {INDEPENDENT: list(curves.independent.values()), JOINT: [curves.joint]}
    residuals, errors = {}, {}
    for kind, members in fits.items():
        residuals[kind], errors[kind] = np.empty(n), np.empty(n)
        for curve in members:
            residuals[kind][curve.rows] = _residuals(curve.fit)
            errors[kind][curve.rows] = loo_errors(curve.fit)
    common = np.isfinite(errors[INDEPENDENT]) & np.isfinite(errors[JOINT])
    results = []
    for kind, members in fits.items():
        params = sum(curve.fit.n_params for curve in members)
        aic, aicc = information_criteria(residuals[kind], params, curves.law.log_residuals)
        results.append(Comparison(
            kind=kind, params=params, points=n,
            loo_mean_abs_error=float(np.mean(np.abs(errors[kind][common]))) if common.any() else float("nan"),
            loo_predicted=int(common.sum()), aic=aic, aicc=aicc,
        ))
    return results


def preferred(comparisons: list[Comparison]) -> str:
    """The fit with the lower leave-one-out error (joint when they tie or only it could be scored)."""
    scored = {c.kind: c.loo_mean_abs_error for c in comparisons if np.isfinite(c.loo_mean_abs_error)}
    if not scored:
        return JOINT if comparisons else INDEPENDENT
    return min(scored, key=lambda kind: (scored[kind], kind != JOINT))
