"""`sweeper fit` and `sweeper report`: thin wrappers over `analysis.pipeline` (heavy imports inside)."""

import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from sweeper.core.errors import UserError
from sweeper.core.io import check_writable
from sweeper.sweep.folder import SweepFolder

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
AgainstOption = Annotated[str | None, typer.Option(
    "--against", help="Another sweep of the same grid under the other fair design (one learning rate for all vs. "
                      "a per-cell search with the same budget): the report shows the method ranking under both.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the results as JSON.")]


def _shared_options(
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
    against: AgainstOption = None,
    json_: JsonOption = False,
) -> None:
    """The options `fit` and `report` share: both commands take their signature from this one."""


HoldoutOption = Annotated[bool, typer.Option(
    "--holdout-largest", help="Backtest: fit without the largest scale and report the error on it.")]


def _options_of(command: Callable[..., None], *extra: inspect.Parameter) -> Callable[..., None]:
    """Give `command` the shared options (and `extra` ones, after --size) as its signature, which is what
    typer reads; the command receives them as keyword arguments."""
    shared = list(inspect.signature(_shared_options).parameters.values())
    at = [p.name for p in shared].index("size") + 1
    command.__signature__ = inspect.Signature([*shared[:at], *extra, *shared[at:]], return_annotation=None)
    return command


def fit(**given: Any) -> None:
    """Fit scaling laws to a sweep or a table: parameters, extrapolations and backtest, with intervals.

    Writes results.parquet / results.csv / results.json and the figures to --out.
    """
    from analysis.tables import to_json

    holdout_largest, json_ = given["holdout_largest"], given["json_"]
    analysis, table, folder, written = _run(given["source"], _options(given), given["out"], quiet=json_,
                                            backtest=holdout_largest, with_report=False, against=given["against"])
    if json_:
        typer.echo(json.dumps(to_json(analysis, table), default=str))
        return
    _print_summary(analysis)
    typer.echo(f"wrote {', '.join(p.name for p in written)} to {folder}")


def report(**given: Any) -> None:
    """Write report.md and report.html (figures embedded, backtest included) for a sweep or a table."""
    from analysis.tables import to_json

    json_ = given["json_"]
    analysis, table, folder, written = _run(given["source"], _options(given), given["out"], quiet=json_,
                                            backtest=True, with_report=True, against=given["against"])
    if json_:
        typer.echo(json.dumps({**to_json(analysis, table),
                               "written": [str(p) for p in written]}, default=str))
        return
    _print_warnings(analysis)
    typer.echo(f"wrote {folder / 'report.md'} and {folder / 'report.html'} (+ {len(written) - 2} files)")


def write_default_report(source: str | Path) -> tuple[Any, Path, list[Path]]:
    """`sweeper report SOURCE` with every default (the main job's last step): (analysis, folder, files)."""
    defaults = {name: p.default for name, p in inspect.signature(_shared_options).parameters.items()}
    analysis, _, folder, written = _run(str(source), _options(defaults), None, quiet=False, backtest=True,
                                        with_report=True)
    return analysis, folder, written


def _options(given: dict[str, Any]) -> Any:
    """The command-line options as a validated `analysis.pipeline.Options`."""
    from analysis.pipeline import Options

    return Options.parse({
        "x": _split(given["x"]), "y": given["y"], "by": given["by"], "law": given["law"], "link": given["link"],
        "predict": _points(given["predict"]), "size": given["size"],
        "holdout_largest": given.get("holdout_largest", False), "bootstrap": given["bootstrap"],
        "drop_invalid": given["drop_invalid"], "define": tuple(given["define"] or ()), "where": given["where"],
        "seed": given["seed"],
    }, "options")


_options_of(fit, inspect.Parameter("holdout_largest", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False,
                                   annotation=HoldoutOption))
_options_of(report)


def _run(source: str, options, out: str | None, quiet: bool, backtest: bool, with_report: bool,
         against: str | None = None):
    """Analyse, then write tables, figures (and the report) into the output folder; returns the analysis,
    its results table, the folder and the files written. `against`: another design's sweep (--against)."""
    from analysis.pipeline import analyze, progress
    from analysis.plots import write_figures
    from analysis.report import write_report
    from analysis.sources import load_source
    from analysis.tables import results_table, write_tables
    from analysis.workers import pool

    loaded = load_source(source)
    other = load_source(against) if against is not None else None
    folder = Path(out) if out else (SweepFolder(loaded.path).analysis if loaded.is_sweep
                                    else Path(f"analysis-{loaded.path.stem}"))
    check_writable(folder)  # before the work, not after it
    with pool(), progress(enabled=not quiet) as step:
        analysis = analyze(loaded, options, backtest=backtest, step=step, against=other)
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
    from analysis.report import design_blocks, findings_blocks, forecast_blocks, print_blocks, study_blocks

    main = analysis.main
    if main.outlook is not None:
        print_blocks(f"{analysis.source.name}: forecast of {main.y} ({len(main.data.y)} points)", forecast_blocks(analysis))
    findings = findings_blocks(analysis) + design_blocks(analysis)
    if findings:
        print_blocks(f"{analysis.source.name}: the paper's findings at this size", findings)
    title = f"{main.y} ~ {main.law.formula} (x = {', '.join(main.x)}; {analysis.options.level:.0%} bootstrap intervals)"
    print_blocks(title, study_blocks(main, analysis.options.level, "Single-law fits"))
    _print_warnings(analysis)


