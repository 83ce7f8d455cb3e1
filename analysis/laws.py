"""Scaling laws and loss -> score links: one shape each, all registered in `LAWS`.

Every law here is linear in its *coefficients* once its *exponents* are fixed:

    y = basis(exponents, X) @ coefficients

(a power law `E + A x^-alpha` has basis `[1, x^-alpha]`). That one shape gives the fitter everything it
needs: variable projection (solve the coefficients exactly on a grid of exponents for starting values),
joint fits (exponents shared across groups, coefficients per group, as in "shared exponents with
per-method coefficients") and analytic Jacobians. A law only says how to build its basis and the
basis's derivative with respect to the exponents.

Loss laws are fitted on log residuals with a Huber loss (delta 1e-3, summed), as Hoffmann et al. 2022
and Besiroglu et al. 2024 (Epoch's Chinchilla replication) do; their coefficients are positive and are
searched in log space. The links map a loss to a downstream score, which can be 0 (pass@1 of a small
model), so they are fitted on plain residuals with least squares, as Gadre et al. 2024 and the Llama 3
report fit theirs.
"""

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from sweeper.core.registry import Registry

# The Huber threshold on log residuals used by Hoffmann et al. 2022 and Epoch's refit.
LOG_HUBER_DELTA = 1e-3


