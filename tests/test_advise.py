"""`sweeper advise`: candidates priced by the sweep's plan and valued by simulating their results (issue 15)."""

import json

import numpy as np
import polars as pl
import pytest
from test_analysis_sweep import make_sweep

from analysis import advise
from sweeper.space import load_space

# The micro ladder's total parameters (full fine-tuning) per scale: new runs at ml and xl land between
# and beyond these, as they would in a real micro sweep.
MICRO_TOTALS = {"xs": 123_888, "s": 295_512, "m": 638_688, "l": 1_436_960}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = make_sweep(tmp_path_factory.mktemp("advise") / "micro", scales=MICRO_TOTALS, evals=False)
    space = load_space("micro").model_dump(mode="json")
    (folder / "manifest.json").write_text(json.dumps({"space": space, "plan": {}}))
    return folder


def test_advice_values_the_ladders_other_scales_and_keeps_a_record(run_cli, sweep):
    code, out, err = run_cli("advise", str(sweep), "--target", "lora@70B-equivalent", "--candidates", "scales",
                             "--draws", "6", "--json")
    assert code == 0, err
    advice = json.loads(out)
    by_name = {c["candidate"]: c for c in advice["candidates"]}
    assert {"lora@ml", "lora@xl", "fft@xl"} <= set(by_name)
    assert all(c["device_hours"] > 0 and np.isfinite(c["expected_after"]) for c in by_name.values())
    assert by_name["lora@xl"]["device_hours"] > by_name["lora@ml"]["device_hours"]  # bigger models cost more
    # a run of the target's own method at a larger scale is expected to narrow its interval
    assert by_name["lora@xl"]["expected_after"] < advice["before"]
    assert advice["targets"] == [{"method": "lora", "label": "70B-equivalent",
                                  "total_params": pytest.approx(advice["targets"][0]["total_params"])}]
    record = json.loads((sweep / "advice").joinpath(sorted(p.name for p in (sweep / "advice").iterdir())[-1]).read_text())
    assert record["argv"][0] == "advise" and record["candidates"] == advice["candidates"] and record["provenance"]


def _assessed(name: str, cost: float, after: float, se: float = 0.001) -> advise.Assessed:
    return advise.Assessed(advise.Candidate(name, "scale", (), cost, cost), after, se)


def test_the_chosen_set_is_the_better_of_the_two_greedy_rules(monkeypatch):
    """Cheap runs whose gains do not add up against one dear run: the set is judged as a whole."""
    joint = {"cheap-a + cheap-b": 0.17, "dear + cheap-a": 0.115}
    monkeypatch.setattr(advise, "assess", lambda study, candidate, draws, seed: _assessed(
        candidate.name, candidate.usd, joint[candidate.name]))
    study = type("S", (), {"objective": advise.WIDTH})()
    options = [_assessed("cheap-a", 1.0, 0.18), _assessed("cheap-b", 1.0, 0.181), _assessed("dear", 8.0, 0.12),
               _assessed("noise", 0.1, 0.199, se=0.01), _assessed("worse", 1.0, 0.25)]
    choice = advise.choose(study, options, 0.20, 9.0, "usd")
    assert choice.rule == "gain" and [a.candidate.name for a in choice.chosen] == ["dear", "cheap-a"]
    assert choice.together.after == 0.115
    # by gain per cost alone the budget would go on the two cheap runs: 0.17, not 0.115
    assert [a.candidate.name for a in advise.rank(options, 0.20, advise.WIDTH, "usd")[:2]] == ["cheap-a", "cheap-b"]
    # "noise" is within its Monte-Carlo error and "worse" hurts: neither is ever chosen
    assert advise.choose(study, options[3:], 0.20, None, "usd").chosen == []


