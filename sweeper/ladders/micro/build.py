"""Build and load the micro ladder: corpus -> tokenizer -> pretraining -> content-addressed cache.

Cache layout under `sweeper.core.paths.cache_dir() / "micro"` (see `sweeper.core.cache`):
- `tokenizer-<key>/`: the BPE (`tokenizer.json`) and the tokenized train and held-out files.
- `<ladder>-<scale>-<key>/`: a Hugging Face model folder (weights, config, tokenizer), the
  pretraining curve and `meta.json`.
A key is the sha256 of everything that determines the result: the corpus fingerprint, the
tokenizer config, the architecture, the recipe (seed included), the relevant package versions and
the version of the code below. Scales are pretrained one process per core, biggest first.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from sweeper.core import provenance
from sweeper.core.cache import build_lock, commit_entry, digest, load_entry, load_intact
from sweeper.core.paths import cache_dir
from sweeper.ladders.base import LoadedModel, from_pretrained_kwargs
from sweeper.ladders.micro.config import MicroLadderSpec
from sweeper.ladders.micro.corpus import Corpus, collect_corpus

if TYPE_CHECKING:
    import torch

    from sweeper.ladders.micro.pretrain import PretrainJob

# Bump when the code changes what a build produces, so that old entries are not reused.
TOKENIZER_CODE_VERSION = 1
PRETRAIN_CODE_VERSION = 1
KEY_PACKAGES = ("python", "torch", "transformers", "tokenizers", "numpy")


@dataclass(frozen=True)
class LadderPlan:
    """Where every piece of a ladder lives in the cache, computed without building anything."""

    corpus: Corpus
    tokenizer_inputs: dict[str, Any]
    tokenizer_dir: Path
    scale_inputs: dict[str, dict[str, Any]]
    scale_dirs: dict[str, Path]


def plan_ladder(ladder: MicroLadderSpec) -> LadderPlan:
    """Cache keys and folders of the ladder (reads and hashes the corpus: ~0.1 s)."""
    corpus = collect_corpus(ladder.corpus)
    versions = {name: v for name, v in provenance.package_versions().items() if name in KEY_PACKAGES}
    root = cache_dir() / "micro"
    tokenizer_inputs = {
        "corpus": corpus.fingerprint,
        "tokenizer": ladder.tokenizer.model_dump(mode="json"),
        "versions": {"tokenizers": versions.get("tokenizers"), "numpy": versions.get("numpy")},
        "code": TOKENIZER_CODE_VERSION,
    }
    tokenizer_key = digest(tokenizer_inputs)
    scale_inputs = {
        name: {
            "tokenizer": tokenizer_key,
            "arch": scale.arch.model_dump(mode="json"),
            "recipe": ladder.recipes[name].model_dump(mode="json"),
            "versions": versions,
            "code": PRETRAIN_CODE_VERSION,
        }
        for name, scale in ladder.scales.items()
    }
    return LadderPlan(
        corpus=corpus,
        tokenizer_inputs=tokenizer_inputs,
        tokenizer_dir=root / f"tokenizer-{tokenizer_key[:16]}",
        scale_inputs=scale_inputs,
        scale_dirs={
            name: root / f"{ladder.name}-{name}-{digest(inputs)[:16]}" for name, inputs in scale_inputs.items()
        },
    )


def build_ladder(
    ladder: MicroLadderSpec,
    scales: list[str] | None = None,
    *,
    force: bool = False,
    workers: int | None = None,
    console: Console | None = None,
) -> dict[str, dict[str, Any]]:
    """Pretrain and cache the scales that are missing or damaged (all of `scales` with `force`; no
    `scales`: the ladder's default ones);
    returns each scale's metadata. `workers` processes (default: one per core, at most one per
    scale) each use cores / workers torch threads; they are spawned, so a script calling this
    needs the `if __name__ == "__main__":` guard. A reduced budget (tests, quick looks) is
    `build_ladder(ladder.reduced(steps=...))`. The tokenizer is deterministic: `force` retrains
    scales only, and the tokenizer entry is rebuilt only when missing or damaged."""
    names = [name for name in ladder.default_scales if name in ladder.scales] if scales is None else scales
    for name in names:
        ladder.scale(name)
    console = console or Console(stderr=True)
    plan = plan_ladder(ladder)
    corpus = plan.corpus
    console.print(
        f"micro corpus: {len(corpus.train_files)} training files, {len(corpus.heldout_files)} held out "
        f"(fingerprint {corpus.fingerprint[:12]})"
    )
    ensure_tokenizer(ladder, plan, console=console)

    done: dict[str, dict[str, Any]] = {}
    jobs = []
    for name in names:
        meta = None if force else _intact(plan.scale_dirs[name], console)
        if meta is not None:
            done[name] = meta
            continue
        inputs = plan.scale_inputs[name]
        jobs.append(_job(name, inputs, plan, force))
    if jobs:
        done.update(_run(jobs, workers, console))
    return {name: done[name] for name in names}


def ensure_tokenizer(ladder: MicroLadderSpec, plan: LadderPlan, *, console: Console) -> dict[str, Any]:
    """The tokenizer entry: train the BPE and tokenize the corpus unless an intact entry exists."""
    with build_lock(plan.tokenizer_dir):
        meta = _intact(plan.tokenizer_dir, console)
        if meta is not None:
            return meta
        with console.status("training the tokenizer and tokenizing the corpus"):
            meta = commit_entry(plan.tokenizer_dir, lambda tmp: _build_tokenizer(ladder, plan, tmp))
        console.print(
            f"tokenizer: {meta['vocab_size']} tokens; corpus {meta['train_tokens']:,} training tokens, "
            f"{meta['heldout_tokens']:,} held out"
        )
        return meta


def _build_tokenizer(ladder: MicroLadderSpec, plan: LadderPlan, out: Path) -> dict[str, Any]:
    import numpy as np

    from sweeper.ladders.micro.tokenizer import encode_stream, train_tokenizer

    train_texts = [f.read() for f in plan.corpus.train_files]
    heldout_texts = [f.read() for f in plan.corpus.heldout_files]
    tokenizer = train_tokenizer(train_texts, ladder.tokenizer)
    tokenizer.save(str(out / "tokenizer.json"))
    train, heldout = encode_stream(tokenizer, train_texts), encode_stream(tokenizer, heldout_texts)
    np.save(out / "train.npy", train)
    np.save(out / "val.npy", heldout)
    return {
        "kind": "micro-tokenizer",
        "key": digest(plan.tokenizer_inputs),
        "inputs": plan.tokenizer_inputs,
        "vocab_size": tokenizer.get_vocab_size(),
        "train_files": len(train_texts),
        "heldout_files": len(heldout_texts),
        "train_tokens": len(train),
        "heldout_tokens": len(heldout),
        "provenance": provenance.collect(),
    }


def cached_scale(ladder: MicroLadderSpec, scale: str, plan: LadderPlan | None = None) -> dict[str, Any] | None:
    """Metadata of the scale's intact cache entry, None if not built; `CorruptEntry` if damaged."""
    ladder.scale(scale)
    plan = plan or plan_ladder(ladder)
    return load_entry(plan.scale_dirs[scale])


