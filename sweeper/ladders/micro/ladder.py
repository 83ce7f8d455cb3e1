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


# Tokens per scale (issue 14): a budget per scale that falls with size in tokens per parameter, as
# StarCoderBase's did (1T tokens: ~1,000 per parameter at 1B, ~65 at 15.5B), at the level two cores
# allow in about seven minutes: xs ~20 tokens per parameter (Chinchilla's compute-optimal ratio),
# s ~10, m ~4, l ~2, every scale under one epoch of the 2.95M-token corpus (no token seen twice). The
# largest scale bounds the build: it pretrains on one core while the three others follow each other on
# the other (l 2,800 steps ~ 7 min; xs + s + m ~ 7.7 min). It is still ~50x below StarCoderBase's
# ratios, which the micro report says. Batches of 4 sequences: at equal tokens they beat 8 by 0.1-0.25
# nats at every scale (a step-limited budget favours more steps) and run as fast per token on one core.
# The peak lr falls with width, roughly as 1/width (Adam moves every weight by ~lr, so a layer's output
# moves ~width x lr: muP's rule), each value the best of a short sweep; one shared lr (3e-3) made the
# largest scale worse than the one below it. Warmup is 10% of the steps: with too short a warmup, how
# fast the small scales left the initial plateau varied with the seed, enough to reorder neighbouring
# scales. Sweeps and the ladder's numbers: benchmarks/ladder.md.
LADDER_TABLE: dict[str, tuple[tuple[int, int, int], PretrainRecipe]] = {
    # name: ((n_layer, n_embd, n_head), recipe); tokens = steps x 4 x 256
    "xs": ((2, 24, 2), PretrainRecipe(lr=6e-3, warmup_steps=240, steps=2_420)),  # 2.48M tokens, 20 per parameter
    "s": ((3, 48, 4), PretrainRecipe(lr=3e-3, warmup_steps=280, steps=2_830)),  # 2.90M, 9.8 per parameter
    "m": ((4, 80, 5), PretrainRecipe(lr=2e-3, warmup_steps=250, steps=2_500)),  # 2.56M, 4.0 per parameter
    # ml and xl are built only when a sweep asks for them (`sweeper advise` prices runs on them, issue 15):
    # ml between m and l (near the geometric mean of their sizes), xl 2.2x above l. The same rules: lr ~
    # 1/width, 10% warmup, under one epoch (xl: 0.9 tokens per parameter; ~30 min on one core here).
    "ml": ((5, 96, 6), PretrainRecipe(lr=1.8e-3, warmup_steps=270, steps=2_700)),  # 2.76M, 3.0 per parameter
    "l": ((5, 128, 8), PretrainRecipe(lr=1.5e-3, warmup_steps=280, steps=2_800)),  # 2.87M, 2.0 per parameter
    "xl": ((6, 192, 8), PretrainRecipe(lr=1e-3, warmup_steps=285, steps=2_850)),  # 2.92M, 0.9 per parameter
}
# The scales a plain `sweeper ladder build` and the micro space use; the others are built on demand.
DEFAULT_SCALES = ("xs", "s", "m", "l")


class MicroLadder(Ladder):
    """Small GPTBigCode models pretrained by sweeper on the Python standard library (cached)."""

    has_instruction_files = True  # the corpus files held out of pretraining
    default_scales = DEFAULT_SCALES  # what `build_ladder` builds when no scales are named

    def __init__(
        self,
        corpus: CorpusConfig | None = None,
        tokenizer: TokenizerConfig | None = None,
        recipes: dict[str, PretrainRecipe] | None = None,
        *,
        name: str = "micro",
        description: str = "GPTBigCode 0.12M-1.4M parameters (ml 0.92M and xl 3.2M built on demand), pretrained by sweeper on this machine's Python code (20 to 0.9 tokens per parameter)",
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
