"""Astraios' findings, checked on the analysed study: which it reproduces, which it contradicts, and
which it cannot speak to (the micro report's first screen, issue 14).

The findings are the paper's own (arXiv 2401.00788, abstract and sections 4-5); every verdict and number
is computed here from the study's points and downstream scores, with an interval where the data allow
one: a percentile bootstrap over cells (`BOOTSTRAP` resamples) for correlations, the joint forecast draws
for "who wins beyond the largest scale". A finding is checked only on a sweep grouped by the Astraios
method names; any other table gets no section.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.curves import INDEPENDENT, JOINT
from analysis.downstream import LIKELIHOOD, kendall, lower_is_better, spearman
from analysis.formatting import number
from analysis.pipeline import Analysis

ASTRAIOS_METHODS = ("fft", "lora", "ptuning", "ia3", "adapterh", "adapterp", "parallel")
REPRODUCES, CONTRADICTS, MIXED, UNTESTED = "reproduces", "contradicts", "mixed", "cannot test here"
BOOTSTRAP = 2000
INTERVAL = 0.90  # of the bootstrap intervals on correlations
ROBUSTNESS_TASKS = ("recode-", "robustness-proxy")
SECURITY_TASKS = ("aatk-", "security-proxy")
# Data sources that mine the same kind of code the micro ladder pretrains on (its held-out files by default).
FROM_THE_PRETRAINING_LIBRARY = ("local-code",)


@dataclass(frozen=True)
class Finding:
    claim: str  # the paper's finding, with where it is stated
    verdict: str  # REPRODUCES | CONTRADICTS | MIXED | UNTESTED
    evidence: str  # what this study measured


def applies(analysis: Analysis) -> bool:
    """Whether the study is a grid of Astraios methods over scales (FFT among them)."""
    groups = set(analysis.main.data.group_names)
    return analysis.by == "method" and "fft" in groups and groups <= set(ASTRAIOS_METHODS) and len(
        set(analysis.level_names)) >= 2


def check_findings(analysis: Analysis, seed: int = 0) -> list[Finding]:
    rng = np.random.default_rng(seed)
    table = _points(analysis)
    return [
        _fft_best(analysis, table),
        _lora_tradeoff(table),
        _scale_dependent(analysis),
        _small_predicts_large(table),
        _loss_indicates_downstream(analysis, rng),
        _robustness_security(analysis),
    ]


def learning_rate_policy(analysis: Analysis) -> str:
    """How the methods' learning rates were set, which a method ranking depends on (issue 14 item 1):
    searched per cell (the sweep's space says so), one for all, or one per method."""
    frame = analysis.frame
    if "lr" not in frame.columns or "method" not in frame.columns:
        return "The learning rate of each run is not recorded in this table."
    space = analysis.source.manifest.get("space") or {}
    trials = (space.get("search") or {}).get("trials", 1)
    searched_by_rule = any(key.startswith("search.") for rule in space.get("overrides") or () for key in rule["set"])
    if trials > 1 or searched_by_rule:
        budget = f"{trials} trials per cell" if not searched_by_rule else "a search set per cell by the space's overrides"
        return (f"Learning rates: searched per cell ({budget}), so a ranking compares methods at their own best "
                "step size; it is fair only where every method had the same search budget.")
    by_method = {method: sorted(set(frame.filter(frame["method"] == method)["lr"].to_list()))
                 for method in dict.fromkeys(frame["method"].to_list())}
    values = {lr for lrs in by_method.values() for lr in lrs}
    if len(values) == 1:
        return (f"Learning rate: one for every method ({number(values.pop(), 3)}), as the paper (1e-4 for every "
                "method); a method that needs a larger step is ranked at this one.")
    listed = "; ".join(f"{method} {', '.join(number(lr, 3) for lr in lrs)}" for method, lrs in by_method.items())
    return (f"Learning rates differ by method ({listed}): a ranking mixes each method with its step size. For a fair "
            "comparison use one learning rate for all, or the per-cell search with the same budget for every method.")


@dataclass(frozen=True)
class _Points:
    method: np.ndarray  # (n,) method name per point
    level: np.ndarray  # (n,) scale index
    level_names: list[str]
    loss: np.ndarray
    trainable: np.ndarray | None


def _points(analysis: Analysis) -> _Points:
    data = analysis.main.data
    frame = analysis.frame
    trainable = frame["trainable_params"].to_numpy().astype(float) if "trainable_params" in frame.columns else None
    return _Points(np.array([data.group_names[g] for g in data.groups]), analysis.levels, analysis.level_names,
                   data.y.astype(float), trainable)


def _per_scale_means(table: _Points, values: np.ndarray) -> dict[int, dict[str, float]]:
    """scale index -> method -> mean value over the scale's runs of the method (replicates averaged)."""
    means: dict[int, dict[str, float]] = {}
    for level in sorted(set(table.level.tolist())):
        at = table.level == level
        means[level] = {m: float(values[at & (table.method == m)].mean()) for m in sorted(set(table.method[at]))}
    return means


def _fft_best(analysis: Analysis, table: _Points) -> Finding:
    claim = "FFT generally leads to the best performance across all scales (abstract; section 4)."
    means = _per_scale_means(table, table.loss)
    best = {level: min(by_method, key=by_method.get) for level, by_method in means.items()}
    won = [table.level_names[level] for level, method in best.items() if method == "fft"]
    evidence = f"lowest validation loss at {len(won)} of {len(best)} scales ({', '.join(won) or 'none'})"
    outlook = analysis.main.outlook
    if outlook is not None and outlook.win:
        evidence += "; beyond the largest scale, best " + ", ".join(
            f"at {w.label}: {w.best} ({w.probability:.0%} of forecast draws)" for w in outlook.win)
    verdict = REPRODUCES if len(won) == len(best) else CONTRADICTS if not won else MIXED
    return Finding(claim, verdict, evidence + ".")


def _lora_tradeoff(table: _Points) -> Finding:
    claim = "LoRA usually offers the most favourable trade-off between cost and performance (abstract)."
    if table.trainable is None or "lora" not in set(table.method):
        return Finding(claim, UNTESTED, "LoRA was not run, or trainable parameters are not recorded.")
    losses, sizes = _per_scale_means(table, table.loss), _per_scale_means(table, table.trainable)
    front = []
    for level, by_method in losses.items():
        # LoRA is on the Pareto front when no method trains at most as many parameters and reaches a lower loss
        dominated = any(sizes[level][m] <= sizes[level]["lora"] and loss < by_method["lora"]
                        for m, loss in by_method.items() if m != "lora")
        if not dominated:
            front.append(table.level_names[level])
    n = len(losses)
    verdict = REPRODUCES if len(front) * 2 > n else CONTRADICTS if not front else MIXED
    return Finding(claim, verdict, f"LoRA is on the front of trainable parameters vs. validation loss (no method "
                                   f"with fewer or as many parameters reaches a lower loss) at {len(front)} of {n} "
                                   f"scales ({', '.join(front) or 'none'}).")


def _scale_dependent(analysis: Analysis) -> Finding:
    """Whether the methods' curves differ in shape, not only in level: per-method exponents (independent
    fits) predict left-out points better than one exponent shared by every method (the joint fit)."""
    claim = "PEFT methods differ in their efficacy depending on the model scale (abstract; section 4)."
    errors = {c.kind: c for c in analysis.main.comparison if np.isfinite(c.loo_mean_abs_error)}
    taus = ", ".join(f"{a.lower} -> {a.upper} {number(a.tau.statistic, 2)}" for a in analysis.ranking
                     if np.isfinite(a.tau.statistic))
    order = f"; Kendall tau of the methods' order at consecutive scales: {taus}" if taus else ""
    if JOINT not in errors or INDEPENDENT not in errors:
        return Finding(claim, UNTESTED, f"the joint and per-method fits cannot both be scored{order}.")
    joint, independent = errors[JOINT].loo_mean_abs_error, errors[INDEPENDENT].loo_mean_abs_error
    verdict = REPRODUCES if independent < joint else CONTRADICTS
    shape = ("per-method exponents predict left-out points better" if independent < joint
             else "one exponent shared by every method predicts left-out points as well or better")
    return Finding(claim, verdict, f"{shape} (leave-one-out error {number(independent, 2)} per method vs. "
                                   f"{number(joint, 2)} shared), so the gaps between methods "
                                   f"{'change' if independent < joint else 'do not change beyond the noise'} "
                                   f"with scale{order}.")


def _small_predicts_large(table: _Points) -> Finding:
    claim = "The tuning effectiveness observed in small models generalises well to larger models (abstract)."
    means = _per_scale_means(table, table.loss)
    levels = sorted(means)
    small, large = means[levels[0]], means[levels[-1]]
    common = sorted(set(small) & set(large))
    tau = kendall(np.array([small[m] for m in common]), np.array([large[m] for m in common]))
    names = f"{table.level_names[levels[0]]} vs. {table.level_names[levels[-1]]}"
    if not np.isfinite(tau.statistic):
        return Finding(claim, UNTESTED, f"the rankings at {names} cannot be compared.")
    verdict = REPRODUCES if tau.statistic > 0 and tau.p_value < 0.1 else CONTRADICTS if tau.statistic <= 0 else MIXED
    return Finding(claim, verdict, f"ranking of the methods by validation loss at the smallest vs. the largest scale "
                                   f"({names}): Kendall tau {number(tau.statistic, 2)} (p {number(tau.p_value, 2)}, "
                                   f"{tau.n} methods).")


def _loss_indicates_downstream(analysis: Analysis, rng: np.random.Generator) -> Finding:
    claim = "The validation loss of instruction tuning is a reliable indicator of downstream performance (abstract)."
    tested, circular = [], []
    for link in analysis.links:
        if link.scored_by == LIKELIHOOD:
            circular.append(f"{link.task} {link.metric}")
            continue
        rho = link.correlation.statistic
        if not np.isfinite(rho):
            continue
        low, high = _bootstrap_spearman(link.loss, link.score, rng)
        sign = 1.0 if lower_is_better(link.metric) else -1.0  # the sign a score that tracks the loss has
        tested.append((f"{link.task} {link.metric}", rho, low, high, sign))
    if not tested:
        why = "no downstream score that is not itself a likelihood varies across the cells"
        return Finding(claim, UNTESTED, why + (f" (likelihood-scored, nearly circular: {', '.join(circular)})"
                                               if circular else "") + ".")
    holds = [low * sign > 0 and high * sign > 0 for _, _, low, high, sign in tested]
    verdict = REPRODUCES if all(holds) else CONTRADICTS if not any(holds) else MIXED
    text = "; ".join(f"{name}: Spearman {number(rho, 2)} [{number(low, 2)}, {number(high, 2)}]"
                     for name, rho, low, high, _ in tested)
    likelihood_tasks = sorted({name.split(" ")[0] for name in circular})
    left_out = f"; not counted, being likelihood-scored: {', '.join(likelihood_tasks)}" if likelihood_tasks else ""
    return Finding(claim, verdict, f"loss vs. scores not computed from likelihoods, over the evaluated cells "
                                   f"({INTERVAL:.0%} bootstrap intervals over cells): {text}{left_out}.")


def _bootstrap_spearman(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    draws = []
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, len(a), len(a))
        rho = spearman(a[pick], b[pick]).statistic
        if np.isfinite(rho):
            draws.append(rho)
    if not draws:
        return float("nan"), float("nan")
    tail = (1 - INTERVAL) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def _robustness_security(analysis: Analysis) -> Finding:
    claim = "Larger models tend to show reduced robustness and less security (abstract; sections 4.4-4.5)."
    scored = [link for link in analysis.links if link.task.startswith(ROBUSTNESS_TASKS + SECURITY_TASKS)]
    trends = []
    for link in scored:
        trend = spearman(analysis.levels[link.rows].astype(float), link.score)
        if np.isfinite(trend.statistic):
            # "worse with scale": a lower-is-better rate (insecure, failed) rises, a score falls
            worse = trend.statistic > 0 if lower_is_better(link.metric) else trend.statistic < 0
            trends.append((f"{link.task} {link.metric}", trend, worse and trend.p_value < 0.1))
    if not trends:
        return Finding(claim, UNTESTED, "no robustness (ReCode) or security (AATK) score varies across these cells: "
                                        "models this small pass no executed task and write no code to judge.")
    holds = [worse for _, _, worse in trends]
    verdict = REPRODUCES if all(holds) else CONTRADICTS if not any(holds) else MIXED
    text = "; ".join(f"{name}: Spearman with scale {number(trend.statistic, 2)} (p {number(trend.p_value, 2)})"
                     for name, trend, _ in trends)
    return Finding(claim, verdict, f"{text}.")


def limits(analysis: Analysis) -> list[str]:
    """What this study cannot speak to, from its own records: how far its pretraining is from the paper's
    base models, and which of the paper's measurements it has no scores for."""
    from sweeper.core.errors import UserError
    from sweeper.ladders import get_ladder

    frame, notes = analysis.frame, []
    if "ladder" in frame.columns and "total_params" in frame.columns and frame["ladder"].n_unique() == 1:
        name = frame["ladder"][0]
        try:
            ladder = get_ladder(name)
        except UserError:
            ladder = None
        if ladder is not None:
            fft = frame.filter(frame["method"] == "fft").unique("scale", keep="first")
            params = dict(zip(fft["scale"].to_list(), fft["total_params"].to_list(), strict=True))
            ratios = [(scale, ladder.scale(scale).pretrain_tokens / params[scale])
                      for scale in sorted(params, key=lambda name: ladder.scale(name).arch.n_embd)]
            if ratios:
                paper = _starcoderbase_tokens_per_parameter()
                notes.append(
                    "Pretraining: " + ", ".join(f"{scale} {ratio:.2g}" for scale, ratio in ratios)
                    + f" tokens per parameter (StarCoderBase: {min(paper):.0f}-{max(paper):.0f}); the base models are "
                      "far less trained than the paper's, so fine-tuning moves them further.")
    data = (analysis.source.manifest.get("space") or {}).get("data") or {}
    if data.get("source") in FROM_THE_PRETRAINING_LIBRARY:
        notes.append(f"Fine-tuning data: `{data['source']}` pairs mined from code like the pretraining corpus's (held-out "
                     "files of the same library), so fine-tuning is close to continued pretraining; the paper tunes "
                     "models pretrained on The Stack on commits and conversations (CommitPackFT + OASST).")
    tasks = set(analysis.source.evals["task"].to_list()) if analysis.source.evals is not None else set()
    executed = {"humanevalsynthesize", "humanevalfix", "humanevalexplain"}
    if not tasks & executed:
        notes.append("Executed benchmarks (HumanEvalPack pass@k with the paper's n=20 sampling) were not scored: "
                     "models this small pass none, so absolute scores and their comparison with the paper's tables "
                     "need a GPU run of the astraios space.")
    if not any(task.startswith(ROBUSTNESS_TASKS + SECURITY_TASKS) for task in tasks):
        notes.append("Robustness (ReCode) and security (AATK) were not scored, so the paper's findings on them "
                     "cannot be checked at this size.")
    return notes


def _starcoderbase_tokens_per_parameter() -> list[float]:
    """Pretraining tokens per parameter of the paper's base models (the astraios space's FFT cells;
    parameter counts are remembered on disk after the first `plan`)."""
    from sweeper.ladders import get_ladder
    from sweeper.plan import parameter_counts
    from sweeper.space import expand, load_space

    cells = [cell for cell in expand(load_space("astraios", [])) if cell.method == "fft"]
    ladder = get_ladder(cells[0].ladder)
    return [ladder.scale(cell.scale).pretrain_tokens / total
            for cell, (_, total) in zip(cells, parameter_counts(cells), strict=True)]
