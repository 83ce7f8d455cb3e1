"""The `micro` ladder: four small GPTBigCode (multi-query) models that sweeper pretrains itself on
real Python code, so that the whole study runs on a laptop or a 2-core CI machine.

This module only describes the ladder (scales, corpus, tokenizer, pretraining recipes) and must stay
importable without torch or transformers: planning and parameter counting import it. Building and
loading live in `sweeper.micro.build`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from sweeper.config import Frozen
from sweeper.models import LADDERS, Arch, Ladder, LoadedModel, Scale

if TYPE_CHECKING:
    import torch

Fraction = Annotated[float, Field(gt=0, lt=1)]


class CorpusConfig(Frozen):
    """Which Python files make up the pretraining corpus (`sweeper.micro.corpus`) and how they are split."""

    stdlib: bool = True
    packages: tuple[str, ...] = ()  # import names of installed packages to add (e.g. "numpy")
    # Test suites are large, repetitive and full of deliberately odd code: left out of the corpus.
    exclude_dirs: tuple[str, ...] = ("test", "tests", "idle_test", "site-packages", "__pycache__")
    heldout_fraction: Fraction = 0.1  # share of files (by content hash) never pretrained on
    max_file_bytes: PositiveInt = 400_000  # larger files are generated tables, not code to learn from


class TokenizerConfig(Frozen):
    """The byte-level BPE trained on the corpus (`sweeper.micro.tokenizer`)."""

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


# 512 positions: fine-tuning uses 256-token sequences and evaluation prompts need room to spare.
N_POSITIONS = 512


def _arch(n_layer: int, n_embd: int, n_head: int, vocab_size: int) -> Arch:
    return Arch(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_inner=4 * n_embd,
                vocab_size=vocab_size, n_positions=N_POSITIONS)


# Every scale sees the same 1.54M training tokens (1500 steps x 4 x 256; the corpus has 2.9M, so no
# token is seen twice), as StarCoderBase's scales all saw the same 1T: the ladder varies size only.
# The budget is step-limited (~1 token per parameter at the largest scale), so small batches win:
# at equal tokens, 4-sequence batches (twice the steps) beat 8 by 0.1-0.25 nats of validation loss
# at every scale, and run as fast per token on one core. The peak lr falls with width, roughly as
# 1/width (Adam moves every weight by ~lr, so a layer's output moves ~width x lr: muP's rule), each
# value the best of a short sweep; one shared lr (3e-3) made the largest scale worse than the one
# below it. Warmup is 10% of the steps: with 50 steps, how fast the small scales left the initial
# plateau varied with the seed (final losses up to 0.09 nats apart, enough to reorder neighbouring
# scales); with 150 every scale ends lower and seeds agree within 0.04. Sweeps and the real ladder's
# numbers: benchmarks/ladder.md.
STEPS = 1500
LADDER_TABLE: dict[str, tuple[tuple[int, int, int], PretrainRecipe]] = {
    # name: ((n_layer, n_embd, n_head), recipe)
    "xs": ((2, 24, 2), PretrainRecipe(lr=6e-3, warmup_steps=150, steps=STEPS)),
    "s": ((3, 48, 4), PretrainRecipe(lr=3e-3, warmup_steps=150, steps=STEPS)),
    "m": ((4, 80, 5), PretrainRecipe(lr=2e-3, warmup_steps=150, steps=STEPS)),
    "l": ((5, 128, 8), PretrainRecipe(lr=1.5e-3, warmup_steps=150, steps=STEPS)),
}


class MicroLadder(Ladder):
    """Small GPTBigCode models pretrained by sweeper on the Python standard library (cached)."""

    def __init__(
        self,
        corpus: CorpusConfig | None = None,
        tokenizer: TokenizerConfig | None = None,
        recipes: dict[str, PretrainRecipe] | None = None,
        *,
        name: str = "micro",
        description: str = "GPTBigCode 0.12M-1.4M parameters, pretrained by sweeper on this machine's Python code",
    ) -> None:
        self.name, self.description = name, description
        self.corpus = corpus or CorpusConfig()
        self.tokenizer = tokenizer or TokenizerConfig()
        self.recipes = recipes or {scale: recipe for scale, (_, recipe) in LADDER_TABLE.items()}
        self.scales = {
            scale: Scale(
                name=scale,
                arch=_arch(*LADDER_TABLE[scale][0], vocab_size=self.tokenizer.vocab_size),
                pretrain_tokens=self.recipes[scale].tokens,
            )
            for scale in self.recipes
        }

    def reduced(self, steps: int, name: str | None = None) -> MicroLadder:
        """The same ladder pretrained for only `steps` steps per scale (tests, quick looks), with
        one validation loss at the end. Its cache entries are separate: the recipe is in the key."""
        recipes = {
            scale: recipe.model_copy(
                update={"steps": steps, "eval_every": steps,
                        "warmup_steps": min(steps - 1, recipe.warmup_steps * steps // recipe.steps)}
            )
            for scale, recipe in self.recipes.items()
        }
        return MicroLadder(self.corpus, self.tokenizer, recipes, name=name or self.name,
                           description=f"{self.description}; {steps} pretraining steps per scale")

    def load(self, scale: str, *, dtype: torch.dtype | None = None) -> LoadedModel:
        """The pretrained model and its tokenizer, pretraining the scale first if it is not cached."""
        self.scale(scale)
        from sweeper.micro.build import load_scale

        return load_scale(self, scale, dtype=dtype)

    def prepare(self, scales: list[str], data: Any) -> None:
        """Pretrain the missing scales (both cores) and tokenize the instruction data once, before
        a sweep's trials start: otherwise two trials would each build the same thing at once."""
        from sweeper.data import prepare_data
        from sweeper.micro.build import build_ladder, load_scale

        build_ladder(self, scales)
        prepare_data(data, load_scale(self, scales[0]).tokenizer)


MICRO = MicroLadder()
LADDERS.add("micro", MICRO)
# The same scales barely pretrained (30 steps: ~20 s for the ladder on 2 cores): for tests and
# smoke runs of the whole pipeline, where what matters is that every stage runs, not how well.
SMOKE = MICRO.reduced(steps=30, name="micro-smoke")
LADDERS.add("micro-smoke", SMOKE)