def load_scale(ladder: MicroLadderSpec, scale: str, *, dtype: torch.dtype | None = None,
               int8_on: torch.device | None = None) -> LoadedModel:
    """The pretrained model and tokenizer of one scale, built first (in this process) if missing."""
    from transformers import GPTBigCodeForCausalLM, PreTrainedTokenizerFast

    from sweeper.ladders.micro.pretrain import quiet_transformers

    path = plan_ladder(ladder).scale_dirs[scale]
    meta = load_intact(path)  # a damaged entry is reported and rebuilt by build_ladder
    if meta is None:
        meta = build_ladder(ladder, [scale], workers=1)[scale]
    with quiet_transformers():
        model = GPTBigCodeForCausalLM.from_pretrained(path, **from_pretrained_kwargs(dtype, int8_on))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    return LoadedModel(model=model, tokenizer=tokenizer, source=f"{ladder.name}/{scale}@{meta['key'][:16]}")


def _intact(path: Path, console: Console) -> dict[str, Any] | None:
    """An entry's metadata, or None if it is absent or damaged (reported, then rebuilt by the caller)."""
    return load_intact(path, lambda err: console.print(
        f"[yellow]cache entry {path.name} is damaged ({err}); rebuilding it[/yellow]"))


def _job(name: str, inputs: dict[str, Any], plan: LadderPlan, force: bool) -> PretrainJob:
    from sweeper.ladders.micro.pretrain import PretrainJob

    return PretrainJob(
        scale=name,
        arch=inputs["arch"],
        recipe=inputs["recipe"],
        key=digest(inputs),
        inputs=inputs,
        tokenizer_dir=str(plan.tokenizer_dir),
        entry_dir=str(plan.scale_dirs[name]),
        force=force,
    )


