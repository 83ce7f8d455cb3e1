"""Forecasts you can bet on: model-averaged predictive intervals, calibrated on the data's own backtests.

What a forecast of y beyond the largest scale must account for, and how each part is estimated
(all in log y for loss laws, so errors are relative):

1. **The noise of a new run** (another seed of the same cell lands elsewhere): sigma^2, the pooled
   within-cell variance where the data has replicates, else the fit's residual variance (which also
   absorbs its lack of fit).
2. **Parameter uncertainty**: the linearised (delta-method) covariance s^2 (J^T J)^-1 of the fitted
   parameters, propagated to the prediction, with Student-t quantiles on the residual degrees of
   freedom (small-sample correction). Why not the bootstrap that `analysis.bootstrap` runs for the
   parameter tables: with 4 scales per method a resample draws only 2-3 distinct scales a third of
   the time and cannot pin a 3-parameter law down, so its percentile intervals rest on the lucky
   resamples and come out too narrow (67-69% coverage at nominal 95% on simulated 4-scale designs);
   a residual bootstrap keeps every scale but costs a thousand refits per fit, which the calibration
   check below (this whole procedure repeated on simulated draws) cannot afford. The linearised
   interval is exact for coefficients that enter linearly, and the check measures what it misses.
3. **Model-form uncertainty**: the candidate shapes (saturating power law, pure power law, and a
   log-log parabola that can bend either way, guarded beyond the data; `analysis.laws`), each fitted
   per group and, where the law has exponents, jointly with exponents shared across groups, are
   averaged with weights from **rolling-origin backtests on the data itself** (fit below scale s,
   predict s and every larger scale, for the largest few s): inverse mean squared backtest error
   (Bates & Granger 1969). The forecast distribution is the weighted mixture of the candidates' own
   predictive distributions, so its interval spans the plausible shapes, not one shape's scatter.
4. **Calibration to the extrapolation distance**: the backtest errors of the averaged forecast in
   excess of what the fold's own predictive variance explains, per unit of squared log-distance
   beyond the fitted data, give a drift variance tau^2; a forecast at log-distance d gets tau^2 d^2
   more. A forecast k times beyond the data is then at least as wide as backtests made at shorter
   distances say it should be (the plain error/distance ratio would explode where a fold extrapolates
   a hair and its error is all noise; the excess over the fold's own variance does not).

Everything is batched over data sets y (B, n) of one design: the real data is B = 1, and
`simulate_coverage` runs the very same procedure on hundreds of simulated draws to state how its
intervals perform on data of this design.
"""

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats

from analysis.fitting import FitData, check_points, degenerate, minimum_points, predict, starting_points
from analysis.laws import LAWS, Law
from analysis.solver import Problem, identifiable, minimize
from sweeper.core.errors import UserError

CANDIDATES = ("power", "loglog", "curved")  # the default ensemble for one x column
MAX_ORIGINS = 3  # rolling origins: each of the largest (up to) three scales held out in turn...
FEW_SCALES = 6  # ...on a ladder of at most this many scales; on more, origins at these shares of each
ORIGIN_SPANS = (0.15, 0.3, 0.45)  # group's log-x span below its largest x (on 3 decades: 2.8x, 7.9x, 22x)
MIN_WEIGHT = 0.02  # a candidate below this share of the weight is dropped (and the rest renormalised)
STACKING_ITERATIONS = 100  # EM steps for the stacking weights (a fixed count: batched over draws)
STACKING_PRIOR = 0.1  # pseudo-points per candidate in the stacking weights (a Dirichlet(1.1) prior)
SIMULATED_DRAWS = 200  # draws behind the calibration line of every report
# A simulated draw starts at the real data's optimum and moves by its noise: a few Gauss-Newton steps
# reach its own. The cap bounds the rare slow draw (the full-search check of
# benchmarks/forecast_coverage.py --check agrees with the capped draws).
POLISH_ITERATIONS = 50
FULL = -1  # the fold that uses every point


@dataclass(frozen=True)
class Variant:
    """One way of fitting: a law, per group (independent) or with exponents shared across groups."""

    law: Law
    joint: bool

    @property
    def name(self) -> str:
        return f"{self.law.name} {'joint' if self.joint else 'independent'}"


@dataclass(frozen=True)
class Target:
    group: int  # index into the design's group names
    label: str
    X: np.ndarray  # (d,)