@pytest.mark.parametrize(("args", "expected"), [
    (["--target", "nope@70B-equivalent"], "method 'nope' has no points in this sweep; valid: fft, lora"),
    (["--target", "lora@s"], "is not above lora's largest trained scale"),
    (["--target", "lora@huge"], "unknown scale 'huge'; valid: 34B-equivalent, 70B-equivalent"),
    (["--target", "lora@70b", "--budget-usd", "1e-9"], "is below the cheapest candidate"),
    (["--target", "lora@70b", "--objective", "speed"], "--objective 'speed': expected one of width, ranking"),
])
def test_bad_advice_input_is_one_line_and_writes_nothing(run_cli, tmp_path, args, expected):
    folder = make_sweep(tmp_path / "micro", scales=MICRO_TOTALS, evals=False)
    (folder / "manifest.json").write_text(json.dumps({"space": load_space("micro").model_dump(mode="json"), "plan": {}}))
    code, _, err = run_cli("advise", str(folder), *args, "--candidates", "scales", "--draws", "2")
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (folder / "advice").exists()


def test_a_table_gets_no_advice(run_cli, tmp_path):
    table = tmp_path / "points.csv"
    pl.DataFrame({"n": [1.0, 2.0], "loss": [2.0, 1.0]}).write_csv(table)
    code, _, err = run_cli("advise", str(table), "--target", "lora@70b")
    assert code == 2 and "not a sweep folder" in err


def test_an_advice_file_runs_exactly_its_cells(run_cli, tmp_path):
    from sweeper.space import expand
    from sweeper.sweep.advice import AdviceFile, AdvisedRun, read_advice_file, with_advice, write_advice_file

    path = tmp_path / "advice.yaml"
    write_advice_file(path, AdviceFile(advice="a1", space="micro", runs=(
        AdvisedRun(method="lora", scale="xl"), AdvisedRun(method="fft", scale="l", seeds=2))), "made by a test")
    advice = read_advice_file(str(path))
    space, cells = with_advice(load_space("micro"), advice, str(path))
    assert space.scales[-1] == "xl" and cells == {("lora", "xl"), ("fft", "l")}
    seeds = {(c.method, c.scale): c.seeds for c in expand(space)}
    assert seeds[("fft", "l")] == 2 and seeds[("lora", "l")] == 1
    code, out, err = run_cli("launch", "grid", "--with", str(path), "--dry-run")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("│ ") and "total" not in line]
    assert len(rows) == 2 and any("lora" in r and "xl" in r for r in rows)


@pytest.mark.parametrize(("content", "extra", "expected"), [
    (None, [], "no such advice file"),
    ("advice: a1\nspace: astraios\nruns: [{method: lora, scale: l}]\n", [], "the advice is for space 'astraios'"),
    ("advice: a1\nspace: micro\nruns: []\n", [], "runs"),
    ("advice: a1\nspace: micro\nruns: [{method: nope, scale: l}]\n", [], "method(s) nope not in space 'micro'"),
    ("advice: a1\nspace: micro\nruns: [{method: lora, scale: l}]\n", ["--methods", "lora"], "--with and --methods"),
])
def test_a_bad_advice_file_is_a_one_line_error(run_cli, tmp_path, content, extra, expected):
    path = tmp_path / "advice.yaml"
    if content is not None:
        path.write_text(content)
    code, _, err = run_cli("launch", "grid", "--with", str(path), *extra, "--dry-run")
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_advise_rounds_run_the_advice_and_record_each_forecast(run_cli, write_space, smoke_ladder, tmp_path,
                                                               monkeypatch):
    from grids import SMOKE

    # Any expected gain counts here: the smoke ladder's barely pretrained models give noisy curves, and
    # what is tested is the loop (advise -> run -> refit -> record), not the advisor's judgement.
    monkeypatch.setattr(advise, "CREDIBLE_SE", 0.0)
    space = write_space(SMOKE.replace("scales: [xs, s]", "scales: [xs, s, m, l]"))
    out = tmp_path / "sweep"
    code, stdout, stderr = run_cli("launch", "grid", "--space", str(space), "--out", str(out), "--no-evaluate",
                                   "--no-report", "--advise-rounds", "1", "--target", "lora@70b", "--budget-usd", "1")
    assert code == 0, stderr
    rounds = json.loads((out / "advice" / "rounds.json").read_text())
    assert rounds[0]["round"] == 1 and rounds[0]["spent_usd"] == 0 and len(rounds[0]["forecast"]) == 1
    assert (out / "advice" / "rounds.png").stat().st_size > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(rounds) == 2 and "round 1: running " in stdout  # the round ran, then the forecast after it
    advised = manifest["launches"][-1]["advice"]
    runs = {(r["method"], r["scale"]) for r in advised["runs"]}
    ledger = pl.read_parquet(out / "cells.parquet")
    assert ledger.height > 8 and runs <= set(zip(ledger["method"], ledger["scale"], strict=True))
    assert rounds[-1]["spent_usd"] > 0 and rounds[-1]["record"] is None  # the forecast after the round


