"""Instruction data: a source's (instruction, response) examples -> OctoPack format -> packed sequences.

Every example is formatted as OctoPack / Astraios did: `Question: {instruction}\n\nAnswer: {response}`
followed by EOS, and the examples are concatenated and cut into sequences of `seq_len` tokens (the
last one padded, with no loss on the padding). The loss is on every token (`loss_on: all`, as
Astraios) or on the answer and its EOS only (`loss_on: answer`; labels are -100 elsewhere).
`octopack_prompt` is the one place that format is written; the evaluation tasks use it too.

Sources live beside this file, one per module, in the registry `SOURCES` (`guanaco_commits`, the
paper's data with its released split; `commitpackft`, `oasst`, `local_code`, `git`, split by content hash). A source is handed the files to mine when `data.path` is not given (the ladder's
held-out code, `Ladder.instruction_files`): no source knows about ladders.

Without a released split, examples are deduplicated and split train / validation by the sha256 of
their content, so the split is deterministic and an example is never in both. The packed result is cached on disk (cells of a
grid share it, each in a fresh process), keyed by the config, the source's identity, the tokenizer
and the seed; its `fingerprint` (config + examples + tokenizer + seed) is recorded with every run.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sweeper.core import provenance
from sweeper.core.cache import build_lock, commit_entry, digest, hash_fraction, load_intact
from sweeper.core.errors import UserError
from sweeper.core.paths import cache_dir
from sweeper.core.registry import Registry
from sweeper.schema import DataConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

# Bump when formatting, mining or packing changes, so that cached data is not reused.
DATA_FORMAT_VERSION = 1
IGNORE = -100  # label of tokens without loss (PyTorch cross-entropy's ignore_index)


@dataclass(frozen=True)
class Example:
    instruction: str
    response: str

    @property
    def key(self) -> str:
        """sha256 of the content: deduplication, the train/validation coin, the fingerprint."""
        return hashlib.sha256(f"{self.instruction}\x00{self.response}".encode()).hexdigest()


def octopack_prompt(question: str, answer_start: str = "") -> str:
    """`Question: {question}\n\nAnswer:`, then on a new line the start of the answer when there is one
    (the code an evaluation's completion continues), stripped at the end as the harness does (so that
    the model, not the prompt, produces the newline + indentation token). In training, the answer
    follows the bare prompt after one space."""
    return f"Question: {question}\n\nAnswer:\n{answer_start}".rstrip()


@dataclass(frozen=True)
class PackedData:
    """Packed token sequences, ready for the training loop ([rows, seq_len] int64 tensors)."""

    train_ids: torch.Tensor
    train_labels: torch.Tensor  # IGNORE (-100) where no loss
    val_ids: torch.Tensor  # at most `max_val_sequences` rows
    val_labels: torch.Tensor
    fingerprint: str
    n_examples: int
    n_train_examples: int
    n_val_examples: int


class Source(Protocol):
    """A registered data source. `files`: what to mine when `data.path` is not given (the ladder's
    held-out code); a source that needs no local files ignores it."""

    drop_tail: bool  # pack: drop the last, partial sequence (finetune.py's ConstantLengthDataset) or pad it

    def needs_files(self, config: DataConfig) -> bool:
        """Whether `files` must be given (checked when a space is loaded, before anything runs)."""

    def identity(self, config: DataConfig, files: list[Path] | None) -> dict[str, Any]:
        """What the examples are made from, cheaply (no mining): part of the cache key."""

    def splits(self, config: DataConfig, files: list[Path] | None) -> tuple[list[Example], list[Example]]:
        """The (train, validation) examples."""


class HashSplitSource(ABC):
    """A source of examples without a released split: deduplicated and split by content hash
    (`split_examples`); the last packed sequence is padded."""

    drop_tail = False

    @abstractmethod
    def examples(self, config: DataConfig, files: list[Path] | None) -> list[Example]:
        """Every (instruction, response) example the source mines."""

    def splits(self, config: DataConfig, files: list[Path] | None) -> tuple[list[Example], list[Example]]:
        return split_examples(self.examples(config, files), config)


SOURCES: Registry[Source] = Registry("data source")
# Where the hub sources (guanaco-commits, commitpackft, oasst) read from without `data.path`: the
# bigcode datasets on the HF hub, through fsspec's hf:// protocol.
HUB_ROOT = "hf://datasets/bigcode"


def hub_root(config: DataConfig) -> str:
    """The folder a hub source reads: `data.path` (a local copy in the hub's layout), else the hub."""
    return str(Path(config.path).expanduser()) if config.path else HUB_ROOT


def prepare_data(config: DataConfig, tokenizer: PreTrainedTokenizerBase, *, seed: int = 0,
                 files: list[Path] | None = None) -> PackedData:
    """The packed train and validation sequences for `config`, from the cache when possible
    (a cached call for the embedded default takes ~0.1 s). `files`: see `Source`."""
    source = SOURCES.get(config.source)
    inputs = {
        "config": config.model_dump(mode="json"),
        "source": source.identity(config, files),
        "tokenizer": tokenizer_hash(tokenizer),
        "seed": seed,
        "format": DATA_FORMAT_VERSION,
    }
    entry = cache_dir() / "data" / f"{config.source}-{digest(inputs)[:16]}"
    with build_lock(entry):
        meta = load_intact(entry)
        if meta is None:
            meta = commit_entry(entry, lambda tmp: _build(config, source, files, tokenizer, seed, inputs, tmp))
    return _read(entry, meta)


def tokenizer_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return digest({"vocabulary": vocabulary, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id})


def split_examples(examples: list[Example], config: DataConfig) -> tuple[list[Example], list[Example]]:
    """Deduplicate, cap at `max_examples` (the lowest hashes: a uniform, deterministic sample) and
    split by content hash. At least one example goes to each side when there are two or more."""
    unique = {example.key: example for example in examples}
    keys = sorted(unique)[: config.max_examples]
    if len(keys) < 2:
        raise UserError(
            f"data.source {config.source!r}: found {len(keys)} instruction example(s); at least 2 are "
            "needed (one to train on, one to validate)"
        )
    val = [k for k in keys if hash_fraction(k) < config.val_fraction] or keys[:1]
    train = [k for k in keys if k not in set(val)] or keys[-1:]
    val = [k for k in val if k not in set(train)]
    return [unique[k] for k in train], [unique[k] for k in val]


def pack(
    examples: list[Example], tokenizer: PreTrainedTokenizerBase, seq_len: int, loss_on: str, *,
    drop_tail: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Format, tokenize and concatenate the examples, cut into [rows, seq_len] (ids, labels).
    Prompt and answer are tokenized separately so that the answer boundary is exact; a byte-level
    BPE splits before the space anyway, so this is the same tokenization as of the whole text. The
    last, partial sequence is padded (no loss on the padding), or dropped with `drop_tail` (as
    finetune.py's ConstantLengthDataset does; a split shorter than one sequence keeps it, padded)."""
    import torch

    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no EOS token; OctoPack examples end with one")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    prompts = tokenizer([octopack_prompt(e.instruction) for e in examples], add_special_tokens=False)["input_ids"]
    answers = tokenizer([f" {e.response}" for e in examples], add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    labels: list[int] = []
    for prompt, answer in zip(prompts, answers, strict=True):
        ids += prompt + answer + [eos]
        labels += (prompt if loss_on == "all" else [IGNORE] * len(prompt)) + answer + [eos]
    if drop_tail and len(ids) >= seq_len:
        whole = len(ids) - len(ids) % seq_len
        ids, labels = ids[:whole], labels[:whole]
    padding = -len(ids) % seq_len
    ids += [pad] * padding
    labels += [IGNORE] * padding
    return torch.tensor(ids).view(-1, seq_len), torch.tensor(labels).view(-1, seq_len)


def _build(
    config: DataConfig, source: Source, files: list[Path] | None, tokenizer: PreTrainedTokenizerBase,
    seed: int, inputs: dict[str, Any], out: Path,
) -> dict[str, Any]:
    from safetensors.torch import save_file

    train, val = source.splits(config, files)
    fingerprint = digest({
        "config": inputs["config"], "tokenizer": inputs["tokenizer"], "seed": seed,
        "format": DATA_FORMAT_VERSION, "train": [e.key for e in train], "val": [e.key for e in val],
    })
    random.Random(seed).shuffle(train)  # packing order; the training loop may shuffle rows again
    train_ids, train_labels = pack(train, tokenizer, config.seq_len, config.loss_on, drop_tail=source.drop_tail)
    val_ids, val_labels = pack(val, tokenizer, config.seq_len, config.loss_on, drop_tail=source.drop_tail)
    tensors = {
        "train_ids": train_ids, "train_labels": train_labels,
        "val_ids": val_ids[: config.max_val_sequences], "val_labels": val_labels[: config.max_val_sequences],
    }
    save_file(tensors, str(out / "packed.safetensors"))
    return {
        "kind": "instruction-data",
        "fingerprint": fingerprint,
        "inputs": inputs,
        "n_examples": len(train) + len(val),
        "n_train_examples": len(train),
        "n_val_examples": len(val),
        "train_sequences": len(train_ids),
        "val_sequences": len(tensors["val_ids"]),
        "provenance": provenance.collect(),
    }


def _read(entry: Path, meta: dict[str, Any]) -> PackedData:
    from safetensors.torch import load_file

    tensors = load_file(str(entry / "packed.safetensors"))
    return PackedData(
        **tensors,
        fingerprint=meta["fingerprint"],
        n_examples=meta["n_examples"],
        n_train_examples=meta["n_train_examples"],
        n_val_examples=meta["n_val_examples"],
    )
