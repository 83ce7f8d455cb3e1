import json

import pytest

from sweeper.core.errors import UserError
from sweeper.plan import check_budget, estimate_cell, evaluations, make_plan, trial_flops
from sweeper.space import expand, load_space

pytestmark = pytest.mark.usefixtures("plan_memo")  # the astraios plan counted once per session


def test_flops_formula_by_hand():
    # fft: 6 N T for training; eval 2 N T_eval.  N = 1e9, T = 1e6, T_eval = 1e4.
    assert trial_flops(10**9, 10**9, 10**6, 10**4) == 6e15 + 2e13
    # frozen base with 1% trainable: (4 + 0.02) N T.
    assert trial_flops(10**9, 10**7, 10**6, 0) == pytest.approx(4.02e15)
    # activation checkpointing runs the forward pass again: + 2 N T
    assert trial_flops(10**9, 10**9, 10**6, 10**4, recompute=True) == 8e15 + 2e13


def test_evaluation_count():
    assert evaluations(200, 10) == 21  # steps 0, 10, ..., 200
    assert evaluations(25, 10) == 4  # 0, 10, 20 and the last step 25


def test_cell_estimate_by_hand():
    cell = expand(load_space("astraios", ["cost.usd_per_hour=2", "cost.peak_tflops=100",
                                          "cost.utilization=0.5"]))[0]
    assert (cell.method, cell.scale) == ("fft", "1b")
    est = estimate_cell(cell, trainable=1000, total=1000, peak_tflops=100, utilization=0.5, usd_per_hour=2)
    train_tokens = 200 * 32 * 2048
    eval_tokens = 21 * 256 * 2048  # the whole guanaco-commits test split: at most 256 sequences (astraios.yaml)
    assert est.train_tokens == train_tokens and est.eval_tokens == eval_tokens
    assert cell.recipe.gradient_checkpointing  # fp32 full fine-tuning recomputes its activations (astraios.yaml)
    flops = (6 + 2) * 1000 * train_tokens + 2 * 1000 * eval_tokens
    assert est.flops == flops
    assert est.device_hours == pytest.approx(flops / (100e12 * 0.5 * 3600))
    assert est.usd == pytest.approx(2 * est.device_hours)


def test_astraios_plan_counts_and_totals():
    plan = make_plan(load_space("astraios"))
    by_cell = {(e.method, e.scale): e for e in plan.estimates}
    assert len(by_cell) == 28
    assert by_cell["fft", "1b"].trainable_params == by_cell["fft", "1b"].total_params == 1_137_207_296
    assert by_cell["lora", "1b"].trainable_params == 3_588_096
    assert by_cell["lora", "1b"].total_params == 1_137_207_296 + 3_588_096
    assert plan.total_usd == pytest.approx(sum(e.usd for e in plan.estimates))
    # a 15.5B full fine-tune costs more than a 1B one, a frozen base less than full fine-tuning
    assert by_cell["fft", "15b"].flops > 10 * by_cell["fft", "1b"].flops
    assert by_cell["lora", "15b"].flops < by_cell["fft", "15b"].flops


def test_budget_gate():
    plan = make_plan(load_space("astraios"))
    check_budget(plan, plan.total_usd * 1.01)
    with pytest.raises(UserError, match="exceeds the budget"):
        check_budget(plan, plan.total_usd * 0.5)
    with pytest.raises(UserError, match="non-negative"):
        check_budget(plan, -1.0)


def test_space_budget_is_used_when_no_flag():
    plan = make_plan(load_space("astraios", ["budget_usd=1"]))
    with pytest.raises(UserError, match=r"exceeds the budget \$1.00"):
        check_budget(plan, None)


def test_plan_json_is_machine_readable(run_cli):
    code, out, _ = run_cli("plan", "--space", "astraios", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["totals"]["cells"] == 28
    assert {"cell_id", "method", "scale", "total_params", "trainable_params", "flops", "device_hours", "usd"} <= set(
        data["cells"][0]
    )


def test_replicates_multiply_a_cells_trials_and_cost(run_cli):
    one, three = make_plan(load_space("astraios")), make_plan(load_space("astraios", ["seeds=3"]))
    assert [e.cell_id for e in three.estimates] == [e.cell_id for e in one.estimates]
    for single, replicated in zip(one.estimates, three.estimates, strict=True):
        assert (single.seeds, single.trials, replicated.seeds, replicated.trials) == (1, 1, 3, 3)
        assert replicated.train_tokens == single.train_tokens  # per trial
        assert replicated.flops == pytest.approx(3 * single.flops)
        assert replicated.device_hours == pytest.approx(3 * single.device_hours)
        assert replicated.usd == pytest.approx(3 * single.usd)
    assert (three.total_trials, three.total_usd) == (84, pytest.approx(3 * one.total_usd))

    code, out, _ = run_cli("plan", "--space", "astraios", "--set", "seeds=3", "--set", "search.trials=2",
                           "--set", "search.lr={low: 1.0e-4, high: 1.0e-2}", "--json")
    data = json.loads(out)
    assert code == 0 and data["totals"]["trials"] == 28 * 6
    assert {(c["seeds"], c["trials"]) for c in data["cells"]} == {(3, 6)}
    for sets, shown in ((["--set", "seeds=3"], True), ([], False)):  # the column only when a cell has replicates
        _, out, _ = run_cli("plan", "--space", "astraios", *sets)
        header = next(line for line in out.splitlines() if "method" in line and "FLOPs" in line)
        assert ("seeds" in header) is shown
