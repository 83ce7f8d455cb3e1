"""One trial of one cell: ladder model + tuning method + instruction data + recipe -> steps, evals, reports
(`TrialReport`, in the ledger's names).

This is the per-worker loop. It runs the same way in-process (tests, benchmarks), as a Ray Tune
trial (one CPU worker), and as every rank of a Ray Train `TorchTrainer` (DDP, or DeepSpeed ZeRO when
`recipe.zero_stage` > 0): it reads rank and world size from `torch.distributed` and never imports Ray.

Per optimizer step every rank takes its slice of `global_batch` sequences, in micro-batches of
`micro_batch` (gradient accumulation makes up the rest). The loss is the mean over all label tokens
of the global batch (`num_items_in_batch`), so accumulation and data parallelism give the same
gradient as one big batch. Validation loss is the token-mean over the held-out sequences, at step 0
(the divergence baseline), every `eval_every` steps and at the last step.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from sweeper.core import provenance
from sweeper.data import prepare_data
from sweeper.ladders import LoadedModel, count_parameters, get_ladder
from sweeper.methods import apply_method
from sweeper.schema import Cell, Trial, TrialReport
from sweeper.train.artifacts import CheckpointStore, save_checkpoint, save_final
from sweeper.train.engines import make_engine

Report = Callable[[TrialReport], None]

RUNNING, DONE, DIVERGED = "running", "done", "diverged"


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def load_base(cell: Cell, device: torch.device) -> LoadedModel:
    """The pretrained base. A frozen base on a GPU is kept in bf16 (the trainable parameters stay
    fp32): a 15.5B base then takes 31 GB instead of 62 GB; full fine-tuning keeps fp32 master weights.
    With `recipe.base_quantization: int8` the base's linear weights are loaded in 8 bits on `device` and
    prepared as Astraios' PEFT runs were (peft's prepare_model_for_kbit_training: the base frozen, its
    other parameters cast to fp32; checkpointing only where the recipe asks for it)."""
    ladder = get_ladder(cell.ladder)
    if cell.recipe.base_quantization == "int8":
        from peft import prepare_model_for_kbit_training

        loaded = ladder.load(cell.scale, dtype=torch.float32, int8_on=device)
        loaded.model = prepare_model_for_kbit_training(
            loaded.model, use_gradient_checkpointing=cell.recipe.gradient_checkpointing)
        return loaded
    half = device.type == "cuda" and cell.frozen_base and cell.recipe.precision == "bf16"
    return ladder.load(cell.scale, dtype=torch.bfloat16 if half else torch.float32)


class StepSchedule:
    """Which training rows a step uses: a fresh seeded permutation per pass over the data, so a
    resumed trial sees exactly the rows it would have seen, with no data-loader state to save."""

    def __init__(self, n_rows: int, global_batch: int, seed: int):
        self.n_rows, self.global_batch, self.seed = n_rows, global_batch, seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n_rows, generator=generator)}
        return self._perms[epoch]

    def rows(self, step: int) -> torch.Tensor:
        positions = range(step * self.global_batch, (step + 1) * self.global_batch)
        return torch.stack([self._perm(p // self.n_rows)[p % self.n_rows] for p in positions])


def run_trial(trial: Trial, report: Report | None = None) -> TrialReport:
    """Train one trial to the end (or to divergence), reporting at every evaluation; returns the last report."""
    started = time.perf_counter()
    cell, recipe = trial.cell, trial.recipe
    rank, world = rank_and_world()
    device = pick_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cell.resources.cpus_per_worker)))
    seed_everything(trial.seed)

    loaded = load_base(cell, device)
    model = apply_method(loaded.model, cell.method, cell.method_config)
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    quantized = recipe.base_quantization != "none"
    for param in model.parameters():
        if param.requires_grad:  # an 8-bit base sits on its device already: only the method's weights move
            param.data = param.data.to(device if quantized else param.device).float()
    if not quantized:
        model.to(device)
    trainable, total = count_parameters(model)
    ladder = get_ladder(cell.ladder)
    data = prepare_data(cell.data, loaded.tokenizer, seed=trial.seed, files=ladder.instruction_files())
    per_rank = recipe.global_batch // world
    engine = make_engine(model, recipe, device, world)

    schedule = StepSchedule(len(data.train_ids), recipe.global_batch, trial.seed)
    store = CheckpointStore(trial.store) if trial.store else None
    state = {"step": 0, "curve": [], "initial_val_loss": math.nan, "best_val_loss": math.inf, "elapsed_s": 0.0,
             "resumed_at": []}
    with tempfile.TemporaryDirectory(prefix="sweeper-ckpt-") as scratch:
        restored = store.restore(trial.trial_id, Path(scratch) / "resume") if store else None
        if restored:
            state = json.loads((restored / "state.json").read_text())
            state["resumed_at"].append(state["step"])
            engine.load(restored)
            torch.set_rng_state(torch.load(restored / "rng.pt"))

    status = DONE
    step = state["step"]
    resumed_elapsed = state["elapsed_s"]
    hardware = json.dumps(provenance.hardware(), sort_keys=True)
    final_uri: str | None = None
    tokens_per_step = cell.tokens_per_step
    train_losses: list[float] = []
    reports: list[TrialReport] = []
    window_start = time.perf_counter()

    def evaluate_and_report(step: int, train_loss_diverged: bool = False) -> bool:
        """Validation loss + report + checkpoint; False when the trial diverged."""
        nonlocal window_start, train_losses, final_uri
        elapsed = time.perf_counter() - window_start  # training steps only: evaluation is not throughput
        val_loss = validation_loss(engine.model, data.val_ids, data.val_labels, recipe.micro_batch, device,
                                   engine.autocast, rank, world)
        if step == 0 or math.isnan(state["initial_val_loss"]):
            state["initial_val_loss"] = val_loss
        state["best_val_loss"] = min(state["best_val_loss"], val_loss)
        steps_in_window = max(len(train_losses), 1)
        row = {
            "step": step,
            "tokens": step * tokens_per_step,
            "train_loss": sum(train_losses) / len(train_losses) if train_losses else math.nan,
            "val_loss": val_loss,
            "lr": engine.current_lr(),
            "tokens_per_s": (steps_in_window * tokens_per_step / elapsed) if train_losses else math.nan,
        }
        state["curve"].append(row)
        limit = cell.early_stopping.divergence_factor * state["initial_val_loss"]
        diverged = train_loss_diverged or not math.isfinite(val_loss) or val_loss > limit
        last = step >= recipe.steps or diverged
        state["elapsed_s"] = resumed_elapsed + time.perf_counter() - started
        # Not at step 0: nothing is trained yet (a fresh start is the same, seeded), and resuming from
        # there would evaluate step 0 a second time.
        if store and not last and step > 0:
            save_checkpoint(store, trial.trial_id, engine, {**state, "step": step}, rank)
        if store and last and not diverged:
            final_uri = save_final(store, trial, engine, loaded.source, rank)
        last_report = TrialReport(
            status=DIVERGED if diverged else (DONE if last else RUNNING), steps=step,
            tokens=row["tokens"], initial_val_loss=state["initial_val_loss"], final_val_loss=val_loss,
            best_val_loss=state["best_val_loss"], tokens_per_s=row["tokens_per_s"], train_loss=row["train_loss"],
            current_lr=row["lr"], trainable_params=trainable,
            total_params=total, dataset_fingerprint=data.fingerprint, model_source=loaded.source,
            wall_seconds=state["elapsed_s"], checkpoint=final_uri, resumed_at=tuple(state["resumed_at"]),
            hardware=hardware, pid=os.getpid(), curve=tuple(state["curve"]),
        )
        reports.append(last_report)
        if report is not None:
            report(last_report)
        train_losses = []
        window_start = time.perf_counter()
        return not diverged

    if step == 0 and not evaluate_and_report(0):
        status = DIVERGED
    while status == DONE and step < recipe.steps:
        global_rows = schedule.rows(step)
        rows = global_rows[rank * per_rank:(rank + 1) * per_rank]
        loss = engine.train_step(data.train_ids[rows], data.train_labels[rows], recipe.micro_batch,
                                 count_label_tokens(data.train_labels[global_rows]))
        step += 1
        train_losses.append(loss)
        if not math.isfinite(loss):
            status = DIVERGED
            evaluate_and_report(step, train_loss_diverged=True)
            break
        if (step % recipe.eval_every == 0 or step == recipe.steps) and not evaluate_and_report(step):
            status = DIVERGED

    return reports[-1]


def count_label_tokens(labels: torch.Tensor) -> int:
    """Tokens that carry loss after the causal shift (the first position predicts nothing)."""
    return int((labels[:, 1:] != -100).sum())


@torch.no_grad()
def validation_loss(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor, micro_batch: int,
                    device: torch.device, autocast: Callable[[], Any], rank: int, world: int) -> float:
    """Token-mean cross-entropy over the validation rows (each rank a shard, summed over ranks)."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    mine = torch.arange(rank, len(ids), world)
    # Every rank runs the same number of forward passes, a short shard padding with a zero-weight row:
    # under ZeRO-3 each forward gathers parameters from all ranks, so one missing pass would hang them.
    passes = math.ceil(math.ceil(len(ids) / world) / micro_batch)
    for index in range(passes):
        rows = mine[index * micro_batch:(index + 1) * micro_batch]
        n_tokens = count_label_tokens(labels[rows]) if len(rows) else 0
        if not len(rows):
            rows = torch.zeros(1, dtype=torch.long)
        with autocast():
            out = model(input_ids=ids[rows].to(device), labels=labels[rows].to(device))
        if n_tokens:  # a row without labelled tokens has a NaN mean loss
            totals[0] += out.loss.double() * n_tokens
            totals[1] += n_tokens
    if world > 1:
        dist.all_reduce(totals)
    model.train()
    return float(totals[0] / totals[1]) if totals[1] > 0 else math.nan
