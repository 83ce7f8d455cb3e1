"""The headline forecast: calibrated on synthetic truths, guarded shapes, replicates, warnings, bad input."""

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analysis.diagnostics import forecast_warnings
from analysis.fitting import FitData, fit
from analysis.forecast import (
    Design,
    Target,
    Variant,
    backtest_largest,
    candidates,
    forecast,
    interval,
    simulate_coverage,
)
from analysis.laws import LAWS
from analysis.solver import Problem, minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import forecast_coverage  # the benchmark's truths and design, at a test's size

SCALES = np.array([1e9, 3e9, 7e9, 15.5e9])


def _design(groups: int = 3, seeds: int = 1, scales: np.ndarray = SCALES) -> Design:
    X = np.tile(np.repeat(scales, seeds), groups)[:, None]
    return Design(X=X, groups=np.repeat(np.arange(groups), len(scales) * seeds),
                  group_names=tuple(f"g{g}" for g in range(groups)),
                  levels=np.tile(np.repeat(np.arange(len(scales)), seeds), groups))


def _targets(groups: int, multiples=(34 / 15.5, 70 / 15.5)) -> list[Target]:
    return [Target(g, f"{m:.1f}x", np.array([SCALES[-1] * m])) for g in range(groups) for m in multiples]


def _coverage(scenario: str, draws: int, truth_sets: int, seed: int) -> dict:
    return forecast_coverage.run_scenario(forecast_coverage.SCENARIOS[scenario], draws, truth_sets, 0, seed,
                                          only=("averaged",))["averaged"]


@pytest.mark.parametrize("scenario", ["a 1%", "d broken 0.3%"])
def test_intervals_hold_the_truth_about_as_often_as_they_claim(scenario):
    """Nominal 95% at 2.2x and 4.5x beyond the data, on a truth of the candidates' shape and on one that
    is none of them; and the intervals are not bought with uselessly wide ones."""
    result = _coverage(scenario, draws=60, truth_sets=3, seed=7)
    for distance in ("2.2x", "4.5x"):
        assert 0.88 <= result[distance]["coverage"] <= 1.0, (distance, result[distance])
        assert result[distance]["median_width"] < 0.25, (distance, result[distance])


def test_a_single_law_without_model_averaging_is_too_sure_where_its_shape_is_wrong():
    """The pure power law cannot bend to a saturating truth: alone it misses; averaged it does not."""
    spec = forecast_coverage.SCENARIOS["a 0.3%"]
    report = forecast_coverage.run_scenario(spec, 40, 2, 0, seed=3, only=("averaged", "loglog independent"))
    assert report["loglog independent"]["4.5x"]["coverage"] < 0.8
    assert report["averaged"]["4.5x"]["coverage"] >= 0.9


def test_batched_draws_solve_each_data_set_as_its_own_fit():
    law = LAWS.get("power")
    x = SCALES
    rng = np.random.default_rng(0)
    ys = (1.5 + 40 * x ** -0.25)[None, :] * np.exp(0.002 * rng.standard_normal((3, 4)))
    single = [fit(law, FitData.single(x, y), least_squares=True).theta for y in ys]
    problem = Problem(law=law, X=x[:, None], y=ys, groups=np.zeros(4, dtype=int), least_squares=True)
    batched = minimize(problem, np.repeat(single[0][None, :], 3, axis=0), np.ones(4)).theta
    for one, many in zip(single, batched, strict=True):
        np.testing.assert_allclose(law.predict(many[:1], np.exp(many[None, 1:]), x[:, None]),
                                   law.predict(one[:1], np.exp(one[None, 1:]), x[:, None]), rtol=1e-6)


def test_exponents_stay_inside_their_physical_bounds():
    """A loss that rises with scale cannot be a falling power law: alpha stops at its bound, not below 0."""
    x = SCALES
    result = fit(LAWS.get("power"), FitData.single(x, np.array([2.0, 2.1, 2.25, 2.4])))
    assert LAWS.get("power").bounds()[0, 0] <= result.theta[0] <= 2.0
    assert not result.identifiable  # reduced to a constant: the points cannot tell E from A


