"""Which runs to buy next: the expected value of candidate runs for a target forecast (issue 15).

Preposterior analysis. A candidate is a set of runs not yet made: a method at a scale it has not run
at, or extra seeds of cells already run. Its value is what the target forecast is expected to look
like once its results are in. That is estimated by drawing the results K times and refitting the
forecast on each completed data set:
- a run at a new scale is drawn from the current forecast's predictive distribution there (the
  candidates' mixture with its parameter uncertainty, run noise and drift); the runs of one candidate
  are drawn together, from one curve per method (`forecast.sample_together`);
- an extra seed of a cell is drawn around that cell's mean with the run noise, plus the mean's own
  uncertainty (variance sigma^2 (1 + 1/k) over k runs so far).
The refit is the forecast's own procedure on every draw at once (one batched polish from the current
fit's parameters, `forecast(..., starts=...)`), so the expected interval includes the change of the
stacking weights and the drift term a new scale brings. The same random numbers serve every candidate
(common random numbers), so their differences are not drowned in Monte-Carlo noise.

Objectives: `width`, the mean relative width (upper - lower) / estimate of the targets' intervals,
lower is better; `ranking`, the probability that the method leading at the targets' scale is the
best, averaged over the target labels, higher is better.
"""

from dataclasses import dataclass, replace

import numpy as np

from analysis.fitting import FitData
from analysis.forecast import (
    FULL,
    Design,
    Forecast,
    Target,
    Variant,
    fold_batches,
    forecast,
    sample,
    sample_together,
    scale_index,
)

WIDTH, RANKING = "width", "ranking"
OBJECTIVES = (WIDTH, RANKING)
OUTCOME_DRAWS = 16  # K simulated outcomes per candidate (standard error of the expected width ~3% of it)
RANKING_DRAWS = 2000  # forecast draws behind each probability that the leader is the best
CREDIBLE_SE = 2.0  # an expected improvement counts when it exceeds this many Monte-Carlo standard errors


@dataclass(frozen=True)
class Run:
    """One run a candidate buys."""

    method: str
    scale: str
    X: np.ndarray  # (d,) its inputs, as the fit's x columns
    replicate_of: int | None = None  # row of the observed point it repeats (an extra seed); None: a new scale


@dataclass(frozen=True)
class Candidate:
    name: str  # e.g. "lora@xl", "+1 seed: lora (4 cells)"
    kind: str  # "scale" | "seeds"
    runs: tuple[Run, ...]
    device_hours: float
    usd: float


@dataclass(frozen=True)
class Assessed:
    candidate: Candidate
    after: float  # the objective's expected value once the candidate's results are in
    after_se: float  # its Monte-Carlo standard error


@dataclass(frozen=True)
class Study:
    """What the advice is about: the points, the targets and the current forecast of them."""

    data: FitData
    targets: list[Target]  # the targets (width), or every method at the targets' scales (ranking)
    variants: list[Variant]
    level: float
    objective: str
    current: Forecast

    @property
    def design(self) -> Design:
        return self.current.design


def make_study(data: FitData, targets: list[Target], variants: list[Variant], level: float, objective: str) -> Study:
    """The current forecast of the targets (the full multi-start fit, as the report's)."""
    design = Design(X=data.X, groups=data.groups, group_names=data.group_names,
                    levels=scale_index(data.X, data.groups))
    return Study(data, targets, variants, level, objective, forecast(design, data.y, targets, variants, level))


def objective_values(study: Study, result: Forecast, rng: np.random.Generator) -> np.ndarray:
    """(B,) the objective for each data set of `result`."""
    if study.objective == WIDTH:
        return np.nanmean((result.upper - result.lower) / result.estimate, axis=1)
    labels = list(dict.fromkeys(t.label for t in study.targets))
    values = np.zeros(len(result.y))
    for b in range(len(result.y)):
        draws = sample(result, RANKING_DRAWS, rng, index=b)
        shares = []
        for label in labels:
            columns = [j for j, t in enumerate(study.targets) if t.label == label and np.isfinite(draws[:, j]).all()]
            if len(columns) < 2:  # fewer than two methods forecast there: no ranking to be right about
                continue
            best = np.argmin(draws[:, columns], axis=1)
            shares.append(np.bincount(best, minlength=len(columns)).max() / RANKING_DRAWS)
        values[b] = float(np.mean(shares)) if shares else float("nan")
    return values


def current_value(study: Study, seed: int = 0) -> float:
    return float(objective_values(study, study.current, np.random.default_rng(seed))[0])


def assess(study: Study, candidate: Candidate, draws: int = OUTCOME_DRAWS, seed: int = 0) -> Assessed:
    """The objective expected after the candidate's runs, from `draws` simulated outcomes (seeded: the
    same random numbers for every candidate)."""
    rng = np.random.default_rng(seed)
    outcomes = simulate_outcomes(study.current, candidate.runs, draws, rng)
    if not np.isfinite(outcomes).all():  # a run the forecast cannot predict (its method has no curve yet)
        return Assessed(candidate, float("nan"), float("nan"))
    design = _augmented(study.design, candidate.runs)
    y = np.concatenate([np.repeat(study.data.y[None, :], draws, axis=0), outcomes], axis=1)
    refit = forecast(design, y, study.targets, study.variants, study.level, starts=_starts_for(study, design))
    values = objective_values(study, refit, rng)
    values = values[np.isfinite(values)]
    if not len(values):
        return Assessed(candidate, float("nan"), float("nan"))
    return Assessed(candidate, float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0)


