"""What the report prints: numbers to the precision their intervals support, coefficients at their
bound, how each downstream score was obtained, and fits that must fail cleanly rather than crash."""

import numpy as np
import pytest

from analysis import downstream
from analysis.fitting import FitData, fit
from analysis.formatting import with_interval
from analysis.laws import LAWS


@pytest.mark.parametrize(("values", "expected"), [
    ((3.7634, 3.7091, 3.7812), "3.763 [3.709, 3.781]"),  # the narrow side (0.018) to two digits
    ((0.1473, 0.08947, 0.2151), "0.147 [0.089, 0.215]"),
    ((14.78, 8.653, 9563.0), "14.8 [8.7, 9563]"),  # a far bound keeps four digits, not 9563.0
    ((2.118, 2.118, 60.7), "2.1 [2.1, 60.7]"),  # an interval ending at the estimate: two digits at least
    ((0.5654, -211100.0, 0.5848), "0.565 [-2.11e+05, 0.585]"),
    ((482.0, 400.0, 600.0), "482 [400, 600]"),
    ((3.961, float("nan"), float("nan")), "3.961 (no interval)"),
    ((3.969, 3.969, 3.969), "3.969 (interval of zero width)"),
])
def test_intervals_are_printed_to_the_precision_they_support(values, expected):
    assert with_interval(*values) == expected


def test_a_coefficient_at_its_bound_prints_as_zero():
    assert with_interval(4.86e-12, 1.1e-12, 4.86e-12, zero_below=1e-6) == "0 (at bound) [0, 0]"
    assert with_interval(1.365e-11, 1.2e-11, 1.653, zero_below=1e-6) == "0 (at bound) [0, 1.7]"
    assert with_interval(1.948, 0.25, 2.661, zero_below=1e-6) == "1.95 [0.25, 2.66]"


def test_a_floor_the_data_push_to_zero_is_detected_at_its_bound():
    x = np.geomspace(1e5, 1e7, 6)
    law = LAWS.get("power")
    pure = fit(law, FitData.single(x, 8.0 * x**-0.03 - 0.3))  # wants E = -0.3: E runs to its bound 0
    assert pure.params("all")["E"] < pure.negligible("all")["E"]
    floored = fit(law, FitData.single(x, 1.5 + 40.0 * x**-0.3))
    assert floored.params("all")["E"] == pytest.approx(1.5, rel=1e-3)
    assert floored.params("all")["E"] > floored.negligible("all")["E"]
    assert fit(LAWS.get("exponential"), FitData.single(x / 1e6, 0.9 - np.exp(-x / 1e6))).negligible("all") == {}


def test_non_monotone_losses_fail_cleanly_instead_of_crashing_the_solver():
    """The real micro sweep's ptuning losses with the largest scale 0.4 worse: Levenberg-Marquardt's
    damping used to shrink to 0 on the way to the flat limit, and a singular matrix raised LinAlgError."""
    x = np.array([126408.0, 304008.0, 660528.0, 1490336.0])
    y = np.array([5.446429, 5.340002, 5.244857, 5.594199])
    result = fit(LAWS.get("power"), FitData.single(x, y))
    assert not (result.converged and result.identifiable)


@pytest.mark.parametrize(("task", "metric", "settings", "expected"), [
    ("humanevalsynthesize-ll", "accuracy", ['{"options_per_item": 3, "limit": 40}'], (downstream.LIKELIHOOD, 1 / 3)),
    ("humanevalfix-ll", "nll", ['{"options_per_item": 2}'], (downstream.LIKELIHOOD, None)),
    ("defect-detection-ll", "macro_f1", ['{"limit": 40}', None], (downstream.LIKELIHOOD, None)),
    ("humanevalsynthesize", "pass@1", ['{"n_samples": 20}'], (downstream.EXECUTED, None)),
    ("security", "insecure_rate", ["not json"], (downstream.GENERATED, None)),
])
def test_how_each_score_was_obtained(task, metric, settings, expected):
    assert downstream.scoring(task, metric, settings) == expected


def _link(metric: str, rho: float, p_value: float) -> downstream.Link:
    return downstream.Link(task="t", metric=metric, loss=np.empty(0), score=np.empty(0), rows=np.empty(0, dtype=int),
                           correlation=downstream.Correlation(rho, p_value, 28), fit=None, boot=None, note="",
                           predictions=[])


def test_a_score_tracks_the_loss_only_with_a_significant_correlation_of_the_right_sign():
    assert _link("accuracy", -0.8, 1e-6).tracks_loss  # lower loss, higher accuracy
    assert not _link("accuracy", 0.8, 1e-6).tracks_loss  # accuracy rising with the loss: not a link to use
    assert not _link("accuracy", -0.12, 0.53).tracks_loss
    assert _link("nll", 0.82, 7e-8).tracks_loss  # lower is better: positive
    assert not _link("accuracy", float("nan"), float("nan")).tracks_loss
