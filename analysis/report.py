"""report.md and report.html: the analysis written up for a paper draft, figures embedded.

The report is built once as a list of blocks (heading, paragraph, list, table, figure) and rendered
as Markdown that links the PNGs next to it, as a self-contained HTML page with the PNGs inlined, and
(for `sweeper fit`) as rich tables on the terminal. A dozen lines of rendering here replace a
Markdown-to-HTML dependency the project does not otherwise need.
"""

import base64
import html
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from analysis import bootstrap, designs, paper
from analysis.curves import INDEPENDENT, JOINT, NOT_CONVERGED, Curve, Failure, describe_failures
from analysis.downstream import LIKELIHOOD, LINK_P_VALUE, SCORED_BY, Link, ScorePrediction
from analysis.forecast import summarize
from analysis.formatting import number, percent, with_interval
from analysis.laws import LOG_HUBER_DELTA
from analysis.pipeline import EXTRAPOLATIONS, LARGEST_ASTRAIOS_BILLIONS, Analysis, Study, lower_is_better
from sweeper.core.console import console as make_console
from sweeper.core.io import atomic_write_text

EXTRAPOLATION_TEXT = " and ".join(f"{label.split('B')[0]}/{LARGEST_ASTRAIOS_BILLIONS:g}" for label in EXTRAPOLATIONS)


@dataclass(frozen=True)
class Block:
    kind: str  # "h2" | "h3" | "p" | "list" | "table" | "figure"
    text: str = ""
    items: tuple = ()  # list items; or (headers, rows) for a table
    path: Path | None = None  # figure


def write_report(analysis: Analysis, figures: list[Path], folder: Path) -> list[Path]:
    blocks = build(analysis, figures)
    title = f"Scaling-law analysis of {analysis.source.name}"
    md_path, html_path = folder / "report.md", folder / "report.html"
    atomic_write_text(md_path, to_markdown(title, blocks))
    atomic_write_text(html_path, to_html(title, blocks))
    return [md_path, html_path]


def build(analysis: Analysis, figures: list[Path]) -> list[Block]:
    """The first screen answers (forecasts with their intervals, who wins where, the calibration, the
    warnings, the main figure); the source, parameter tables and method details come after it."""
    main, level = analysis.main, analysis.options.level
    blocks = forecast_blocks(analysis) + findings_blocks(analysis) + design_blocks(analysis)
    if analysis.warnings:
        blocks += [Block("h2", "Warnings"), Block("list", items=tuple(analysis.warnings))]
    headline = next((path for path in figures if path.stem == "forecast"), None)
    if headline is not None:
        blocks.append(Block("figure", text=_caption(headline, analysis), path=headline))
    blocks += [Block("h2", "Data"), Block("p", _summary(analysis))]
    blocks += study_blocks(main, level, "Single-law fits of " + main.y)
    if analysis.notes:
        blocks += [Block("h3", "Notes on the single-law fits"), Block("list", items=tuple(analysis.notes))]
    if analysis.alternative:
        blocks += study_blocks(analysis.alternative, level, f"Against trainable parameters ({analysis.alternative.x[0]})",
                               alternative=True)
    if analysis.ranking:
        blocks += [
            Block("h2", "Ranking stability across scales"),
            Block("p", f"Kendall tau between the ranking of the {analysis.by or 'group'}s by {main.y} at consecutive "
                       "scales (1: same order; the paper's claim that small-model loss predicts the large-model ranking)."),
            Block("table", items=(("scales", "Kendall tau", "p-value", "groups"), [
                (f"{a.lower} -> {a.upper}", number(a.tau.statistic, 3), number(a.tau.p_value, 2), str(a.tau.n))
                for a in analysis.ranking])),
        ]
    if analysis.links:
        blocks += _downstream_blocks(analysis)
    blocks += [Block("h2", "Figures")]
    blocks += [Block("figure", text=_caption(path, analysis), path=path) for path in figures if path.stem != "forecast"]
    blocks += _method_blocks(analysis)
    return blocks