def _run(jobs: list[PretrainJob], workers: int | None, console: Console) -> dict[str, dict[str, Any]]:
    """Run the pretraining jobs with a live progress bar per scale. If one fails, the jobs not yet
    started are cancelled and the running ones finish (their entries are valid and kept)."""
    from sweeper.ladders.micro.pretrain import run_job

    cores = os.cpu_count() or 1
    workers = max(1, min(workers or cores, len(jobs)))
    jobs = sorted(jobs, key=lambda job: job.cost, reverse=True)
    with _progress(console) as progress:
        bars = {job.scale: progress.add_task(f"pretrain {job.scale}", total=job.tokens, rate="", loss="")
                for job in jobs}
        display = _Display(progress, bars)
        if workers == 1:
            return {job.scale: run_job(job, display) for job in jobs}
        jobs = [replace(job, threads=max(1, cores // workers)) for job in jobs]
        context = multiprocessing.get_context("spawn")  # fork after torch/tokenizers threads is unsafe
        with context.Manager() as manager, ProcessPoolExecutor(workers, mp_context=context) as pool:
            messages = manager.Queue()
            pending: dict[Future, PretrainJob] = {pool.submit(run_job, job, messages): job for job in jobs}
            results = {}
            try:
                while pending:
                    finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    display.drain(messages)
                    for future in finished:
                        results[pending.pop(future).scale] = future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
            display.drain(messages)
            return results


LOG_EVERY_S = 30.0  # off a terminal (a log file), one progress line per scale at most this often


class _Display:
    """Turns progress messages from the workers into bar updates (tokens/s, loss, val loss) and, off a
    terminal, where a live bar draws nothing until it ends, into a line per scale every LOG_EVERY_S."""

    def __init__(self, progress: Progress, bars: dict[str, TaskID]) -> None:
        self.progress, self.bars = progress, bars
        self.val: dict[str, float] = {}
        self.lines = not progress.console.is_terminal
        self.logged: dict[str, float] = {}

    def put(self, message: dict[str, Any]) -> None:
        scale = message["scale"]
        if "val_loss" in message:
            self.val[scale] = message["val_loss"]
        val = f"  val {self.val[scale]:.3f}" if scale in self.val else ""
        rate = message["tokens"] / max(message["seconds"], 1e-9)
        self.progress.update(
            self.bars[scale], completed=message["tokens"], rate=f"{rate:,.0f} tok/s",
            loss=f"loss {message['loss']:.3f}{val}",
        )
        now = time.monotonic()
        total = self.progress.tasks[self.bars[scale]].total or 0
        if self.lines and (now - self.logged.get(scale, -LOG_EVERY_S) >= LOG_EVERY_S or message["tokens"] >= total):
            self.logged[scale] = now
            self.progress.console.print(
                f"pretrain {scale}: {message['tokens']:,}/{total:,.0f} tok, {rate:,.0f} tok/s, "
                f"loss {message['loss']:.3f}{val}, {message['seconds']:.0f} s", highlight=False)

    def drain(self, messages: Any) -> None:
        while True:
            try:
                self.put(messages.get_nowait())
            except queue.Empty:
                return


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>9,}/{task.total:,} tok"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        console=console,
    )
