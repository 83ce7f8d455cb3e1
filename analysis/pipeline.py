"""One analysis, from a source and the options of `sweeper fit` / `sweeper report` to every number.

Steps: read the source; pick the columns (sweep defaults: final validation loss vs. total parameters,
one curve per method); check them; fit each method alone and all jointly, bootstrapped on the same
resamples; compare the two; extrapolate; backtest on the largest scale; for a sweep, also fit against
trainable parameters (backtested, not extrapolated: see `_study`) and link the loss to the downstream
scores.

With a single group every fit failure is an error (the bad-input rules of `sweeper fit`). With several
groups a failed fit (underdetermined, not converged) is reported and the rest goes on; only a study in
which nothing at all could be fitted is an error.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from pydantic import Field, NonNegativeInt

from analysis import bootstrap, downstream, workers
from analysis.backtest import Backtest, run_backtest
from analysis.compare import Comparison, compare, preferred
from analysis.curves import INDEPENDENT, JOINT, Curves, describe_failures, fit_curves
from analysis.designs import SideBySide, side_by_side
from analysis.diagnostics import forecast_warnings
from analysis.fitting import FitData
from analysis.forecast import (
    Coverage,
    Design,
    Forecast,
    HeldOut,
    Target,
    backtest_largest,
    candidates,
    forecast,
    sample,
    scale_index,
    simulate_coverage,
)
from analysis.laws import LAWS, Law
from analysis.sources import Source, add_columns, filter_rows, require_columns, require_numeric
from sweeper.core import provenance
from sweeper.core.config import Frozen
from sweeper.core.errors import UserError
from sweeper.sweep.folder import SweepFolder

SWEEP_X = "total_params"
SWEEP_ALTERNATIVE_X = "trainable_params"  # the paper's second view: loss vs. updated parameters
SWEEP_Y = "final_val_loss"
SWEEP_BY = "method"
SWEEP_SIZE = "scale"
# Astraios' largest model is StarCoderBase 15.5B; its extrapolations are to 34B and 70B (the sizes of
# CodeLlama-34B and Llama-2-70B). A ladder with another largest scale gets the same multiples of it.
LARGEST_ASTRAIOS_BILLIONS = 15.5
EXTRAPOLATIONS = {"34B-equivalent": 34.0 / LARGEST_ASTRAIOS_BILLIONS, "70B-equivalent": 70.0 / LARGEST_ASTRAIOS_BILLIONS}
# Warn when more than this share of bootstrap resamples had to be left out.
LEFT_OUT_WARNING = 0.2
FORECAST = "forecast"  # the kind of the model-averaged, calibrated predictions
WIN_DRAWS = 4000  # forecast draws behind "which method wins at the target, and how sure"
HIGHER_IS_BETTER = ("acc", "score", "pass@", "f1", "bleu", "exact_match")  # y names where more is better


class Options(Frozen):
    """What to fit. None means the default for the source (see the module docstring)."""

    x: tuple[str, ...] | None = None
    y: str | None = None
    by: str | None = None
    law: str | None = None  # default: power with one x column, chinchilla with two
    link: str = "exponential"
    predict: tuple[tuple[float, ...], ...] = ()  # points in x space (one value per x column)
    size: str | None = None  # what "scale" means for the backtest and the rankings
    holdout_largest: bool = False
    level: float = Field(default=bootstrap.LEVEL, gt=0, lt=1)  # interval coverage (before `bootstrap`
    bootstrap: NonNegativeInt = 1000  # shadows the module name inside this class body)
    drop_invalid: bool = False
    define: tuple[str, ...] = ()  # NAME=SQL expression
    where: str | None = None  # SQL condition on rows
    seed: int = 0


@dataclass(frozen=True)
class Prediction:
    kind: str  # INDEPENDENT or JOINT
    group: str
    label: str
    X: np.ndarray  # (d,)
    estimate: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Outlook:
    """The headline forecast of a study (`analysis.forecast`): the model-averaged, calibrated predictive
    intervals, how such intervals did on simulated data of this design, and the leave-largest-out
    backtest of the whole procedure."""

    design: Design
    result: Forecast
    coverage: Coverage | None  # None without targets
    held_out: list[HeldOut]
    held_out_level: str
    held_out_note: str  # why there is no held-out backtest, when there is none
    win: list["Win"]  # which group is best at each target label, and how sure
    # With --law: the default ensemble's leave-largest-out backtest on the same points, to compare with.
    default_held_out: list[HeldOut] | None = None



@dataclass(frozen=True)
class Win:
    label: str
    best: str  # the group with the best forecast (lowest y, or highest where higher is better)
    probability: float  # share of joint forecast draws in which it is the best


@dataclass(frozen=True)
class Study:
    """The curves of y against one choice of x, with everything derived from them."""

    x: tuple[str, ...]
    y: str
    law: Law
    data: FitData
    curves: Curves
    comparison: list[Comparison]
    preferred: str  # INDEPENDENT or JOINT: the lower leave-one-out error (or the only complete one)
    predictions: list[Prediction]  # the FORECAST ones first, then each single-law fit's
    backtest: Backtest | None
    outlook: Outlook | None = None  # the headline forecast (None for the trainable-parameter view)

    @property
    def headline(self) -> str:
        """The kind of prediction a reader should act on: FORECAST where there is one."""
        return FORECAST if self.outlook is not None else self.preferred


@dataclass
class Analysis:
    source: Source
    options: Options
    by: str | None
    size: str
    frame: pl.DataFrame  # the points, in the order of every FitData
    levels: np.ndarray  # (n,) scale index of each point
    level_names: list[str]
    main: Study
    alternative: Study | None  # a sweep: the same curves against trainable parameters
    ranking: list[downstream.RankAgreement]  # of the groups by y, between consecutive scales
    links: list[downstream.Link]
    link_law: Law
    designs: SideBySide | None = None  # the ranking beside another design's sweep (--against)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # about the single-law fits' bootstrap intervals
    provenance: dict = field(default_factory=dict)


@contextmanager
def progress(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr naming the fit in progress (stdout stays clean for --json)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TextColumn("[{task.completed} fits]"),
               TimeElapsedColumn())
    console = Console(stderr=True)
    # Off a terminal a transient bar draws nothing but still ends with a blank line on stderr.
    with Progress(*columns, console=console, transient=True, disable=not (enabled and console.is_terminal)) as bar:
        task = bar.add_task("fitting", total=None)
        yield lambda text: bar.update(task, description=text, advance=1)


def analyze(source: Source, options: Options, backtest: bool = False,
            step: Callable[[str], None] = lambda _: None, against: Source | None = None) -> Analysis:
    """Run the whole analysis; bad input raises UserError before anything is written. `against`: another
    design of the same grid (a sweep), whose method ranking is shown beside this one's."""
    where = str(source.path)
    table = filter_rows(add_columns(source.table, list(options.define), where), options.where, where)
    x = options.x or ((SWEEP_X,) if source.is_sweep else None)
    y = options.y or (SWEEP_Y if source.is_sweep else None)
    if x is None or y is None:
        raise UserError(f"{where}: a table needs --x COLUMN and --y COLUMN; columns: {', '.join(table.columns)}")
    by = options.by or (SWEEP_BY if source.is_sweep and SWEEP_BY in table.columns else None)
    size = options.size or (SWEEP_SIZE if source.is_sweep and SWEEP_SIZE in table.columns else x[0])
    law = LAWS.get(options.law or ("power" if len(x) == 1 else "chinchilla"))
    link_law = LAWS.get(options.link)
    if len(x) != len(law.inputs):
        raise UserError(
            f"--law {law.name} ({law.formula}) takes {len(law.inputs)} x column(s) "
            f"({', '.join(law.inputs)}), but --x gives {len(x)}: {', '.join(x)}"
        )
    _check_predict(options.predict, law)
    columns = list(dict.fromkeys([*x, y, *([by] if by else []), size]))
    require_columns(table, columns, where)
    require_numeric(table, [*x, y], where)
    frame, warnings = _valid_rows(table, columns, options.drop_invalid, where)
    _check_positive(frame, law, x, where)
    levels, level_names = scale_levels(frame, size, x[0])
    compared = side_by_side(source, against, level_names) if against is not None else None
    if options.holdout_largest and len(level_names) < 2:
        raise UserError(f"{where}: --holdout-largest needs at least two values of {size!r}; found {len(level_names)}")
    rng = np.random.default_rng(options.seed)
    data = fit_data(frame, x, y, by)
    groups, group_names = data.groups, data.group_names
    if np.ptp(data.y) == 0:
        raise UserError(f"{where}: every value of {y!r} is {data.y[0]:g}: there is no trend to fit")
    warnings += _single_scale_groups(data, by)
    counts = bootstrap.resample_counts(data.groups, options.bootstrap, rng)
    do_backtest = (backtest or options.holdout_largest) and len(level_names) >= 2
    main = _study(law, x, y, data, counts, levels, level_names, options, rng, step, do_backtest=do_backtest,
                  predict=True, scale_defaults=source.is_sweep)
    if options.holdout_largest and len(group_names) == 1 and main.backtest and not main.backtest.points:
        raise UserError(f"{where}: --holdout-largest: {main.backtest.note}")  # asked for, on one curve: strict
    alternative = None
    if source.is_sweep and not options.x and len(law.inputs) == 1 and _usable_x(frame, SWEEP_ALTERNATIVE_X):
        alt_data = FitData(X=_matrix(frame, (SWEEP_ALTERNATIVE_X,)), y=data.y, groups=groups, group_names=group_names)
        try:
            alternative = _study(law, (SWEEP_ALTERNATIVE_X,), y, alt_data, counts, levels, level_names, options, rng,
                                 step, do_backtest=do_backtest, predict=False, scale_defaults=False)
        except UserError as err:  # an optional view: its failure is reported, not fatal
            warnings.append(f"no fit against {SWEEP_ALTERNATIVE_X}: {err}")
    ranking = downstream.ranking_stability(data.y, groups, levels, level_names) if by else []
    links = _links(source, frame, main, link_law, counts, options.level, rng, step) if source.is_sweep else []
    analysis = Analysis(
        source=source, options=options, by=by, size=size, frame=frame, levels=levels, level_names=level_names,
        main=main, alternative=alternative, ranking=ranking, links=links, link_law=link_law,
        designs=compared, warnings=warnings, provenance=provenance.collect(),
    )
    loud, quiet = _fit_warnings(analysis)
    analysis.warnings.extend(loud)
    analysis.notes.extend(quiet)
    return analysis