def forecast_blocks(analysis: Analysis) -> list[Block]:
    """The answer: the forecast table, which group wins at each target and how sure, how the intervals
    were built and how they performed (simulated draws, the held-out largest scale)."""
    main, level = analysis.main, analysis.options.level
    outlook = main.outlook
    if outlook is None:
        return []
    result = outlook.result
    labels = list(dict.fromkeys(t.label for t in result.targets))
    blocks = [Block("h2", f"Forecast of {main.y}")]
    if labels:
        cells = {(t.group, t.label): with_interval(result.estimate[0, j], result.lower[0, j], result.upper[0, j])
                 for j, t in enumerate(result.targets)}
        rows = [(group, *(cells.get((index, label), "n/a") for label in labels))
                for index, group in enumerate(main.data.group_names)]
        where = (f"{EXTRAPOLATION_TEXT} times each group's largest `{main.x[0]}`"
                 if set(labels) <= set(EXTRAPOLATIONS) else f"`{':'.join(main.x)}` = {', '.join(labels)}")
        blocks += [Block("p", f"Forecast {main.y} at {where}, with {level:.0%} prediction intervals (where a new "
                              "run at that scale would land)."),
                   Block("table", items=((analysis.by or "group", *labels), rows))]
    better = "lowest" if lower_is_better(main.y) else "highest"
    if outlook.win:
        blocks.append(Block("p", "Best at each target (" + better + f" forecast {main.y}, share of joint forecast "
                                 "draws in which it is best): " + "; ".join(
                                     f"**{w.label}: {w.best}** ({w.probability:.0%})" for w in outlook.win) + "."))
    blocks.append(Block("p", _calibration_text(analysis)))
    return blocks + _advice_blocks(analysis) + _replicate_blocks(analysis)


def _advice_blocks(analysis: Analysis) -> list[Block]:
    """The advice the sweep's launches followed (`sweeper launch grid --with`): what it expected of its
    runs, and what the forecast says now that they are in."""
    from analysis.advice import followed

    outlook = analysis.main.outlook
    if not analysis.source.is_sweep or outlook is None:
        return []
    rows = [(f.advice, f.target, ", ".join(f.runs), number(f.before, 4),
             "n/a" if f.expected_after is None else f"{f.expected_after:.4f} ± {f.expected_after_se:.4f}",
             "n/a" if f.now is None else number(f.now, 4))
            for f in followed(analysis.source, outlook.result, analysis.options.level, analysis.main.x)]
    if not rows:
        return []
    return [Block("h3", "Advice followed"),
            Block("p", "Runs bought on `sweeper advise`'s advice: the relative width of the target's interval when the "
                       "advice was made, what the advice expected once its runs were in, and what it is now."),
            Block("table", items=(("advice", "target", "runs", "width then", "expected", "width now"), rows))]


def findings_blocks(analysis: Analysis) -> list[Block]:
    """The paper's findings, each with what this study measured and whether it agrees (analysis.paper);
    then what the study cannot speak to. Only for a grid of Astraios methods over scales."""
    if not paper.applies(analysis):
        return []
    rows = [(finding.claim, f"**{finding.verdict}**", finding.evidence) for finding in paper.check_findings(analysis)]
    blocks = [Block("h2", "Astraios' findings, checked on this study"),
              Block("p", designs.learning_rate_policy(analysis.frame, analysis.source.manifest)),
              Block("table", items=(("the paper found", "here", "what this study measured"), rows))]
    limits = paper.limits(analysis)
    if limits:
        blocks += [Block("h3", "What this study cannot speak to"), Block("list", items=tuple(limits))]
    return blocks


def design_blocks(analysis: Analysis) -> list[Block]:
    """The method ranking under this sweep's design and the other's (--against), scale by scale."""
    side = analysis.designs
    if side is None:
        return []
    this, other = side.designs
    blocks = [Block("h2", f"Method ranking under two designs: {this.name} and {other.name}"),
              Block("list", items=(f"{this.name}: {this.policy}", f"{other.name}: {other.policy}"))]
    rows = [(a.scale, " > ".join(a.orders[0]), " > ".join(a.orders[1]), number(a.tau.statistic, 2),
             "yes" if a.orders[0][0] == a.orders[1][0] else "no") for a in side.scales]
    blocks.append(Block("table", items=(("scale", f"{this.name} (lowest loss first)", f"{other.name}",
                                         "Kendall tau", "same best"), rows)))
    largest = side.scales[-1].scale
    methods = sorted(set(this.loss[largest]) & set(other.loss[largest]), key=this.loss[largest].get)
    blocks += [Block("p", f"At {largest}: each method's validation loss and the learning rate it trained at "
                          "(the median of its results) under each design."),
               Block("table", items=(("method", f"{this.name} loss", "lr", f"{other.name} loss", "lr"), [
                   (m, number(this.loss[largest][m]), number(this.lr[largest][m], 3), number(other.loss[largest][m]),
                    number(other.lr[largest][m], 3)) for m in methods]))]
    return blocks


