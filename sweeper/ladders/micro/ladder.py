"""The `micro` ladder: four small GPTBigCode (multi-query) models that sweeper pretrains itself on
real Python code, so that the whole study runs on a laptop or a 2-core CI machine.

This module describes the ladder (scales and their pretraining recipes) and registers it; it must stay
importable without torch or transformers: planning and parameter counting import it. Building and
loading live in `build` (imported when a scale is first built or loaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sweeper.ladders.base import LADDERS, Arch, Ladder, LoadedModel, Scale
from sweeper.ladders.micro.config import CorpusConfig, PretrainRecipe, TokenizerConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

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

    has_instruction_files = True  # the corpus files held out of pretraining

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

    def load(self, scale: str, *, dtype: torch.dtype | None = None, int8_on: torch.device | None = None) -> LoadedModel:
        """The pretrained model and its tokenizer, pretraining the scale first if it is not cached."""
        self.scale(scale)
        from sweeper.ladders.micro.build import load_scale

        return load_scale(self, scale, dtype=dtype, int8_on=int8_on)

    def prepare(self, scales: list[str]) -> None:
        """Pretrain the missing scales (both cores) before a sweep's trials start: otherwise two
        trials would each build the same scale at once."""
        from sweeper.ladders.micro.build import build_ladder

        build_ladder(self, scales)

    def local_tokenizer(self, scale: str) -> PreTrainedTokenizerBase:
        return self.load(scale).tokenizer

    def instruction_files(self) -> list[Path]:
        """The corpus files held out of pretraining: the `local-code` source mines them by default."""
        from sweeper.ladders.micro.corpus import collect_corpus

        return [file.path for file in collect_corpus(self.corpus).heldout_files]


MICRO = MicroLadder()
LADDERS.add("micro", MICRO)
# The same scales barely pretrained (30 steps: ~20 s for the ladder on 2 cores): for tests and
# smoke runs of the whole pipeline, where what matters is that every stage runs, not how well.
SMOKE = MICRO.reduced(steps=30, name="micro-smoke")
LADDERS.add("micro-smoke", SMOKE)