def test_the_report_compares_followed_advice_with_the_forecast_now(run_cli, sweep, tmp_path):
    code, out, err = run_cli("advise", str(sweep), "--target", "lora@70B-equivalent", "--candidates", "scales",
                             "--draws", "4", "--json")
    assert code == 0, err
    advice = json.loads(out)
    assert advice["advice_file"] and advice["chosen"]
    manifest = json.loads((sweep / "manifest.json").read_text())
    stem = advice["advice_file"].rsplit("/", 1)[1].removesuffix(".yaml")
    manifest["launches"] = [{"at": "now", "advice": {"advice": stem}}]  # as `launch grid --with` records it
    (sweep / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli("report", str(sweep), "--bootstrap", "50", "--out", str(tmp_path))
    assert code == 0, err
    section = (tmp_path / "report.md").read_text().split("### Advice followed", 1)[1].split("\n#", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith(f"| {stem} "))
    # nothing was run yet: the width now is the width then
    then, now = row.split(" | ")[3], row.strip(" |").split(" | ")[-1]
    assert then == now and "lora@70B-equivalent" in row


def test_the_ranking_objective_values_the_chance_that_the_leader_is_right(run_cli, sweep):
    code, out, err = run_cli("advise", str(sweep), "--target", "lora@70B-equivalent", "--objective", "ranking",
                             "--candidates", "scales", "--draws", "3", "--json")
    assert code == 0, err
    advice = json.loads(out)
    assert advice["objective"] == "ranking" and 1 / 7 <= advice["before"] <= 1
    assert {t["method"] for t in advice["targets"]} == {"fft", "lora", "ptuning", "ia3", "adapterh", "adapterp",
                                                         "parallel"}  # every method at the target's scale
    assert all(0 <= c["expected_after"] <= 1 for c in advice["candidates"])


@pytest.mark.parametrize(("args", "expected"), [
    (["--advise-rounds", "1", "--target", "lroa@70b", "--budget-usd", "1"], "--target 'lroa@70b': expected METHOD@SCALE"),
    (["--advise-rounds", "1", "--budget-usd", "1"], "--advise-rounds needs --target and --budget-usd"),
    (["--advise-rounds", "1", "--target", "lora@70b", "--budget-usd", "1", "--dry-run"], "does not combine"),
])
def test_advise_rounds_check_their_options_before_the_grid_runs(run_cli, args, expected):
    code, _, err = run_cli("launch", "grid", *args)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


def test_runs_of_one_candidate_are_drawn_from_one_curve():
    """Same marginals as the forecast's own draws, but two new scales of one method move together."""
    from dataclasses import replace

    from analysis.fitting import FitData
    from analysis.forecast import Target, candidates, sample, sample_together

    rng = np.random.default_rng(0)
    X = np.tile([1.2e5, 3e5, 6.4e5, 1.44e6], 3)[:, None]
    groups = np.repeat(np.arange(3), 4)
    y = (3 + 60 * X[:, 0] ** -0.3 * (1 + 0.1 * groups)) * np.exp(0.015 * rng.standard_normal(12))
    study = advise.make_study(FitData(X=X, y=y, groups=groups, group_names=("a", "b", "c")),
                              [Target(1, "t", np.array([6.5e6]))], candidates(None, 1, 3), 0.95, advise.WIDTH)
    points = replace(study.current, targets=[Target(1, "", np.array([3.2e6])), Target(1, "", np.array([6.9e6]))])
    alone, together = (draw(points, 20_000, np.random.default_rng(1)) for draw in (sample, sample_together))
    quantiles = [0.025, 0.5, 0.975]
    assert np.allclose(np.quantile(alone, quantiles, axis=0), np.quantile(together, quantiles, axis=0), rtol=0.01)
    assert abs(np.corrcoef(alone.T)[0, 1]) < 0.05 and np.corrcoef(together.T)[0, 1] > 0.5