def _study(law: Law, x: tuple[str, ...], y: str, data: FitData, counts: np.ndarray, levels: np.ndarray,
           level_names: list[str], options: Options, rng: np.random.Generator, step: Callable[[str], None], *,
           do_backtest: bool, predict: bool, scale_defaults: bool) -> Study:
    """Fit, compare, extrapolate and backtest one choice of x.

    `predict` is False for the trainable-parameter view: how many parameters a method trains at a
    34B-equivalent scale depends on its configuration there (all of them for full fine-tuning; for
    LoRA or adapters, a function of width and depth that differs per method), which the ledger does not
    give, so a multiple of the largest trainable count would be a prediction at no real model. The
    backtest, at a trained scale whose trainable count is known, judges that view instead."""
    what = f"{y} vs {', '.join(x)}"
    curves = fit_curves(law, data, counts, what, step)
    _check_failures(curves, what)
    step(f"{what}: leave-one-out")
    comparison = compare(curves)
    chosen = preferred(comparison) if comparison else (JOINT if curves.joint else INDEPENDENT)
    points = _prediction_points(data, law, options.predict, scale_defaults, levels) if predict else {}
    predictions = []
    for curve in curves.all():
        for group in curve.fit.group_names:
            for label, X in points.get(group, []):
                low, high = bootstrap.prediction_interval(curve.fit, curve.boot, group, X, options.level)
                predictions.append(Prediction(
                    kind=curve.kind, group=group, label=label, X=X[0], estimate=float(curve.fit.predict(X, group)[0]),
                    lower=float(low[0]), upper=float(high[0]),
                ))
    backtest = None
    if do_backtest:
        backtest = run_backtest(law, data, levels, level_names, options.bootstrap, rng, options.level, step)
    outlook = None
    if predict:
        outlook = _outlook(data, levels, level_names, y, points, options, rng, step)
        headline = [Prediction(kind=FORECAST, group=data.group_names[t.group], label=t.label, X=t.X,
                               estimate=float(outlook.result.estimate[0, j]), lower=float(outlook.result.lower[0, j]),
                               upper=float(outlook.result.upper[0, j]))
                    for j, t in enumerate(outlook.result.targets)]
        predictions = headline + predictions
    return Study(x=x, y=y, law=law, data=data, curves=curves, comparison=comparison, preferred=chosen,
                 predictions=predictions, backtest=backtest, outlook=outlook)


