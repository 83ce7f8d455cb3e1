"""`sweeper fit` and `sweeper report`: thin wrappers over `analysis.pipeline` (heavy imports inside)."""

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from sweeper.core.errors import UserError

SourceArgument = Annotated[str, typer.Argument(help="A sweep folder (reads its ledger) or a CSV / parquet table.")]
XOption = Annotated[str | None, typer.Option(
    "--x", help="x column(s), comma-separated in the law's input order (sweep default: total_params).")]
YOption = Annotated[str | None, typer.Option("--y", help="y column (sweep default: final_val_loss).")]
ByOption = Annotated[str | None, typer.Option("--by", help="One curve per value of this column (sweep default: method).")]
LawOption = Annotated[str | None, typer.Option(
    "--law", help="power | curved | loglog | chinchilla | multiplicative | sigmoid | exponential. Default: the "
                  "forecast averages power, loglog and curved (one x) or fits chinchilla (two x); with --law it "
                  "uses that law alone.")]
LinkOption = Annotated[str, typer.Option("--link", help="Loss -> downstream score link for a sweep's evals.")]
PredictOption = Annotated[str | None, typer.Option(
    "--predict", help="Extrapolate to these x: 3.4e10,7e10 (two-input laws: N:D,N:D). "
                      "Sweep default: 34B- and 70B-equivalent (34/15.5 and 70/15.5 x the largest scale).")]
SizeOption = Annotated[str | None, typer.Option(
    "--size", help="Column whose values are the scales (backtest, rankings); default: scale for a sweep, else the first x.")]
BootstrapOption = Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples (0: no intervals).")]
DropOption = Annotated[bool, typer.Option(
    "--drop-invalid", help="Drop rows with a missing, NaN or infinite value instead of stopping.")]
DefineOption = Annotated[list[str] | None, typer.Option(
    "--define", help='New column NAME=SQL expression (repeatable), e.g. D="Training FLOP" / (6 * "Model Size").')]
WhereOption = Annotated[str | None, typer.Option("--where", help="Keep rows where this SQL condition holds, e.g. loss < 3.42.")]
SeedOption = Annotated[int, typer.Option("--seed", min=0, help="Seed of the bootstrap resampling.")]
OutOption = Annotated[str | None, typer.Option(
    "--out", help="Output folder (default: <sweep>/analysis, or analysis-<file stem> in the current folder).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the results as JSON.")]


def fit(
    source: SourceArgument,
    x: XOption = None,
    y: YOption = None,
    by: ByOption = None,
    law: LawOption = None,
    link: LinkOption = "exponential",
    predict: PredictOption = None,
    size: SizeOption = None,
    holdout_largest: Annotated[bool, typer.Option(
        "--holdout-largest", help="Backtest: fit without the largest scale and report the error on it.")] = False,
    bootstrap: BootstrapOption = 1000,
    drop_invalid: DropOption = False,
    define: DefineOption = None,
    where: WhereOption = None,
    seed: SeedOption = 0,
    out: OutOption = None,
    json_: JsonOption = False,
) -> None:
    """Fit scaling laws to a sweep or a table: parameters, extrapolations and backtest, with intervals.

    Writes results.parquet / results.csv / results.json and the figures to --out.
    """
    from analysis.tables import to_json

    options = _options(x, y, by, law, link, predict, size, holdout_largest, bootstrap, drop_invalid, define, where, seed)
    analysis, table, folder, written = _run(source, options, out, quiet=json_, backtest=holdout_largest,
                                            with_report=False)
    if json_:
        typer.echo(json.dumps(to_json(analysis, table), default=str))
        return
    _print_summary(analysis)
    typer.echo(f"wrote {', '.join(p.name for p in written)} to {folder}")


def report(
    source: SourceArgument,
    x: XOption = None,
    y: YOption = None,
    by: ByOption = None,
    law: LawOption = None,
    link: LinkOption = "exponential",
    predict: PredictOption = None,
    size: SizeOption = None,
    bootstrap: BootstrapOption = 1000,
    drop_invalid: DropOption = False,
    define: DefineOption = None,
    where: WhereOption = None,
    seed: SeedOption = 0,
    out: OutOption = None,
    json_: JsonOption = False,
) -> None:
    """Write report.md and report.html (figures embedded, backtest included) for a sweep or a table."""
    from analysis.tables import to_json

    options = _options(x, y, by, law, link, predict, size, False, bootstrap, drop_invalid, define, where, seed)
    analysis, table, folder, written = _run(source, options, out, quiet=json_, backtest=True, with_report=True)
    if json_:
        typer.echo(json.dumps({**to_json(analysis, table),
                               "written": [str(p) for p in written]}, default=str))
        return
    _print_warnings(analysis)
    typer.echo(f"wrote {folder / 'report.md'} and {folder / 'report.html'} (+ {len(written) - 2} files)")