def _replicate_blocks(analysis: Analysis) -> list[Block]:
    """Each cell's (same group and inputs) mean and sample sd over its replicates, where it has several."""
    main = analysis.main
    design, data = main.outlook.design, main.data
    cells = design.cells
    rows = []
    for cell in range(int(cells.max()) + 1):
        members = np.flatnonzero(cells == cell)
        if len(members) < 2:
            continue
        values = data.y[members]
        at = ", ".join(number(v) for v in data.X[members[0]])
        sd = float(values.std(ddof=1))
        rows.append((data.group_names[data.groups[members[0]]], at, str(len(values)), number(float(values.mean())),
                     number(sd, 2), percent(sd / float(values.mean()))))
    if not rows:
        return []
    return [Block("h3", "Replicates"),
            Block("p", f"Cells run several times (same {analysis.by or 'group'} and `{', '.join(main.x)}`): mean and "
                       f"sample sd of {main.y}; their scatter is the noise of a new run in the forecast."),
            Block("table", items=((analysis.by or "group", ", ".join(main.x), "runs", "mean", "sd", "sd / mean"), rows))]


def _calibration_text(analysis: Analysis) -> str:
    outlook, level = analysis.main.outlook, analysis.options.level
    result = outlook.result
    ensemble = ", ".join(f"{v.name} {result.weights[0, i]:.0%}" for i, v in enumerate(result.variants)
                         if result.weights[0, i] > 0)
    space = "log y" if all(v.law.log_residuals for v in result.variants) else "y"
    parts = [f"How the intervals are built: the candidate fits averaged with weights from rolling-origin backtests "
             f"({ensemble}); each candidate's predictive interval holds its parameter uncertainty (linearised, "
             f"Student-t) and the noise of a new run (sd {number(result.noise[0], 2)} in {space}, "
             + ("from replicates" if result.replicates is not None else "from the residuals") + ")"
             + _drift_text(result) + "."]
    if outlook.coverage is not None:
        parts.append(f"Calibration: {outlook.coverage.describe()}.")
    inside, judged, error = summarize(outlook.held_out)
    if judged:
        parts.append(f"Backtest: forecast from the smaller scales alone, the observed {outlook.held_out_level} fell "
                     f"inside its {level:.0%} interval for {inside} of {judged} (mean |error| {percent(error)}).")
    else:
        parts.append(f"Backtest of the forecast at {outlook.held_out_level}: not possible ({outlook.held_out_note}).")
    if outlook.default_held_out:
        inside, judged, error = summarize(outlook.default_held_out)
        parts.append(f"For comparison, the default forecast (power, pure power and curved laws averaged) on the same "
                     f"backtest: inside for {inside} of {judged}, mean |error| {percent(error)}.")
    return " ".join(parts)


def _drift_text(result) -> str:
    if not result.calibrated:
        return "; UNCALIBRATED: no backtest could be made, so nothing widens them for the law's shape"
    if result.tau[0] == 0:
        return ("; the backtests' errors were within their own intervals, so no allowance for the law's shape "
                "was added")
    return (f", widened by {number(result.tau[0], 2)} per unit of log-distance beyond the data (the backtests' "
            "error in excess of their own intervals)")


def _spaces_text(spaces: tuple[str, ...]) -> str:
    """A folder launched with several spaces (`--force` with a changed space): say which rows are whose."""
    if not spaces:
        return ""
    return (f". It holds trials of {len(spaces)} launched spaces, fitted together unless `--where` picks one: "
            + "; ".join(f"`{line}`" for line in spaces))