def _outlook(data: FitData, levels: np.ndarray, level_names: list[str], y: str,
             points: dict[str, list[tuple[str, np.ndarray]]], options: Options, rng: np.random.Generator,
             step: Callable[[str], None]) -> Outlook:
    """The headline forecast: the ensemble (or the one --law) averaged and calibrated on the data's own
    backtests, its coverage on simulated draws of this design, its leave-largest-out backtest and, per
    target, which group is best and how sure."""
    design = Design(X=data.X, groups=data.groups, group_names=data.group_names, levels=scale_index(data.X, data.groups))
    variants = candidates(options.law, data.X.shape[1], len(data.group_names))
    targets = [Target(data.group_names.index(group), label, X[0]) for group, pairs in points.items()
               for label, X in pairs]
    step(f"{y}: forecast ({len(variants)} candidate fits, rolling-origin backtests)")
    result = forecast(design, data.y, targets, variants, options.level)
    coverage = None
    if targets:
        step(f"{y}: calibration check on simulated draws")
        coverage = simulate_coverage(design, result, options.level, seed=options.seed)
    # Each group's own largest scale is held out: one name when they are the same scale.
    tops = {int(levels[data.groups == g].max()) for g in range(len(data.group_names))}
    held_out_level = level_names[tops.pop()] if len(tops) == 1 else "each group's largest scale"
    step(f"{y}: forecast backtest without {held_out_level}")
    held_out, note = backtest_largest(design, data.y, variants, options.level)
    default_held_out = None
    if options.law is not None and data.X.shape[1] == 1 and LAWS.get(options.law).log_residuals:
        step(f"{y}: backtest of the default forecast, to compare --law {options.law} with")
        default_held_out, _ = backtest_largest(design, data.y, candidates(None, 1, len(data.group_names)),
                                               options.level)
    return Outlook(design=design, result=result, coverage=coverage, held_out=held_out,
                   held_out_level=held_out_level, held_out_note=note,
                   win=_wins(result, data.group_names, y, rng), default_held_out=default_held_out)


