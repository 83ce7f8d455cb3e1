"""Lack-of-fit and identifiability warnings about a forecast, worded so that a reader cannot miss them.

Each check looks at the candidate fits that carry real weight in the forecast (`SIGNIFICANT_WEIGHT`),
on every point:
- a parameter at its bound: an exponent on a physical bound of `Law.bounds` (0 excluded, 2), or the
  floor E of a saturating law pushed to 0 (the curve has no floor in the data's range) or to the
  smallest y (the data show no fall left to extrapolate);
- an exponent the data cannot pin down: its linearised standard error is more than half its value;
- systematic curvature in the residuals: pooled over groups, the residuals lie on a parabola in
  log x (a t-test at CURVATURE_P_VALUE), the sign of a law whose shape is wrong;
- lack of fit against replicates: the residual variance exceeds the replicates' own (an F-test);
- the forecast procedure's own leave-largest-out backtest missing the truth;
- no backtest at all, so nothing calibrated the interval's allowance for the law's shape.
"""

import numpy as np
from scipy import stats

from analysis.forecast import Forecast, HeldOut, Unit, residual_variance
from analysis.formatting import number

SIGNIFICANT_WEIGHT = 0.1  # candidates below this share of the forecast are not worth a warning
UNPINNED_RATIO = 0.5  # an exponent whose standard error exceeds this fraction of its value is not pinned
CURVATURE_P_VALUE = 0.01
LACK_OF_FIT_P_VALUE = 0.01


def forecast_warnings(result: Forecast, group_names: tuple[str, ...], y: np.ndarray, what: str,
                      held_out: list[HeldOut], held_out_level: str) -> list[str]:
    notes = []
    for v, variant in enumerate(result.variants):
        weight = float(result.weights[0, v])
        if weight < SIGNIFICANT_WEIGHT:
            continue
        units = result.fits[variant.name]
        label = f"{what}, {variant.name} fit ({weight:.0%} of the forecast)"
        exponents, floors_zero, floors_top = _bounds(units, group_names, y)
        if exponents:
            notes.append(f"AT BOUND: {label}: " + "; ".join(exponents) + ": the data push the law's shape to an "
                         "edge of what it can describe")
        if floors_zero:
            notes.append(f"AT BOUND: {label}: the floor E went to 0 for {', '.join(floors_zero)}: the data show no "
                         "saturation, so the law extrapolates as a pure power law there")
        if floors_top:
            notes.append(f"AT BOUND: {label}: the floor E reached the smallest y for {', '.join(floors_top)}: the "
                         "law sees no fall left beyond the data")
        unpinned = _unpinned(units, group_names)
        if unpinned:
            notes.append(f"UNPINNED: {label}: " + "; ".join(unpinned) + " (1 sd): the data cannot pin these "
                         "exponents down; more scales, or replicates, would")
        curvature = _curvature(units)
        if curvature is not None:
            notes.append(f"CURVED RESIDUALS: {label}: the residuals bend systematically with log x (p = "
                         f"{curvature:.2g}): the law's shape does not follow the data, so its extrapolation is "
                         "suspect; the forecast's other candidate shapes and its backtest allowance carry that risk")
        lack = _lack_of_fit(units, result)
        if lack is not None:
            notes.append(f"LACK OF FIT: {label}: the residuals scatter more than the replicates do (F-test p = "
                         f"{lack:.2g}): the law misses real structure, not only run noise")
    if not result.calibrated:
        notes.append(f"UNCALIBRATED: {what}: no rolling-origin backtest could be made (it needs two scales below "
                     "each held-out one), so the forecast intervals carry no allowance for the law's shape being "
                     "wrong beyond the data: read them as a lower bound on the uncertainty")
    missed = [p for p in held_out if not p.inside]
    if missed:
        shown = "; ".join(f"{group_names[p.group]}: observed {number(p.observed)}, forecast {number(p.estimate)} "
                          f"[{number(p.lower)}, {number(p.upper)}]" for p in missed)
        notes.append(f"BACKTEST MISS: {what}: forecast from the smaller scales, {len(missed)} of {len(held_out)} "
                     f"points at {held_out_level} fell outside their interval ({shown})")
    return notes


