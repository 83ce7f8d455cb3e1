"""From loss to downstream scores, and the paper's findings as numbers.

- Link: one loss -> score law per task and metric, across all methods and scales (the scores of the
  tuned models as a function of their validation loss).
- Two-step prediction: scale -> loss, then loss -> score (the link). From the headline forecast
  (`analysis.forecast`): draw b of the loss forecast goes through link refit b, so the interval
  carries the forecast's whole uncertainty and the link's; from a single-law fit (tables given no
  forecast), resample by resample on the same resampled cells. Scores that are shares stay in
  [0, 1], and not below chance where it is known (`score_bounds`).
- Spearman correlation of validation loss with each score (Astraios: loss tracks downstream ability).
- Kendall tau of the method ranking between consecutive scales ("small-model loss predicts
  large-model ranking").
- How each score was obtained (likelihood-ranked, executed, or generated and parsed), so that a
  reader never mistakes a likelihood proxy for an executed pass@k.
"""

import itertools
import json
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from analysis import bootstrap
from analysis.curves import Curve
from analysis.fitting import Fit, FitData, fit, predict
from analysis.laws import Law
from sweeper.core.errors import UserError

# Metric names that mean "lower is better" (error rates, insecure-code rates, losses, nats per token).
LOWER_IS_BETTER = ("insecure", "error", "err_", "loss", "perplexity", "nll")
# How a score was obtained. Likelihood-scored tasks (named `-ll`, sweeper.evals) generate nothing:
# they rank given answers by the model's log-probabilities, a graded proxy for models too small to
# write programs that pass.
LIKELIHOOD = "likelihood"
EXECUTED = "executed"  # generated programs run against their tests (pass@k)
GENERATED = "generated"  # generated text scored without running it (a parsed answer, a static analyser)
SCORED_BY = {
    LIKELIHOOD: "likelihood-ranked answers (no generation)",
    EXECUTED: "generated programs, executed against tests",
    GENERATED: "generated answers, parsed or statically analysed",
}
# Metric names of scores that are shares of items (bounded by 0 and 1).
SHARE_MARKERS = ("pass@", "acc", "rate", "f1", "valid", "insecure", "exact")
# A link is used for two-step predictions only if the score tracks the loss: a Spearman correlation
# of the expected sign at this significance. A link fitted to noise extrapolates noise.
LINK_P_VALUE = 0.05


def lower_is_better(metric: str) -> bool:
    return any(marker in metric.lower() for marker in LOWER_IS_BETTER)


def scoring(task: str, metric: str, settings: list[str]) -> tuple[str, float | None]:
    """How a task's metric was obtained (LIKELIHOOD, EXECUTED or GENERATED), from the task name and
    the evals rows' `settings` JSON, and the chance level of an accuracy over `options_per_item`
    choices (None when the evals do not record one)."""
    options = []
    for text in settings:
        try:
            recorded = json.loads(text) if text else {}
        except json.JSONDecodeError:
            recorded = {}
        if isinstance(recorded, dict) and isinstance(recorded.get("options_per_item"), int):
            options.append(recorded["options_per_item"])
    if task.endswith("-ll") or options:
        kind = LIKELIHOOD
    elif "pass@" in metric:
        kind = EXECUTED
    else:
        kind = GENERATED
    chance = 1.0 / max(options) if options and metric.startswith("accuracy") else None
    return kind, chance


@dataclass(frozen=True)
class Correlation:
    statistic: float  # NaN when either side is constant
    p_value: float
    n: int


def spearman(a: np.ndarray, b: np.ndarray) -> Correlation:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return Correlation(float("nan"), float("nan"), len(a))
    result = stats.spearmanr(a, b)
    return Correlation(float(result.statistic), float(result.pvalue), len(a))


def kendall(a: np.ndarray, b: np.ndarray) -> Correlation:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return Correlation(float("nan"), float("nan"), len(a))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.kendalltau(a, b)
    return Correlation(float(result.statistic), float(result.pvalue), len(a))


@dataclass(frozen=True)
class RankAgreement:
    lower: str  # scale names
    upper: str
    tau: Correlation


def ranking_stability(values: np.ndarray, groups: np.ndarray, levels: np.ndarray,
                      level_names: list[str]) -> list[RankAgreement]:
    """Kendall tau between the groups' values at each pair of consecutive levels (groups present at both)."""
    present = sorted(set(levels.tolist()))
    agreements = []
    for lower, upper in itertools.pairwise(present):
        at_lower = {int(g): float(v) for g, v, lvl in zip(groups, values, levels, strict=True) if lvl == lower}
        at_upper = {int(g): float(v) for g, v, lvl in zip(groups, values, levels, strict=True) if lvl == upper}
        common = sorted(set(at_lower) & set(at_upper))
        tau = kendall(np.array([at_lower[g] for g in common]), np.array([at_upper[g] for g in common]))
        agreements.append(RankAgreement(level_names[lower], level_names[upper], tau))
    return agreements


@dataclass(frozen=True)
class ScorePrediction:
    group: str
    label: str
    X: np.ndarray  # (d,) the scale inputs
    loss: float  # predicted loss at X
    score: float  # predicted score
    lower: float
    upper: float
    resamples: int  # resamples that both steps could use
    extrapolated: bool  # the predicted loss lies outside the losses the link was fitted on