def lower_is_better(y: str) -> bool:
    """Whether a smaller y is better: a loss or an error (by name), unless the name says it is a score."""
    return downstream.lower_is_better(y) or not any(marker in y.lower() for marker in HIGHER_IS_BETTER)


def _wins(result: Forecast, group_names: tuple[str, ...], y: str, rng: np.random.Generator) -> list[Win]:
    """Per target label with several groups: the group whose forecast is best in most joint draws."""
    labels = list(dict.fromkeys(t.label for t in result.targets))
    if len(group_names) < 2 or not labels:
        return []
    draws = sample(result, WIN_DRAWS, rng)
    wins = []
    for label in labels:
        columns = [j for j, t in enumerate(result.targets) if t.label == label and np.isfinite(result.estimate[0, j])]
        if len(columns) < 2:
            continue
        values = draws[:, columns]
        best = np.argmin(values, axis=1) if lower_is_better(y) else np.argmax(values, axis=1)
        counts = np.bincount(best, minlength=len(columns))
        leader = int(np.argmax(counts))
        wins.append(Win(label=label, best=group_names[result.targets[columns[leader]].group],
                        probability=float(counts[leader] / len(draws))))
    return wins


def _check_failures(curves: Curves, what: str) -> None:
    """A single group's failed fit is an error (nothing else to show); so is a study with no fit at all."""
    if not curves.failures:
        return
    if len(curves.data.group_names) == 1:
        raise UserError(curves.failures[0].reason)
    if not curves.all():
        raise UserError(f"{what}: nothing could be fitted: {describe_failures(curves)}; add scales or use a law "
                        "with fewer parameters")


