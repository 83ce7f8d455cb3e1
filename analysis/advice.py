"""`sweeper advise`: the candidates a sweep could buy next, priced by its plan, valued by `analysis.advise`.

Candidates (`--candidates`):
- `scales`: every method of the sweep at every scale of its ladder it has not run (larger ones, and
  intermediate ones such as the micro ladder's `ml`), one run each;
- `seeds`: one more seed of every cell of a method, or of every cell. Bundles, not single cells: the
  forecast takes a new run's noise from the replicates as soon as there are any, with their degrees
  of freedom, so a single extra seed (1 degree of freedom) would make every interval a Student-t
  with 1 degree of freedom;
- `methods`: methods of the sweep's space that no cell has run. A method with no points has no curve
  to forecast from, so these are listed with that reason and not valued.
Costs are the plan's (`sweeper.plan`: FLOPs of fine-tuning and validation at the sweep's recipe and
accelerator), per replicate; pretraining a micro scale that is not built yet is not priced.
"""

from __future__ import annotations

import itertools
import json
import shlex
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from analysis import advise
from analysis.fitting import FitData
from analysis.forecast import Target, candidates, interval
from analysis.pipeline import (
    EXTRAPOLATIONS,
    SWEEP_BY,
    SWEEP_SIZE,
    SWEEP_X,
    SWEEP_Y,
    anchor_points,
    fit_data,
    scale_levels,
)
from analysis.sources import Source
from sweeper.core import provenance
from sweeper.core.errors import UserError
from sweeper.core.io import atomic_write, atomic_write_text, check_writable
from sweeper.sweep.folder import SweepFolder

KINDS = ("scales", "seeds", "methods", "all")


@dataclass(frozen=True)
class Advice:
    study: advise.Study
    before: float
    assessed: list[advise.Assessed]  # ranked, best value per unit of cost first
    choice: advise.Choice  # the set to buy under the budget
    budget: float | None
    cost: str  # "usd" | "device_hours"
    unvalued: list[str]  # candidates listed but not valued, with the reason
    seconds: float


def sweep_points(source: Source) -> tuple[pl.DataFrame, FitData]:
    """The sweep's points as the report fits them (total parameters -> final validation loss, by method),
    and the rows they come from, in the same order."""
    table = source.table.filter(pl.col(SWEEP_Y).is_finite() & (pl.col(SWEEP_Y) > 0))
    return table, fit_data(table, (SWEEP_X,), SWEEP_Y, SWEEP_BY)


def anchor_sizes(table: pl.DataFrame, data: FitData) -> dict[str, float]:
    """Each method's size that the extrapolation labels multiply, as the report's forecast takes it
    (`pipeline.anchor_points`), so that an advised larger scale does not move the targets."""
    levels, _ = scale_levels(table, SWEEP_SIZE, SWEEP_X)
    return {data.group_names[g]: float(X[0]) for g, X in anchor_points(data, levels).items()}


def parse_targets(text: str, data: FitData, scale_totals: dict[tuple[str, str], int],
                  anchors: dict[str, float] | None = None) -> list[Target]:
    """`METHOD@SCALE[,...]`: SCALE is an extrapolation label (34B-equivalent, 70B-equivalent: that multiple
    of the method's anchor size, `anchor_sizes`; default its largest trained size), a scale of the sweep's
    ladder, or a total parameter count."""
    targets = []
    for part in (p.strip() for p in text.split(",")):
        method, _, scale = part.partition("@")
        if method not in data.group_names:
            raise UserError(f"--target {part!r}: method {method!r} has no points in this sweep; valid: "
                            f"{', '.join(data.group_names)}")
        group = data.group_names.index(method)
        largest = float(data.X[data.groups == group, 0].max())
        labels = {label.lower(): label for label in EXTRAPOLATIONS} | {
            label.split("-")[0].lower(): label for label in EXTRAPOLATIONS}
        if scale.lower() in labels:
            label = labels[scale.lower()]
            x = (anchors or {}).get(method, largest) * EXTRAPOLATIONS[label]
        elif (method, scale) in scale_totals:
            label, x = scale, float(scale_totals[(method, scale)])
        else:
            try:
                label, x = scale, float(scale)
            except ValueError:
                valid = sorted({s for m, s in scale_totals if m == method})
                raise UserError(f"--target {part!r}: unknown scale {scale!r}; valid: {', '.join(EXTRAPOLATIONS)}, "
                                f"a scale of the ladder ({', '.join(valid)}) or a total parameter count") from None
        if not np.isfinite(x) or x <= largest:
            raise UserError(f"--target {part!r}: {x:.4g} parameters is not above {method}'s largest trained scale "
                            f"({largest:.4g}); advice is about forecasts beyond the data")
        targets.append(Target(group, label, np.array([x])))
    return targets