def _bounds(units: list[Unit], group_names: tuple[str, ...], y: np.ndarray) -> tuple[list[str], list[str], list[str]]:
    """(exponents on a bound, groups whose floor E went to 0, groups whose floor reached their smallest y)."""
    exponents, floors_zero, floors_top = [], [], []
    for unit in units:
        law, theta = unit.problem.law, unit.thetas[0]
        bounds = law.bounds()
        for j, name in enumerate(law.exponents):
            low, high = bounds[j]
            if np.isfinite(low) and theta[j] <= low + 1e-6 * max(1.0, abs(low)):
                exponents.append(f"{_groups(unit, group_names)}: {name} on its lower bound "
                                 + ("0 (excluded)" if low > 0 else number(low)))
            elif np.isfinite(high) and theta[j] >= high - 1e-6 * max(1.0, abs(high)):
                exponents.append(f"{_groups(unit, group_names)}: {name} on its upper bound {number(high)}")
        if "E" not in law.coefficients:
            continue
        coefficients = unit.problem.coefficients(unit.thetas[:1])[0]  # (groups, k)
        column = law.coefficients.index("E")
        for group, local in sorted(unit.groups.items()):
            floor = float(coefficients[local, column])
            smallest = float(y[unit.rows][unit.problem.groups == local].min())
            if floor < 1e-6 * smallest:
                floors_zero.append(group_names[group])
            elif floor >= smallest * (1 - 1e-6):
                floors_top.append(group_names[group])
    return exponents, floors_zero, floors_top


def _unpinned(units: list[Unit], group_names: tuple[str, ...]) -> list[str]:
    """`group: alpha = value +/- sd` for every exponent whose standard error exceeds UNPINNED_RATIO of it."""
    found = []
    pooled, dof = residual_variance(units)  # one noise level for every group: 1 dof each is too few
    if dof <= 0:
        return found
    variance = float(pooled[0])
    for unit in units:
        law = unit.problem.law
        if not law.exponents:
            continue
        for j, name in enumerate(law.exponents):
            value = float(unit.thetas[0, j])
            error = float(np.sqrt(max(unit.inverse[0, j, j] * variance, 0.0)))
            if error > UNPINNED_RATIO * abs(value):
                found.append(f"{_groups(unit, group_names)}: {name} = {number(value, 3)} +/- {number(error, 2)}")
    return found


def _curvature(units: list[Unit]) -> float | None:
    """p-value of a parabola in (group-centred) log x through the pooled residuals, where it is significant."""
    residuals, bends = [], []
    for unit in units:
        if unit.dof <= 0:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            residual, _ = unit.problem.evaluate(unit.thetas[:1])
        u = np.log(unit.problem.X[:, 0])
        for local in range(unit.problem.n_groups):
            mine = unit.problem.groups == local
            centred = u[mine] - u[mine].mean()
            bends.append(centred**2 - (centred**2).mean())
            residuals.append(residual[0, mine] - residual[0, mine].mean())
    if not residuals:
        return None
    bend, residual = np.concatenate(bends), np.concatenate(residuals)
    if len(bend) < 5 or np.ptp(bend) == 0 or np.ptp(residual) == 0:
        return None
    p_value = float(stats.linregress(bend, residual).pvalue)
    return p_value if p_value < CURVATURE_P_VALUE else None


def _lack_of_fit(units: list[Unit], result: Forecast) -> float | None:
    """p-value of the lack-of-fit F-test against the replicates (where there are both and it is small):
    the residual sum of squares splits into pure error (replicates about their cell means) and lack of
    fit (cell means about the law); F = [SS_lof / (cells - params)] / [SS_pe / (points - cells)]."""
    if result.replicates is None:
        return None
    rss = float(sum(u.rss[0] for u in units))
    params = sum(u.problem.n_params for u in units)
    rows = np.concatenate([u.rows for u in units])
    cells = result.design.cells[rows]
    n_cells = len(np.unique(cells))
    pure_dof = len(rows) - n_cells
    lack_dof = n_cells - params
    if pure_dof <= 0 or lack_dof <= 0:
        return None
    observed = result.y[0, rows]
    values = np.log(observed) if all(v.law.log_residuals for v in result.variants) else observed
    means = {c: values[cells == c].mean() for c in np.unique(cells)}
    pure = float(sum((v - means[c]) ** 2 for v, c in zip(values, cells, strict=True)))
    if pure <= 0:
        return None
    statistic = (max(rss - pure, 0.0) / lack_dof) / (pure / pure_dof)
    p_value = float(stats.f.sf(statistic, lack_dof, pure_dof))
    return p_value if p_value < LACK_OF_FIT_P_VALUE else None


def _groups(unit: Unit, group_names: tuple[str, ...]) -> str:
    names = [group_names[g] for g in sorted(unit.groups)]
    return names[0] if len(names) == 1 else "joint over " + ", ".join(names)