def _prediction_points(data: FitData, law: Law, predict: tuple[tuple[float, ...], ...],
                       scale_defaults: bool, levels: np.ndarray) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Per group: (label, X (1, d)). Explicit points for every group; or, for a sweep, the default
    multiples of the group's size at the largest scale that at least half the groups ran at (else of its
    own largest first input; other inputs as at that point). A larger scale only some groups ran at
    (an advised run) does not move their targets away from the others'."""
    points: dict[str, list[tuple[str, np.ndarray]]] = {}
    anchors = anchor_points(data, levels)
    for index, group in enumerate(data.group_names):
        if predict:
            points[group] = [(":".join(f"{v:.4g}" for v in point), np.array([point], dtype=float)) for point in predict]
        elif scale_defaults:
            largest = anchors[index]
            points[group] = []
            for label, multiple in EXTRAPOLATIONS.items():
                X = largest.copy()
                X[0] *= multiple
                points[group].append((label, X[None, :]))
        else:
            points[group] = []
    return points


def covered_levels(groups: np.ndarray, levels: np.ndarray) -> list[int]:
    """The scale indices that at least half the groups (and at least one) have a point at: the scales of
    the grid, not a scale that only some groups reached (an advised run)."""
    enough = max(1, (len(np.unique(groups)) + 1) // 2)
    return [int(level) for level in np.unique(levels) if len(np.unique(groups[levels == level])) >= enough]


def anchor_points(data: FitData, levels: np.ndarray) -> dict[int, np.ndarray]:
    """Per group, the point (d,) the default extrapolations multiply: its largest at the largest covered
    scale (`covered_levels`), else its own largest first input."""
    covered = covered_levels(data.groups, levels)
    anchors = {}
    for index in range(len(data.group_names)):
        mine = data.groups == index
        at_shared = mine & (levels == covered[-1]) if covered else np.zeros_like(mine)
        rows = data.X[at_shared] if at_shared.any() else data.X[mine]
        anchors[index] = rows[np.argmax(rows[:, 0])]
    return anchors


def _links(source: Source, frame: pl.DataFrame, main: Study, link_law: Law, counts: np.ndarray, level: float,
           rng: np.random.Generator, step: Callable[[str], None]) -> list[downstream.Link]:
    """Loss -> score link per task and metric, and the two-step predictions through the links whose
    score tracks the loss (`downstream.Link.tracks_loss`)."""
    evals = source.evals
    if evals is None or evals.height == 0:
        return []
    require_columns(evals, ["cell_id", "trial_id", "task", "metric", "value"], str(SweepFolder(source.path).evals_table))
    points = frame.select("cell_id", "trial_id").with_row_index("row")
    joined = (
        evals.join(points, on=["cell_id", "trial_id"], how="inner")
        .group_by("task", "metric", "row").agg(pl.col("value").cast(pl.Float64).mean())
        .filter(pl.col("value").is_finite())
        .sort("task", "metric", "row")
    )
    has_settings = "settings" in evals.columns
    # Loss draws at every forecast target, shared by the links (draw b pairs with link refit b).
    outlook = main.outlook
    losses = (sample(outlook.result, len(counts), rng) if outlook is not None and len(counts)
              else np.empty((0, len(outlook.result.targets) if outlook is not None else 0)))
    jobs = []
    for (task, metric), pairs in joined.group_by(["task", "metric"], maintain_order=True):
        rows = pairs["row"].to_numpy()
        settings = (evals.filter((pl.col("task") == task) & (pl.col("metric") == metric))["settings"]
                    .cast(pl.String).unique().to_list() if has_settings else [])
        scored_by, chance = downstream.scoring(str(task), str(metric), settings)
        jobs.append((link_law, str(task), str(metric), main.data.y[rows], pairs["value"].to_numpy(), rows, counts,
                     scored_by, chance))
    step(f"loss -> score links of {len(jobs)} task metric(s)")
    links = []
    for link in workers.starmap(downstream.fit_link, jobs):  # independent fits: on the pool's workers
        if link.fit is not None and link.tracks_loss:
            for j, prediction in enumerate(p for p in main.predictions if p.kind == main.headline):
                if main.outlook is not None:
                    if np.isfinite(prediction.estimate):
                        link.predictions.append(downstream.chain_forecast(
                            link, losses[:, j], prediction.estimate, prediction.group, prediction.label,
                            prediction.X, level))
                else:
                    curve = main.curves.curve(prediction.kind, prediction.group)
                    link.predictions.append(
                        downstream.chain(link, curve, prediction.group, prediction.label, prediction.X, level))
        links.append(link)
    return links


def _valid_rows(table: pl.DataFrame, columns: list[str], drop: bool, where: str) -> tuple[pl.DataFrame, list[str]]:
    """Rows with a missing, NaN or infinite value in a used column are reported; dropped only if asked."""
    bad = pl.lit(False)
    for name in columns:
        column = pl.col(name)
        bad = bad | column.is_null()
        if table.schema[name].is_float():
            bad = bad | column.is_nan() | column.is_infinite()
    flagged = table.with_row_index("row").filter(bad)
    if flagged.height == 0:
        return table, []
    first = flagged.row(0, named=True)
    shown = ", ".join(f"{name}={first[name]}" for name in columns)
    message = (f"{flagged.height} of {table.height} rows have a missing, NaN or infinite value "
               f"(first: row {first['row']}: {shown})")
    if not drop:
        raise UserError(f"{where}: {message}; pass --drop-invalid to drop them")
    kept = table.with_row_index("row").filter(~bad).drop("row")
    if kept.height == 0:
        raise UserError(f"{where}: {message}, and that is every row")
    return kept, [f"dropped {message}"]


def _single_scale_groups(data: FitData, by: str | None) -> list[str]:
    """A named warning per group whose points all sit at one x: no curve goes through one scale."""
    notes = []
    for index, group in enumerate(data.group_names):
        if len(np.unique(data.X[data.groups == index][:, 0])) < 2:
            notes.append(f"SINGLE SCALE: {by or 'group'} {group!r} has points at one x only, so no scaling curve "
                         "can be fitted to it: it is left out of every fit's forecasts")
    return notes


def _usable_x(frame: pl.DataFrame, name: str) -> bool:
    """Whether an optional x column (trainable parameters: null where unknown) is there, numeric and > 0."""
    if name not in frame.columns or not frame.schema[name].is_numeric():
        return False
    values = frame[name].cast(pl.Float64)
    return values.null_count() == 0 and bool(values.is_finite().all()) and bool((values > 0).all())


def _check_predict(predict: tuple[tuple[float, ...], ...], law: Law) -> None:
    """Every --predict point has one value per input of the law, each > 0 where the law takes powers."""
    for point in predict:
        shown = ":".join(f"{v:g}" for v in point)
        if len(point) != len(law.inputs):
            raise UserError(f"--predict {shown}: the {law.name} law takes {len(law.inputs)} value(s) per point "
                            f"({':'.join(law.inputs)})")
        if law.positive_inputs and min(point) <= 0:
            raise UserError(f"--predict {shown}: the {law.name} law takes powers of x, so every value must be > 0")


def _check_positive(frame: pl.DataFrame, law: Law, x: tuple[str, ...], where: str) -> None:
    if not law.positive_inputs:
        return
    for name in x:
        bad = frame.with_row_index("row").filter(pl.col(name) <= 0)
        if bad.height:
            first = bad.row(0, named=True)
            raise UserError(
                f"{where}: the {law.name} law takes powers of x, so {name!r} must be > 0, but {bad.height} "
                f"row(s) are not (first: row {first['row']}: {first[name]})"
            )


def _groups(frame: pl.DataFrame, by: str | None) -> tuple[np.ndarray, tuple[str, ...]]:
    if by is None:
        return np.zeros(frame.height, dtype=int), ("all",)
    labels = frame[by].cast(pl.String).to_list()
    names = tuple(dict.fromkeys(labels))  # first-appearance order: the ledger's method order
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[label] for label in labels], dtype=int), names