def build_candidates(table: pl.DataFrame, data: FitData, kinds: str, space) -> tuple[
        list[advise.Candidate], list[str], dict[tuple[str, str], int]]:
    """The candidates of `kinds` with their planned costs, the ones listed but not valued, and the total
    parameters of every (method, scale) the space can price (targets may name any of them)."""
    from sweeper.ladders import get_ladder
    from sweeper.plan import make_plan

    if kinds not in KINDS:
        raise UserError(f"--candidates {kinds!r}: expected one of {', '.join(KINDS)}")
    ladder = get_ladder(space.ladder)
    run = {(m, s) for m, s in zip(table["method"].to_list(), table["scale"].to_list(), strict=True)}
    wanted_scales = [s for s in ladder.scales if any((m, s) not in run for m in data.group_names)]
    # One replicate of every cell at every scale of the ladder: the seeds the sweep's overrides set (an
    # earlier advice's) would price all of a cell's replicates.
    overrides = [rule.model_copy(update={"set": {k: v for k, v in rule.set.items() if k != "seeds"}})
                 for rule in space.overrides]
    priced = make_plan(space.model_copy(update={"scales": tuple(ladder.scales), "seeds": 1,
                                                "overrides": tuple(rule for rule in overrides if rule.set)}))
    estimates = {(e.method, e.scale): e for e in priced.estimates}
    found: list[advise.Candidate] = []
    unvalued: list[str] = []
    if kinds in ("scales", "all"):
        for method in data.group_names:
            for scale in wanted_scales:
                if (method, scale) in run or (method, scale) not in estimates:
                    continue
                e = estimates[(method, scale)]
                found.append(advise.Candidate(f"{method}@{scale}", "scale",
                                              (advise.Run(method, scale, np.array([float(e.total_params)])),),
                                              e.device_hours, e.usd))
    if kinds in ("seeds", "all"):
        # one more replicate per cell (a cell run with several seeds has a row per seed: the first stands for it)
        rows = table.with_row_index("row").unique(["method", "scale"], keep="first", maintain_order=True)
        bundles = {f"+1 seed: {m} ({int((rows['method'] == m).sum())} cells)": rows.filter(pl.col("method") == m)
                   for m in data.group_names}
        bundles[f"+1 seed: every cell ({rows.height})"] = rows
        for name, members in bundles.items():
            runs = tuple(advise.Run(m, s, np.array([float(x)]), int(r)) for r, m, s, x in
                         members.select("row", "method", "scale", "total_params").iter_rows())
            unpriced = sorted({f"{r.method}@{r.scale}" for r in runs if (r.method, r.scale) not in estimates})
            if unpriced:  # cells of an earlier launch's space that the latest space no longer holds
                unvalued.append(f"{name}: {', '.join(unpriced)} cannot be priced with the sweep's latest space")
                continue
            found.append(advise.Candidate(name, "seeds", runs, sum(estimates[(r.method, r.scale)].device_hours for r in runs),
                                          sum(estimates[(r.method, r.scale)].usd for r in runs)))
    if kinds in ("methods", "all"):
        unvalued += [f"{m}: not run at any scale, so it has no curve to forecast from (run it at two or more scales)"
                     for m in space.methods if m not in data.group_names]
    totals = {key: e.total_params for key, e in estimates.items()}
    return found, unvalued, totals


