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

from analysis import bootstrap
from analysis.curves import INDEPENDENT, JOINT, Curve
from analysis.laws import LOG_HUBER_DELTA
from analysis.pipeline import EXTRAPOLATIONS, LARGEST_ASTRAIOS_BILLIONS, Analysis, Study
from sweeper.io import atomic_write_text

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


def _num(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}g}"


def _with_interval(estimate: float, lower: float, upper: float) -> str:
    if not np.isfinite(lower):
        return f"{_num(estimate)} (no interval)"
    return f"{_num(estimate)} [{_num(lower)}, {_num(upper)}]"


def build(analysis: Analysis, figures: list[Path]) -> list[Block]:
    main, level = analysis.main, analysis.options.level
    blocks = [Block("p", _summary(analysis))]
    if analysis.warnings:
        blocks += [Block("h2", "Warnings"), Block("list", items=tuple(analysis.warnings))]
    blocks += study_blocks(main, level, "Scaling of " + main.y)
    if analysis.alternative:
        blocks += study_blocks(analysis.alternative, level, f"Against trainable parameters ({analysis.alternative.x[0]})")
    if analysis.ranking:
        blocks += [
            Block("h2", "Ranking stability across scales"),
            Block("p", f"Kendall tau between the ranking of the {analysis.by or 'group'}s by {main.y} at consecutive "
                       "scales (1: same order; the paper's claim that small-model loss predicts the large-model ranking)."),
            Block("table", items=(("scales", "Kendall tau", "p-value", "groups"), [
                (f"{a.lower} -> {a.upper}", _num(a.tau.statistic, 3), _num(a.tau.p_value, 2), str(a.tau.n))
                for a in analysis.ranking])),
        ]
    if analysis.links:
        blocks += _downstream_blocks(analysis)
    blocks += [Block("h2", "Figures")]
    blocks += [Block("figure", text=_caption(path), path=path) for path in figures]
    blocks += _method_blocks(analysis)
    return blocks


def _summary(analysis: Analysis) -> str:
    main = analysis.main
    source = analysis.source
    what = (f"sweep folder `{source.path}` ({source.trials} trials: "
            + ", ".join(f"{n} {status}" for status, n in source.statuses.items())
            + "; each cell is its best done trial"
            + (f"; ladder `{source.manifest['space']['ladder']}`" if "ladder" in source.manifest.get("space", {}) else "")
            + ")") if source.is_sweep else f"table `{source.path}`"
    groups = f"{len(main.data.group_names)} {analysis.by}s ({', '.join(main.data.group_names)})" if analysis.by else "one group"
    return (f"Source: {what}. {len(main.data.y)} points, {groups}, {len(analysis.level_names)} scales by "
            f"`{analysis.size}` ({', '.join(analysis.level_names)}). Law: `{main.law.formula}` with "
            f"`{main.y}` as y and `{', '.join(main.x)}` as x. Intervals: {analysis.options.level:.0%} bootstrap "
            f"percentile intervals from {analysis.options.bootstrap} resamples. "
            + (f"Preferred fit (lower leave-one-out error): **{main.preferred}**." if main.comparison else ""))