def _summary(analysis: Analysis) -> str:
    main = analysis.main
    source = analysis.source
    what = (f"sweep folder `{source.path}` ({source.trials} trials: "
            + ", ".join(f"{n} {status}" for status, n in source.statuses.items())
            + "; each cell is its best done trial"
            + (f"; ladder `{source.manifest['space']['ladder']}`" if "ladder" in source.manifest.get("space", {}) else "")
            + ")" + _spaces_text(source.spaces)) if source.is_sweep else f"table `{source.path}`"
    groups = f"{len(main.data.group_names)} {analysis.by}s ({', '.join(main.data.group_names)})" if analysis.by else "one group"
    if main.comparison:
        chosen = f"Preferred single-law fit (lower leave-one-out error): **{main.preferred}**."
    elif main.curves.failures:
        chosen = f"Fit used for predictions: **{main.preferred}** (the only complete one)."
    else:
        chosen = ""
    return (f"Source: {what}. {len(main.data.y)} points, {groups}, {len(analysis.level_names)} scales by "
            f"`{analysis.size}` ({', '.join(analysis.level_names)}). Single-law fits below: `{main.law.formula}` with "
            f"`{main.y}` as y and `{', '.join(main.x)}` as x, with {analysis.options.level:.0%} bootstrap "
            f"percentile intervals from {analysis.options.bootstrap} resamples. " + chosen)


def study_blocks(study: Study, level: float, title: str, alternative: bool = False) -> list[Block]:
    blocks = [Block("h2", title)]
    if alternative:
        blocks += [Block("p", f"No extrapolation against `{study.x[0]}`: how many parameters a method trains at a "
                              "34B-equivalent scale depends on its configuration there (all of them for full "
                              "fine-tuning; for LoRA or adapters a method-specific function of width and depth), which "
                              "the ledger does not give. The backtest below judges this view on a scale that was "
                              "trained.")]
    blocks += _extrapolation_blocks(study)
    blocks += [Block("h3", "Fitted parameters"),
               Block("p", ("Joint fit: exponents shared by all groups, coefficients per group. "
                           if len(study.data.group_names) > 1 else "")
                     + "`0 (at bound)`: a coefficient the data push to its lower bound 0 (it is fitted as a "
                       "positive number)."),
               Block("table", items=(("group", "fit", *study.law.exponents, *study.law.coefficients, "dof", "converged"),
                                     _parameter_rows(study, level)))]
    blocks += _comparison_blocks(study)
    if study.backtest:
        blocks += _backtest_blocks(study)
    return blocks


def _extrapolation_blocks(study: Study) -> list[Block]:
    labels = list(dict.fromkeys(p.label for p in study.predictions))
    if not labels:
        return []
    rows = []
    for group in study.data.group_names:
        for kind in (INDEPENDENT, JOINT):
            cells = [next((with_interval(p.estimate, p.lower, p.upper) for p in study.predictions
                           if p.group == group and p.kind == kind and p.label == label), None) for label in labels]
            failure = study.curves.failure(kind, group)
            if cells[0] is None and failure:
                cells = [failure.status] * len(labels)
            if cells[0] is not None:
                marker = " (preferred)" if kind == study.preferred and study.comparison else ""
                rows.append((group, kind + marker, *cells))
    return [Block("h3", "Extrapolation by each single-law fit"),
            Block("p", f"Predicted {study.y} at {', '.join(labels)} by the `{study.law.formula}` fits alone, with "
                       "bootstrap intervals of the curve (not of a new run, and blind to the law's shape being wrong: "
                       "the forecast above is the one to act on)"
                       + (f": {EXTRAPOLATION_TEXT} times each group's largest `{study.x[0]}`."
                          if set(labels) <= set(EXTRAPOLATIONS) else f" (`{':'.join(study.x)}`).")),
            Block("table", items=(("group", "fit", *labels), rows))]