def write_default_report(source: str | Path) -> tuple[Any, Path, list[Path]]:
    """`sweeper report SOURCE` with every default (the main job's last step): (analysis, folder, files)."""
    options = _options(None, None, None, None, "exponential", None, None, False, 1000, False, None, None, 0)
    analysis, _, folder, written = _run(str(source), options, None, quiet=False, backtest=True, with_report=True)
    return analysis, folder, written


def _options(x, y, by, law, link, predict, size, holdout_largest, bootstrap, drop_invalid, define, where, seed):
    """The command-line options as a validated `analysis.pipeline.Options`."""
    from analysis.pipeline import Options

    return Options.parse({
        "x": _split(x), "y": y, "by": by, "law": law, "link": link, "predict": _points(predict), "size": size,
        "holdout_largest": holdout_largest, "bootstrap": bootstrap, "drop_invalid": drop_invalid,
        "define": tuple(define or ()), "where": where, "seed": seed,
    }, "options")


def _run(source: str, options, out: str | None, quiet: bool, backtest: bool, with_report: bool):
    """Analyse, then write tables, figures (and the report) into the output folder; returns the analysis,
    its results table, the folder and the files written."""
    from analysis.pipeline import analyze, progress
    from analysis.plots import write_figures
    from analysis.report import write_report
    from analysis.sources import load_source
    from analysis.tables import results_table, write_tables
    from analysis.workers import pool
    from sweeper.core.io import check_writable
    from sweeper.sweep.folder import SweepFolder

    loaded = load_source(source)
    folder = Path(out) if out else (SweepFolder(loaded.path).analysis if loaded.is_sweep
                                    else Path(f"analysis-{loaded.path.stem}"))
    check_writable(folder)  # before the work, not after it
    with pool(), progress(enabled=not quiet) as step:
        analysis = analyze(loaded, options, backtest=backtest, step=step)
        step("writing figures")
        folder.mkdir(parents=True, exist_ok=True)
        table = results_table(analysis)
        written = write_tables(analysis, table, folder)
        figures = write_figures(analysis, folder)
        written += figures
        if with_report:
            written = write_report(analysis, figures, folder) + written
    return analysis, table, folder, written


def _split(text: str | None) -> tuple[str, ...] | None:
    return tuple(part.strip() for part in text.split(",") if part.strip()) if text else None


def _points(text: str | None) -> tuple[tuple[float, ...], ...]:
    """--predict 3.4e10,7e10 or N:D,N:D -> points."""
    if text is None:
        return ()
    points = []
    if not _split(text):
        raise UserError(f"--predict {text!r}: expected numbers such as 3.4e10,7e10 (or N:D pairs)")
    for point in _split(text):
        try:
            values = tuple(float(value) for value in point.split(":"))
        except ValueError:
            raise UserError(f"--predict {text!r}: {point!r} is not a number (or N:D pair of numbers)") from None
        if not all(math.isfinite(value) for value in values):
            raise UserError(f"--predict {text!r}: {point!r} is not a finite number")
        points.append(values)
    return tuple(points)


def _print_summary(analysis) -> None:
    """The main study's tables (extrapolation, parameters, comparison, backtest) on the terminal."""
    from analysis.report import forecast_blocks, print_blocks, study_blocks

    main = analysis.main
    if main.outlook is not None:
        print_blocks(f"{analysis.source.name}: forecast of {main.y} ({len(main.data.y)} points)", forecast_blocks(analysis))
    title = f"{main.y} ~ {main.law.formula} (x = {', '.join(main.x)}; {analysis.options.level:.0%} bootstrap intervals)"
    print_blocks(title, study_blocks(main, analysis.options.level, "Single-law fits"))
    _print_warnings(analysis)


def _print_warnings(analysis) -> None:
    for warning in analysis.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for note in analysis.notes:
        typer.echo(f"note: {note}", err=True)