def fit_data(frame: pl.DataFrame, x: tuple[str, ...], y: str, by: str | None) -> FitData:
    """The rows as the fits take them: inputs `x`, output `y`, one group per value of `by` (in order of
    first appearance)."""
    groups, group_names = _groups(frame, by)
    return FitData(X=_matrix(frame, x), y=frame[y].cast(pl.Float64).to_numpy(), groups=groups, group_names=group_names)


def scale_levels(frame: pl.DataFrame, size: str, order_by: str) -> tuple[np.ndarray, list[str]]:
    """Scale index of every point: numeric sizes in order; named scales (a sweep's `scale`) in the
    order of their median `order_by` (total parameters)."""
    column = frame[size]
    if column.dtype.is_numeric():
        values = sorted(set(column.to_list()))
        names = [f"{v:.4g}" for v in values]
        index = {v: i for i, v in enumerate(values)}
        return np.array([index[v] for v in column.to_list()], dtype=int), names
    medians = frame.group_by(size).agg(pl.col(order_by).median()).sort(order_by)
    names = [str(name) for name in medians[size].to_list()]
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[str(v)] for v in column.to_list()], dtype=int), names


def _matrix(frame: pl.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    return np.column_stack([frame[name].cast(pl.Float64).to_numpy() for name in columns])


def _fit_warnings(analysis: Analysis) -> tuple[list[str], list[str]]:
    """(warnings, notes). Warnings, loud: what the forecast's fits get wrong or cannot pin down, failed
    fits, fits with no degrees of freedom. Notes, about the single-law fits' bootstrap intervals only
    (which the forecast does not use): bootstraps resting on few resamples, a backtest not possible."""
    notes, details = [], []
    for study in filter(None, (analysis.main, analysis.alternative)):
        what = f"{study.y} vs {', '.join(study.x)}"
        if study.outlook is not None:
            outlook = study.outlook
            notes += forecast_warnings(outlook.result, study.data.group_names, study.data.y, what,
                                       outlook.held_out, outlook.held_out_level)
        joint = study.curves.joint
        use_joint = (f"; the joint fit (shared exponents, {_dof(joint.fit.dof)}) is used for it instead"
                     if joint and joint.fit.dof > 0 else "")
        for failure in study.curves.failures:
            fallback = use_joint if failure.kind == INDEPENDENT else "; the independent fits are used instead"
            notes.append(f"{failure.status.upper()}: {failure.reason}; reported without numbers{fallback}")
        exact: dict[tuple, list[str]] = {}  # fits with no degrees of freedom, named together when alike
        for curve in study.curves.all():
            if curve.underdetermined:
                exact.setdefault((curve.kind, curve.fit.n_points, curve.fit.n_params), []).append(_curve_name(curve))
        for (kind, n_points, n_params), names in exact.items():
            offer = (f"; the joint fit (shared exponents) has {_dof(joint.fit.dof)}: use it"
                     if joint and kind == INDEPENDENT and joint.fit.dof > 0
                     else "; add points or use a law with fewer parameters")
            name = f"independent fit(s) of {', '.join(names)}" if kind == INDEPENDENT else "joint fit"
            notes.append(f"UNDERDETERMINED: {what}, {name}: {n_points} points for {n_params} parameters, "
                         f"no degrees of freedom, so no interval{offer}")
        fits = [(_curve_name(c), c) for c in study.curves.all()]
        if study.backtest:
            fits += [(f"backtest {_curve_name(c)}", c) for c in study.backtest.curves.all()]
        thin = [(name, c) for name, c in fits
                if c.boot is not None and len(c.boot.thetas) < (1 - LEFT_OUT_WARNING) * c.boot.requested]
        if thin:
            shares = [len(c.boot.thetas) / c.boot.requested for _, c in thin]
            share = f"{min(shares):.0%}" + (f"-{max(shares):.0%}" if max(shares) > min(shares) else "")
            details.append(
                f"{what}: the intervals of {len(thin)} fit(s) ({', '.join(name for name, _ in thin)}) rest on "
                f"{share} of the bootstrap resamples: the others drew too few distinct scales to pin down the law "
                "(or did not converge), so those intervals are conditional on that and likely too narrow"
            )
        if study.backtest and not study.backtest.points:
            details.append(f"{what}: no backtest: {study.backtest.note}")
    return notes, details


def _curve_name(curve) -> str:
    return curve.fit.group_names[0] if curve.kind == INDEPENDENT else "joint"


def _dof(count: int) -> str:
    return f"{count} degree{'' if count == 1 else 's'} of freedom"