@dataclass(frozen=True)
class Design:
    """The points' inputs and grouping: what stays fixed across simulated draws."""

    X: np.ndarray  # (n, d)
    groups: np.ndarray  # (n,)
    group_names: tuple[str, ...]
    levels: np.ndarray  # (n,) scale index of each point (0 = smallest)

    @property
    def cells(self) -> np.ndarray:
        """(n,) index of each point's cell (same group and inputs): replicates share one."""
        keys = np.column_stack([self.groups, self.X])
        return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)

    def origins(self) -> list[int]:
        """Held-out scales of the rolling-origin backtest, largest first; each keeps >= 2 scales below.
        A ladder of a few scales holds out each of its largest in turn. Many closely spaced scales (a
        table of hundreds of runs) would then only test extrapolations of a hair, so there each origin
        sits where a fixed share of every group's own log-x span lies above it (ORIGIN_SPANS)."""
        top = int(self.levels.max())
        if top + 1 <= FEW_SCALES:
            return [o for o in range(top, top - MAX_ORIGINS, -1) if o >= 2]
        position = np.zeros(len(self.levels))  # 0 at each group's largest x, -1 at its smallest
        for g in np.unique(self.groups):
            mine = self.groups == g
            u = _coordinate(self.X[mine, 0])
            position[mine] = (u - u.max()) / (float(np.ptp(u)) or 1.0)
        origins = []
        for share in ORIGIN_SPANS:
            above = self.levels[position >= -share]
            origin = int(above.min()) if above.size else -1
            if origin >= 2 and origin not in origins:
                origins.append(origin)
        return origins