def simulate_outcomes(current: Forecast, runs: tuple[Run, ...], draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, len(runs)) simulated results of the runs, in y units."""
    log_space = all(v.law.log_residuals for v in current.variants)
    out = np.empty((draws, len(runs)))
    new = [i for i, run in enumerate(runs) if run.replicate_of is None]
    if new:
        points = [Target(current.design.group_names.index(runs[i].method), "", runs[i].X) for i in new]
        out[:, new] = sample_together(replace(current, targets=points), draws, rng)
    noise = float(current.noise[0])  # sd of a new run, in forecast space
    cells = current.design.cells
    for i, run in enumerate(runs):
        if run.replicate_of is None:
            continue
        # around the cell's mean of k runs: a new run's noise plus that mean's own (variance sigma^2 (1 + 1/k))
        members = cells == cells[run.replicate_of]
        values = current.y[0, members]
        centre = float(np.exp(np.log(values).mean())) if log_space else float(values.mean())
        step = noise * np.sqrt(1.0 + 1.0 / members.sum()) * rng.standard_normal(draws)
        out[:, i] = centre * np.exp(step) if log_space else centre + step
    return out


@dataclass(frozen=True)
class Choice:
    """The set of candidates to buy, and what it is expected to do, assessed as one set."""

    chosen: list[Assessed]  # in the order the rule took them
    together: Assessed | None  # None when nothing is chosen
    rule: str  # which greedy rule built the set


def choose(study: Study, assessed: list[Assessed], before: float, budget: float | None, cost: str,
           draws: int = OUTCOME_DRAWS, seed: int = 0) -> Choice:
    """The set to buy under the budget: of two greedy sets, the one whose runs, assessed together, are
    expected to do more. One takes credible improvements in order of gain per unit of cost, the other in
    order of gain. Either alone can do badly: by gain per cost, many cheap runs whose gains do not add
    up can leave the budget unspent; by gain, one dear run can crowd out several that do more together.
    Taking the better of the two is the standard fix for budgeted greedy selection (Khuller, Moss and
    Naor 1999; Leskovec et al. 2007, CELF)."""
    by_ratio = rank(assessed, before, study.objective, cost)
    by_gain = sorted(by_ratio, key=lambda item: (not credible(item, before, study.objective),
                                                  -improvement(item, before, study.objective)))
    options: list[Choice] = []
    for rule, ordered in (("gain per cost", by_ratio), ("gain", by_gain)):
        chosen = _take(ordered, before, study.objective, budget, cost)
        if not chosen or any([a.candidate.name for a in chosen] == [a.candidate.name for a in o.chosen] for o in options):
            continue
        together = chosen[0] if len(chosen) == 1 else assess(study, combined([a.candidate for a in chosen]), draws, seed)
        options.append(Choice(chosen, together, rule))
    if not options:
        return Choice([], None, "none credible")
    return max(options, key=lambda choice: improvement(choice.together, before, study.objective))


def _take(ordered: list[Assessed], before: float, objective: str, budget: float | None, cost: str) -> list[Assessed]:
    """The credible candidates in this order, each while it still fits in the budget."""
    chosen, spent = [], 0.0
    for item in ordered:
        if not credible(item, before, objective):
            break
        price = getattr(item.candidate, cost)
        if budget is not None and spent + price > budget:
            continue
        chosen.append(item)
        spent += price
    return chosen


def rank(assessed: list[Assessed], before: float, objective: str, cost: str) -> list[Assessed]:
    """Credible improvements first, best value per unit of cost first among them; then the rest, and
    candidates whose value could not be estimated last. Without the credibility rule, a cheap run whose
    expected gain is Monte-Carlo noise would top the list: noise divided by a small cost is large."""
    def key(item: Assessed) -> tuple[bool, float]:
        value = improvement(item, before, objective) / max(getattr(item.candidate, cost), 1e-12)
        return (not credible(item, before, objective), -value if np.isfinite(value) else np.inf)
    return sorted(assessed, key=key)


def credible(item: Assessed, before: float, objective: str) -> bool:
    """An expected improvement more than CREDIBLE_SE standard errors above zero."""
    return improvement(item, before, objective) > CREDIBLE_SE * item.after_se


def improvement(item: Assessed, before: float, objective: str) -> float:
    """How much the candidate is expected to improve the objective (positive: better)."""
    return before - item.after if objective == WIDTH else item.after - before


def combined(candidates: list[Candidate]) -> Candidate:
    """The chosen candidates as one set of runs, to assess together."""
    return Candidate(name=" + ".join(c.name for c in candidates), kind="set",
                     runs=tuple(run for c in candidates for run in c.runs),
                     device_hours=sum(c.device_hours for c in candidates), usd=sum(c.usd for c in candidates))


def _augmented(design: Design, runs: tuple[Run, ...]) -> Design:
    X = np.concatenate([design.X, np.stack([run.X for run in runs])])
    groups = np.concatenate([design.groups, [design.group_names.index(run.method) for run in runs]])
    return Design(X=X, groups=groups, group_names=design.group_names, levels=scale_index(X, groups))


def _starts_for(study: Study, design: Design) -> dict:
    """Where every fit of the completed design starts: the current fit's parameters for the same unit
    (variant, fold, groups), else those of the same groups on every point. The polish refit then moves
    them to each draw's optimum."""
    starts = study.current.starts
    remapped = {}
    for variant in study.variants:
        for fold in [FULL, *design.origins()]:
            for batch in fold_batches(design, variant, fold):
                key = (variant.name, fold, tuple(batch))
                start = starts.get(key)
                if start is None:
                    start = starts.get((variant.name, FULL, tuple(batch)))
                if start is not None:
                    remapped[key] = start
    return remapped
