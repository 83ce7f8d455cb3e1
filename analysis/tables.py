"""The tidy results table: one row per estimate, the same columns for every kind of result.

`section` says what a row is: fit (one per fitted curve: loss, degrees of freedom, convergence; a
failed fit has no estimate and its status and reason in `note`),
parameter, prediction, comparison (leave-one-out error, AIC, AICc), backtest, ranking (Kendall tau
between consecutive scales), correlation (Spearman of loss with a score), link-parameter and
downstream (two-step score predictions). Written as parquet + CSV, and as JSON with the provenance.
"""

import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from analysis import bootstrap
from analysis.curves import INDEPENDENT, NOT_CONVERGED, Curve
from analysis.forecast import summarize
from analysis.pipeline import FORECAST, Analysis, Study
from sweeper.core.io import atomic_write, atomic_write_json

SCHEMA = {
    "section": pl.String, "fit": pl.String, "law": pl.String, "x": pl.String, "y": pl.String,
    "group": pl.String, "name": pl.String, "label": pl.String, "at": pl.Float64,
    "estimate": pl.Float64, "lower": pl.Float64, "upper": pl.Float64, "observed": pl.Float64,
    "error": pl.Float64, "relative_error": pl.Float64, "p_value": pl.Float64,
    "n_points": pl.Int64, "dof": pl.Int64, "resamples": pl.Int64, "converged": pl.Boolean, "note": pl.String,
}


def results_table(analysis: Analysis) -> pl.DataFrame:
    rows: list[dict] = []
    for study in filter(None, (analysis.main, analysis.alternative)):
        rows += _study_rows(study, analysis.options.level)
    y = analysis.main.y
    for agreement in analysis.ranking:
        rows.append(_row("ranking", y=y, name=y, label=f"{agreement.lower}->{agreement.upper}",
                         estimate=agreement.tau.statistic, p_value=agreement.tau.p_value, n_points=agreement.tau.n,
                         note="Kendall tau of the group ranking between consecutive scales"))
    for link in analysis.links:
        target = f"{link.task}/{link.metric}"
        rows.append(_row("correlation", x=y, y=target, name=target, estimate=link.correlation.statistic,
                         p_value=link.correlation.p_value, n_points=link.correlation.n,
                         note=f"Spearman correlation of {y} with the score; scored by {link.scored_by}"
                         + ("" if link.tracks_loss else "; the score does not track the loss: no two-step prediction")))
        if link.fit is None:
            rows.append(_row("link-parameter", fit="link", law=analysis.link_law.name, x=y, y=target, note=link.note))
            continue
        common = {"fit": "link", "law": link.fit.law.name, "x": y, "y": target}
        rows.append(_fit_row(Curve("link", link.fit, link.boot, link.rows), "all", common))
        rows += _parameter_rows(link.fit, link.boot, "all", common, analysis.options.level)
        for p in link.predictions:
            rows.append(_row("downstream", **common, group=p.group, name=target, label=p.label, at=float(p.X[0]),
                             estimate=p.score, lower=p.lower, upper=p.upper, resamples=p.resamples,
                             note=f"via predicted {y} {p.loss:.4g} ({analysis.main.headline})"
                             + ("; the link is extrapolated beyond the losses it was fitted on" if p.extrapolated else "")))
    return pl.DataFrame(rows, schema=SCHEMA, orient="row") if rows else pl.DataFrame(schema=SCHEMA)


