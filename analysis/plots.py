"""Figures (PNG, matplotlib's Agg backend through `Figure`, no global pyplot state).

- curves-<x>.png: y vs x per group, observed points, the independent and joint fits, the bootstrap
  band of the preferred fit, the extrapolated region shaded and the predictions with their intervals
  (a failed fit is named in the panel title). Laws of two inputs are shown as predicted vs. observed.
- link-<task>.png: score vs loss across groups and scales with the fitted link and its band, the
  chance level where known, and the two-step predictions. The view is the observed points and the
  central predictions: a band that extrapolates to -1e5 must not flatten the data into a line.
- backtest.png: relative error of the prediction of the held-out largest scale, per group and fit.
- forecast.png (the report's main figure): per group, the forecast median and prediction band from the
  smallest scale out to the targets, the target forecasts and the forecast's own backtest.
"""

import re
from pathlib import Path

import numpy as np

from analysis import bootstrap, workers
from analysis.curves import INDEPENDENT, JOINT, Curve
from analysis.downstream import Link
from analysis.forecast import Target, interval
from analysis.pipeline import Analysis, Study
from sweeper.core.io import atomic_write

PANEL_INCHES = 3.2
GRID_POINTS = 120


def write_figures(analysis: Analysis, folder: Path) -> list[Path]:
    """Every figure of the analysis into `folder` (on the workers of `analysis.workers.pool()` when one
    is open: each figure is drawn on its own); returns the paths written."""
    jobs = []
    if analysis.main.outlook is not None and analysis.main.data.X.shape[1] == 1 and (analysis.main.data.X > 0).all():
        jobs.append((_forecast_figure, folder / "forecast.png", analysis.main, analysis.options.level))
    for study in filter(None, (analysis.main, analysis.alternative)):
        jobs.append((_curves_figure, folder / f"curves-{_slug(','.join(study.x))}.png", study, analysis.options.level))
    for link in analysis.links:
        if link.fit is not None:
            jobs.append((_link_figure, folder / f"link-{_slug(link.task + '-' + link.metric)}.png", link, analysis))
    if analysis.main.backtest and analysis.main.backtest.points:
        jobs.append((_backtest_figure, folder / "backtest.png", analysis.main))
    workers.starmap(_render, jobs)
    return [job[1] for job in jobs]


def _render(draw, path: Path, *inputs) -> None:
    """Draw one figure with `draw(Figure, *inputs)` and write it to `path`."""
    from matplotlib.figure import Figure  # heavy: only when drawing

    _save(draw(Figure, *inputs), path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _save(figure, path: Path) -> None:
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=130, bbox_inches="tight"))