@dataclass(frozen=True)
class Link:
    task: str
    metric: str
    loss: np.ndarray  # (m,) validation loss of each evaluated cell
    score: np.ndarray  # (m,)
    rows: np.ndarray  # (m,) indices of those cells among the fitted points
    correlation: Correlation
    fit: Fit | None  # None when it could not be fitted (see note)
    boot: bootstrap.Bootstrap | None
    note: str
    predictions: list[ScorePrediction]
    scored_by: str = GENERATED  # LIKELIHOOD, EXECUTED or GENERATED
    chance: float | None = None  # chance level of an accuracy, where known

    @property
    def tracks_loss(self) -> bool:
        """Whether the score follows the loss: significant Spearman correlation of the expected sign
        (positive for lower-is-better metrics, negative otherwise)."""
        rho, p_value = self.correlation.statistic, self.correlation.p_value
        expected = 1.0 if lower_is_better(self.metric) else -1.0
        return bool(np.isfinite(rho) and p_value < LINK_P_VALUE and rho * expected > 0)


def fit_link(law: Law, task: str, metric: str, loss: np.ndarray, score: np.ndarray, rows: np.ndarray,
             counts: np.ndarray, scored_by: str = GENERATED, chance: float | None = None) -> Link:
    """Fit the loss -> score link on one task's (loss, score) pairs, bootstrapped on `counts` (over all
    points; the columns of `rows` are used). Data it cannot be fitted to gives a note, not an error:
    one flat task must not stop the report of the others."""
    correlation = spearman(loss, score)
    link_fit, boot, note = None, None, ""
    if np.ptp(score) == 0:
        note = f"every score is {score[0]:.4g}: no link to fit"
    else:
        try:
            link_fit = fit(law, FitData.single(loss, score, "all"), f"link {task}/{metric}")
            if not link_fit.converged:
                note, link_fit = f"the {law.name} link did not converge (try another --link)", None
            elif not link_fit.identifiable:
                note, link_fit = f"the points cannot pin down the {law.n_params} parameters of the {law.name} link", None
        except UserError as err:
            note = str(err)
    if link_fit is not None and link_fit.dof > 0 and len(counts):
        boot = bootstrap.run(link_fit, counts[:, rows])
    return Link(task=task, metric=metric, loss=loss, score=score, rows=rows, correlation=correlation,
                fit=link_fit, boot=boot, note=note, predictions=[], scored_by=scored_by, chance=chance)


def chain(link: Link, curve: Curve, group: str, label: str, X: np.ndarray, level: float) -> ScorePrediction:
    """Score at scale X for `group`: the curve's loss at X through the link, resample by resample."""
    assert link.fit is not None
    X = np.asarray(X, dtype=float).reshape(1, -1)
    bounds = score_bounds(link.metric, link.chance)
    loss = float(curve.fit.predict(X, group)[0])
    score = float(_bounded(link.fit.predict(np.array([[loss]]), "all")[0], bounds))
    lower = upper = float("nan")
    resamples = 0
    if curve.boot is not None and link.boot is not None:
        both = curve.boot.used & link.boot.used
        loss_rows = np.cumsum(curve.boot.used)[both] - 1  # position of resample b among each step's refits
        link_rows = np.cumsum(link.boot.used)[both] - 1
        losses = bootstrap.prediction_samples(curve.fit, curve.boot, group, X)[loss_rows, 0]
        scores = _bounded(_paired_predictions(link.fit, link.boot.thetas[link_rows], losses), bounds)
        resamples = len(scores)
        low, high = bootstrap.interval(scores, level)
        lower, upper = float(low), float(high)
    return ScorePrediction(group=group, label=label, X=X[0], loss=loss, score=score, lower=lower, upper=upper,
                           resamples=resamples, extrapolated=not link.loss.min() <= loss <= link.loss.max())


def score_bounds(metric: str, chance: float | None) -> tuple[float, float] | None:
    """The range a score can take: a share (pass@k, an accuracy, a rate, F1) lies in [0, 1], and a
    higher-is-better one not below chance where chance is known; None for unbounded metrics (an NLL)."""
    if not any(marker in metric.lower() for marker in SHARE_MARKERS):
        return None
    floor = chance if chance is not None and not lower_is_better(metric) else 0.0
    return floor, 1.0


def chain_forecast(link: Link, losses: np.ndarray, loss: float, group: str, label: str, X: np.ndarray,
                   level: float) -> ScorePrediction:
    """Score at a target through the link, from the loss forecast: draw b of the forecast distribution
    of the loss goes through link refit b, so the interval carries both steps (the forecast's model-form
    and calibration allowances included); scores are kept inside the metric's range."""
    assert link.fit is not None
    bounds = score_bounds(link.metric, link.chance)
    score = _bounded(float(link.fit.predict(np.array([[loss]]), "all")[0]), bounds)
    lower = upper = float("nan")
    resamples = 0
    if link.boot is not None and len(link.boot.thetas):
        count = min(len(link.boot.thetas), len(losses))
        scores = _bounded(_paired_predictions(link.fit, link.boot.thetas[:count], losses[:count]), bounds)
        finite = scores[np.isfinite(scores)]
        resamples = len(finite)
        low, high = bootstrap.interval(finite, level)
        lower, upper = float(low), float(high)
    return ScorePrediction(group=group, label=label, X=np.asarray(X, dtype=float).reshape(-1), loss=loss,
                           score=score, lower=lower, upper=upper, resamples=resamples,
                           extrapolated=not link.loss.min() <= loss <= link.loss.max())


def _bounded(values, bounds: tuple[float, float] | None):
    return values if bounds is None else np.clip(values, *bounds)


def _paired_predictions(link_fit: Fit, thetas: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Link refit b evaluated at loss b, for every b (the diagonal of refits x losses)."""
    values = predict(link_fit.problem, thetas, 0, losses[:, None])  # (B, B): refit x loss
    return np.diagonal(values).copy()
