"""The micro ladder's configs: corpus, tokenizer, pretraining recipe, and what building needs of a ladder
(no torch, no registry)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Protocol

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from sweeper.core.config import Frozen

if TYPE_CHECKING:
    from sweeper.ladders.base import Scale

Fraction = Annotated[float, Field(gt=0, lt=1)]


class CorpusConfig(Frozen):
    """Which Python files make up the pretraining corpus (`corpus`) and how they are split."""

    stdlib: bool = True
    packages: tuple[str, ...] = ()  # import names of installed packages to add (e.g. "numpy")
    # Test suites are large, repetitive and full of deliberately odd code: left out of the corpus.
    exclude_dirs: tuple[str, ...] = ("test", "tests", "idle_test", "site-packages", "__pycache__")
    heldout_fraction: Fraction = 0.1  # share of files (by content hash) never pretrained on
    max_file_bytes: PositiveInt = 400_000  # larger files are generated tables, not code to learn from


class TokenizerConfig(Frozen):
    """The byte-level BPE trained on the corpus (`tokenizer`)."""

    vocab_size: Annotated[int, Field(ge=257, le=65535)] = 4096  # above the 256 bytes; ids fit uint16
    min_frequency: PositiveInt = 2  # a merge must occur at least this often


class PretrainRecipe(Frozen):
    """How one scale is pretrained: AdamW, linear warmup, cosine decay to `min_lr_ratio` x peak."""

    lr: PositiveFloat  # peak learning rate
    warmup_steps: NonNegativeInt
    steps: PositiveInt  # optimizer steps
    batch_size: PositiveInt = 4  # sequences per step
    seq_len: Annotated[int, Field(ge=256)] = 256  # fine-tuning packs 256-token sequences too
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    weight_decay: NonNegativeFloat = 0.1
    beta2: Annotated[float, Field(gt=0, lt=1)] = 0.95
    grad_clip: PositiveFloat = 1.0  # max global gradient norm
    eval_every: PositiveInt = 150  # steps between validation losses (and the last step)
    val_sequences: PositiveInt = 64  # held-out sequences of seq_len tokens per validation loss
    seed: int = 0  # initialisation and data order

    @model_validator(mode="after")
    def _consistent(self) -> PretrainRecipe:
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        return self

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_size * self.seq_len


class MicroLadderSpec(Protocol):
    """What `build` needs of a micro ladder (`MicroLadder` is one): the ladder calls the builder, so the
    builder knows it only by this shape."""

    name: str
    corpus: CorpusConfig
    tokenizer: TokenizerConfig
    recipes: dict[str, PretrainRecipe]
    scales: dict[str, Scale]
    default_scales: tuple[str, ...]  # built when no scales are named

    def scale(self, name: str) -> Scale: ...