def _panels(Figure, count: int, columns: int = 4):
    columns = min(columns, count)
    rows = -(-count // columns)
    figure = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for extra in axes[count:]:
        extra.set_visible(False)
    return figure, axes[:count]


def _interval_bars(axis, x, lower, upper, color: str, alpha: float = 1.0) -> None:
    """Capped vertical bars from lower to upper. Not `errorbar`: it takes distances from the estimate,
    and a percentile interval need not contain the estimate."""
    x, lower, upper = (np.asarray(v, dtype=float) for v in (x, lower, upper))
    axis.vlines(x, lower, upper, colors=color, alpha=alpha, linewidth=1.2)
    axis.plot(np.concatenate([x, x]), np.concatenate([lower, upper]), "_", color=color, alpha=alpha, markersize=7)


def _curves_figure(Figure, study: Study, level: float):
    data, curves = study.data, study.curves
    figure, axes = _panels(Figure, len(data.group_names))
    two_inputs = data.X.shape[1] > 1
    for index, (axis, group) in enumerate(zip(axes, data.group_names, strict=True)):
        rows = data.groups == index
        shown = curves.curve(study.preferred, group) or curves.curve(INDEPENDENT, group) or curves.joint
        if two_inputs and shown is not None:
            _parity(axis, shown, group, data.X[rows], data.y[rows])
        elif not two_inputs:
            _curve_panel(axis, study, group, data.X[rows, 0], data.y[rows], level)
        failed = [f"{f.kind}: {f.status}" for kind in (INDEPENDENT, JOINT) if (f := curves.failure(kind, group))]
        axis.set_title(group + (f" ({'; '.join(failed)})" if failed else ""), fontsize="medium" if not failed else "small")
    figure.suptitle(f"{study.y} vs {', '.join(study.x)}: {study.law.formula}"
                    + (f" (band: {study.preferred} fit, {level:.0%})" if not two_inputs else ""))
    return figure


def _forecast_figure(Figure, study: Study, level: float):
    """The headline: per group, the forecast median and band over the data and out to the targets."""
    data, outlook = study.data, study.outlook
    result = outlook.result
    figure, axes = _panels(Figure, len(data.group_names))
    for index, (axis, group) in enumerate(zip(axes, data.group_names, strict=True)):
        rows = data.groups == index
        x = data.X[rows, 0]
        mine = [j for j, t in enumerate(result.targets) if t.group == index]
        right = max([x.max(), *(result.targets[j].X[0] for j in mine)]) * 1.15
        grid = np.geomspace(x.min() / 1.15, right, GRID_POINTS // 3)
        estimate, lower, upper = interval(result, [Target(index, "", np.array([v])) for v in grid], level)
        if mine:
            axis.axvspan(x.max(), right, color="0.92", zorder=0, label="extrapolation")
        axis.fill_between(grid, lower[0], upper[0], color="C2", alpha=0.25, linewidth=0, label=f"{level:.0%} forecast")
        axis.plot(grid, estimate[0], "-", color="C2", label="forecast")
        for j in mine:
            at = result.targets[j].X[0]
            _interval_bars(axis, [at], [result.lower[0, j]], [result.upper[0, j]], "C2")
            axis.plot([at], [result.estimate[0, j]], "o", color="C2", markersize=4)
        for held in (p for p in outlook.held_out if p.group == index):
            _interval_bars(axis, [held.X[0] * 1.04], [held.lower], [held.upper], "C1", alpha=0.8)
            axis.plot([held.X[0] * 1.04], [held.estimate], "s", color="C1", markersize=4, markerfacecolor="white",
                      label="backtest")
        axis.plot(x, data.y[rows], "ko", markersize=4, label="observed")
        axis.set_xscale("log")
        _count_ticks(axis, grid[0], grid[-1])
        axis.set_xlabel(study.x[0])
        axis.set_ylabel(study.y)
        axis.set_title(group, fontsize="medium")
        axis.legend(fontsize="x-small")
    figure.suptitle(f"Forecast of {study.y}: candidate laws averaged, calibrated on the data's own backtests")
    return figure


def _curve_panel(axis, study: Study, group: str, x: np.ndarray, y: np.ndarray, level: float) -> None:
    predictions = [p for p in study.predictions if p.group == group]
    right = max([x.max(), *(p.X[0] for p in predictions)]) * 1.15
    grid = np.geomspace(x.min() / 1.15, right, GRID_POINTS)
    if predictions:
        axis.axvspan(x.max(), right, color="0.92", zorder=0, label="extrapolation")
    styles = {INDEPENDENT: ("C0", "-"), JOINT: ("C3", "--")}
    curves = [c for c in (study.curves.curve(INDEPENDENT, group), study.curves.joint) if c is not None]
    for curve in curves:
        color, line = styles[curve.kind]
        axis.plot(grid, curve.fit.predict(grid[:, None], group), line, color=color, label=f"{curve.kind} fit")
        if curve.kind == study.preferred and curve.boot is not None:
            low, high = bootstrap.prediction_interval(curve.fit, curve.boot, group, grid[:, None], level)
            axis.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
    for p in predictions:
        if p.kind == study.preferred and np.isfinite(p.lower):
            _interval_bars(axis, [p.X[0]], [p.lower], [p.upper], styles[p.kind][0])
            axis.plot([p.X[0]], [p.estimate], "o", color=styles[p.kind][0], markersize=4)
    axis.plot(x, y, "ko", markersize=4, label="observed")
    axis.set_xscale("log")
    _count_ticks(axis, grid[0], grid[-1])
    axis.set_xlabel(study.x[0])
    axis.set_ylabel(study.y)
    axis.legend(fontsize="x-small")


def _count_ticks(axis, low: float, high: float) -> None:
    """Short labels (300k, 1M, 34B) on a log x axis, at 1-2-5 or 1-3 steps when it spans a few decades.
    Matplotlib's default labels the minor ticks of a short log axis as 3x10^3, 4x10^3, ..., which run
    into each other in a 3-inch panel."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = np.log10(high / low)
    if decades <= 2.5:
        axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 1 else (1.0, 3.0)))
    axis.xaxis.set_major_formatter(FuncFormatter(_count_label))
    axis.xaxis.set_minor_formatter(NullFormatter())


def _count_label(value: float, _position=None) -> str:
    if abs(value) >= 1e15 or abs(value) < 1:
        return f"{value:.0e}"
    for suffix, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _parity(axis, curve: Curve, group: str, X: np.ndarray, y: np.ndarray) -> None:
    predicted = curve.fit.predict(X, group)
    axis.plot(y, predicted, "o", markersize=3, color="C0")
    bounds = [min(y.min(), predicted.min()), max(y.max(), predicted.max())]
    axis.plot(bounds, bounds, "k--", linewidth=1)
    axis.set_xlabel("observed")
    axis.set_ylabel(f"predicted ({curve.kind} fit)")


def _link_figure(Figure, link: Link, analysis: Analysis):
    figure = Figure(figsize=(6.0, 4.2), layout="constrained")
    axis = figure.subplots()
    names = analysis.main.data.group_names
    groups = analysis.main.data.groups[link.rows]
    for index, name in enumerate(names):
        mine = groups == index
        axis.plot(link.loss[mine], link.score[mine], "o", color=f"C{index % 10}", markersize=4, label=name)
    predicted_losses = [p.loss for p in link.predictions]
    grid = np.linspace(min([link.loss.min(), *predicted_losses]), max([link.loss.max(), *predicted_losses]),
                       GRID_POINTS)
    axis.plot(grid, link.fit.predict(grid[:, None], "all"), "k-", label=f"{link.fit.law.name} link")
    if link.boot is not None:
        low, high = bootstrap.prediction_interval(link.fit, link.boot, "all", grid[:, None], analysis.options.level)
        axis.fill_between(grid, low, high, color="k", alpha=0.15, linewidth=0)
    if link.chance is not None:
        axis.axhline(link.chance, color="0.4", linestyle=":", linewidth=1, label="chance")
    for p in link.predictions:
        index = names.index(p.group)
        if np.isfinite(p.lower):
            _interval_bars(axis, [p.loss], [p.lower], [p.upper], f"C{index % 10}")
        axis.plot([p.loss], [p.score], "D", color=f"C{index % 10}", markersize=4, markerfacecolor="white")
    # Frame the observed scores, the chance level and the central predictions (not the whole band).
    shown = np.array([*link.score, *(p.score for p in link.predictions),
                      *([link.chance] if link.chance is not None else [])])
    margin = 0.1 * max(float(np.ptp(shown)), 1e-3 * max(float(np.abs(shown).max()), 1.0))
    axis.set_ylim(shown.min() - margin, shown.max() + margin)
    axis.set_xlabel(f"{analysis.main.y}")
    axis.set_ylabel(f"{link.task} {link.metric} ({link.scored_by})")
    axis.set_title(f"{link.fit.law.formula}; Spearman {link.correlation.statistic:.2f}"
                   + ("; open diamonds: two-step predictions" if link.predictions else "; no two-step prediction"),
                   fontsize="small")
    axis.legend(fontsize="x-small", ncols=2)
    return figure


def _backtest_figure(Figure, study: Study):
    backtest = study.backtest
    figure = Figure(figsize=(max(5.0, 0.8 * len(study.data.group_names) + 2), 3.8), layout="constrained")
    axis = figure.subplots()
    groups = list(dict.fromkeys(p.group for p in backtest.points))
    offsets = {INDEPENDENT: -0.15, JOINT: 0.15}
    colors = {INDEPENDENT: "C0", JOINT: "C3"}
    for kind in backtest.kinds():
        points = [p for p in backtest.points if p.kind == kind]
        positions = [groups.index(p.group) + offsets[kind] for p in points]
        relative = np.array([p.relative_error for p in points]) * 100
        low = np.array([(p.lower - p.observed) / p.observed for p in points]) * 100
        high = np.array([(p.upper - p.observed) / p.observed for p in points]) * 100
        has_band = np.isfinite(low)
        _interval_bars(axis, np.array(positions)[has_band], low[has_band], high[has_band], colors[kind], alpha=0.6)
        axis.plot(positions, relative, "o", color=colors[kind],
                  label=f"{kind} (mean |error| {backtest.mean_abs_relative_error(kind):.2%})")
    axis.axhline(0.0, color="k", linewidth=1)
    axis.set_xticks(range(len(groups)), groups, rotation=30)
    axis.set_ylabel("predicted - observed (% of observed)")
    axis.set_title(f"Backtest: {study.y} at {backtest.held_out_level}, fitted without it", fontsize="small")
    axis.legend(fontsize="x-small")
    return figure
