"""Many fits of one law at once: a batched Levenberg-Marquardt on the summed Huber (or squared) loss.

Why not scipy.optimize: it solves one problem per call, and these problems are tiny (4 to 240 points,
2 to 20 parameters), so a call is mostly Python overhead (~1 ms for L-BFGS-B here, ~5 ms for
`least_squares`), and a bootstrap needs thousands of them (7 methods x 1000 resamples). Its L-BFGS-B
defaults also stop early on a summed Huber loss of ~1e-6 (gtol 1e-5 is larger than the whole gradient:
the trap Epoch found in the original Chinchilla fit). Here B problems (the same law and points, each
with its own starting point and point weights) advance together as numpy arrays.

Parameters: theta = [exponents (q) | coefficients of group 0 (k) | group 1 | ...]. Positive coefficients
are searched as u = log(c), as Hoffmann et al. and Epoch do, so a loss law never predicts <= 0.
The step is Levenberg-Marquardt with the iteratively-reweighted (IRLS) Gauss-Newton matrix of the
Huber loss, J^T diag(w psi(r)/r) J, and a step is kept only if it lowers the exact summed Huber loss.
Convergence is certified at the end by first-order optimality (see `relative_gradient`).
Exponents stay inside the law's physical bounds (`Law.bounds`): a trial step is projected onto them and
the optimality test ignores the gradient that pushes a bounded exponent outwards.

`y` may hold one data set (n,) or one per problem (B, n): simulated draws of the same design (the
calibration of `analysis.forecast`) are then B problems solved together.
"""

from dataclasses import dataclass, replace

import numpy as np

from analysis.laws import Law

MAX_ITERATIONS = 1000
# Stop a problem when an accepted step lowers the loss by less than this fraction.
RELATIVE_DECREASE_TOL = 1e-12
# A fit counts as converged when its net gradient is at most this fraction of the gross gradient
# (sum of |per-point contributions|): zero at an exact optimum, order 1 far from one...
GRADIENT_TOL = 1e-5
# ...or when it passes through every point it uses (as many distinct points as parameters): residuals
# at rounding level, relative to y for log residuals and to max |y| otherwise.
EXACT_TOL = 1e-9
MAX_DAMPING = 1e12
# Damping never falls below this: without a floor, a long run of accepted steps divides it down to 0
# (1e-3 / 3^700 underflows), and where the points cannot pin down every parameter the undamped
# Gauss-Newton matrix is singular. At 1e-12 x diag(H) the step is Gauss-Newton to twelve digits.
MIN_DAMPING = 1e-12
# Curvature credited to a point beyond the Huber threshold, as a fraction of the IRLS secant psi(r)/r.
# The exact Gauss-Newton curvature there is 0 (the loss is linear in r), which makes the matrix
# singular; the full secant overstates it and slows convergence to a crawl on near-L1 problems.
# Measured on bootstrap refits (joint 7 x 4 power law, Chinchilla's 240 points): 0.1 needs 2-3x fewer
# iterations than 1.0 and leaves no resample unconverged; 0.01 and 0 are slower again.
OUTLYING_CURVATURE = 0.1