def warning_lines(analysis) -> list[str]:
    """The analysis's warnings and notes, one line each, as `fit`, `report` and the main job print them."""
    return [f"warning: {w}" for w in analysis.warnings] + [f"note: {n}" for n in analysis.notes]


def _print_warnings(analysis) -> None:
    for line in warning_lines(analysis):
        typer.echo(line, err=True)


TargetOption = Annotated[str, typer.Option(
    "--target", help="METHOD@SCALE[,...]: SCALE is 34B-equivalent / 70B-equivalent (that multiple of the method's "
                     "largest trained size), a scale of the sweep's ladder (e.g. xl), or a total parameter count.")]
ObjectiveOption = Annotated[str, typer.Option(
    "--objective", help="width: the targets' relative interval width; ranking: the probability that the method "
                        "leading at the targets' scale is the best.")]
BudgetUsdOption = Annotated[float | None, typer.Option("--budget-usd", min=0, help="Spend at most this ($, the plan's prices).")]
BudgetHoursOption = Annotated[float | None, typer.Option(
    "--budget-device-hours", min=0, help="Spend at most this many device-hours (instead of --budget-usd).")]
CandidatesOption = Annotated[str, typer.Option("--candidates", help="scales | seeds | methods | all")]
DrawsOption = Annotated[int, typer.Option("--draws", min=2, help="Simulated outcomes per candidate.")]


def advise(source: SourceArgument, target: TargetOption, objective: ObjectiveOption = "width",
           budget_usd: BudgetUsdOption = None, budget_device_hours: BudgetHoursOption = None,
           candidates: CandidatesOption = "all", draws: DrawsOption = 16, seed: SeedOption = 0,
           json_: JsonOption = False) -> None:
    """Which runs to buy next: each candidate's expected effect on the target forecast, per unit of cost.

    Simulates each candidate's results from the current forecast and refits (preposterior analysis);
    ranks by expected improvement per $ (or device-hour), chooses greedily under the budget, and keeps
    the advice in SWEEP/advice/.
    """
    import sys

    from analysis.advice import run_advice, run_command, to_json, write_record
    from analysis.pipeline import progress
    from analysis.sources import load_source

    loaded = load_source(source)
    with progress(enabled=not json_) as step:
        step("simulating candidates")
        advice = run_advice(loaded, target, objective, budget_usd, budget_device_hours, candidates, draws, seed)
    record, runs = write_record(loaded, advice, sys.argv[1:])
    if json_:
        typer.echo(json.dumps({**to_json(advice), "record": str(record), "advice_file": runs and str(runs)},
                              default=float))
        return
    _print_advice(advice)
    typer.echo(f"advice kept in {record}")
    if runs is not None:
        typer.echo(f"run it: {run_command(loaded, runs)}")


def _print_advice(advice) -> None:
    from analysis import advise as preposterior
    from analysis.report import Block, print_blocks

    study, before = advice.study, advice.before
    width = study.objective == preposterior.WIDTH
    what = "relative 95% interval width" if width else "probability that the leader is the best"
    unit = "$" if advice.cost == "usd" else "device-h"
    names = study.data.group_names
    targets = ", ".join(dict.fromkeys(f"{names[t.group]}@{t.label}" for t in study.targets))
    rows = [(a.candidate.name, f"{getattr(a.candidate, advice.cost):.3g}", f"{before:.4f} -> {a.after:.4f} ± {a.after_se:.4f}",
             f"{preposterior.improvement(a, before, study.objective) / max(getattr(a.candidate, advice.cost), 1e-12):.3g}")
            for a in advice.assessed]
    blocks = [Block("p", f"Target: {targets}; objective: {what}, now {before:.4f}."),
              Block("table", items=(("candidate", unit, f"expected {study.objective} before -> after", f"gain per {unit}"),
                                    rows))]
    choice = advice.choice
    if choice.chosen:
        spent = sum(getattr(a.candidate, advice.cost) for a in choice.chosen)
        together = choice.together
        blocks.append(Block("p", f"Chosen{'' if advice.budget is None else f' within {advice.budget:g} {unit}'} "
                                 f"(greedy by {choice.rule}): {', '.join(a.candidate.name for a in choice.chosen)} "
                                 f"({spent:.3g} {unit}); expected {study.objective} after all of them: "
                                 f"{together.after:.4f} ± {together.after_se:.4f}."))
    else:
        blocks.append(Block("p", "No candidate is expected to improve the objective (or none fits the budget)."))
    if advice.unvalued:
        blocks.append(Block("list", items=tuple(advice.unvalued)))
    print_blocks(f"advice ({advice.seconds:.1f} s)", blocks)
