"""One trial of one cell: ladder model + tuning method + instruction data + recipe -> steps, evals, reports.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from sweeper import provenance
from sweeper.checkpoint import CheckpointStore
from sweeper.data import prepare_data
from sweeper.engines import make_engine
from sweeper.methods import apply_method, load_trainable_state_dict
from sweeper.models import LoadedModel, count_parameters, get_ladder
from sweeper.space import Cell

Report = Callable[[dict[str, Any]], None]

DONE, DIVERGED = "done", "diverged"


@dataclass(frozen=True)
class Trial:
    """A cell plus what differs between its search trials and replicates. `trial_key` is stable across reruns."""

    cell: Cell
    trial_key: str
    lr: float
    store: str | None = None  # checkpoint store URI; None keeps no checkpoints
    replicate: int = 0  # which of the cell's `seeds` runs this is

    @property
    def seed(self) -> int:
        """What seeds this run (init, data order): replicates differ by it; cell.recipe.seed stays the
        cell's, as it is part of the cell id."""
        return self.cell.recipe.seed + self.replicate


@dataclass
class TrialOutcome:
    status: str
    steps: int
    tokens: int
    initial_val_loss: float
    final_val_loss: float
    best_val_loss: float
    trainable_params: int
    total_params: int
    dataset_fingerprint: str
    model_source: str
    wall_seconds: float
    final_checkpoint: str | None
    curve: list[dict[str, float]] = field(default_factory=list)


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
    fp32): a 15.5B base then takes 31 GB instead of 62 GB; full fine-tuning keeps fp32 master weights."""
    half = device.type == "cuda" and cell.frozen_base and cell.recipe.precision == "bf16"
    return get_ladder(cell.ladder).load(cell.scale, dtype=torch.bfloat16 if half else torch.float32)


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


def run_trial(trial: Trial, report: Report | None = None) -> TrialOutcome:
    """Train one trial to the end (or to divergence), reporting metrics at every evaluation."""
    started = time.perf_counter()
    cell, recipe = trial.cell, trial.cell.recipe
    rank, world = rank_and_world()
    device = pick_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cell.resources.cpus_per_worker)))
    seed_everything(trial.seed)

    loaded = load_base(cell, device)
    model = apply_method(loaded.model, cell.method, cell.method_config)
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    model.to(device)
    trainable, total = count_parameters(model)
    data = prepare_data(cell.data, loaded.tokenizer, seed=trial.seed)
    per_rank = recipe.global_batch // world
    engine = make_engine(model, recipe, trial.lr, device, world)

    schedule = StepSchedule(len(data.train_ids), recipe.global_batch, trial.seed)
    store = CheckpointStore(trial.store) if trial.store else None
    state = {"step": 0, "curve": [], "initial_val_loss": math.nan, "best_val_loss": math.inf, "elapsed_s": 0.0,
             "resumed_at": []}
    with tempfile.TemporaryDirectory(prefix="sweeper-ckpt-") as scratch:
        restored = store.restore(trial.trial_key, Path(scratch) / "resume") if store else None
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
            save_checkpoint(store, trial.trial_key, engine, {**state, "step": step}, rank)
        if store and last and not diverged:
            final_uri = save_final(store, trial, engine, loaded.source, rank)
        if report is not None:
            report({
                **row,
                "best_val_loss": state["best_val_loss"],
                "initial_val_loss": state["initial_val_loss"],
                "status": DIVERGED if diverged else (DONE if last else "running"),
                "trainable_params": trainable,
                "total_params": total,
                "dataset_fingerprint": data.fingerprint,
                "model_source": loaded.source,
                "trial_key": trial.trial_key,
                "elapsed_s": state["elapsed_s"],
                "hardware": hardware,
                "final_checkpoint": final_uri,
                "curve": list(state["curve"]),
                "resumed_at": list(state["resumed_at"]),
                "pid": os.getpid(),
            })
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

    curve = state["curve"]
    return TrialOutcome(
        status=status, steps=step, tokens=step * tokens_per_step,
        initial_val_loss=state["initial_val_loss"], final_val_loss=curve[-1]["val_loss"],
        best_val_loss=state["best_val_loss"], trainable_params=trainable, total_params=total,
        dataset_fingerprint=data.fingerprint, model_source=loaded.source,
        wall_seconds=state["elapsed_s"], final_checkpoint=final_uri, curve=curve,
    )


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


def save_checkpoint(store: CheckpointStore, trial_key: str, engine: Any, state: dict, rank: int) -> None:
    """Every rank of a sharded engine uploads its shard; rank 0 adds the loop state and commits."""
    with tempfile.TemporaryDirectory(prefix="sweeper-ckpt-") as scratch:
        path = Path(scratch)
        engine.save(path)
        if rank == 0:
            torch.save(torch.get_rng_state(), path / "rng.pt")
            (path / "state.json").write_text(json.dumps(state))
        if rank == 0 or engine.sharded:
            store.upload(trial_key, state["step"], path)
    _barrier()
    if rank == 0:
        store.commit(trial_key, state["step"])
    _barrier()


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_final(store: CheckpointStore, trial: Trial, engine: Any, model_source: str, rank: int) -> str:
    """The tuned weights (trainable tensors only) + what they apply to: enough to rebuild the model."""
    weights = engine.trainable_weights()
    uri = store.final_uri(trial.trial_key)
    if rank == 0:
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory(prefix="sweeper-final-") as scratch:
            path = Path(scratch)
            save_file({k: v.contiguous() for k, v in weights.items()}, str(path / "trainable.safetensors"))
            meta = {"cell": trial.cell.model_dump(mode="json"), "cell_id": trial.cell.id, "lr": trial.lr,
                    "seed": trial.seed, "model_source": model_source}
            (path / "meta.json").write_text(json.dumps(meta, indent=2))
            uri = store.save_final(trial.trial_key, path)
    _barrier()
    return uri


def load_tuned_model(final_uri: str, *, device: str = "cpu") -> tuple[LoadedModel, dict]:
    """Rebuild a tuned model from its final checkpoint: base from the ladder + method + trained tensors."""
    from safetensors.torch import load_file

    store_uri, trial_key = CheckpointStore.split_final_uri(final_uri)
    store = CheckpointStore(store_uri)
    with tempfile.TemporaryDirectory(prefix="sweeper-final-") as scratch:
        path = store.fetch_final(trial_key, Path(scratch) / "final")
        meta = json.loads((path / "meta.json").read_text())
        weights = load_file(str(path / "trainable.safetensors"))
    cell = Cell.model_validate(meta["cell"])
    loaded = get_ladder(cell.ladder).load(cell.scale, dtype=torch.float32)
    model = apply_method(loaded.model, cell.method, cell.method_config)
    load_trainable_state_dict(model, weights)
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=loaded.tokenizer, source=final_uri), meta


def outcome_dict(outcome: TrialOutcome) -> dict[str, Any]:
    return {k: v for k, v in asdict(outcome).items() if k != "curve"}

