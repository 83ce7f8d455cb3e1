"""How one optimizer step is taken: plain PyTorch (DDP when several ranks) or DeepSpeed ZeRO-2/3.

Both engines expose the same small surface to the training loop: `train_step`, `current_lr`,
`autocast`, `save` / `load` (optimizer + scheduler + trainable tensors, for resuming) and
`trainable_weights` (the tuned tensors, for the final checkpoint). The peak lr is `recipe.lr`: the
trial's recipe (`Trial.recipe`) carries the lr its search chose.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from sweeper.methods import load_trainable_state_dict, trainable_parameters, trainable_state_dict
from sweeper.schema import Recipe
from sweeper.train.optim import ADAM_BETAS, ADAM_EPS, parameter_groups

SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def autocast_for(device: torch.device, precision: str):
    """A factory of autocast contexts: bf16/fp16 mixed precision keeps fp32 master weights."""
    if precision == "fp32":
        return nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16

    def context() -> AbstractContextManager:
        return torch.autocast(device_type=device.type, dtype=dtype)

    return context


def make_engine(model: torch.nn.Module, recipe: Recipe, device: torch.device, world: int):
    if recipe.zero_stage:
        return DeepSpeedEngine(model, recipe, device, world)
    return TorchEngine(model, recipe, device, world)


def _all_reduce_sum(value: torch.Tensor, world: int) -> float:
    """The sum over ranks of a device scalar, read back once."""
    total = value.double()
    if world > 1:
        dist.all_reduce(total)
    return float(total)


class TorchEngine:
    sharded = False  # rank 0 holds everything a checkpoint needs

    def __init__(self, model: torch.nn.Module, recipe: Recipe, device: torch.device, world: int):
        from transformers import get_scheduler

        self.module = model
        self.world, self.device = world, device
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            # Gradients live in DDP's buckets instead of beside them: 4 bytes per trainable parameter less.
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
        self.model = model
        # The fused kernel (CPU and CUDA) updates every tensor in one pass: what HF Trainer uses too.
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.module, recipe.weight_decay), lr=recipe.lr, betas=ADAM_BETAS, eps=ADAM_EPS, fused=True
        )
        self.scheduler = get_scheduler(SCHEDULES[recipe.schedule], self.optimizer,
                                       num_warmup_steps=recipe.warmup_steps, num_training_steps=recipe.steps)
        self.autocast = autocast_for(device, recipe.precision)
        self.scaler = torch.amp.GradScaler(enabled=recipe.precision == "fp16" and device.type == "cuda")
        self.grad_clip = recipe.grad_clip
        self.clipped = list(trainable_parameters(self.module).values())  # not the frozen base, every step

    def train_step(self, ids: torch.Tensor, labels: torch.Tensor, micro_batch: int, items_in_global_batch: int) -> float:
        """One optimizer step over this rank's rows; returns the global batch's mean token loss."""
        n_micro = max(1, (len(ids) + micro_batch - 1) // micro_batch)
        items = torch.tensor(items_in_global_batch, device=self.device)
        # Summed on the device: reading each micro-batch's loss would stall the GPU queue every time.
        local_sum = torch.zeros((), device=self.device)
        for index in range(n_micro):
            rows = slice(index * micro_batch, (index + 1) * micro_batch)
            sync = index == n_micro - 1 or self.world == 1
            with (nullcontext() if sync else self.model.no_sync()), self.autocast():
                out = self.model(input_ids=ids[rows].to(self.device), labels=labels[rows].to(self.device),
                                 num_items_in_batch=items)
            # DDP averages gradients over ranks; the loss is already a share of the global sum.
            self.scaler.scale(out.loss * self.world).backward()
            local_sum += out.loss.detach().float()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.clipped, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return _all_reduce_sum(local_sum, self.world)

    def current_lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def trainable_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in trainable_state_dict(self.module).items()}

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.trainable_weights().items()}, str(path / "trainable.safetensors"))
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict()}, path / "optimizer.pt")

    def load(self, path: Path) -> None:
        from safetensors.torch import load_file

        load_trainable_state_dict(self.module, load_file(str(path / "trainable.safetensors"), device=str(self.device)))
        states = torch.load(path / "optimizer.pt", map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(states["optimizer"])
        self.scheduler.load_state_dict(states["scheduler"])
        self.scaler.load_state_dict(states["scaler"])


class DeepSpeedEngine:
    """ZeRO-2/3 through `deepspeed.initialize`; runs on GPUs (NCCL) and on CPUs (gloo, for tests)."""

    sharded = True  # each rank holds its own partition of the optimizer state

    def __init__(self, model: torch.nn.Module, recipe: Recipe, device: torch.device, world: int):
        import deepspeed
        from transformers import get_scheduler

        self.world, self.device = world, device
        per_rank = recipe.global_batch // world
        config = {
            "train_batch_size": recipe.global_batch,
            "train_micro_batch_size_per_gpu": min(recipe.micro_batch, per_rank),
            "gradient_accumulation_steps": max(1, per_rank // recipe.micro_batch),
            "gradient_clipping": recipe.grad_clip or 0.0,
            "zero_optimization": {"stage": recipe.zero_stage, "stage3_gather_16bit_weights_on_model_save": True},
            "bf16": {"enabled": recipe.precision == "bf16" and device.type == "cuda"},
            "fp16": {"enabled": recipe.precision == "fp16" and device.type == "cuda"},
            "steps_per_print": 10**9,
        }
        optimizer = torch.optim.AdamW(parameter_groups(model, recipe.weight_decay), lr=recipe.lr, betas=ADAM_BETAS,
                                      eps=ADAM_EPS)
        scheduler = get_scheduler(SCHEDULES[recipe.schedule], optimizer, num_warmup_steps=recipe.warmup_steps,
                                  num_training_steps=recipe.steps)
        self.model, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config,
        )
        self.micro_batch = config["train_micro_batch_size_per_gpu"]
        self.zero_stage = recipe.zero_stage
        self.autocast = nullcontext  # DeepSpeed casts the model itself when bf16/fp16 is enabled

    def train_step(self, ids: torch.Tensor, labels: torch.Tensor, micro_batch: int, items_in_global_batch: int) -> float:
        items = torch.tensor(items_in_global_batch, device=self.device)
        # Summed on the device: reading each micro-batch's loss would stall the GPU queue every time.
        local_sum = torch.zeros((), device=self.device)
        accumulation = self.model.gradient_accumulation_steps()
        for index in range(0, len(ids), self.micro_batch):
            rows = slice(index, index + self.micro_batch)
            out = self.model(input_ids=ids[rows].to(self.device), labels=labels[rows].to(self.device),
                             num_items_in_batch=items)
            # DeepSpeed divides by the accumulation steps and averages over ranks: undo both, the loss
            # is already this micro-batch's share of the global token sum.
            self.model.backward(out.loss * accumulation * self.world)
            self.model.step()
            local_sum += out.loss.detach().float()
        return _all_reduce_sum(local_sum, self.world)

    def current_lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def trainable_weights(self) -> dict[str, torch.Tensor]:
        """Full (unpartitioned) trainable tensors, gathered from every rank under ZeRO-3."""
        import deepspeed

        params = trainable_parameters(self.model.module)
        with deepspeed.zero.GatheredParameters(list(params.values()), enabled=self.zero_stage == 3):
            return {name: param.detach().float().cpu().clone() for name, param in params.items()}

    def save(self, path: Path) -> None:
        # Every rank writes its own shard of the optimizer state into the (shared) folder.
        self.model.save_checkpoint(str(path), tag="zero")

    def load(self, path: Path) -> None:
        self.model.load_checkpoint(str(path), tag="zero")