class Law(ABC):
    """A law `y = basis(exponents, X) @ coefficients`; X has one column per name in `inputs`."""

    name: ClassVar[str]
    formula: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]  # what each x column means, e.g. ("N", "D")
    exponents: ClassVar[tuple[str, ...]]  # nonlinear parameters: shared in joint fits, searched on a grid
    coefficients: ClassVar[tuple[str, ...]]  # linear parameters: one set per group in joint fits
    log_residuals: ClassVar[bool] = True  # residual = log(pred) - log(y); else pred - y
    huber_delta: ClassVar[float | None] = LOG_HUBER_DELTA  # None: least squares
    positive_coefficients: ClassVar[bool] = True  # coefficients fitted as exp(u), so never negative
    positive_inputs: ClassVar[bool] = True  # x must be > 0 (powers of x)
    # y = exp(basis @ coefficients) instead of basis @ coefficients: a law linear in log space (the
    # solver then fits the linear predictor directly against log y).
    log_link: ClassVar[bool] = False
    # Physical bounds of each exponent (lower, upper), kept by the solver. A loss falls with scale at a
    # rate that LLM scaling work puts between ~0.03 and ~1: (0, 2] leaves room and forbids a rising
    # "power law"; 0 itself is excluded because E + A x^0 cannot tell E from A.
    exponent_bounds: ClassVar[tuple[tuple[float, float], ...] | None] = None  # None: unbounded

    @abstractmethod
    def basis(self, exponents: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Basis and its derivative for a batch of exponent vectors.

        exponents: (B, q); X: (n, len(inputs)). Returns phi (B, n, k) and dphi (B, n, k, q) with
        dphi[..., j] = d phi / d exponents[j].
        """

    @abstractmethod
    def exponent_grid(self, X: np.ndarray) -> np.ndarray:
        """Candidate exponent vectors (G, q) to start from; may depend on the data's range."""

    @property
    def n_params(self) -> int:
        return len(self.exponents) + len(self.coefficients)

    def predict(self, exponents: np.ndarray, coefficients: np.ndarray, X: np.ndarray,
                fitted: np.ndarray | None = None) -> np.ndarray:
        """y for exponents (B, q), coefficients (B, k) at X (n, d): shape (B, n). `fitted` (the inputs
        the coefficients were fitted on) lets a law guard its extrapolation (see `CurvedLogLog`)."""
        phi, _ = self.basis(np.atleast_2d(exponents), X)
        linear = np.einsum("bnk,bk->bn", phi, np.atleast_2d(coefficients))
        return np.exp(linear) if self.log_link else linear

    def bounds(self) -> np.ndarray:
        """(q, 2) lower and upper bound of every exponent."""
        if self.exponent_bounds is None:
            return np.tile([-np.inf, np.inf], (len(self.exponents), 1))
        return np.array(self.exponent_bounds, dtype=float).reshape(len(self.exponents), 2)


LAWS: Registry[Law] = Registry("law")


def _register(cls: type[Law]) -> type[Law]:
    LAWS.add(cls.name, cls())
    return cls

# Power-law exponents seen in LLM scaling work lie between ~0.03 and ~1; the grid spans wider.
_EXPONENT_GRID = np.geomspace(0.01, 2.0, 24)
# A falling loss: exponent in (0, 2] (0 excluded by a hair, see `Law.exponent_bounds`).
_FALLING = (1e-3, 2.0)


def _power(x: np.ndarray, exponent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x^-a for x (n,) and a (B,): values (B, n) and their derivative in a, -log(x) x^-a."""
    log_x = np.log(x)
    value = np.exp(-exponent[:, None] * log_x[None, :])
    return value, -log_x[None, :] * value


@_register
class SaturatingPowerLaw(Law):
    name = "power"
    formula = "y = E + A * x^-alpha"
    inputs = ("x",)
    exponents = ("alpha",)
    coefficients = ("E", "A")
    exponent_bounds = (_FALLING,)

    def basis(self, exponents, X):
        term, dterm = _power(X[:, 0], exponents[:, 0])
        ones = np.ones_like(term)
        phi = np.stack([ones, term], axis=-1)
        dphi = np.stack([np.zeros_like(term), dterm], axis=-1)[..., None]
        return phi, dphi

    def exponent_grid(self, X):
        return _EXPONENT_GRID[:, None]


@_register
class ChinchillaLaw(Law):
    """Hoffmann et al. 2022, approach 3: N parameters, D training tokens."""

    name = "chinchilla"
    formula = "y = E + A / N^alpha + B / D^beta"
    inputs = ("N", "D")
    exponents = ("alpha", "beta")
    coefficients = ("E", "A", "B")
    exponent_bounds = (_FALLING, _FALLING)

    def basis(self, exponents, X):
        n_term, dn = _power(X[:, 0], exponents[:, 0])
        d_term, dd = _power(X[:, 1], exponents[:, 1])
        zeros = np.zeros_like(n_term)
        phi = np.stack([np.ones_like(n_term), n_term, d_term], axis=-1)
        d_alpha = np.stack([zeros, dn, zeros], axis=-1)
        d_beta = np.stack([zeros, zeros, dd], axis=-1)
        return phi, np.stack([d_alpha, d_beta], axis=-1)

    def exponent_grid(self, X):
        grid = np.geomspace(0.05, 1.5, 14)
        alpha, beta = np.meshgrid(grid, grid, indexing="ij")
        return np.column_stack([alpha.ravel(), beta.ravel()])


@_register
class MultiplicativeFinetuningLaw(Law):
    """Zhang et al. 2024, "When Scaling Meets LLM Finetuning": X = model size (or pretraining data, or
    PET parameters), D = fine-tuning data size."""

    name = "multiplicative"
    formula = "y = A * X^-alpha * D^-beta + E"
    inputs = ("X", "D")
    exponents = ("alpha", "beta")
    coefficients = ("E", "A")
    exponent_bounds = (_FALLING, _FALLING)

    def basis(self, exponents, X):
        x_term, _ = _power(X[:, 0], exponents[:, 0])
        d_term, _ = _power(X[:, 1], exponents[:, 1])
        product = x_term * d_term
        d_alpha = -np.log(X[:, 0])[None, :] * product
        d_beta = -np.log(X[:, 1])[None, :] * product
        zeros = np.zeros_like(product)
        phi = np.stack([np.ones_like(product), product], axis=-1)
        dphi = np.stack([np.stack([zeros, d_alpha], axis=-1), np.stack([zeros, d_beta], axis=-1)], axis=-1)
        return phi, dphi

    def exponent_grid(self, X):
        grid = np.geomspace(0.01, 1.5, 14)
        alpha, beta = np.meshgrid(grid, grid, indexing="ij")
        return np.column_stack([alpha.ravel(), beta.ravel()])


@_register
class LogLogLine(Law):
    """The baseline: a straight line in log-log space (a pure power law with no floor)."""

    name = "loglog"
    formula = "log y = log A - alpha * log x"
    inputs = ("x",)
    exponents = ("alpha",)
    coefficients = ("A",)
    exponent_bounds = ((-2.0, 2.0),)  # a baseline for any trend, rising ones too

    def basis(self, exponents, X):
        term, dterm = _power(X[:, 0], exponents[:, 0])
        return term[..., None], dterm[..., None, None]

    def exponent_grid(self, X):
        # Also allow rising curves (negative alpha): the line is a baseline for any trend.
        return np.concatenate([-_EXPONENT_GRID[::-1], [0.0], _EXPONENT_GRID])[:, None]


@_register
class CurvedLogLog(Law):
    """A power law whose log-log slope changes with scale: log y = a + b log x + c (log x)^2.

    The third shape of the forecast ensemble (`analysis.forecast`): where the saturating power law can
    only flatten and the pure power law can only go straight, this one can also steepen (a fine-tuning
    curve that falls faster at larger scales). A parabola has no floor, so beyond the fitted inputs it is
    guarded: it may keep decelerating up to its vertex and then stays flat, but it never accelerates
    past the slope it had at the edge of the data (there it continues as its tangent line in log-log).
    The extrapolation is therefore monotone and no steeper than anything the data showed."""

    name = "curved"
    formula = "log y = a + b log x + c (log x)^2"
    inputs = ("x",)
    exponents = ()
    coefficients = ("a", "b", "c")
    positive_coefficients = False
    log_link = True

    def basis(self, exponents, X):
        u = np.log(X[:, 0])
        phi = np.broadcast_to(np.stack([np.ones_like(u), u, u * u], axis=-1), (len(exponents), len(u), 3))
        return phi, np.zeros((*phi.shape, 0))

    def exponent_grid(self, X):
        return np.zeros((1, 0))

    def predict(self, exponents, coefficients, X, fitted=None):
        coefficients = np.atleast_2d(coefficients)
        u = np.log(np.asarray(X, dtype=float)[:, 0])[None, :]
        a, b, c = (coefficients[:, j : j + 1] for j in range(3))
        linear = a + b * u + c * u * u
        if fitted is not None:
            fitted_u = np.log(np.asarray(fitted, dtype=float)[:, 0])
            high, low = fitted_u.max(), fitted_u.min()
            linear = np.where(u > high, _guarded(a, b, c, u, high), linear)
            # Below the data: the same rule in the mirrored variable v = -u (slope b -> -b).
            linear = np.where(u < low, _guarded(a, -b, c, -u, -low), linear)
        return np.exp(linear)


def _guarded(a: np.ndarray, b: np.ndarray, c: np.ndarray, u: np.ndarray, edge: float) -> np.ndarray:
    """a + b u + c u^2 continued beyond `edge` (u >= edge): up to its vertex and then flat where it
    decelerates (slope at the edge and curvature of opposite sign), along its tangent where it would
    accelerate."""
    slope = b + 2.0 * c * edge
    at_edge = a + b * edge + c * edge * edge
    tangent = at_edge + slope * (u - edge)
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(c != 0, -b / (2.0 * c), np.inf)
    stop = np.minimum(u, np.maximum(vertex, edge))
    decelerating = at_edge + slope * (stop - edge) + c * (stop - edge) ** 2
    return np.where(slope * c < 0, decelerating, tangent)


class Link(Law):
    """A loss -> score link: scores (and their fitted offsets) may be zero or negative, and are fitted by
    least squares on the scores themselves, not on logs."""

    log_residuals = False
    huber_delta = None
    positive_coefficients = False
    positive_inputs = False


@_register
class SigmoidLink(Link):
    """Loss -> score as in the Llama 3 report and OLMo's ladder: a logistic curve between lo and hi."""

    name = "sigmoid"
    formula = "s = lo + (hi - lo) / (1 + exp(k * (L - L0)))"
    inputs = ("L",)
    exponents = ("k", "L0")
    coefficients = ("lo", "hi")

    def basis(self, exponents, X):
        loss = X[:, 0][None, :]
        k, midpoint = exponents[:, 0:1], exponents[:, 1:2]
        rising = 1.0 / (1.0 + np.exp(np.clip(k * (loss - midpoint), -700, 700)))  # weight of hi
        slope = rising * (1.0 - rising)
        d_k = -slope * (loss - midpoint)
        d_midpoint = slope * k
        phi = np.stack([1.0 - rising, rising], axis=-1)
        dphi = np.stack([np.stack([-d_k, d_k], axis=-1), np.stack([-d_midpoint, d_midpoint], axis=-1)], axis=-1)
        return phi, dphi

    def exponent_grid(self, X):
        loss = X[:, 0]
        spread = max(float(np.ptp(loss)), 1e-12)
        k = np.geomspace(0.5, 50.0, 10) / spread
        midpoints = np.quantile(loss, np.linspace(0.0, 1.0, 9))
        k_grid, mid_grid = np.meshgrid(k, midpoints, indexing="ij")
        return np.column_stack([k_grid.ravel(), mid_grid.ravel()])


@_register
class ExponentialLink(Link):
    """Gadre et al. 2024 (eq. 4): average top-1 error from loss, err = eps - k exp(-gamma L)."""

    name = "exponential"
    formula = "err = eps - k * exp(-gamma * L)"
    inputs = ("L",)
    exponents = ("gamma",)
    coefficients = ("eps", "k")

    def basis(self, exponents, X):
        loss = X[:, 0][None, :]
        decay = np.exp(np.clip(-exponents[:, 0:1] * loss, -700, 700))
        phi = np.stack([np.ones_like(decay), -decay], axis=-1)
        dphi = np.stack([np.zeros_like(decay), loss * decay], axis=-1)[..., None]
        return phi, dphi

    def exponent_grid(self, X):
        spread = max(float(np.ptp(X[:, 0])), 1e-12)
        return (np.geomspace(0.01, 20.0, 30) / spread)[:, None]
