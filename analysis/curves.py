"""Scaling curves of one quantity: an independent fit per group and a joint fit across groups.

The joint fit shares the law's exponents across groups (methods) and gives each its own coefficients,
so that 7 methods x 4 scales constrain each other where one method's 4 points barely pin down a
3-parameter law. Both are bootstrapped on the same resamples, and compared by leave-one-out error
and AIC (`analysis.compare`).

A fit that the points cannot pin down, or that does not converge, is kept as a `Failure` instead of
stopping everything: with several groups, one method's non-monotone losses must not take the other
methods' curves and the joint fit with it. The caller decides what a failure means (`sweeper fit` on
a single group refuses it; a multi-group analysis reports it and goes on).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analysis import bootstrap, workers
from analysis.fitting import Fit, FitData, fit, minimum_points, too_few_points
from analysis.laws import Law

INDEPENDENT = "independent"
JOINT = "joint"
UNDERDETERMINED = "underdetermined"
NOT_CONVERGED = "did not converge"


@dataclass(frozen=True)
class Curve:
    """One fit (of one group, or joint over all) with its bootstrap. `boot` is None when the fit
    leaves no degrees of freedom (its interval would be fake) or no resampling was asked for."""

    kind: str  # INDEPENDENT or JOINT
    fit: Fit
    boot: bootstrap.Bootstrap | None
    rows: np.ndarray  # indices of its points in the full data

    @property
    def underdetermined(self) -> bool:
        return self.fit.dof <= 0


@dataclass(frozen=True)
class Failure:
    """A fit that gave no usable parameters: `status` is UNDERDETERMINED (too few points, or points
    that cannot pin down every parameter) or NOT_CONVERGED; `reason` is the one-line explanation."""

    kind: str  # INDEPENDENT or JOINT
    group: str  # the group of an independent fit; "joint" for the joint fit
    status: str
    reason: str
    n_points: int
    n_params: int


@dataclass(frozen=True)
class Curves:
    law: Law
    data: FitData
    independent: dict[str, Curve]  # by group name: the groups whose fit succeeded
    joint: Curve | None  # None with a single group, or when the joint fit failed
    failures: tuple[Failure, ...] = ()

    def curve(self, kind: str, group: str) -> Curve | None:
        """The fit that predicts `group` (None when that fit failed)."""
        return self.independent.get(group) if kind == INDEPENDENT else self.joint

    def failure(self, kind: str, group: str) -> Failure | None:
        name = group if kind == INDEPENDENT else JOINT
        return next((f for f in self.failures if f.kind == kind and f.group == name), None)

    def all(self) -> list[Curve]:
        return [*self.independent.values(), *([self.joint] if self.joint else [])]


def fit_curves(
    law: Law, data: FitData, counts: np.ndarray, what: str, step: Callable[[str], None] = lambda _: None
) -> Curves:
    """Fit every group alone and (with several groups) jointly; bootstrap each on `counts`
    (resamples x points, see `bootstrap.resample_counts`; zero rows for no bootstrap). A fit that
    fails is recorded in `failures`; bad values (x <= 0 for a power law) still raise UserError. The fits
    are independent of each other: inside `analysis.workers.pool()` they run on its workers."""
    jobs = []
    if len(data.group_names) > 1:  # first: the largest job starts first
        jobs.append((JOINT, JOINT, law, data, np.arange(len(data.y)), counts, f"{what}, joint fit"))
    for index, group in enumerate(data.group_names):
        rows = np.flatnonzero(data.groups == index)
        jobs.append((INDEPENDENT, group, law, data.subset(data.groups == index), rows, counts, f"{what}, {group}"))
    step(f"{what}: {len(data.group_names)} independent fits" + (" and the joint fit" if len(jobs) > len(data.group_names) else ""))
    independent, joint, failures = {}, None, []
    for (kind, group, *_), result in zip(jobs, workers.starmap(_curve, jobs), strict=True):
        if isinstance(result, Failure):
            failures.append(result)
        elif kind == JOINT:
            joint = result
        else:
            independent[group] = result
    failures.sort(key=lambda failure: failure.kind == JOINT)  # independent ones first, in group order
    return Curves(law=law, data=data, independent=independent, joint=joint, failures=tuple(failures))


def describe_failures(curves: Curves) -> str:
    """The failed fits in one line, groups that failed alike named together."""
    alike: dict[tuple, list[str]] = {}
    for f in curves.failures:
        alike.setdefault((f.kind, f.status, f.n_points, f.n_params), []).append(f.group)
    return "; ".join(
        (f"the independent fit(s) of {', '.join(groups)}" if kind == INDEPENDENT else "the joint fit")
        + f": {status} ({n_points} points for {n_params} parameters)"
        for (kind, status, n_points, n_params), groups in alike.items()
    )


def _curve(kind: str, group: str, law: Law, data: FitData, rows: np.ndarray, counts: np.ndarray,
           what: str) -> Curve | Failure:
    n_params = minimum_points(law, len(data.group_names))

    def failure(status: str, reason: str) -> Failure:
        return Failure(kind=kind, group=group, status=status, reason=f"{what}: {reason}", n_points=len(data.y),
                       n_params=n_params)

    reason = too_few_points(law, data)
    if reason:
        return failure(UNDERDETERMINED, reason)
    result = fit(law, data, what)
    if not result.converged:
        return failure(NOT_CONVERGED, f"the {law.name} fit did not converge (best of {result.starts} starts); "
                                      "try another --law, or check the data for outliers")
    if not result.identifiable:
        distinct = len(np.unique(data.X, axis=0))
        return failure(UNDERDETERMINED, f"the points cannot pin down the {n_params} parameters of the {law.name} "
                                        f"law ({distinct} distinct x values); use a law with fewer parameters or "
                                        "add scales")
    boot = None
    if result.dof > 0 and len(counts):
        boot = bootstrap.run(result, counts[:, rows])
    return Curve(kind=kind, fit=result, boot=boot, rows=rows)
