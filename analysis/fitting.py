"""Fit a law to points: starting values by variable projection, then multi-start refinement.

Variable projection (Golub & Pereyra 1973): for fixed exponents the law is linear in its coefficients,
so on a grid of exponents the coefficients are solved exactly (non-negative least squares, relative
residuals for loss laws); the best grid points start the batched Huber fit (`analysis.solver`). The
fit that is returned is the best of those starts, with its convergence certificate, how many starts
agree with it, and its degrees of freedom. Parameters are kept at full precision for predictions.
"""

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from analysis.laws import Law
from analysis.solver import Problem, identifiable, minimize, objective
from sweeper.core.errors import UserError

STARTS = 8  # grid points refined by the full fit
AGREE_RTOL = 1e-6  # starts whose loss is within this fraction of the best are said to agree
# A positive coefficient is searched as exp(u), so it can approach its bound 0 but never reach it: a
# floor E that the data push to 0 comes out as ~1e-12. When its term is below this fraction of the
# largest |y| at every point of its group (far below any measurable difference), it is at the bound.
AT_BOUND_RTOL = 1e-6


@dataclass(frozen=True)
class FitData:
    """Points to fit: X (n, d) in the law's input order, y (n,), and each point's group."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # (n,) int index into group_names
    group_names: tuple[str, ...]

    @classmethod
    def single(cls, X: np.ndarray, y: np.ndarray, name: str = "all") -> "FitData":
        X = np.asarray(X, dtype=float).reshape(len(y), -1)
        return cls(X=X, y=np.asarray(y, dtype=float), groups=np.zeros(len(y), dtype=int), group_names=(name,))

    def subset(self, mask: np.ndarray) -> "FitData":
        """The points where mask is True; groups left without points are dropped."""
        kept = sorted(set(self.groups[mask].tolist()))
        renumber = {old: new for new, old in enumerate(kept)}
        return FitData(
            X=self.X[mask], y=self.y[mask], groups=np.array([renumber[g] for g in self.groups[mask]], dtype=int),
            group_names=tuple(self.group_names[g] for g in kept),
        )

    def problem(self, law: Law, least_squares: bool = False) -> Problem:
        return Problem(law=law, X=self.X, y=self.y, groups=self.groups, n_groups=len(self.group_names),
                       least_squares=least_squares)


@dataclass(frozen=True)
class Fit:
    """A fitted law. `theta` holds the exponents then each group's coefficients (see `Problem`)."""

    law: Law
    problem: Problem
    group_names: tuple[str, ...]
    theta: np.ndarray  # (P,)
    loss: float  # summed Huber (or squared) loss at theta
    converged: bool
    identifiable: bool
    starts: int
    agreeing_starts: int

    @property
    def n_points(self) -> int:
        return len(self.problem.y)

    @property
    def n_params(self) -> int:
        return self.problem.n_params

    @property
    def dof(self) -> int:
        """Degrees of freedom left for the noise: points minus fitted parameters."""
        return self.n_points - self.n_params

    def params(self, group: str) -> dict[str, float]:
        """Natural parameters (exponents and this group's coefficients) by name."""
        return params_of(self.problem, self.theta[None, :], self.group_names.index(group))[0]

    def predict(self, X: np.ndarray, group: str) -> np.ndarray:
        return predict(self.problem, self.theta[None, :], self.group_names.index(group), X)[0]

    def negligible(self, group: str) -> dict[str, float]:
        """Per positive coefficient of `group`, the value below which its term is under AT_BOUND_RTOL of
        the largest |y| at every point of the group (at the fitted exponents): a coefficient (or a
        bootstrap value of it) below that sits at its bound 0. Empty for laws with free-sign coefficients."""
        if not self.law.positive_coefficients:
            return {}
        rows = self.problem.groups == self.group_names.index(group)
        phi, _ = self.law.basis(self.theta[None, : self.problem.n_exponents], self.problem.X[rows])
        largest = np.abs(phi[0]).max(axis=0)  # (k,) the largest basis value of each coefficient
        floor = AT_BOUND_RTOL * float(np.abs(self.problem.y[rows]).max())
        return {name: floor / max(float(largest[j]), 1e-300) for j, name in enumerate(self.law.coefficients)}


def degenerate(problem: Problem, theta: np.ndarray) -> bool:
    """Whether a fit reduced its law to a simpler one that the points cannot tell apart from it: an
    exponent on a positive lower bound (the stand-in for an excluded 0, where a power term is a
    constant beside E), or an exponent that moves no prediction by AT_BOUND_RTOL (its term's
    coefficient went to 0, so any value of it fits as well)."""
    law, q = problem.law, problem.n_exponents
    if q == 0:
        return False
    lower = law.bounds()[:, 0]
    if ((lower > 0) & (theta[:q] <= lower * (1 + 1e-9))).any():
        return True
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _, jac = problem.evaluate(theta[None, :], natural=True)
    scale = 1.0 if law.log_residuals else max(float(np.abs(problem.y).max()), 1e-300)
    effect = np.nan_to_num(np.abs(jac[0, :, :q]), nan=0.0).max(axis=0) / scale
    return bool((effect < AT_BOUND_RTOL).any())