def run_advice(source: Source, target_text: str, objective: str, budget_usd: float | None,
               budget_hours: float | None, kinds: str, draws: int, seed: int, level: float = 0.95) -> Advice:
    """Everything `sweeper advise` computes; bad input raises UserError before any work."""
    from sweeper.schema import Space

    started = time.perf_counter()
    if not source.is_sweep:
        raise UserError(f"{source.path}: not a sweep folder (advice prices runs with the sweep's space)")
    if objective not in advise.OBJECTIVES:
        raise UserError(f"--objective {objective!r}: expected one of {', '.join(advise.OBJECTIVES)}")
    if budget_usd is not None and budget_hours is not None:
        raise UserError("--budget-usd and --budget-device-hours: give one")
    space = Space.parse(source.manifest.get("space") or {}, f"{source.path}/manifest.json: space")
    table, data = sweep_points(source)
    found, unvalued, totals = build_candidates(table, data, kinds, space)
    totals |= {(m, s): int(x) for m, s, x in table.select("method", "scale", "total_params").iter_rows()}
    targets = parse_targets(target_text, data, totals, anchor_sizes(table, data))
    check_writable(SweepFolder(source.path).root / "advice")  # before the work, not after it
    cost = "usd" if budget_hours is None else "device_hours"
    budget = budget_usd if budget_hours is None else budget_hours
    if budget is not None and found and budget < min(getattr(c, cost) for c in found):
        cheapest = min(found, key=lambda c: getattr(c, cost))
        raise UserError(f"budget {budget:g} {'$' if cost == 'usd' else 'device-hours'} is below the cheapest candidate, "
                        f"{cheapest.name} at {getattr(cheapest, cost):.3g}")
    if not found:
        why = unvalued[0] if unvalued else "every scale of the ladder has been run by every method"
        raise UserError(f"{source.path}: no candidate of kind {kinds!r} can be valued ({why}); try --candidates all")
    if objective == advise.RANKING:  # every method at each target's label
        targets = _ranking_targets(targets, data)
    variants = candidates(None, 1, len(data.group_names))
    try:
        study = advise.make_study(data, targets, variants, level, objective)
    except UserError as err:
        raise UserError(f"{source.path}: no forecast can be made from this sweep ({err})") from None
    before = advise.current_value(study, seed)
    if not np.isfinite(before):
        raise UserError(f"--target {target_text!r}: the current forecast cannot predict it (a method needs two or "
                        "more scales to have a curve)")
    assessed = []
    for item in (advise.assess(study, c, draws, seed) for c in found):
        if np.isfinite(item.after):
            assessed.append(item)
        else:
            unvalued.append(f"{item.candidate.name}: its method has no curve yet to draw the run's result from")
    ranked = advise.rank(assessed, before, objective, cost)
    choice = advise.choose(study, assessed, before, budget, cost, draws, seed)
    return Advice(study, before, ranked, choice, budget, cost, unvalued, time.perf_counter() - started)


@dataclass(frozen=True)
class Followed:
    """An advice a launch ran (`--with`), against what the forecast says now."""

    advice: str  # its id
    target: str
    objective: str
    runs: list[str]
    before: float
    expected_after: float | None
    expected_after_se: float | None
    now: float | None  # the objective on today's forecast (width only; None for ranking or a lost target)