def _parameter_rows(study: Study, level: float) -> list[tuple]:
    """One row per group and fit; a failed fit shows its status instead of numbers."""
    names = (*study.law.exponents, *study.law.coefficients)

    def rows_of(curve: Curve) -> list[tuple]:
        samples_of = _param_intervals(curve, level)
        rows = []
        for group in curve.fit.group_names:
            values, zero_below = curve.fit.params(group), curve.fit.negligible(group)
            rows.append((group, curve.kind, *(with_interval(values[n], *samples_of(group, n), zero_below.get(n, 0.0))
                                              for n in names),
                         str(curve.fit.dof), "yes" if curve.fit.converged else "NO"))
        return rows

    def failed(failure: Failure, group: str) -> tuple:
        return (group, failure.kind, failure.status, *["—"] * (len(names) - 1), str(failure.n_points - failure.n_params),
                "NO" if failure.status == NOT_CONVERGED else "—")

    rows = []
    for group in study.data.group_names:
        curve = study.curves.independent.get(group)
        rows += rows_of(curve) if curve else [failed(study.curves.failure(INDEPENDENT, group), group)]
    if study.curves.joint:
        rows += rows_of(study.curves.joint)
    elif failure := study.curves.failure(JOINT, JOINT):
        rows.append(failed(failure, "all"))
    return rows


def _comparison_blocks(study: Study) -> list[Block]:
    if not study.comparison:
        failures = study.curves.failures
        if not failures or len(study.data.group_names) < 2:
            return []
        incomplete = ("the joint fit failed" if study.curves.failure(JOINT, JOINT)
                      else "the independent fits are incomplete (" + ", ".join(
                          f"{f.group}: {f.status}" for f in failures if f.kind == INDEPENDENT) + ")")
        return [Block("h3", "Joint vs. independent fits"),
                Block("p", f"No comparison: {incomplete}, so the two cannot be scored on the same points. "
                           f"The {study.preferred} fit is used for every group it covers.")]
    relative = study.law.log_residuals
    rows = [(c.kind + (" (preferred)" if c.kind == study.preferred else ""), str(c.params),
             percent(c.loo_mean_abs_error) if relative else number(c.loo_mean_abs_error, 3),
             f"{c.aic:.1f}", "n/a" if not np.isfinite(c.aicc) else f"{c.aicc:.1f}") for c in study.comparison]
    return [Block("h3", "Joint vs. independent fits"),
            Block("p", f"Leave-one-out mean absolute error over {study.comparison[0].loo_predicted} points "
                       + ("(of log y: a relative error) " if relative else "")
                       + "and AIC from the Laplace likelihood of the residuals (AICc: small-sample corrected); "
                         "lower is better."),
            Block("table", items=(("fit", "parameters", "LOO error", "AIC", "AICc"), rows))]


def _backtest_blocks(study: Study) -> list[Block]:
    bt = study.backtest
    title = Block("h3", f"Backtest: predicting {bt.held_out_level} without it")
    if not bt.points:
        return [title, Block("p", f"Not possible: {bt.note}.")]
    rows = [(p.group, p.kind, number(p.observed), with_interval(p.predicted, p.lower, p.upper),
             f"{p.relative_error:+.2%}",
             "n/a" if not np.isfinite(p.lower) else "yes" if p.lower <= p.observed <= p.upper else "no")
            for p in bt.points]
    summary = []
    for kind in bt.kinds():
        inside, judged = bt.inside(kind)
        coverage = f", observed inside the interval for {inside} of {judged}" if judged else ""
        summary.append(f"{kind}: mean |relative error| {percent(bt.mean_abs_relative_error(kind))}{coverage}")
    failed = describe_failures(bt.curves)
    return [title,
            Block("p", f"Fitted on every smaller scale, predicted at {bt.held_out_level}. {'; '.join(summary)}."
                       + (f" Not fitted without {bt.held_out_level}: {failed}." if failed else "")),
            Block("table", items=(("group", "fit", "observed", "predicted", "error", "inside interval"), rows))]


def _param_intervals(curve: Curve, level: float):
    def interval(group: str, name: str) -> tuple[float, float]:
        if curve.boot is None:
            return np.nan, np.nan
        low, high = bootstrap.interval(bootstrap.parameter_samples(curve.fit, curve.boot, group)[name], level)
        return float(low), float(high)

    return interval