def params_of(problem: Problem, thetas: np.ndarray, group: int) -> list[dict[str, float]]:
    """Natural parameters of one group for each theta row."""
    q = problem.n_exponents
    coefficients = problem.coefficients(thetas)[:, group, :]
    names = (*problem.law.exponents, *problem.law.coefficients)
    values = np.concatenate([thetas[:, :q], coefficients], axis=1)
    return [dict(zip(names, row.tolist(), strict=True)) for row in values]


def predict(problem: Problem, thetas: np.ndarray, group: int, X: np.ndarray) -> np.ndarray:
    """The law of `group` at X (m, d) for each theta row: (B, m)."""
    X = np.asarray(X, dtype=float).reshape(-1, len(problem.law.inputs))
    q = problem.n_exponents
    return problem.law.predict(thetas[:, :q], problem.coefficients(thetas)[:, group, :], X,
                               fitted=problem.X[problem.groups == group])


def minimum_points(law: Law, n_groups: int) -> int:
    """Parameters of the law fitted to `n_groups` groups that share its exponents: the fewest points it takes."""
    return len(law.exponents) + n_groups * len(law.coefficients)


def too_few_points(law: Law, data: FitData) -> str | None:
    """Why the law has more parameters than `data` has points, or None when it has enough."""
    minimum = minimum_points(law, len(data.group_names))
    if len(data.y) >= minimum:
        return None
    groups = f" with {len(data.group_names)} groups" if len(data.group_names) > 1 else ""
    return (f"{len(data.y)} points, but the {law.name} law ({law.formula}){groups} has {minimum} parameters and "
            f"needs at least {minimum} points")


def check_points(law: Law, data: FitData, what: str) -> None:
    """Refuse data the law cannot be fitted to, naming the minimum or the bad values."""
    reason = too_few_points(law, data)
    if reason:
        raise UserError(f"{what}: {reason}")
    if law.positive_inputs and (data.X <= 0).any():
        column, value = _first_bad(data.X <= 0, data.X)
        raise UserError(
            f"{what}: {law.name} needs x > 0 (it takes powers of x), but {law.inputs[column]} has {value:g}"
        )
    if law.log_residuals and (data.y <= 0).any():
        raise UserError(
            f"{what}: the {law.name} law is fitted on log(y), so y must be > 0, but y has "
            f"{float(data.y[data.y <= 0][0]):g}"
        )


def _first_bad(mask: np.ndarray, X: np.ndarray) -> tuple[int, float]:
    row, column = np.argwhere(mask)[0]
    return int(column), float(X[row, column])


def fit(law: Law, data: FitData, what: str = "fit", least_squares: bool = False) -> Fit:
    """Fit `law` to `data` (joint over its groups when there are several) with the law's own loss, or
    by least squares in its residual space. Raises UserError for data the law cannot take; a fit that
    does not converge is returned with converged=False."""
    check_points(law, data, what)
    problem = data.problem(law, least_squares)
    starts = starting_points(problem)
    ones = np.ones(len(data.y))
    solution = minimize(problem, starts, ones)
    best = int(np.argmin(solution.objective))
    best_loss = float(solution.objective[best])
    agreeing = int((solution.objective <= best_loss + AGREE_RTOL * abs(best_loss) + 1e-300).sum())
    theta = solution.theta[best]
    return Fit(
        law=law, problem=problem, group_names=data.group_names, theta=theta, loss=best_loss,
        converged=bool(solution.converged[best]),
        identifiable=bool(identifiable(problem, theta[None, :], ones[None, :])[0]) and not degenerate(problem, theta),
        starts=len(starts), agreeing_starts=agreeing,
    )


def starting_points(problem: Problem, count: int = STARTS) -> np.ndarray:
    """The `count` best grid points (G, P) after solving the coefficients exactly for each exponent
    vector of the law's grid (variable projection)."""
    law = problem.law
    grid = law.exponent_grid(problem.X)
    phi, _ = law.basis(grid, problem.X)  # (G, n, k)
    # Relative residuals for loss laws: the linear analogue of a log-space fit; a law linear in log
    # space is solved on log y exactly.
    scale = problem.y if law.log_residuals and not law.log_link else np.ones_like(problem.y)
    targets = np.log(problem.y) if law.log_link else problem.y / scale
    coefficients = np.zeros((len(grid), problem.n_groups, problem.n_coefficients))
    for group in range(problem.n_groups):
        rows = problem.groups == group
        target = targets[rows]
        for g in range(len(grid)):
            design = phi[g, rows] / scale[rows, None]
            if law.positive_coefficients:
                coefficients[g, group] = nnls(design, target)[0]
            else:
                coefficients[g, group] = np.linalg.lstsq(design, target, rcond=None)[0]
    if law.positive_coefficients:
        # log(0) is -inf: start a coefficient the projection zeroed at a negligible positive value.
        floor = 1e-9 * np.abs(problem.y).max() / np.maximum(np.abs(phi).max(axis=1), 1e-300)
        coefficients = np.maximum(coefficients, floor[:, None, :])
    thetas = problem.pack(grid, coefficients)
    losses = objective(problem, thetas, np.ones((1, len(problem.y))))
    order = np.argsort(losses, kind="stable")
    finite = order[np.isfinite(losses[order])]
    if finite.size == 0:
        finite = order
    return thetas[finite[:count]]