def _study_rows(study: Study, level: float) -> list[dict]:
    base = {"law": study.law.name, "x": ",".join(study.x), "y": study.y}
    rows = []
    for curve in study.curves.all():
        common = {**base, "fit": curve.kind}
        for group in curve.fit.group_names:
            rows.append(_fit_row(curve, group, common))
            rows += _parameter_rows(curve.fit, curve.boot, group, common, level)
    for failure in study.curves.failures:
        rows.append(_row("fit", **base, fit=failure.kind, group=failure.group if failure.kind == INDEPENDENT else "all",
                         name="summed_loss", n_points=failure.n_points, dof=failure.n_points - failure.n_params,
                         converged=False if failure.status == NOT_CONVERGED else None,
                         note=f"{failure.status.upper()}: {failure.reason}"))
    for p in study.predictions:
        rows.append(_row("prediction", **base, fit=p.kind, group=p.group, name=study.y, label=p.label,
                         at=float(p.X[0]), estimate=p.estimate, lower=p.lower, upper=p.upper))
    for c in study.comparison:
        common = {**base, "fit": c.kind, "group": "all", "n_points": c.points}
        rows.append(_row("comparison", **common, name="loo_mean_abs_error", estimate=c.loo_mean_abs_error,
                         note=f"leave-one-out, over the {c.loo_predicted} points both fits can predict; "
                         + ("log residual ~ relative error" if study.law.log_residuals else "in y units")
                         + (" (preferred)" if c.kind == study.preferred else "")))
        rows.append(_row("comparison", **common, name="params", estimate=float(c.params)))
        rows.append(_row("comparison", **common, name="aic", estimate=c.aic))
        rows.append(_row("comparison", **common, name="aicc", estimate=c.aicc))
    if study.outlook is not None:
        rows += _outlook_rows(study, base)
    if study.backtest:
        bt = study.backtest
        for p in bt.points:
            rows.append(_row("backtest", **base, fit=p.kind, group=p.group, name=study.y, label=bt.held_out_level,
                             at=float(p.X[0]), estimate=p.predicted, lower=p.lower, upper=p.upper,
                             observed=p.observed, error=p.error, relative_error=p.relative_error,
                             note="inside the interval" if p.lower <= p.observed <= p.upper else ""))
        for kind in bt.kinds():
            rows.append(_row("backtest", **base, fit=kind, group="all", name="mean_abs_relative_error",
                             label=bt.held_out_level, estimate=bt.mean_abs_relative_error(kind)))
    return rows


def _outlook_rows(study: Study, base: dict) -> list[dict]:
    """The forecast's ensemble weights, drift, noise, simulated coverage and its own backtest."""
    outlook, result = study.outlook, study.outlook.result
    common = {**base, "fit": FORECAST, "group": "all"}
    rows = [_row("forecast", **common, name="weight", label=variant.name, estimate=float(result.weights[0, v]),
                 note="share of the forecast (stacking weights from rolling-origin backtests)")
            for v, variant in enumerate(result.variants)]
    rows.append(_row("forecast", **common, name="drift_per_log_distance", estimate=float(result.tau[0]),
                     note="sd added per unit log(x / largest x) beyond the data, from the backtests' excess error"
                     + ("" if result.calibrated else "; UNCALIBRATED: no backtest could be made")))
    rows.append(_row("forecast", **common, name="new_run_sd", estimate=float(result.noise[0]),
                     note="sd of a new run in " + ("log y" if all(v.law.log_residuals for v in result.variants) else "y")
                     + (" (from replicates)" if result.replicates is not None else " (from the residuals)")))
    if outlook.coverage is not None:
        rows.append(_row("forecast", **common, name="simulated_coverage", estimate=outlook.coverage.covered,
                         n_points=outlook.coverage.draws, note=outlook.coverage.describe()))
    for p in outlook.held_out:
        rows.append(_row("backtest", **base, fit=FORECAST, group=study.data.group_names[p.group], name=study.y,
                         label=outlook.held_out_level, at=float(p.X[0]), estimate=p.estimate, lower=p.lower,
                         upper=p.upper, observed=p.observed, error=p.estimate - p.observed,
                         relative_error=p.relative_error, note="inside the interval" if p.inside else ""))
    for win in outlook.win:
        rows.append(_row("forecast", **common, name="best", label=win.label, estimate=win.probability,
                         note=f"{win.best} has the best forecast in {win.probability:.0%} of joint draws"))
    return rows


def _fit_row(curve: Curve, group: str, common: dict) -> dict:
    fit = curve.fit
    notes = [f"{fit.agreeing_starts} of {fit.starts} starts agree"]
    if fit.dof <= 0:
        notes.append("UNDERDETERMINED: no degrees of freedom, no interval")
    if curve.boot is not None:
        notes.append(f"bootstrap: {curve.boot.describe()}")
    return _row("fit", **common, group=group,
                name="summed_loss", estimate=fit.loss, n_points=fit.n_points, dof=fit.dof,
                resamples=len(curve.boot.thetas) if curve.boot is not None else 0, converged=fit.converged,
                note="; ".join(notes))


