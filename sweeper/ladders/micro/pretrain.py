"""Pretraining of one micro scale: what each build worker process runs.

Causal language modelling on 256-token blocks cut from the tokenized training files, AdamW with
linear warmup and cosine decay, validation loss on fixed held-out blocks every `eval_every` steps.
The result is written as a cache entry that is also a plain Hugging Face model folder (weights,
config, tokenizer) plus the pretraining curve.
"""

import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from transformers import GPTBigCodeForCausalLM, get_cosine_with_min_lr_schedule_with_warmup
from transformers.utils import logging as hf_logging

from sweeper.core import provenance
from sweeper.core.cache import build_lock, commit_entry, load_intact
from sweeper.ladders.base import Arch, count_parameters
from sweeper.ladders.micro.config import PretrainRecipe
from sweeper.ladders.micro.tokenizer import as_transformers, load_tokenizer
from sweeper.train.optim import parameter_groups

CURVE = "curve.json"


class ProgressSink(Protocol):
    """Where a worker sends progress (a multiprocessing queue, or the live display in-process)."""

    def put(self, message: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class PretrainJob:
    scale: str
    arch: dict[str, Any]  # Arch fields
    recipe: dict[str, Any]  # PretrainRecipe fields
    key: str  # sha256 of `inputs`: the cache key
    inputs: dict[str, Any]  # everything that determines the result (recorded in the entry)
    tokenizer_dir: str  # the tokenizer entry: tokenizer.json, train.npy, val.npy
    entry_dir: str  # where the finished entry goes
    threads: int | None = None  # torch intra-op threads; None leaves the process setting alone
    force: bool = False  # rebuild even if an intact entry exists

    @property
    def tokens(self) -> int:
        return PretrainRecipe(**self.recipe).tokens

    @property
    def cost(self) -> float:
        """Relative compute, to start the biggest jobs first (greedy longest-first balancing)."""
        arch = Arch(**self.arch)
        recipe = PretrainRecipe(**self.recipe)
        return recipe.tokens * arch.n_embd * (arch.vocab_size + 12 * arch.n_layer * arch.n_embd)


def run_job(job: PretrainJob, progress: ProgressSink) -> dict[str, Any]:
    """Pretrain one scale and commit its cache entry; returns the entry's metadata. Holds the
    entry's build lock, so a concurrent process building the same scale waits and reuses it."""
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    entry = Path(job.entry_dir)
    with build_lock(entry):
        if not job.force:
            meta = load_intact(entry)  # a damaged one is rebuilt below (the caller has reported it)
            if meta is not None:
                return meta
        return commit_entry(entry, lambda tmp: _pretrain(job, tmp, progress), replace=job.force)


def _pretrain(job: PretrainJob, out: Path, progress: ProgressSink) -> dict[str, Any]:
    arch, recipe = Arch(**job.arch), PretrainRecipe(**job.recipe)
    tokenizer_dir = Path(job.tokenizer_dir)
    torch.manual_seed(recipe.seed)
    # No dropout: each token is seen at most about once, so there is nothing to regularise against.
    config = arch.hf_config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
    model = GPTBigCodeForCausalLM(config)
    train_blocks = _blocks(np.load(tokenizer_dir / "train.npy"), recipe.seq_len)
    val_blocks = _blocks(np.load(tokenizer_dir / "val.npy"), recipe.seq_len)
    # Evenly spaced held-out blocks: many files, not the first few.
    val_blocks = val_blocks[torch.linspace(0, len(val_blocks) - 1, recipe.val_sequences).long()]
    order = _block_order(len(train_blocks), recipe.steps * recipe.batch_size, recipe.seed)

    optimizer = _adamw(model, recipe)
    schedule = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, recipe.warmup_steps, recipe.steps, min_lr_rate=recipe.min_lr_ratio
    )
    tokens_per_step = recipe.batch_size * recipe.seq_len
    curve: list[dict[str, float]] = []
    window: list[float] = []
    start = time.perf_counter()
    model.train()
    for step in range(1, recipe.steps + 1):
        batch = train_blocks[order[(step - 1) * recipe.batch_size : step * recipe.batch_size]]
        loss = model(input_ids=batch, labels=batch).loss
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise RuntimeError(f"micro scale {job.scale}: pretraining diverged at step {step} (loss {loss_value})")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        lr = schedule.get_last_lr()[0]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        window.append(loss_value)
        message: dict[str, Any] = {"scale": job.scale, "tokens": step * tokens_per_step, "loss": loss_value}
        if step % recipe.eval_every == 0 or step == recipe.steps:
            val_loss = _val_loss(model, val_blocks)
            curve.append({
                "step": step, "tokens": step * tokens_per_step, "lr": lr,
                "train_loss": sum(window) / len(window), "val_loss": val_loss,
                "seconds": time.perf_counter() - start,
            })
            window = []
            message["val_loss"] = val_loss
        message["seconds"] = time.perf_counter() - start
        progress.put(message)
    seconds = time.perf_counter() - start

    with quiet_transformers():
        model.save_pretrained(out)
    as_transformers(load_tokenizer(tokenizer_dir / "tokenizer.json")).save_pretrained(out)
    (out / CURVE).write_text(json.dumps(curve, indent=1) + "\n")
    return {
        "kind": "micro-scale",
        "scale": job.scale,
        "key": job.key,
        "inputs": job.inputs,
        "parameters": count_parameters(model)[1],
        "pretrain_tokens": recipe.tokens,
        "epochs": recipe.steps * recipe.batch_size / len(train_blocks),
        "seconds": seconds,
        "tokens_per_second": recipe.tokens / seconds,
        "final_val_loss": curve[-1]["val_loss"],
        "final_train_loss": curve[-1]["train_loss"],
        "provenance": provenance.collect(),
    }


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Keep stdout for the command's own output (`--json`): silence transformers' per-file
    save/load bars, and send stray prints to stderr (`save_pretrained` makes accelerate import
    deepspeed, whose logger prints an accelerator notice to stdout)."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _blocks(stream: np.ndarray, seq_len: int) -> torch.Tensor:
    """The token stream cut into whole [n, seq_len] blocks (int64, as embeddings want)."""
    n = len(stream) // seq_len
    if n == 0:
        raise RuntimeError(f"micro corpus too small: {len(stream)} tokens, less than one {seq_len}-token block")
    return torch.from_numpy(stream[: n * seq_len].astype(np.int64)).view(n, seq_len)


def _block_order(n_blocks: int, needed: int, seed: int) -> torch.Tensor:
    """`needed` block indices: seeded permutations of all blocks, one after another (a new epoch
    only starts when every block has been used)."""
    generator = torch.Generator().manual_seed(seed)
    epochs = -(-needed // n_blocks)
    return torch.cat([torch.randperm(n_blocks, generator=generator) for _ in range(epochs)])[:needed]


def _adamw(model: torch.nn.Module, recipe: PretrainRecipe) -> torch.optim.AdamW:
    # Decay matrices only; biases and LayerNorm gains stay undecayed (as GPT-2 / nanoGPT).
    return torch.optim.AdamW(parameter_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, recipe.beta2))


@torch.no_grad()
def _val_loss(model: torch.nn.Module, blocks: torch.Tensor, batch_size: int = 16) -> float:
    """Mean next-token loss over the blocks (all blocks are full, so the mean of batch means)."""
    model.eval()
    losses = [
        model(input_ids=chunk, labels=chunk).loss.item() * len(chunk) for chunk in blocks.split(batch_size)
    ]
    model.train()
    return sum(losses) / len(blocks)
