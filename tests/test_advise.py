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


def test_the_budget_limits_the_chosen_set():
    def assessed(name: str, cost: float, after: float, se: float = 0.001) -> advise.Assessed:
        return advise.Assessed(advise.Candidate(name, "scale", (), cost, cost), after, se)

    options = [assessed("cheap", 1.0, 0.18), assessed("dear", 10.0, 0.10), assessed("noise", 0.1, 0.199, se=0.01),
               assessed("worse", 1.0, 0.25)]
    chosen = [a.candidate.name for a in advise.choose(options, 0.20, advise.WIDTH, 5.0, "usd")]
    assert chosen == ["cheap"]  # "dear" does not fit; "noise" is within its Monte-Carlo error; "worse" hurts
    assert [a.candidate.name for a in advise.choose(options, 0.20, advise.WIDTH, None, "usd")] == ["cheap", "dear"]
    assert advise.rank(options, 0.20, advise.WIDTH, "usd")[0].candidate.name == "cheap"


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