def _downstream_blocks(analysis: Analysis) -> list[Block]:
    main = analysis.main
    rows = [(f"{link.task} / {link.metric}", _scored_by(link), number(link.correlation.statistic, 3),
             number(link.correlation.p_value, 2), str(link.correlation.n), link.note or _link_params(link))
            for link in analysis.links]
    kinds = list(dict.fromkeys(link.scored_by for link in analysis.links))
    blocks = [Block("h2", "Downstream scores"),
              Block("p", "How each score was obtained: " + "; ".join(f"**{k}**: {SCORED_BY[k]}" for k in kinds) + "."
                         + (" Likelihood scores (tasks named `-ll`) are a proxy for models too small to write "
                            "passing programs: they are not pass@k." if LIKELIHOOD in kinds else "")),
              Block("p", f"Spearman correlation of {main.y} with each score across all cells (a score that improves "
                         "as the loss falls correlates negatively, or positively for lower-is-better metrics such "
                         f"as nll), and the `{analysis.link_law.formula}` link fitted across methods and scales."),
              Block("table", items=(("task / metric", "scored by", "Spearman", "p-value", "cells", "link"), rows))]
    untracked = [link for link in analysis.links if link.fit is not None and not link.tracks_loss]
    if untracked:
        blocks.append(Block("p", "No two-step prediction where the score does not track the loss (Spearman p >= "
                                 f"{LINK_P_VALUE:g}, or the wrong sign): " + ", ".join(
                                     f"{link.task} / {link.metric} (rho {number(link.correlation.statistic, 2)}, "
                                     f"p {number(link.correlation.p_value, 2)})" for link in untracked) + "."))
    for link in analysis.links:
        if link.predictions:
            blocks += _two_step_blocks(link, analysis)
    return blocks


def _two_step_blocks(link: Link, analysis: Analysis) -> list[Block]:
    main = analysis.main
    labels = list(dict.fromkeys(p.label for p in link.predictions))

    def cell(p: ScorePrediction) -> str:
        return with_interval(p.score, p.lower, p.upper) + (" †" if p.extrapolated else "")

    table = [(group, *(next(cell(p) for p in link.predictions if p.group == group and p.label == label)
                       for label in labels))
             for group in dict.fromkeys(p.group for p in link.predictions)]
    text = (f"Scale -> {main.y} (the forecast: each draw of its distribution through one bootstrap refit of the link) "
            "-> score." if main.outlook is not None else
            f"Scale -> {main.y} ({main.preferred} fit) -> score (link), bootstrapped through both steps on the same "
            "resampled cells.") + " Shares are kept in [0, 1], and above chance where it is known."
    if any(p.extrapolated for p in link.predictions):
        text += (f" †: the predicted {main.y} lies outside the range the link was fitted on "
                 f"({number(link.loss.min())} to {number(link.loss.max())}), so the link itself is extrapolated.")
    return [Block("h3", f"Two-step prediction: {link.task} / {link.metric}"), Block("p", text),
            Block("table", items=(("group", *labels), table))]


def _scored_by(link: Link) -> str:
    return link.scored_by + (f" (chance {link.chance:.2f})" if link.chance is not None else "")


def _link_params(link) -> str:
    return ", ".join(f"{name} = {number(value)}" for name, value in link.fit.params("all").items())


def _caption(path: Path, analysis: Analysis) -> str:
    name = path.stem
    y = analysis.main.y
    if name.startswith("curves-"):
        x = name.removeprefix("curves-")
        extrapolated = analysis.alternative is None or x != analysis.alternative.x[0]
        return (f"{y} vs {x}: observed points, independent (solid) and joint (dashed) fits, interval band of the "
                "preferred fit" + (", extrapolated region shaded, predictions with intervals." if extrapolated else "."))
    if name == "forecast":
        level = analysis.options.level
        return (f"Forecast of {y} per {analysis.by or 'group'}: observed points, the forecast median (line) and its "
                f"{level:.0%} prediction band from the smallest scale to the targets (extrapolated region shaded), "
                "the forecasts at the targets with their intervals, and the leave-largest-out backtest (open "
                "squares: forecast from the smaller scales alone).")
    if name.startswith("link-"):
        return (f"{y} -> score link for {name.removeprefix('link-')} (dotted: chance level, where known), with "
                "two-step predictions (open diamonds).")
    return "Backtest: error of the prediction of the largest scale from the smaller ones, with intervals."


