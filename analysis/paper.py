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
from analysis.pipeline import Analysis, covered_levels

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
    means = _means(analysis)
    return [
        _fft_best(analysis, means),
        _lora_tradeoff(means),
        _scale_dependent(analysis),
        _small_predicts_large(means),
        _loss_indicates_downstream(analysis, rng),
        _robustness_security(analysis),
    ]


@dataclass(frozen=True)
class _Means:
    """The study's points averaged per scale and method (replicates together), once for every finding."""

    level_names: list[str]
    loss: dict[int, dict[str, float]]  # scale index -> method -> mean validation loss
    trainable: dict[int, dict[str, float]] | None  # the same for trainable parameters, where recorded


def _means(analysis: Analysis) -> _Means:
    data, frame = analysis.main.data, analysis.frame
    methods = np.array([data.group_names[g] for g in data.groups])

    # A scale that fewer than half the methods ran at (advised runs) is not a scale of the grid: the
    # findings compare the methods where (nearly) all of them ran, and at least two.
    covered = covered_levels(data.groups, analysis.levels)

    def per_scale(values: np.ndarray) -> dict[int, dict[str, float]]:
        means: dict[int, dict[str, float]] = {}
        for level in covered:
            at = analysis.levels == level
            if len(set(methods[at])) < 2:
                continue
            means[level] = {m: float(values[at & (methods == m)].mean()) for m in sorted(set(methods[at]))}
        return means

    trainable = (per_scale(frame["trainable_params"].to_numpy().astype(float))
                 if "trainable_params" in frame.columns else None)
    return _Means(analysis.level_names, per_scale(data.y.astype(float)), trainable)


def _verdict(holds: list[bool]) -> str:
    """Reproduced where the finding holds in every case, contradicted where it holds in none."""
    return REPRODUCES if all(holds) else CONTRADICTS if not any(holds) else MIXED


def _fft_best(analysis: Analysis, means: _Means) -> Finding:
    claim = "FFT generally leads to the best performance across all scales (abstract; section 4)."
    best = {level: min(by_method, key=by_method.get) for level, by_method in means.loss.items() if "fft" in by_method}
    won = [means.level_names[level] for level, method in best.items() if method == "fft"]
    evidence = f"lowest validation loss at {len(won)} of {len(best)} scales ({', '.join(won) or 'none'})"
    outlook = analysis.main.outlook
    if outlook is not None and outlook.win:
        evidence += "; beyond the largest scale, best " + ", ".join(
            f"at {w.label}: {w.best} ({w.probability:.0%} of forecast draws)" for w in outlook.win)
    return Finding(claim, _verdict([method == "fft" for method in best.values()]), evidence + ".")


def _lora_tradeoff(means: _Means) -> Finding:
    claim = "LoRA usually offers the most favourable trade-off between cost and performance (abstract)."
    losses, sizes = means.loss, means.trainable
    if sizes is None or not any("lora" in by_method for by_method in losses.values()):
        return Finding(claim, UNTESTED, "LoRA was not run, or trainable parameters are not recorded.")
    front = []
    losses = {level: by_method for level, by_method in losses.items() if "lora" in by_method}
    for level, by_method in losses.items():
        # LoRA is on the Pareto front when no method trains at most as many parameters and reaches a lower loss
        dominated = any(sizes[level][m] <= sizes[level]["lora"] and loss < by_method["lora"]
                        for m, loss in by_method.items() if m != "lora")
        if not dominated:
            front.append(means.level_names[level])
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


def _small_predicts_large(means: _Means) -> Finding:
    claim = "The tuning effectiveness observed in small models generalises well to larger models (abstract)."
    levels = sorted(means.loss)
    small, large = means.loss[levels[0]], means.loss[levels[-1]]
    common = sorted(set(small) & set(large))
    tau = kendall(np.array([small[m] for m in common]), np.array([large[m] for m in common]))
    names = f"{means.level_names[levels[0]]} vs. {means.level_names[levels[-1]]}"
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
    verdict = _verdict([low * sign > 0 and high * sign > 0 for _, _, low, high, sign in tested])
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
    verdict = _verdict([worse for _, _, worse in trends])
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
    if data.get("source") in FROM_THE_PRETRAINING_LIBRARY and data.get("packages"):
        notes.append(f"Fine-tuning data: `{data['source']}` docstring -> function pairs from third-party packages "
                     f"({', '.join(data['packages'])}), code the ladder did not pretrain on; the paper tunes on commits "
                     "and conversations (CommitPackFT + OASST), whose instructions are natural language, not docstrings.")
    elif data.get("source") in FROM_THE_PRETRAINING_LIBRARY:
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