def _parameter_rows(fit, boot, group: str, common: dict, level: float) -> list[dict]:
    samples = bootstrap.parameter_samples(fit, boot, group) if boot is not None else {}
    rows = []
    zero_below = fit.negligible(group)
    for name, value in fit.params(group).items():
        lower, upper = bootstrap.interval(samples[name], level) if name in samples else (math.nan, math.nan)
        rows.append(_row("parameter", **common, group=group, name=name, estimate=value,
                         lower=float(lower), upper=float(upper),
                         note="at its lower bound 0" if value < zero_below.get(name, 0.0) else None))
    return rows


def _row(section: str, **values) -> dict:
    row = dict.fromkeys(SCHEMA)
    row["section"] = section
    for key, value in values.items():
        row[key] = float(value) if isinstance(value, np.floating) else value
    return row


def write_tables(analysis: Analysis, table: pl.DataFrame, folder: Path) -> list[Path]:
    """results.parquet, results.csv and results.json (rows + provenance + warnings), written atomically."""
    parquet, csv, jsonl = folder / "results.parquet", folder / "results.csv", folder / "results.json"
    atomic_write(parquet, lambda tmp: table.write_parquet(tmp))
    atomic_write(csv, lambda tmp: table.write_csv(tmp))
    atomic_write_json(jsonl, to_json(analysis, table))
    return [parquet, csv, jsonl]


def to_json(analysis: Analysis, table: pl.DataFrame) -> dict:
    """Everything `--json` prints: the source, the resolved options, warnings, provenance and the rows
    (NaN as null)."""
    rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in table.iter_rows(named=True)]
    return {
        "source": str(analysis.source.path),
        "options": json.loads(analysis.options.model_dump_json()),
        "x": list(analysis.main.x), "y": analysis.main.y, "by": analysis.by, "law": analysis.main.law.name,
        # The fit to act on: the forecast where there is one; the better single-law fit beside it.
        "scales": analysis.level_names, "preferred_fit": analysis.main.headline,
        "preferred_single_fit": analysis.main.preferred,
        "forecast": _forecast_json(analysis), "designs": _designs_json(analysis),
        "warnings": analysis.warnings, "notes": analysis.notes, "provenance": analysis.provenance, "results": rows,
    }


def _designs_json(analysis: Analysis) -> dict | None:
    """The ranking beside another design's sweep (--against): each design's policy, and per scale both orders."""
    side = analysis.designs
    if side is None:
        return None
    return {
        "designs": [{"sweep": d.name, "policy": d.policy, "loss": d.loss, "lr": d.lr} for d in side.designs],
        "scales": [{"scale": a.scale, "orders": list(a.orders), "kendall_tau": a.tau.statistic,
                    "same_best": a.orders[0][0] == a.orders[1][0]} for a in side.scales],
    }


def _forecast_json(analysis: Analysis) -> dict | None:
    """The headline forecast at a glance: its predictions, ensemble, calibration and backtest."""
    outlook = analysis.main.outlook
    if outlook is None:
        return None
    result, level = outlook.result, analysis.options.level
    inside, judged, error = summarize(outlook.held_out)

    def finite(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    return {
        "level": level,
        "predictions": [{"group": analysis.main.data.group_names[t.group], "label": t.label, "x": t.X.tolist(),
                         "estimate": finite(result.estimate[0, j]), "lower": finite(result.lower[0, j]),
                         "upper": finite(result.upper[0, j])} for j, t in enumerate(result.targets)],
        "candidates": [{"fit": v.name, "weight": float(result.weights[0, i])} for i, v in enumerate(result.variants)],
        "drift_per_log_distance": float(result.tau[0]), "new_run_sd": float(result.noise[0]),
        "calibrated": result.calibrated,
        "simulated_coverage": None if outlook.coverage is None else {
            "draws": outlook.coverage.draws, "covered": outlook.coverage.covered,
            "median_width": outlook.coverage.median_width, "text": outlook.coverage.describe()},
        "backtest": {"held_out": outlook.held_out_level, "inside": inside, "judged": judged,
                     "mean_abs_relative_error": error, "note": outlook.held_out_note},
        "default_backtest": None if outlook.default_held_out is None else dict(
            zip(("inside", "judged", "mean_abs_relative_error"), summarize(outlook.default_held_out), strict=True)),
        "best": [{"label": w.label, "group": w.best, "probability": w.probability} for w in outlook.win],
    }