def study_blocks(study: Study, level: float, title: str) -> list[Block]:
    blocks = [Block("h2", title)]
    labels = list(dict.fromkeys(p.label for p in study.predictions))
    if labels:
        rows = []
        for p_group in study.data.group_names:
            for kind in (INDEPENDENT, JOINT):
                cells = [next((_with_interval(p.estimate, p.lower, p.upper) for p in study.predictions
                               if p.group == p_group and p.kind == kind and p.label == label), None) for label in labels]
                if cells[0] is not None:
                    marker = " (preferred)" if kind == study.preferred and study.comparison else ""
                    rows.append((p_group, kind + marker, *cells))
        blocks += [Block("h3", "Extrapolation"),
                   Block("p", f"Predicted {study.y} at {', '.join(labels)}"
                              + (f": {EXTRAPOLATION_TEXT} times each group's largest `{study.x[0]}`."
                                 if set(labels) <= set(EXTRAPOLATIONS) else f" (`{':'.join(study.x)}`).")),
                   Block("table", items=(("group", "fit", *labels), rows))]
    param_names = (*study.law.exponents, *study.law.coefficients)
    rows = []
    for curve in study.curves.all():
        samples_of = _param_intervals(curve, level)
        for group in curve.fit.group_names:
            values = curve.fit.params(group)
            rows.append((group, curve.kind, *(_with_interval(values[n], *samples_of(group, n)) for n in param_names),
                         str(curve.fit.dof), "yes" if curve.fit.converged else "NO"))
    blocks += [Block("h3", "Fitted parameters"),
               Block("p", "Joint fit: exponents shared by all groups, coefficients per group."
                     if study.curves.joint else ""),
               Block("table", items=(("group", "fit", *param_names, "dof", "converged"), rows))]
    if study.comparison:
        rows = [(c.kind + (" (preferred)" if c.kind == study.preferred else ""), str(c.params),
                 _num(c.loo_mean_abs_error, 3), _num(c.aic, 5), _num(c.aicc, 5)) for c in study.comparison]
        blocks += [Block("h3", "Joint vs. independent fits"),
                   Block("p", f"Leave-one-out mean absolute error over {study.comparison[0].loo_predicted} points "
                              + ("(log residual, about a relative error)" if study.law.log_residuals else "")
                              + "; AIC from the Laplace likelihood of the residuals (AICc: small-sample corrected)."),
                   Block("table", items=(("fit", "parameters", "LOO error", "AIC", "AICc"), rows))]
    if study.backtest:
        bt = study.backtest
        rows = [(p.group, p.kind, _num(p.observed), _with_interval(p.predicted, p.lower, p.upper),
                 f"{p.relative_error:+.2%}",
                 "n/a" if not np.isfinite(p.lower) else "yes" if p.lower <= p.observed <= p.upper else "no")
                for p in bt.points]
        summary = "; ".join(f"{kind}: mean |relative error| {bt.mean_abs_relative_error(kind):.2%}" for kind in bt.kinds())
        blocks += [Block("h3", f"Backtest: predicting {bt.held_out_level} without it"),
                   Block("p", f"Fitted on every smaller scale, predicted at {bt.held_out_level}. {summary}."),
                   Block("table", items=(("group", "fit", "observed", "predicted", "error", "inside interval"), rows))]
    return blocks


def _param_intervals(curve: Curve, level: float):
    def interval(group: str, name: str) -> tuple[float, float]:
        if curve.boot is None:
            return np.nan, np.nan
        low, high = bootstrap.interval(bootstrap.parameter_samples(curve.fit, curve.boot, group)[name], level)
        return float(low), float(high)

    return interval


def _downstream_blocks(analysis: Analysis) -> list[Block]:
    main = analysis.main
    rows = [(f"{link.task} / {link.metric}", _num(link.correlation.statistic, 3), _num(link.correlation.p_value, 2),
             str(link.correlation.n), link.note or _link_params(link)) for link in analysis.links]
    blocks = [Block("h2", "Downstream scores"),
              Block("p", f"Spearman correlation of {main.y} with each score across all cells, and the "
                         f"`{analysis.link_law.formula}` link fitted across methods and scales."),
              Block("table", items=(("task / metric", "Spearman", "p-value", "cells", "link"), rows))]
    for link in analysis.links:
        if not link.predictions:
            continue
        labels = list(dict.fromkeys(p.label for p in link.predictions))
        table = [(group, *(next(_with_interval(p.score, p.lower, p.upper) for p in link.predictions
                                if p.group == group and p.label == label) for label in labels))
                 for group in dict.fromkeys(p.group for p in link.predictions)]
        blocks += [Block("h3", f"Two-step prediction: {link.task} / {link.metric}"),
                   Block("p", f"Scale -> {main.y} ({main.preferred} fit) -> score (link), bootstrapped through "
                              "both steps on the same resampled cells."),
                   Block("table", items=(("group", *labels), table))]
    return blocks


def _link_params(link) -> str:
    return ", ".join(f"{name} = {_num(value)}" for name, value in link.fit.params("all").items())


def _caption(path: Path) -> str:
    name = path.stem
    if name.startswith("curves-"):
        return (f"y vs {name.removeprefix('curves-')}: observed points, independent (solid) and joint (dashed) "
                "fits, interval band of the preferred fit, extrapolated region shaded, predictions with intervals.")
    if name.startswith("link-"):
        return f"Loss -> score link for {name.removeprefix('link-')}, with two-step predictions (open diamonds)."
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
                   "first-order optimality certificate. Links are fitted by least squares. Bootstrap: points "
                   "resampled within each group, every fit redone on every resample (the two-step predictions "
                   "chain both steps on the same resample); resamples that cannot identify every parameter "
                   "are left out and counted."),
        Block("p", f"Provenance: git {prov.get('git_sha', 'unknown')}{' (dirty)' if prov.get('git_dirty') else ''}; "
                   f"{versions}; host {prov.get('hardware', {}).get('host', '?')}; "
                   f"written {datetime.now(UTC).isoformat(timespec='seconds')}."),
    ]


def print_blocks(title: str, blocks: list[Block]) -> None:
    """Headings, paragraphs and tables on the terminal (figures are files: not shown)."""
    from rich.table import Table

    from sweeper.console import console as make_console

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
                table.add_row(*(str(cell) for cell in row))
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