def followed(source: Source, result, level: float, x: tuple[str, ...]) -> list[Followed]:
    """Every advice the sweep's launches ran, with the objective recomputed on `result` (the current
    forecast) at the targets the advice froze (their methods and total parameters)."""
    records = []
    seen = set()
    for launch in source.manifest.get("launches") or ():
        advice = (launch.get("advice") or {}).get("advice")
        if advice is None or advice in seen:
            continue
        seen.add(advice)
        path = SweepFolder(source.path).root / "advice" / f"{advice}.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        now = None
        names = list(result.design.group_names)
        # advice targets are sizes in total parameters: comparable only with a forecast against them
        if (record["objective"] == advise.WIDTH and x == ("total_params",)
                and all(t["method"] in names for t in record["targets"])):
            points = [Target(names.index(t["method"]), t["label"], np.array([t["total_params"]]))
                      for t in record["targets"]]
            estimate, lower, upper = interval(result, points, level)
            now = float(np.nanmean((upper - lower) / estimate))
        records.append(Followed(advice, ", ".join(f"{t['method']}@{t['label']}" for t in record["targets"]),
                                record["objective"], record["chosen"], record["before"],
                                record["chosen_expected_after"], record["chosen_expected_after_se"], now))
    return records


def current_study(source: Source, target_text: str, level: float = 0.95) -> advise.Study:
    """The forecast of the targets on the sweep as it stands (what a round of advice starts from)."""
    table, data = sweep_points(source)
    totals = {(m, s): int(x) for m, s, x in table.select("method", "scale", "total_params").iter_rows()}
    targets = parse_targets(target_text, data, totals, anchor_sizes(table, data))
    return advise.make_study(data, targets, candidates(None, 1, len(data.group_names)), level, advise.WIDTH)


def forecast_rows(study: advise.Study) -> list[dict[str, float]]:
    """The targets' current forecast, one {estimate, lower, upper} per target (records and JSON)."""
    current = study.current
    return [{"estimate": float(e), "lower": float(lo), "upper": float(hi)}
            for e, lo, hi in zip(current.estimate[0], current.lower[0], current.upper[0], strict=True)]


def measure(study: advise.Study) -> dict:
    """The targets' forecast and its mean relative width, for the rounds' record."""
    return {"width": advise.current_value(study) if study.objective == advise.WIDTH else None,
            "forecast": forecast_rows(study)}