def scale_index(X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(n,) rank of each point's first input among its own group's distinct values (0 = smallest): the
    scales a group's backtests hold out are its own, whatever grid the other groups are on."""
    levels = np.zeros(len(groups), dtype=int)
    for g in np.unique(groups):
        mine = groups == g
        levels[mine] = np.unique(X[mine, 0], return_inverse=True)[1].reshape(-1)
    return levels


def _coordinate(values: np.ndarray) -> np.ndarray:
    """log x where x is positive (a scale), else x itself (a link's loss, say)."""
    return np.log(values) if (values > 0).all() else np.asarray(values, dtype=float)


@dataclass(frozen=True)
class Unit:
    """One solved problem of a variant in a fold: a group alone, or all groups of a joint fit."""

    problem: Problem
    rows: np.ndarray  # the design rows it uses
    groups: dict[int, int]  # design group -> group index inside the problem
    thetas: np.ndarray  # (B, P)
    rss: np.ndarray  # (B,) residual sum of squares in the forecast space
    dof: int  # points minus parameters
    inverse: np.ndarray  # (B, P, P) pinv(J^T J): the covariance per unit noise variance


@dataclass(frozen=True)
class Spread:
    """Predictive distributions of one variant at some points: centre, scale (incl. noise), dof."""

    centre: np.ndarray  # (B, m)
    scale: np.ndarray  # (B, m)
    dof: float


@dataclass(frozen=True)
class Backtest:
    """Every held-out point of every fold, for every variant (NaN where a variant could not fit)."""

    errors: np.ndarray  # (V, B, m) forecast-space error, predicted - observed
    scales: np.ndarray  # (V, B, m) the variant's predictive scale there
    dofs: np.ndarray  # (V, m)
    distance: np.ndarray  # (m,) distance beyond the fold's fitted inputs of the group (see `_distance`)


@dataclass(frozen=True)
class Forecast:
    """Forecasts of every target for B data sets, with how they were made."""

    variants: list[Variant]
    targets: list[Target]
    estimate: np.ndarray  # (B, T) in y units
    lower: np.ndarray  # (B, T)
    upper: np.ndarray  # (B, T)
    weights: np.ndarray  # (B, V)
    tau: np.ndarray  # (B,) drift per unit log-distance (forecast space)
    noise: np.ndarray  # (B,) sigma of a new run (forecast space)
    replicates: np.ndarray | None  # (B,) sigma of the replicates about their cell means; None without them
    replicate_dof: int
    backtest: Backtest
    calibrated: bool  # False: no backtest could be made, the interval has no drift term
    starts: dict = field(repr=False)  # (variant, fold, groups) -> theta: where simulated draws start
    fits: dict = field(repr=False)  # variant name -> its units on every point
    noises: list = field(repr=False)  # per variant, its `Noise`
    design: Design = field(repr=False)
    y: np.ndarray = field(repr=False)  # (B, n) the data sets forecast from


def candidates(law_name: str | None, n_inputs: int, n_groups: int) -> list[Variant]:
    """The variants to average: the default ensemble for one x, else the one law asked for (or the
    two-input default), each independent and (with several groups and exponents) joint."""
    names = CANDIDATES if law_name is None and n_inputs == 1 else (law_name or "chinchilla",)
    variants = []
    for name in names:
        law = LAWS.get(name)
        variants.append(Variant(law, joint=False))
        if n_groups > 1 and law.exponents:
            variants.append(Variant(law, joint=True))
    return variants


def forecast(design: Design, y: np.ndarray, targets: list[Target], variants: list[Variant], level: float,
             starts: dict | None = None) -> Forecast:
    """Forecast every target from y (B, n). Without `starts` (the real data, B = 1) every fit is a
    multi-start fit; with them (simulated draws of the same design) each starts where the real data's did."""
    y = np.atleast_2d(np.asarray(y, dtype=float))
    log_space = all(v.law.log_residuals for v in variants)
    recorded: dict = {} if starts is None else starts
    fits = {(v.name, fold): _fit_variant(design, y, v, fold, recorded, starts is None)
            for v in variants for fold in [FULL, *design.origins()]}
    usable = [v for v in variants if fits[(v.name, FULL)] is not None]
    if not usable:
        raise UserError("no candidate law could be fitted to any group ("
                        + ", ".join(v.name for v in variants) + "): add scales or use a law with fewer parameters")
    noises = [_noise(design, y, fits, usable, log_space, v) for v in usable]
    backtest = _backtest(design, y, usable, fits, noises, log_space)
    weights = _weights(backtest, len(y))
    tau, calibrated = _drift(backtest, weights)
    best = int(np.argmax(weights[0]))  # the noise of a new run, as the leading candidate measures it
    new_run = np.sqrt(noises[best].run if noises[best].run is not None else noises[best].fallback)
    replicates, replicate_dof = _replicate_noise(design, y, log_space)
    result = Forecast(variants=usable, targets=targets, estimate=np.empty((len(y), 0)), lower=np.empty((len(y), 0)),
                      upper=np.empty((len(y), 0)), weights=weights, tau=tau, noise=new_run, replicates=replicates,
                      replicate_dof=replicate_dof, backtest=backtest, calibrated=calibrated, starts=recorded,
                      fits={v.name: fits[(v.name, FULL)] for v in usable}, noises=noises, design=design, y=y)
    estimate, lower, upper = interval(result, targets, level)
    return replace(result, estimate=estimate, lower=lower, upper=upper)


def interval(result: Forecast, points: list[Target], level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and central `level` interval (B, m) of the forecast distribution at any points, in y units:
    the weighted mixture of the candidates' Student-t predictive distributions, each widened by the
    drift at the point's distance beyond the data."""
    centres, scales, dofs = _distributions(result, points)
    tail = (1.0 - level) / 2.0
    low, mid, high = (_mixture_quantile(result.weights, centres, scales, dofs, q) for q in (tail, 0.5, 1.0 - tail))
    back = np.exp if all(v.law.log_residuals for v in result.variants) else (lambda v: v)
    return back(mid), back(low), back(high)


def _distributions(result: Forecast, points: list[Target]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every candidate's predictive distribution at the points: centres and scales (V, B, m) in forecast
    space, the drift at each point's distance included, and degrees of freedom (V,)."""
    design = result.design
    distance = np.array([_distance(design, design.groups == t.group, t.X) for t in points])
    spreads = [_spread(result.fits[v.name], points, noise) for v, noise in zip(result.variants, result.noises, strict=True)]
    scales = np.sqrt(np.stack([s.scale for s in spreads]) ** 2
                     + (result.tau[None, :, None] * distance[None, None, :]) ** 2)
    return np.stack([s.centre for s in spreads]), scales, np.array([s.dof for s in spreads])


def _transform(values: np.ndarray, log_space: bool) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(values) if log_space else values


def _fit_variant(design: Design, y: np.ndarray, variant: Variant, fold: int, starts: dict,
                 search: bool) -> list[Unit] | None:
    """The variant's units on the rows below `fold` (all rows for FULL); None where it cannot be fitted
    at all. A joint fit that fails (too few points, not converged, not identifiable) sits the fold out;
    an independent one leaves out the groups it cannot fit, whose targets it then does not predict."""
    train = _training_rows(design, fold)
    batches = fold_batches(design, variant, fold)
    pieces = []  # (key, rows, local groups, data) of every unit that can be fitted
    for batch in batches:
        rows = np.flatnonzero(train & np.isin(design.groups, batch))
        local = {g: i for i, g in enumerate(batch)}
        data = FitData(X=design.X[rows], y=y[0, rows], groups=np.array([local[g] for g in design.groups[rows]]),
                       group_names=tuple(design.group_names[g] for g in batch))
        if len(rows) < minimum_points(variant.law, len(batch)):
            continue
        pieces.append(((variant.name, fold, tuple(batch)), rows, local, data))
    if search:
        _search_starts(variant, pieces, starts)
    pieces = [piece for piece in pieces if piece[0] in starts]
    if not pieces or (variant.joint and len(pieces) < len(batches)):
        return None
    return _refit(variant.law, y, pieces, starts, polish=not search)


def _training_rows(design: Design, fold: int) -> np.ndarray:
    return design.levels < fold if fold != FULL else np.ones(len(design.levels), dtype=bool)


def fold_batches(design: Design, variant: Variant, fold: int) -> list[list[int]]:
    """The groups fitted together in one unit of the variant on the fold's rows: every group in one
    batch (joint), or one batch per group (independent). A group needs two distinct inputs below the
    fold to have a curve at all (a single scale pins nothing)."""
    train = _training_rows(design, fold)
    present = [g for g in sorted(set(design.groups[train].tolist()))
               if len(np.unique(design.X[train & (design.groups == g), 0])) >= 2]
    return [present] if variant.joint else [[g] for g in present]


def _search_starts(variant: Variant, pieces: list, starts: dict) -> None:
    """Multi-start least-squares fits of every piece, solved as one batch (each start sees only its own
    piece's points through its weights); the best converged, identifiable fit of each is recorded."""
    law = variant.law
    if not pieces:
        return
    problems, thetas = [], []
    for _, _, _, data in pieces:
        check_points(law, data, variant.name)
        problem = data.problem(law, least_squares=True)
        problems.append(problem)
        thetas.append(starting_points(problem))
    if variant.joint:  # one piece: its own problem
        solution = minimize(problems[0], thetas[0], np.ones(len(pieces[0][1])))
        choices = [(problems[0], solution.theta, solution.objective, solution.converged)]
    else:  # every group's starts side by side, on the union of the pieces' points
        rows = np.concatenate([piece[1] for piece in pieces])
        union = Problem(law=law, X=np.concatenate([p.X for p in problems]), y=np.concatenate([p.y for p in problems]),
                        groups=np.zeros(len(rows), dtype=int), least_squares=True)
        owner = np.repeat(np.arange(len(pieces)), [len(p.y) for p in problems])
        start_owner = np.repeat(np.arange(len(pieces)), [len(t) for t in thetas])
        weights = (owner[None, :] == start_owner[:, None]).astype(float)
        solution = minimize(union, np.concatenate(thetas), weights)
        choices = [(problems[i], solution.theta[start_owner == i], solution.objective[start_owner == i],
                    solution.converged[start_owner == i]) for i in range(len(pieces))]
    for (key, rows, _, _), (problem, theta, objective, converged) in zip(pieces, choices, strict=True):
        best = int(np.argmin(np.where(np.isfinite(objective), objective, np.inf)))
        ones = np.ones((1, len(rows)))
        if (converged[best] and identifiable(problem, theta[best][None, :], ones)[0]
                and not degenerate(problem, theta[best])):
            starts[key] = theta[best]


def _refit(law: Law, y: np.ndarray, pieces: list, starts: dict, polish: bool) -> list[Unit]:
    """Units for B data sets: each piece refitted from its recorded start (`polish`, the simulated
    draws), or taken as recorded (the real data, just fitted)."""
    B = len(y)
    problems = [Problem(law=law, X=data.X, y=y[:, rows], groups=data.groups, n_groups=len(local),
                        least_squares=True) for _, rows, local, data in pieces]
    thetas = [np.repeat(starts[key][None, :], B, axis=0) for key, _, _, _ in pieces]
    if polish:
        if len(pieces) == 1:
            thetas = [minimize(problems[0], thetas[0], np.ones(problems[0].n_points), POLISH_ITERATIONS).theta]
        else:  # every piece of every draw in one batch, each on its own points
            sizes = [p.n_points for p in problems]
            union_y = np.zeros((B * len(pieces), sum(sizes)))
            weights = np.zeros_like(union_y)
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            for i, problem in enumerate(problems):
                union_y[i * B:(i + 1) * B] = 1.0  # other pieces' points: weight 0, any positive value
                union_y[i * B:(i + 1) * B, offsets[i]:offsets[i + 1]] = problem.y
                weights[i * B:(i + 1) * B, offsets[i]:offsets[i + 1]] = 1.0
            union = Problem(law=law, X=np.concatenate([p.X for p in problems]), y=union_y,
                            groups=np.zeros(sum(sizes), dtype=int), least_squares=True)
            solved = minimize(union, np.concatenate(thetas), weights, POLISH_ITERATIONS).theta
            thetas = [solved[i * B:(i + 1) * B] for i in range(len(pieces))]
    return [_unit(problem, rows, local, theta)
            for problem, (_, rows, local, _), theta in zip(problems, pieces, thetas, strict=True)]


def _unit(problem: Problem, rows: np.ndarray, local: dict[int, int], thetas: np.ndarray) -> Unit:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        residual, jac = problem.evaluate(thetas)
    residual = np.nan_to_num(residual, nan=0.0, posinf=0.0, neginf=0.0)
    jac = np.nan_to_num(jac, nan=0.0, posinf=0.0, neginf=0.0)
    inverse = np.linalg.pinv(np.matmul(jac.transpose(0, 2, 1), jac), hermitian=True)
    return Unit(problem=problem, rows=rows, groups=local, thetas=thetas, rss=(residual**2).sum(axis=1),
                dof=len(rows) - problem.n_params, inverse=inverse)


def residual_variance(units: list[Unit]) -> tuple[np.ndarray, int]:
    """(B,) residual variance pooled over the units, and its degrees of freedom (0: none)."""
    dof = sum(max(u.dof, 0) for u in units)
    rss = sum(u.rss for u in units)
    return (rss / dof if dof > 0 else np.full_like(rss, np.nan)), dof


def _replicate_noise(design: Design, y: np.ndarray, log_space: bool) -> tuple[np.ndarray | None, int]:
    """Pooled within-cell variance of repeated runs (B,) and its dof; None without replicates."""
    cells = design.cells
    n_cells = int(cells.max()) + 1
    dof = len(cells) - n_cells
    if dof <= 0:
        return None, 0
    values = _transform(y, log_space)
    finite = np.isfinite(values).all(axis=0)  # points every data set has (a simulated draw may lack some)
    cells, values = cells[finite], values[:, finite]
    one_hot = np.eye(n_cells)[cells]  # (n, C)
    counts = one_hot.sum(axis=0)
    dof = len(cells) - int((counts > 0).sum())
    if dof <= 0:
        return None, 0
    means = (values @ one_hot) / np.maximum(counts, 1)
    variance = ((values - means[:, cells]) ** 2).sum(axis=1) / dof
    return np.sqrt(variance), dof


def _distance(design: Design, group_rows: np.ndarray, X: np.ndarray, below: int | None = None) -> float:
    """How far X lies outside the box of the group's fitted inputs (0 inside it), the largest over the
    inputs: in log units where an input is positive (a multiple of the largest or smallest x), else in
    units of that input's fitted span."""
    rows = group_rows if below is None else group_rows & (design.levels < below)
    fitted = design.X[rows]
    target = np.asarray(X, dtype=float).reshape(-1)
    farthest = 0.0
    for j in range(fitted.shape[1]):
        values, at = fitted[:, j], float(target[j])
        if values.min() > 0 and at > 0:
            values, at = np.log(values), float(np.log(at))
        else:
            span = float(np.ptp(values)) or 1.0
            values, at = values / span, at / span
        farthest = max(farthest, at - float(values.max()), float(values.min()) - at)
    return farthest


@dataclass(frozen=True)
class Noise:
    """Variances (B,) in forecast space: of a new run (replicates; None without them), and the residual
    variance a fit with no degrees of freedom of its own borrows (the same variant's, or the most
    determined variant's, on every point)."""

    run: np.ndarray | None
    run_dof: int
    fallback: np.ndarray
    fallback_dof: int


def _noise(design: Design, y: np.ndarray, fits: dict, variants: list[Variant], log_space: bool,
           variant: Variant) -> Noise:
    run, run_dof = _replicate_noise(design, y, log_space)
    own, own_dof = residual_variance(fits[(variant.name, FULL)])
    if run is not None:
        return Noise(run=run**2, run_dof=run_dof, fallback=run**2, fallback_dof=run_dof)
    if own_dof == 0:
        own, own_dof = max((residual_variance(fits[(v.name, FULL)]) for v in variants), key=lambda pair: pair[1])
    return Noise(run=None, run_dof=0, fallback=own, fallback_dof=own_dof)


def _spread(units: list[Unit], points: list[Target], noise: Noise) -> Spread:
    """Predictive distributions of one variant at some points (B, m): delta-method parameter variance
    on the variant's residual variance, plus the variance of a new run."""
    B = len(units[0].thetas)
    centre = np.full((B, len(points)), np.nan)
    scale = np.full((B, len(points)), np.nan)
    residual_var, dof = residual_variance(units)
    if dof == 0:  # an exact fit: its parameters move with the noise measured elsewhere
        residual_var, dof = noise.fallback, noise.fallback_dof
    new_run_var = residual_var if noise.run is None else noise.run
    if noise.run is not None:
        dof = min(dof, noise.run_dof)
    log_space = units[0].problem.law.log_residuals
    for group in sorted({t.group for t in points}):
        unit = next((u for u in units if group in u.groups), None)
        if unit is None:
            continue
        columns = [j for j, t in enumerate(points) if t.group == group]
        value, gradient = _prediction_gradient(unit, group, np.stack([points[j].X for j in columns]), log_space)
        param_var = np.einsum("bmp,bpq,bmq->bm", gradient, unit.inverse, gradient) * residual_var[:, None]
        centre[:, columns] = value
        scale[:, columns] = np.sqrt(np.maximum(param_var, 0.0) + np.broadcast_to(new_run_var, (B,))[:, None])
    return Spread(centre=centre, scale=scale, dof=float(max(dof, 1)))


def _prediction_gradient(unit: Unit, group: int, X: np.ndarray, log_space: bool) -> tuple[np.ndarray, np.ndarray]:
    """The unit's prediction for a design group at points X (m, d) in forecast space (B, m) and its
    gradient in theta (B, m, P), by central differences (the guarded extrapolation of a curved law has
    no closed-form gradient)."""
    thetas, local = unit.thetas, unit.groups[group]
    B, P = thetas.shape
    step = 1e-6 * np.maximum(np.abs(thetas), 1.0)  # (B, P)
    shifted = np.concatenate([thetas[:, None, :] + np.eye(P) * step[:, None, :],
                              thetas[:, None, :] - np.eye(P) * step[:, None, :]], axis=1).reshape(-1, P)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        value = _transform(predict(unit.problem, thetas, local, X), log_space)  # (B, m)
        moved = _transform(predict(unit.problem, shifted, local, X), log_space).reshape(B, 2, P, len(X))
    gradient = ((moved[:, 0] - moved[:, 1]) / (2 * step[:, :, None])).transpose(0, 2, 1)  # (B, m, P)
    return value, np.nan_to_num(gradient, nan=0.0, posinf=0.0, neginf=0.0)


def _backtest(design: Design, y: np.ndarray, variants: list[Variant], fits: dict, noises: list[Noise],
              log_space: bool) -> Backtest:
    """Each fold's fit predicts every held-out point of the groups it fitted."""
    observed = _transform(y, log_space)
    columns: list[tuple[int, int, float]] = []  # (fold, row, distance)
    for fold in design.origins():
        for row in np.flatnonzero(design.levels >= fold):
            group_rows = design.groups == design.groups[row]
            if (group_rows & (design.levels < fold)).any():
                columns.append((fold, row, _distance(design, group_rows, design.X[row], below=fold)))
    B, V, m = len(y), len(variants), len(columns)
    errors, scales = np.full((V, B, m), np.nan), np.full((V, B, m), np.nan)
    dofs = np.ones((V, m))
    for fold in design.origins():
        index = [i for i, (f, _, _) in enumerate(columns) if f == fold]
        points = [Target(int(design.groups[columns[i][1]]), "", design.X[columns[i][1]]) for i in index]
        for v, variant in enumerate(variants):
            units = fits[(variant.name, fold)]
            if units is None or not index:
                continue
            spread = _spread(units, points, noises[v])
            rows = [columns[i][1] for i in index]
            errors[v][:, index] = spread.centre - observed[:, rows]
            scales[v][:, index] = spread.scale
            dofs[v, index] = spread.dof
    return Backtest(errors=errors, scales=scales, dofs=dofs,
                    distance=np.array([c[2] for c in columns]))


def _weights(backtest: Backtest, B: int) -> np.ndarray:
    """(B, V) stacking weights (Yao et al. 2018): the mixture weights that maximise the summed log
    predictive density of the backtest points, found by EM, with a pseudo-count of STACKING_PRIOR per
    variant so that a handful of points cannot zero a candidate out. On the points every variant
    predicted where there are such points (else each variant's own, missing ones at density 0);
    equal weights when no variant has a backtest."""
    V = backtest.errors.shape[0]
    if backtest.errors.shape[2] == 0:
        return np.full((B, V), 1.0 / V)
    available = np.isfinite(backtest.errors).all(axis=1)  # (V, m)
    tested = available.any(axis=1)  # (V,) variants with at least one backtest point
    if not tested.any():
        return np.full((B, V), 1.0 / V)
    common = available[tested].all(axis=0)
    points = common if common.any() else available.any(axis=0)
    errors, scales = backtest.errors[tested][:, :, points], backtest.scales[tested][:, :, points]
    dofs = backtest.dofs[tested][:, points][:, None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        density = stats.t.pdf(errors / scales, dofs) / scales  # (V', B, m)
    density = np.where(np.isfinite(density), density, 0.0)
    k = int(tested.sum())
    stacked = np.full((B, k), 1.0 / k)
    for _ in range(STACKING_ITERATIONS):
        joint = stacked.T[:, :, None] * density  # (V', B, m)
        total = joint.sum(axis=0)
        responsibility = np.where(total > 0, joint / np.where(total > 0, total, 1.0), 1.0 / k)
        stacked = (responsibility.sum(axis=2).T + STACKING_PRIOR) / (points.sum() + k * STACKING_PRIOR)
    # A candidate the data cannot backtest (too few scales below every origin) is not evidence against
    # it: it keeps an equal share, and the backtested ones split the rest by their stacking weights.
    weights = np.full((B, V), 1.0 / V)
    weights[:, tested] = stacked * k / V
    weights = np.where(weights < MIN_WEIGHT, 0.0, weights)
    return weights / weights.sum(axis=1, keepdims=True)


def _drift(backtest: Backtest, weights: np.ndarray) -> tuple[np.ndarray, bool]:
    """tau (B,): the averaged backtest forecast's squared error in excess of its own predictive variance,
    per unit squared log-distance, pooled over every held-out point."""
    B = weights.shape[0]
    if backtest.errors.shape[2] == 0:
        return np.zeros(B), False
    available = np.isfinite(backtest.errors)  # (V, B, m)
    w = np.where(available, weights.T[:, :, None], 0.0)
    total = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = w / total
        centre = np.nansum(w * np.nan_to_num(backtest.errors), axis=0)  # the mixture's error (B, m)
        # Squared errors against squared scales, not the Student-t variance scale^2 nu / (nu - 2): that is
        # infinite at nu <= 2 and large at small nu, so it would cancel the drift exactly where the fits
        # have fewest degrees of freedom (measured: coverage of the broken-power-law truth at 4.5x fell
        # from 92.4% to 89.6% with it, benchmarks/forecast_coverage.py, scenario d).
        variance = np.nansum(w * (np.nan_to_num(backtest.scales) ** 2
                                  + (np.nan_to_num(backtest.errors) - centre) ** 2), axis=0)
    judged = total > 0
    # Pooled before the positive part: the excess of a single point, max(0, e^2 - s^2), is positive
    # even for a perfect forecast (E = 0.32 s^2 for a normal error), the pooled one is not.
    excess = np.maximum(np.where(judged, centre**2 - variance, 0.0).sum(axis=1), 0.0)
    reach = np.where(judged, backtest.distance[None, :] ** 2, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(reach > 0, np.sqrt(excess / reach), 0.0)
    return tau, bool(judged.any())


def _mixture_quantile(weights: np.ndarray, centres: np.ndarray, scales: np.ndarray, dofs: np.ndarray,
                      q: float) -> np.ndarray:
    """The q-quantile (B, T) of the mixture of Student-t distributions (V, B, T), by bisection."""
    valid = np.isfinite(centres) & np.isfinite(scales) & (weights.T[:, :, None] > 0)
    w = np.where(valid, weights.T[:, :, None], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = w / w.sum(axis=0)
    c, s = np.where(valid, centres, 0.0), np.where(valid, np.maximum(scales, 1e-300), 1.0)
    spread = stats.t.ppf(1 - 1e-6, dofs)[:, None, None] * s
    low = np.where(valid, c - spread, np.inf).min(axis=0)
    high = np.where(valid, c + spread, -np.inf).max(axis=0)
    low, high = np.where(np.isfinite(low), low, 0.0), np.where(np.isfinite(high), high, 0.0)  # no candidate: NaN below
    for _ in range(60):
        middle = (low + high) / 2
        cdf = (w * stats.t.cdf((middle[None] - c) / s, dofs[:, None, None])).sum(axis=0)
        below = cdf < q
        low, high = np.where(below, middle, low), np.where(below, high, middle)
    result = (low + high) / 2
    return np.where(valid.any(axis=0), result, np.nan)


@dataclass(frozen=True)
class Coverage:
    """How the procedure's intervals did on draws simulated from the data's own fit and noise."""

    draws: int
    level: float
    covered: float  # share of (draw, target) truths inside their interval
    median_width: float  # median interval width relative to the truth
    seconds: float

    def describe(self) -> str:
        return (f"on {self.draws} draws simulated from this fit (same design, noise as estimated), the "
                f"{self.level:.0%} intervals held the truth {self.covered:.0%} of the time "
                f"(median width {self.median_width:.1%} of the value)")


def simulate_coverage(design: Design, reference: Forecast, level: float, draws: int = SIMULATED_DRAWS,
                      seed: int = 0) -> Coverage:
    """Rerun the forecast on `draws` data sets simulated from the reference forecast's own candidates:
    each draw's truth is one candidate, picked by its weight, with the data's noise."""
    import time

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    log_space = all(v.law.log_residuals for v in reference.variants)
    truth_points = [Target(int(g), "", design.X[i]) for i, g in enumerate(design.groups)]
    weights = reference.weights[0]
    picks = rng.choice(len(reference.variants), size=draws, p=weights)
    noise = float(reference.noise[0])
    fitted, at_targets = [], []
    for variant in reference.variants:
        units = reference.fits[variant.name]
        fitted.append(_centres(units, truth_points))
        at_targets.append(_centres(units, reference.targets))
    # A picked candidate that did not fit a group (too few scales of its own) leaves that group's points
    # to the best candidate that did, so that every draw has every point.
    means, truths = _fill(np.stack(fitted), picks, weights), _fill(np.stack(at_targets), picks, weights)
    simulated = means + noise * rng.standard_normal(means.shape)
    values = np.exp(simulated) if log_space else simulated
    result = forecast(design, values, reference.targets, reference.variants, level, starts=reference.starts)
    truth = np.exp(truths) if log_space else truths
    judged = np.isfinite(truth) & np.isfinite(result.lower)
    inside = (result.lower <= truth) & (truth <= result.upper)
    width = (result.upper - result.lower) / np.abs(truth)
    return Coverage(draws=draws, level=level, covered=float(inside[judged].mean()) if judged.any() else float("nan"),
                    median_width=float(np.median(width[judged])) if judged.any() else float("nan"),
                    seconds=time.perf_counter() - started)


def _fill(values: np.ndarray, picks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """values (V, m) of each candidate -> (draws, m): the picked candidate's, or where it has none the
    highest-weight candidate's that has one."""
    chosen = values[picks]
    order = np.argsort(-weights, kind="stable")
    fallback = np.full(values.shape[1], np.nan)
    for v in order[::-1]:  # the highest weight written last wins
        fallback = np.where(np.isfinite(values[v]), values[v], fallback)
    return np.where(np.isfinite(chosen), chosen, fallback[None, :])


def _centres(units: list[Unit], points: list[Target]) -> np.ndarray:
    """The first data set's fitted curve at the points (m,), in forecast space."""
    log_space = units[0].problem.law.log_residuals
    values = np.full(len(points), np.nan)
    for j, target in enumerate(points):
        unit = next((u for u in units if target.group in u.groups), None)
        if unit is not None:
            values[j] = _prediction_gradient(unit, target.group, target.X[None, :], log_space)[0][0, 0]
    return values


@dataclass(frozen=True)
class HeldOut:
    """A point of the largest scale, forecast by the whole procedure run on the smaller scales."""

    group: int
    X: np.ndarray  # (d,)
    observed: float
    estimate: float
    lower: float
    upper: float

    @property
    def inside(self) -> bool:
        slack = 1e-9 * abs(self.observed)  # a noise-free fit's zero-width interval holds its point
        return bool(self.lower - slack <= self.observed <= self.upper + slack)

    @property
    def relative_error(self) -> float:
        return self.estimate / self.observed - 1.0


def summarize(points: list[HeldOut]) -> tuple[int, int, float | None]:
    """(points inside their interval, points, mean |relative error| or None without points)."""
    mean = float(np.mean([abs(p.relative_error) for p in points])) if points else None
    return sum(p.inside for p in points), len(points), mean


def backtest_largest(design: Design, y: np.ndarray, variants: list[Variant], level: float) -> tuple[list[HeldOut], str]:
    """Hold out each group's largest scale, forecast it from the group's smaller ones with every step of
    `forecast` (its own ensemble weights and drift, from the smaller scales' backtests); ([], why) when
    that cannot be done."""
    y = np.asarray(y, dtype=float).reshape(-1)
    top = np.zeros(len(design.levels), dtype=int)
    for g in np.unique(design.groups):
        top[design.groups == g] = design.levels[design.groups == g].max()
    keep = design.levels < top
    smaller = Design(X=design.X[keep], groups=design.groups[keep], group_names=design.group_names,
                     levels=design.levels[keep])
    held = [i for i in np.flatnonzero(~keep) if len(set(smaller.levels[smaller.groups == design.groups[i]])) >= 2]
    if not held:
        return [], "no group has two smaller scales"
    targets = [Target(int(design.groups[i]), "", design.X[i]) for i in held]
    try:
        result = forecast(smaller, y[keep], targets, variants, level)
    except UserError as err:
        return [], str(err)
    points = [HeldOut(group=t.group, X=t.X, observed=float(y[i]), estimate=float(result.estimate[0, j]),
                      lower=float(result.lower[0, j]), upper=float(result.upper[0, j]))
              for j, (i, t) in enumerate(zip(held, targets, strict=True)) if np.isfinite(result.estimate[0, j])]
    return points, "" if points else "no candidate fitted to the smaller scales could forecast the held-out points"


def sample(result: Forecast, count: int, rng: np.random.Generator, index: int = 0) -> np.ndarray:
    """(count, T) draws of every target from the forecast distribution of data set `index`, in y units:
    a candidate by its weight, then its Student-t widened by the drift, as `interval` builds the interval."""
    targets = result.targets
    centres, scales, dofs = _distributions(result, targets)
    centres, scales = centres[:, index], scales[:, index]  # (V, T)
    draws = np.full((count, len(targets)), np.nan)
    for j in range(len(targets)):  # per target among the candidates that predict it, as `interval` mixes them
        valid = np.isfinite(centres[:, j]) & np.isfinite(scales[:, j]) & (result.weights[index] > 0)
        if not valid.any():
            continue
        weights = np.where(valid, result.weights[index], 0.0)
        picks = rng.choice(len(weights), size=count, p=weights / weights.sum())
        draws[:, j] = centres[picks, j] + scales[picks, j] * stats.t.rvs(dofs[picks], random_state=rng)
    return np.exp(draws) if all(v.law.log_residuals for v in result.variants) else draws


def sample_together(result: Forecast, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, T) draws of the targets as one outcome each (B = 1), in y units: where `sample` draws every
    target on its own, here each draw takes one candidate for all of them and, per group, one deviation of
    its curve (the parameter and drift part of the spread, fully correlated along the group's targets),
    plus independent run noise per target. Runs of one set (a method at two new scales) then come from
    one plausible curve, not from unrelated ones."""
    targets = result.targets
    centres, scales, dofs = _distributions(result, targets)
    centres, scales = centres[:, 0], scales[:, 0]  # (V, T)
    noise = float(result.noise[0])
    curve = np.sqrt(np.maximum(scales**2 - noise**2, 0.0))
    valid = np.isfinite(centres).all(axis=1) & np.isfinite(scales).all(axis=1) & (result.weights[0] > 0)
    draws = np.full((count, len(targets)), np.nan)
    if not valid.any():
        return draws
    weights = np.where(valid, result.weights[0], 0.0)
    picks = rng.choice(len(weights), size=count, p=weights / weights.sum())
    groups = sorted({t.group for t in targets})
    shared = {g: stats.t.rvs(dofs[picks], random_state=rng) for g in groups}  # (count,) per group
    run = rng.standard_normal((count, len(targets)))
    for j, target in enumerate(targets):
        draws[:, j] = centres[picks, j] + curve[picks, j] * shared[target.group] + noise * run[:, j]
    return np.exp(draws) if all(v.law.log_residuals for v in result.variants) else draws