def _method_blocks(analysis: Analysis) -> list[Block]:
    prov = analysis.provenance
    versions = ", ".join(f"{k} {v}" for k, v in sorted(prov.get("versions", {}).items()))
    return [
        Block("h2", "Method"),
        Block("p", f"Loss laws are fitted on log residuals with a Huber loss (delta {LOG_HUBER_DELTA:g}) summed over "
                   "points (Hoffmann et al. 2022; Besiroglu et al. 2024). Starting values: variable projection "
                   "(coefficients solved exactly by non-negative least squares on a grid of exponents); the best "
                   "grid points are refined by Levenberg-Marquardt; a fit counts as converged only with a "
                   "first-order optimality certificate. A fit whose points cannot pin down every parameter "
                   "(underdetermined) or that does not converge is reported as such, without numbers. Links are "
                   "fitted by least squares; two-step predictions go only through links whose score tracks the "
                   f"loss (Spearman p < {LINK_P_VALUE:g}, of the expected sign). Bootstrap: points resampled within "
                   "each group, every fit redone on every resample (the two-step predictions chain both steps on "
                   "the same resample); resamples that cannot identify every parameter are left out and counted. "
                   "Estimates are rounded so that the narrower side of their interval shows two significant "
                   "digits."),
        Block("p", f"Provenance: git {prov.get('git_sha', 'unknown')}{' (dirty)' if prov.get('git_dirty') else ''}; "
                   f"{versions}; host {prov.get('hardware', {}).get('host', '?')}; "
                   f"written {datetime.now(UTC).isoformat(timespec='seconds')}."),
    ]


def print_blocks(title: str, blocks: list[Block]) -> None:
    """Headings, paragraphs and tables on the terminal (figures are files: not shown)."""
    from rich.table import Table
    from rich.text import Text

    console = make_console()
    console.rule(title)
    for block in blocks:
        if block.kind in ("h2", "h3"):
            console.print(f"[bold]{block.text}[/bold]")
        elif block.kind == "p" and block.text:
            console.print(block.text.replace("**", ""), markup=False, highlight=False)
        elif block.kind == "list":
            for item in block.items:
                console.print(f"- {item}", markup=False, highlight=False)
        elif block.kind == "table":
            headers, rows = block.items
            table = Table(*headers, show_edge=False, pad_edge=False)
            for row in rows:
                table.add_row(*(Text(str(cell).replace("**", "")) for cell in row))
            console.print(table)


def to_markdown(title: str, blocks: list[Block]) -> str:
    lines = [f"# {title}", ""]
    for block in blocks:
        if block.kind in ("h2", "h3"):
            lines += [("## " if block.kind == "h2" else "### ") + block.text, ""]
        elif block.kind == "p" and block.text:
            lines += [block.text, ""]
        elif block.kind == "list":
            lines += [f"- {item}" for item in block.items] + [""]
        elif block.kind == "table":
            headers, rows = block.items
            lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows] + [""]
        elif block.kind == "figure":
            lines += [f"![{block.text}]({block.path.name})", "", f"*{block.text}*", ""]
    return "\n".join(lines)


def to_html(title: str, blocks: list[Block]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
             "img{max-width:100%}figcaption{font-style:italic;color:#444}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if block.kind in ("h2", "h3"):
            parts.append(f"<{block.kind}>{html.escape(block.text)}</{block.kind}>")
        elif block.kind == "p" and block.text:
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif block.kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif block.kind == "table":
            headers, rows = block.items
            head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif block.kind == "figure":
            data = base64.b64encode(block.path.read_bytes()).decode()
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block.text)}'>"
                         f"<figcaption>{html.escape(block.text)}</figcaption></figure>")
    return "\n".join([*parts, "</body></html>"]) + "\n"


def _inline(text: str) -> str:
    """The two Markdown marks the report uses: `code` and **bold**."""
    escaped = html.escape(text)
    pieces = escaped.split("`")
    escaped = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
    pieces = escaped.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(pieces))