def write_rounds(folder: Path, history: list[dict]) -> list[Path]:
    """rounds.json and rounds.png: each round's forecast of the (first) target against the money spent."""
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    data_path, figure_path = folder / "rounds.json", folder / "rounds.png"
    atomic_write_text(data_path, json.dumps(history, indent=2) + "\n")
    spent = [h["spent_usd"] for h in history]
    estimate, lower, upper = (np.array([h["forecast"][0][key] for h in history]) for key in ("estimate", "lower", "upper"))
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.errorbar(spent, estimate, yerr=[estimate - lower, upper - estimate], fmt="o-", capsize=4)
    ax.set_xlabel("spent on advised runs ($, the plan's prices)")
    ax.set_ylabel("target forecast, 95% interval")
    ax.set_title("Forecast interval vs. money spent, one point per round")
    atomic_write(figure_path, lambda tmp: fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight"))
    return [data_path, figure_path]


def _ranking_targets(targets: list[Target], data: FitData) -> list[Target]:
    """For the ranking objective: every method at each target's size (once per label), so that the
    methods are compared at one size even where their largest trained scales differ (advised runs)."""
    out, labels = [], set()
    for target in targets:
        if target.label in labels:
            continue
        labels.add(target.label)
        out += [Target(group, target.label, target.X) for group in range(len(data.group_names))]
    return out


def to_json(advice: Advice) -> dict:
    names = advice.study.data.group_names
    before = advice.before

    def entry(item: advise.Assessed) -> dict:
        c = item.candidate
        return {"candidate": c.name, "kind": c.kind, "runs": [{"method": r.method, "scale": r.scale,
                                                              "total_params": float(r.X[0])} for r in c.runs],
                "usd": c.usd, "device_hours": c.device_hours, "expected_after": item.after,
                "expected_after_se": item.after_se, "improvement": advise.improvement(item, before, advice.study.objective)}

    return {
        "objective": advice.study.objective,
        "targets": [{"method": names[t.group], "label": t.label, "total_params": float(t.X[0])}
                    for t in advice.study.targets],
        "forecast": forecast_rows(advice.study),
        "before": before, "cost": advice.cost, "budget": advice.budget,
        "candidates": [entry(a) for a in advice.assessed],
        "chosen": [a.candidate.name for a in advice.choice.chosen], "chosen_by": advice.choice.rule,
        "chosen_expected_after": None if advice.choice.together is None else advice.choice.together.after,
        "chosen_expected_after_se": None if advice.choice.together is None else advice.choice.together.after_se,
        "not_valued": advice.unvalued, "seconds": round(advice.seconds, 2),
    }


def write_record(source: Source, advice: Advice, argv: list[str]) -> tuple[Path, Path | None]:
    """The advice, kept in the sweep folder: `advice/<UTC time>.json` (every candidate, the forecast it
    was meant to improve, provenance) and, when runs were chosen, `advice/<UTC time>.yaml`, the file
    `sweeper launch grid --with` runs. Returns both paths (None: nothing chosen)."""
    from sweeper.sweep.advice import AdviceFile, AdvisedRun, write_advice_file

    folder = SweepFolder(source.path).root / "advice"
    folder.mkdir(parents=True, exist_ok=True)
    at = datetime.now(UTC)
    stem = at.strftime("%Y%m%dT%H%M%S%fZ")
    record = {"at": at.isoformat(), "argv": argv, "provenance": provenance.collect(), **to_json(advice)}
    path = folder / f"{stem}.json"
    atomic_write_text(path, json.dumps(record, indent=2, default=float) + "\n")
    choice = advice.choice
    if not choice.chosen:
        return path, None
    seeds = {(m, s): n for m, s, n in source.table.group_by("method", "scale").len().iter_rows()}
    runs, more = [], []
    for item in choice.chosen:
        for run in item.candidate.runs:
            if run.replicate_of is None:
                runs.append(AdvisedRun(method=run.method, scale=run.scale))
            else:  # one more replicate of a cell: its number of seeds goes up by one
                seeds[(run.method, run.scale)] += 1
                more.append((run.method, run.scale))
    runs += [AdvisedRun(method=m, scale=s, seeds=seeds[(m, s)]) for m, s in dict.fromkeys(more)]
    names = advice.study.data.group_names
    target = ", ".join(dict.fromkeys(f"{names[t.group]}@{t.label}" for t in advice.study.targets))
    file = AdviceFile(advice=stem, space=str(source.manifest["space"]["name"]), runs=tuple(runs), target=target,
                      objective=advice.study.objective, before=advice.before, expected_after=choice.together.after)
    yaml_path = folder / f"{stem}.yaml"
    write_advice_file(yaml_path, file, f"sweeper advise, {at.isoformat(timespec='seconds')}: {target}, {advice.study.objective} "
                      f"{advice.before:.4f} -> {choice.together.after:.4f} expected (details: {path.name}).\n"
                      f"Run it: {run_command(source, yaml_path)}")
    return path, yaml_path


def run_command(source: Source, advice_file: Path) -> str:
    """The launch that runs an advice file on its sweep: the space and `--set` values the sweep was first
    launched with (a search design, a changed recipe), so that the advised cells are cells of the same grid."""
    manifest = source.manifest
    space = manifest.get("space_source") or manifest["space"]["name"]
    argv = ((manifest.get("launches") or [{}])[0]).get("argv") or []
    sets = [f"--set {shlex.quote(value)}" for flag, value in itertools.pairwise(argv) if flag == "--set"]
    return " ".join(["sweeper launch grid --space", shlex.quote(str(space)), *sets, "--out",
                     shlex.quote(str(source.path)), "--with", shlex.quote(str(advice_file))])
