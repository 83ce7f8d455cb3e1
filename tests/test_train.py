"""The per-worker training loop, in-process: reports, resume after a kill, divergence, tuned-model reload."""

import math

import pytest
import torch

from sweeper.schema import Trial
from sweeper.space import expand, load_space
from sweeper.train.artifacts import load_tuned_model
from sweeper.train.loop import run_trial


def cell_of(method: str, scale: str = "s", *sets: str):
    space = load_space("micro", ["ladder=micro-smoke", "recipe.steps=20", "recipe.warmup_steps=2", *sets])
    return next(c for c in expand(space) if (c.method, c.scale) == (method, scale))


class Killed(Exception):
    pass


def kill_at_then_rerun(trial: Trial, step: int):
    """Run the trial until it reports `step`, kill it there, run it again: (steps it then reported, outcome)."""

    def die(report):
        if report.steps == step:
            raise Killed

    with pytest.raises(Killed):
        run_trial(trial, report=die)
    steps_seen = []
    outcome = run_trial(trial, report=lambda r: steps_seen.append(r.steps))
    return steps_seen, outcome


def test_reports_every_evaluation_and_loss_goes_down(smoke_ladder):
    cell = cell_of("fft", "s", "recipe.lr=3e-3")
    reports = []
    outcome = run_trial(Trial(cell=cell, lr=cell.recipe.lr), report=reports.append)
    assert [r.steps for r in reports] == [0, 10, 20]
    assert [r.status for r in reports] == ["running", "running", "done"]
    assert outcome.status == "done" and outcome.steps == 20
    assert outcome.tokens == 20 * cell.recipe.global_batch * cell.data.seq_len
    assert outcome.final_val_loss < outcome.initial_val_loss
    assert outcome.trainable_params == outcome.total_params
    assert len(reports[-1].curve) == 3 and math.isfinite(reports[-1].curve[-1]["tokens_per_s"])


def test_resume_after_a_kill_gives_the_uninterrupted_result(smoke_ladder, tmp_path):
    cell = cell_of("lora", "s")
    uninterrupted = run_trial(Trial(cell=cell, lr=cell.recipe.lr, store=str(tmp_path / "a")))

    trial = Trial(cell=cell, lr=cell.recipe.lr, store=str(tmp_path / "b"))
    steps_seen, resumed = kill_at_then_rerun(trial, step=10)  # the first checkpoint
    assert steps_seen == [20]  # steps 0-10 came from the checkpoint
    assert [p["step"] for p in resumed.curve] == [0, 10, 20]
    assert resumed.final_val_loss == pytest.approx(uninterrupted.final_val_loss, rel=1e-6)


def test_a_kill_before_the_first_checkpoint_restarts_with_one_step_0(smoke_ladder, tmp_path):
    cell = cell_of("lora", "xs")

    trial = Trial(cell=cell, lr=cell.recipe.lr, store=str(tmp_path / "c"))
    steps_seen, restarted = kill_at_then_rerun(trial, step=0)
    assert steps_seen == [0, 10, 20]
    assert [p["step"] for p in restarted.curve] == [0, 10, 20]  # step 0 once: nothing to resume from


def test_divergence_stops_the_trial(smoke_ladder):
    cell = cell_of("fft", "s", "early_stopping.divergence_factor=1.01")
    outcome = run_trial(Trial(cell=cell, lr=5.0))
    assert outcome.status == "diverged"
    assert outcome.steps < 20


def test_a_replicate_trains_with_its_own_seed_and_the_cell_keeps_its_own(smoke_ladder):
    steps = ("recipe.steps=10", "recipe.eval_every=5")
    cell, reseeded = cell_of("lora", "xs", *steps), cell_of("lora", "xs", *steps, "recipe.seed=1")
    first = run_trial(Trial(cell=cell, lr=cell.recipe.lr))
    second = run_trial(Trial(cell=cell, lr=cell.recipe.lr, replicate=1))
    # replicate 1 is the run a cell with seed 1 makes: init and data order follow the replicate's seed
    alike = run_trial(Trial(cell=reseeded, lr=cell.recipe.lr))
    assert second.final_val_loss != pytest.approx(first.final_val_loss, rel=1e-6)
    assert second.final_val_loss == pytest.approx(alike.final_val_loss, rel=1e-6)
    assert second.dataset_fingerprint == alike.dataset_fingerprint != first.dataset_fingerprint


def test_tuned_model_reloads_with_its_trained_weights(smoke_ladder, tmp_path):
    cell = cell_of("adapterh", "xs")
    outcome = run_trial(Trial(cell=cell, lr=1e-2, store=str(tmp_path)))
    loaded, meta = load_tuned_model(outcome.checkpoint)
    assert meta["cell_id"] == cell.id and meta["seed"] == cell.recipe.seed
    ids = torch.arange(1, 33).unsqueeze(0)
    with torch.no_grad():
        tuned = loaded.model(input_ids=ids, labels=ids).loss
    base = load_space("micro", ["ladder=micro-smoke"])  # untouched base for comparison
    from sweeper.ladders import get_ladder

    plain = get_ladder(base.ladder).load("xs").model.eval()
    with torch.no_grad():
        untuned = plain(input_ids=ids, labels=ids).loss
    assert not torch.isclose(tuned, untuned)


def test_every_rank_runs_the_same_number_of_validation_passes(tmp_path):
    """ZeRO-3 gathers parameters in every forward: ranks with a shorter shard must still take part."""
    import contextlib

    import torch.distributed as dist

    from sweeper.train.loop import validation_loss

    class CountingModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, input_ids, labels):
            self.calls += 1
            return type("Out", (), {"loss": torch.tensor(2.0)})()

    ids = torch.zeros(33, 4, dtype=torch.long)  # 33 rows over 2 ranks: 17 and 16
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        calls = []
        for rank in (0, 1):
            model = CountingModel()
            loss = validation_loss(model, ids, ids, micro_batch=8, device=torch.device("cpu"),
                                   autocast=contextlib.nullcontext, rank=rank, world=2)
            calls.append(model.calls)
            assert loss == pytest.approx(2.0)
    finally:
        dist.destroy_process_group()
    assert calls == [3, 3]
