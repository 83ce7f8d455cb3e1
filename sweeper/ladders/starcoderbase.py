"""The `starcoderbase` ladder: StarCoderBase 1B/3B/7B/15.5B from the HF hub, the Astraios scales.

The architecture numbers live here so that planning and parameter counting need no download.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweeper.core.errors import UserError, first_line
from sweeper.ladders.base import LADDERS, Arch, Ladder, LoadedModel, Scale, from_pretrained_kwargs

if TYPE_CHECKING:
    import torch


class StarCoderBaseLadder(Ladder):
    """bigcode/starcoderbase-{1b,3b,7b} and bigcode/starcoderbase (15.5B): 1T pretraining tokens each
    (Li et al. 2023, StarCoder). Gated on the hub: accept the licence and set HF_TOKEN."""

    name = "starcoderbase"
    description = "StarCoderBase 1B/3B/7B/15.5B (HF hub), the Astraios scales"

    def __init__(self) -> None:
        def scale(name: str, hf_id: str, n_layer: int, n_embd: int, n_head: int) -> Scale:
            arch = Arch(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_inner=4 * n_embd,
                        vocab_size=49152, n_positions=8192)
            return Scale(name=name, arch=arch, pretrain_tokens=10**12, hf_id=hf_id)

        # Numbers from each model's config.json on the hub.
        self.scales = {
            "1b": scale("1b", "bigcode/starcoderbase-1b", 24, 2048, 16),
            "3b": scale("3b", "bigcode/starcoderbase-3b", 36, 2816, 22),
            "7b": scale("7b", "bigcode/starcoderbase-7b", 42, 4096, 32),
            "15b": scale("15b", "bigcode/starcoderbase", 40, 6144, 48),
        }

    def load(self, scale: str, *, dtype: torch.dtype | None = None, int8_on: torch.device | None = None) -> LoadedModel:
        hf_id = self.scale(scale).hf_id
        assert hf_id is not None
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(hf_id)
            model = AutoModelForCausalLM.from_pretrained(hf_id, **from_pretrained_kwargs(dtype, int8_on))
        except OSError as err:
            raise UserError(
                f"cannot load {hf_id} from the HF hub ({first_line(err)}); it needs network access, an accepted "
                "licence and HF_TOKEN, or a local copy in the HF cache"
            ) from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        revision = getattr(model.config, "_commit_hash", None) or "unknown"
        return LoadedModel(model=model, tokenizer=tokenizer, source=f"{hf_id}@{revision}")


LADDERS.add("starcoderbase", StarCoderBaseLadder())