def test_the_curved_law_never_turns_or_accelerates_beyond_the_data():
    law = LAWS.get("curved")
    fitted = SCALES[:, None]
    far = np.geomspace(SCALES[-1], SCALES[-1] * 100, 50)[:, None]
    u_edge = np.log(SCALES[-1])
    for a, b, c in ((1.0, -0.05, 0.004), (1.0, -0.05, -0.004), (1.0, 0.2, -0.004)):
        # decelerating (would turn up past its vertex), accelerating (would dive), rising then turning
        coefficients = np.array([[a, b, c]])
        values = np.log(law.predict(np.zeros((1, 0)), coefficients, far, fitted=fitted)[0])
        slopes = np.diff(values) / np.diff(np.log(far[:, 0]))
        edge_slope = b + 2 * c * u_edge
        assert np.all(slopes * np.sign(edge_slope) >= -1e-9), (a, b, c)  # monotone: never turns
        assert np.all(np.abs(slopes) <= abs(edge_slope) + 1e-9), (a, b, c)  # never steeper than at the edge
    inside = law.predict(np.zeros((1, 0)), np.array([[1.0, -0.05, 0.004]]), fitted, fitted=fitted)
    np.testing.assert_allclose(inside, law.predict(np.zeros((1, 0)), np.array([[1.0, -0.05, 0.004]]), fitted))


def _truth(E=(1.2, 1.3, 1.4), A=(40.0, 50.0, 45.0), alpha=0.25):
    return lambda x, g: E[g] + A[g] * x ** -alpha


