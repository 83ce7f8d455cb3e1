"""Scaling curves of one quantity: an independent fit per group and a joint fit across groups.

The joint fit shares the law's exponents across groups (methods) and gives each its own coefficients,
so that 7 methods x 4 scales constrain each other where one method's 4 points barely pin down a
3-parameter law. Both are bootstrapped on the same resamples, and compared by leave-one-out error
and AIC (`analysis.compare`).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analysis import bootstrap
from analysis.fitting import Fit, FitData, fit
from analysis.laws import Law
from sweeper.errors import UserError

INDEPENDENT = "independent"
JOINT = "joint"


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
class Curves:
    law: Law
    data: FitData
    independent: dict[str, Curve]  # by group name
    joint: Curve | None  # None with a single group

    def curve(self, kind: str, group: str) -> Curve:
        return self.independent[group] if kind == INDEPENDENT else self.joint

    def all(self) -> list[Curve]:
        return [*self.independent.values(), *([self.joint] if self.joint else [])]


def fit_curves(
    law: Law, data: FitData, counts: np.ndarray, what: str, step: Callable[[str], None] = lambda _: None
) -> Curves:
    """Fit every group alone and (with several groups) jointly; bootstrap each on `counts`
    (resamples x points, see `bootstrap.resample_counts`; zero rows for no bootstrap)."""
    independent = {}
    for index, group in enumerate(data.group_names):
        rows = np.flatnonzero(data.groups == index)
        step(f"{what}: {group}")
        independent[group] = _curve(INDEPENDENT, law, data.subset(data.groups == index), rows, counts,
                                    f"{what}, {group}")
    joint = None
    if len(data.group_names) > 1:
        step(f"{what}: joint fit")
        joint = _curve(JOINT, law, data, np.arange(len(data.y)), counts, f"{what}, joint fit")
    return Curves(law=law, data=data, independent=independent, joint=joint)


def _curve(kind: str, law: Law, data: FitData, rows: np.ndarray, counts: np.ndarray, what: str) -> Curve:
    result = fit(law, data, what)
    if not result.converged:
        raise UserError(
            f"{what}: the {law.name} fit did not converge (best of {result.starts} starts); "
            "try another --law, or check the data for outliers"
        )
    if not result.identifiable:
        distinct = len(np.unique(data.X, axis=0))
        raise UserError(
            f"{what}: the points cannot pin down the {law.n_params} parameters of the {law.name} law "
            f"({distinct} distinct x values); use a law with fewer parameters or add scales"
        )
    boot = None
    if result.dof > 0 and len(counts):
        boot = bootstrap.run(result, counts[:, rows])
    return Curve(kind=kind, fit=result, boot=boot, rows=rows)