@dataclass(frozen=True)
class Problem:
    """A law fitted to n points, split into groups that share exponents and own their coefficients."""

    law: Law
    X: np.ndarray  # (n, len(law.inputs))
    y: np.ndarray  # (n,), or (B, n): a data set per problem of the batch
    groups: np.ndarray  # (n,) int in [0, n_groups)
    n_groups: int = 1
    # Least squares instead of the law's Huber loss: the estimator whose covariance the linearised
    # predictive intervals of `analysis.forecast` assume.
    least_squares: bool = False

    @property
    def delta(self) -> float | None:
        """The Huber threshold of the loss (None: least squares)."""
        return None if self.least_squares else self.law.huber_delta

    @property
    def n_exponents(self) -> int:
        return len(self.law.exponents)

    @property
    def n_coefficients(self) -> int:
        return len(self.law.coefficients)

    @property
    def n_params(self) -> int:
        return self.n_exponents + self.n_groups * self.n_coefficients

    @property
    def n_points(self) -> int:
        return self.X.shape[0]

    def rows(self, index: np.ndarray) -> "Problem":
        """The problems `index` of a batch (the same problem when y is shared)."""
        return replace(self, y=self.y[index]) if self.y.ndim == 2 else self

    def project(self, theta: np.ndarray) -> np.ndarray:
        """theta with its exponents clipped into the law's bounds."""
        bounds = self.law.bounds()
        if not np.isfinite(bounds).any():
            return theta
        projected = theta.copy()
        q = self.n_exponents
        projected[:, :q] = np.clip(theta[:, :q], bounds[:, 0], bounds[:, 1])
        return projected

    def coefficients(self, theta: np.ndarray) -> np.ndarray:
        """Natural coefficients (B, n_groups, k) from theta (B, P)."""
        raw = theta[:, self.n_exponents:].reshape(len(theta), self.n_groups, self.n_coefficients)
        return np.exp(raw) if self.law.positive_coefficients else raw

    def pack(self, exponents: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
        """theta (B, P) from exponents (B, q) and natural coefficients (B, n_groups, k)."""
        raw = np.log(coefficients) if self.law.positive_coefficients else coefficients
        return np.concatenate([exponents, raw.reshape(len(raw), -1)], axis=1)

    def residual(self, theta: np.ndarray) -> np.ndarray:
        """Residuals (B, n) alone: what `evaluate` gives without building the Jacobian (the loss of a
        trial step needs no derivative, and it is half of every iteration's evaluations)."""
        phi, _ = self.law.basis(theta[:, : self.n_exponents], self.X)
        value = (phi * self.coefficients(theta)[:, self.groups, :]).sum(axis=2)
        return self._residual(value)

    def _residual(self, value: np.ndarray) -> np.ndarray:
        if self.law.log_link:  # log y is the linear predictor itself
            return value - np.log(self.y)
        if not self.law.log_residuals:
            return value - self.y
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log(value) - np.log(self.y)

    def evaluate(self, theta: np.ndarray, natural: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Residuals (B, n) and their Jacobian (B, n, P) in theta (or, with `natural`, in the natural
        coefficients c instead of u = log c: used to judge identifiability, which must not depend on
        a coefficient sitting at its bound 0)."""
        q = self.n_exponents
        phi, dphi = self.law.basis(theta[:, :q], self.X)
        coef = self.coefficients(theta)[:, self.groups, :]  # (B, n, k): each point's own group
        value = (phi * coef).sum(axis=2)
        d_exponents = (dphi * coef[..., None]).sum(axis=2)
        d_coef = phi if natural or not self.law.positive_coefficients else phi * coef
        n = self.n_points
        jac = np.zeros((len(theta), n, self.n_params))
        jac[:, :, :q] = d_exponents
        if self.n_groups == 1:
            jac[:, :, q:] = d_coef
        else:  # a point moves only its own group's coefficients
            k = self.n_coefficients
            columns = q + self.groups[:, None] * k + np.arange(k)  # (n, k)
            jac[:, np.arange(n)[:, None], columns] = d_coef
        residual = self._residual(value)
        if self.law.log_residuals and not self.law.log_link:
            return residual, jac / value[..., None]
        return residual, jac


def huber(residual: np.ndarray, delta: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-point loss and its derivative psi. delta None: least squares (r^2 / 2, psi = r)."""
    if delta is None:
        return 0.5 * residual**2, residual
    size = np.abs(residual)
    loss = np.where(size <= delta, 0.5 * residual**2, delta * (size - 0.5 * delta))
    return loss, np.clip(residual, -delta, delta)


def objective(problem: Problem, theta: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Summed (weighted) loss per problem (B,); inf where the law cannot be evaluated."""
    residual = problem.residual(theta)
    loss, _ = huber(residual, problem.delta)
    weights = np.broadcast_to(weights, residual.shape)
    total = (weights * np.where(weights > 0, loss, 0.0)).sum(axis=1)
    return np.where(np.isfinite(total), total, np.inf)


def exact(problem: Problem, theta: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Whether each fit passes through all its weighted points to rounding level (B,)."""
    residual = problem.residual(theta)
    scale = 1.0 if problem.law.log_residuals else max(float(np.abs(problem.y).max()), 1e-300)
    used = np.where(np.broadcast_to(weights, residual.shape) > 0, np.abs(residual), 0.0)
    return used.max(axis=1) <= EXACT_TOL * scale


def relative_gradient(problem: Problem, theta: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """max_j |dF/dtheta_j| / max_j sum_i w_i |psi_i J_ij| per problem: a scale-free optimality measure."""
    residual, jac = problem.evaluate(theta)
    _, psi = huber(residual, problem.delta)
    contributions = (weights * psi)[..., None] * jac
    gradient = contributions.sum(axis=1)
    # At a bound, the part of the gradient that would push the exponent outwards is no violation.
    bounds, q = problem.law.bounds(), problem.n_exponents
    exponents = theta[:, :q]
    outward = ((exponents <= bounds[:, 0]) & (gradient[:, :q] > 0)) | ((exponents >= bounds[:, 1]) & (gradient[:, :q] < 0))
    gradient[:, :q] = np.where(outward, 0.0, gradient[:, :q])
    net = np.abs(gradient).max(axis=1)
    gross = np.abs(contributions).sum(axis=1).max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(gross > 0, net / gross, 0.0)
    return np.where(np.isfinite(ratio), ratio, np.inf)


@dataclass(frozen=True)
class Solution:
    theta: np.ndarray  # (B, P)
    objective: np.ndarray  # (B,)
    converged: np.ndarray  # (B,) bool: first-order optimal (relative gradient <= GRADIENT_TOL)
    iterations: np.ndarray  # (B,)


def minimize(problem: Problem, theta0: np.ndarray, weights: np.ndarray,
             max_iterations: int | None = None) -> Solution:
    """Minimise the summed loss of B weighted copies of `problem` from theta0 (B, P); weights (B, n);
    at most `max_iterations` steps (default MAX_ITERATIONS)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # wild trial steps are rejected
        theta = problem.project(np.array(theta0, dtype=float, copy=True))
        return _levenberg_marquardt(problem, theta, weights, max_iterations or MAX_ITERATIONS)


def _levenberg_marquardt(problem: Problem, theta: np.ndarray, weights: np.ndarray,
                         max_iterations: int) -> Solution:
    weights = np.broadcast_to(np.asarray(weights, dtype=float), (len(theta), problem.n_points))
    delta = problem.delta
    value = objective(problem, theta, weights)
    damping = np.full(len(theta), 1e-3)
    iterations = np.zeros(len(theta), dtype=int)
    running = np.isfinite(value)
    for _ in range(max_iterations):
        idx = np.flatnonzero(running)
        if idx.size == 0:
            break
        t, w, active = theta[idx], weights[idx], problem.rows(idx)
        residual, jac = active.evaluate(t)
        _, psi = huber(residual, delta)
        irls = np.where(np.abs(residual) > 0, psi / residual, 1.0)  # 1 in the quadratic zone
        irls = np.where(np.abs(psi) < np.abs(residual), OUTLYING_CURVATURE * irls, irls)
        gradient = (jac * (w * psi)[..., None]).sum(axis=1)
        hessian = np.matmul((jac * (w * irls)[..., None]).transpose(0, 2, 1), jac)
        diagonal = np.diagonal(hessian, axis1=1, axis2=2)
        # Marquardt's scaling by diag(H), floored so that a column with no weight stays solvable.
        scale = np.maximum(diagonal, 1e-12 * diagonal.max(axis=1, keepdims=True) + 1e-300)
        system = hessian + (damping[idx, None] * scale)[:, :, None] * np.eye(problem.n_params)
        solvable = np.isfinite(system).all(axis=(1, 2)) & np.isfinite(gradient).all(axis=1)
        system[~solvable] = np.eye(problem.n_params)  # cannot move: stopped below, reported unconverged
        step = _solve(system, -gradient)
        step[~solvable] = 0.0
        trial = problem.project(t + step)
        trial_value = objective(active, trial, w)
        better = trial_value < value[idx]
        small = better & (value[idx] - trial_value <= RELATIVE_DECREASE_TOL * value[idx])
        accepted = idx[better]
        theta[accepted] = trial[better]
        value[accepted] = trial_value[better]
        damping[idx] = np.where(better, np.maximum(damping[idx] / 3.0, MIN_DAMPING), damping[idx] * 4.0)
        iterations[idx] += 1
        running[idx[small | (damping[idx] > MAX_DAMPING) | ~solvable]] = False
        running[idx[value[idx] == 0.0]] = False  # an exact fit (as many points as parameters)
    converged = np.isfinite(value) & (
        (relative_gradient(problem, theta, weights) <= GRADIENT_TOL) | exact(problem, theta, weights)
    )
    return Solution(theta=theta, objective=value, converged=converged, iterations=iterations)


def _solve(system: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Batched solve of system (B, P, P) x = rhs (B, P). One exactly singular system (possible only in
    rounding, as the damping keeps them positive definite) would fail the whole batch: then every
    system gets the least-norm solution instead."""
    try:
        return np.linalg.solve(system, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return (np.linalg.pinv(system) @ rhs[..., None])[..., 0]


def identifiable(problem: Problem, theta: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Whether the points with positive weight pin down every parameter (B,): the Jacobian in natural
    parameters has full column rank. False for, e.g., a 3-parameter law on 2 distinct x values."""
    # A degenerate fit (an exponent run off to a huge value) can overflow here: it then counts as
    # unidentifiable, which it is.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _, jac = problem.evaluate(theta, natural=True)
        used = np.where(np.asarray(weights)[..., None] > 0, jac, 0.0)
        used = np.where(np.isfinite(used), used, 0.0)
        # Normalise columns so that the rank test does not depend on the units of each parameter.
        norms = np.linalg.norm(used, axis=1, keepdims=True)
        scaled = np.where(np.isfinite(norms) & (norms > 0), used / np.where(norms > 0, norms, 1.0), 0.0)
    singular = np.linalg.svd(scaled, compute_uv=False)
    return (singular > 1e-8 * np.sqrt(problem.n_params)).sum(axis=1) == problem.n_params