def _draw(design: Design, truth, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mean = np.array([truth(design.X[i, 0], design.groups[i]) for i in range(len(design.groups))])
    return mean * np.exp(noise * rng.standard_normal(len(mean)))


def test_replicates_give_the_noise_of_a_new_run():
    design = _design(seeds=3)
    y = _draw(design, _truth(), 0.004, seed=1)
    result = forecast(design, y, _targets(3), candidates(None, 1, 3), 0.95)
    assert result.replicate_dof == len(y) - 12  # 36 runs of 12 cells
    assert result.replicates[0] == pytest.approx(0.004, rel=0.35)
    assert result.noise[0] == result.replicates[0]


def test_lack_of_fit_against_replicates_is_named():
    """Replicates scatter by 0.1%, but every shape misses a curve with a kink by far more."""
    design = _design(seeds=3, scales=np.array([1e9, 2e9, 4e9, 8e9, 16e9]))
    kinked = lambda x, g: 2.0 + (0.3 if x < 3e9 else 0.0) + 30 * x ** -0.2  # noqa: E731
    y = _draw(design, kinked, 0.001, seed=2)
    result = forecast(design, y, _targets(3), [Variant(LAWS.get("power"), False)], 0.95)
    notes = forecast_warnings(result, design.group_names, y, "loss vs N", [], "16e9")
    assert any(note.startswith("LACK OF FIT: loss vs N, power independent fit") for note in notes), notes


def test_a_floor_pushed_to_zero_and_an_unpinned_exponent_are_named():
    design = _design(groups=1)
    pure = lambda x, g: 30 * x ** -0.1  # noqa: E731  (no floor in the data's range)
    y = _draw(design, pure, 0.002, seed=0)
    result = forecast(design, y, _targets(1), [Variant(LAWS.get("power"), False)], 0.95)
    notes = forecast_warnings(result, design.group_names, y, "loss vs N", [], "l")
    assert any(n.startswith("AT BOUND: loss vs N, power independent fit") and "floor E went to 0 for g0" in n
               for n in notes), notes
    noisy = _draw(design, _truth(), 0.03, seed=4)[:4]
    result = forecast(_design(groups=1), noisy, _targets(1), [Variant(LAWS.get("power"), False)], 0.95)
    notes = forecast_warnings(result, ("g0",), noisy, "loss vs N", [], "l")
    assert any(n.startswith("UNPINNED: loss vs N, power independent fit") and "alpha = " in n for n in notes), notes


def test_two_scales_cannot_calibrate_and_say_so():
    design = _design(scales=SCALES[:2])
    y = _draw(design, _truth(), 0.003)
    result = forecast(design, y, _targets(3), candidates(None, 1, 3), 0.95)
    assert not result.calibrated and [v.name for v in result.variants] == ["loglog independent", "loglog joint"]
    notes = forecast_warnings(result, design.group_names, y, "loss vs N", [], "l")
    assert any(n.startswith("UNCALIBRATED: loss vs N") for n in notes)


def test_a_candidate_that_cannot_be_backtested_keeps_an_equal_share():
    """Three scales: only the two-parameter shapes can be backtested (on two scales); the three-parameter
    ones are not thereby evidence-free losers."""
    design = _design(scales=SCALES[:3])
    y = _draw(design, _truth(), 0.003)
    result = forecast(design, y, _targets(3), candidates(None, 1, 3), 0.95)
    names = [v.name for v in result.variants]
    for name in ("power independent", "power joint", "curved independent"):
        assert result.weights[0, names.index(name)] == pytest.approx(1 / len(names))


def test_the_forecast_backtests_itself_on_the_largest_scale():
    design = _design()
    y = _draw(design, _truth(), 0.003, seed=5)
    held_out, note = backtest_largest(design, y, candidates(None, 1, 3), 0.95)
    assert note == "" and len(held_out) == 3
    assert all(p.inside for p in held_out) and all(abs(p.relative_error) < 0.05 for p in held_out)


def test_the_interval_widens_with_distance_and_the_calibration_check_is_fast():
    design = _design()
    y = _draw(design, _truth(), 0.003, seed=6)
    result = forecast(design, y, _targets(3), candidates(None, 1, 3), 0.95)
    grid = [Target(0, "", np.array([v])) for v in (SCALES[-1], SCALES[-1] * 3, SCALES[-1] * 30)]
    _, lower, upper = interval(result, grid, 0.95)
    width = (upper - lower)[0]
    assert width[0] < width[1] < width[2]
    coverage = simulate_coverage(design, result, 0.95, draws=100)
    assert 0.85 <= coverage.covered <= 1.0 and coverage.seconds < 20
    assert "intervals held the truth" in coverage.describe()


def test_fit_on_a_table_leads_with_the_forecast_and_its_calibration(run_cli, tmp_path):
    design = _design()
    y = _draw(design, _truth(), 0.003, seed=8)
    table = tmp_path / "runs.csv"
    pl.DataFrame({"N": design.X[:, 0], "loss": y, "family": [f"g{g}" for g in design.groups]}).write_csv(table)
    code, stdout, err = run_cli("fit", str(table), "--x", "N", "--y", "loss", "--by", "family", "--predict",
                                "3.4e10,7e10", "--bootstrap", "50", "--json", "--out", str(tmp_path / "o"))
    assert code == 0, err
    result = json.loads(stdout)
    assert result["preferred_fit"] == "forecast"
    forecasts = result["forecast"]["predictions"]
    assert {(p["group"], p["label"]) for p in forecasts} == {(f"g{g}", label) for g in range(3)
                                                          for label in ("3.4e+10", "7e+10")}
    for p in forecasts:
        truth = _truth()(p["x"][0], int(p["group"][1]))
        assert p["lower"] <= truth <= p["upper"] and p["lower"] < p["estimate"] < p["upper"]
    assert 0.8 <= result["forecast"]["simulated_coverage"]["covered"] <= 1.0
    assert abs(sum(c["weight"] for c in result["forecast"]["candidates"]) - 1) < 1e-9
    rows = pl.DataFrame(result["results"], infer_schema_length=None)
    headline = rows.filter((pl.col("section") == "prediction") & (pl.col("fit") == "forecast"))
    assert headline.height == 6


def test_law_asked_for_is_the_only_candidate(run_cli, tmp_path):
    design = _design()
    table = tmp_path / "runs.csv"
    pl.DataFrame({"N": design.X[:, 0], "loss": _draw(design, _truth(), 0.003),
                  "family": [f"g{g}" for g in design.groups]}).write_csv(table)
    code, stdout, err = run_cli("fit", str(table), "--x", "N", "--y", "loss", "--by", "family", "--law", "loglog",
                                "--predict", "7e10", "--bootstrap", "0", "--json", "--out", str(tmp_path / "o"))
    assert code == 0, err
    result = json.loads(stdout)["forecast"]
    assert {c["fit"] for c in result["candidates"]} == {"loglog independent", "loglog joint"}
    # ...and it says how the default would have done on the same leave-largest-out backtest.
    assert result["backtest"]["judged"] == result["default_backtest"]["judged"] == 3
    assert result["default_backtest"]["mean_abs_relative_error"] < result["backtest"]["mean_abs_relative_error"]


@pytest.mark.parametrize(("values", "fragment"), [
    ([2.0] * 12, "every value of 'loss' is 2: there is no trend to fit"),
    ([2.0, 1.9, 1.8, -1.0] * 3, "y must be > 0"),
])
def test_a_table_that_cannot_be_forecast_is_one_line(run_cli, tmp_path, values, fragment):
    design = _design()
    table = tmp_path / "runs.csv"
    pl.DataFrame({"N": design.X[:, 0], "loss": values, "family": [f"g{g}" for g in design.groups]}).write_csv(table)
    code, _, err = run_cli("fit", str(table), "--x", "N", "--y", "loss", "--by", "family", "--out", str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "o").exists()


def test_a_group_with_a_single_scale_is_named_and_left_out(run_cli, tmp_path):
    design = _design()
    y = _draw(design, _truth(), 0.003)
    frame = pl.DataFrame({"N": design.X[:, 0], "loss": y, "family": [f"g{g}" for g in design.groups]})
    frame = pl.concat([frame, pl.DataFrame({"N": [1e9], "loss": [2.5], "family": ["lonely"]})])
    table = tmp_path / "runs.csv"
    frame.write_csv(table)
    code, stdout, err = run_cli("fit", str(table), "--x", "N", "--y", "loss", "--by", "family", "--predict", "7e10",
                                "--bootstrap", "0", "--json", "--out", str(tmp_path / "o"))
    assert code == 0, err
    result = json.loads(stdout)
    assert any(w.startswith("SINGLE SCALE: family 'lonely'") for w in result["warnings"])
    lonely = [p for p in result["forecast"]["predictions"] if p["group"] == "lonely"]
    assert lonely and lonely[0]["estimate"] is None


def test_many_close_scales_backtest_at_real_distances():
    """Hundreds of runs at closely spaced sizes: holding out only the very largest would test
    extrapolations of a hair, so the origins sit at fixed shares of the log-x span."""
    scales = np.geomspace(1e7, 1e10, 30)
    design = _design(groups=1, scales=scales)
    origins = design.origins()
    assert len(origins) == 3 and origins == sorted(origins, reverse=True) and min(origins) >= 2
    reach = [scales[-1] / scales[o] for o in origins]  # how far each fold extrapolates to the largest
    assert 2.0 < reach[0] < reach[1] < reach[2] < 30.0
    assert _design(groups=1).origins() == [3, 2]  # a ladder of 4 holds out its largest two in turn


def test_a_report_on_replicated_cells_shows_their_mean_and_spread(run_cli, tmp_path):
    design = _design(seeds=3)
    y = _draw(design, _truth(), 0.004, seed=9)
    table = tmp_path / "runs.csv"
    pl.DataFrame({"N": design.X[:, 0], "loss": y, "family": [f"g{g}" for g in design.groups]}).write_csv(table)
    code, _, err = run_cli("report", str(table), "--x", "N", "--y", "loss", "--by", "family", "--predict", "7e10",
                           "--bootstrap", "0", "--out", str(tmp_path / "o"))
    assert code == 0, err
    markdown = (tmp_path / "o" / "report.md").read_text()
    assert "### Replicates" in markdown and "from replicates" in markdown
    first = y[:3]
    assert f"| g0 | 1e+09 | 3 | {first.mean():.4g} |" in markdown
    section = markdown.split("### Replicates")[1].split("\n#")[0]
    assert len([line for line in section.splitlines() if line.startswith("| g")]) == 12  # a row per cell
