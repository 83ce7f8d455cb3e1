"""Model ladders: named series of scales of one architecture (GPTBigCode, multi-query attention).

- `starcoderbase`: StarCoderBase 1B/3B/7B/15.5B from the HF hub (the Astraios scales). The
  architecture numbers live here so that planning and parameter counting need no download.
- `micro`: small GPTBigCode models that sweeper pretrains itself on real Python code
  (`sweeper.micro`), so that the whole study runs on a laptop or a 2-core CI machine.

Counting never needs weights: `meta_model` builds the network on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import PositiveInt

from sweeper.config import Frozen
from sweeper.errors import UserError, first_line
from sweeper.registry import Registry

if TYPE_CHECKING:
    import torch
    from transformers import GPTBigCodeConfig, PreTrainedModel, PreTrainedTokenizerBase


class Arch(Frozen):
    """GPTBigCode architecture numbers (the fields of its HF config that set the parameter count)."""

    n_layer: PositiveInt
    n_embd: PositiveInt
    n_head: PositiveInt
    n_inner: PositiveInt
    vocab_size: PositiveInt
    n_positions: PositiveInt
    multi_query: bool = True

    def hf_config(self, **extra: Any) -> GPTBigCodeConfig:
        from transformers import GPTBigCodeConfig

        return GPTBigCodeConfig(
            n_layer=self.n_layer, n_embd=self.n_embd, n_head=self.n_head, n_inner=self.n_inner,
            vocab_size=self.vocab_size, n_positions=self.n_positions, multi_query=self.multi_query,
            activation_function="gelu_pytorch_tanh", bos_token_id=0, eos_token_id=0, pad_token_id=0,
            **extra,
        )


class Scale(Frozen):
    """One rung of a ladder. `pretrain_tokens` is what the base model saw before fine-tuning."""

    name: str
    arch: Arch
    pretrain_tokens: PositiveInt
    hf_id: str | None = None


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str  # HF id + revision, or the micro cache key: recorded in provenance


class Ladder:
    """A named series of scales. Subclasses say how a scale's weights and tokenizer are obtained."""

    name: str
    description: str
    scales: dict[str, Scale]

    def scale(self, name: str) -> Scale:
        if name not in self.scales:
            raise UserError(
                f"ladder {self.name!r} has no scale {name!r}; valid scales: {', '.join(self.scales)}"
            )
        return self.scales[name]

    def load(self, scale: str, *, dtype: torch.dtype | None = None) -> LoadedModel:
        raise NotImplementedError

    def prepare(self, scales: list[str], data: Any) -> None:
        """Build what the trials of a sweep share (weights, tokenized data) before they start, so
        that concurrent trials never build it twice. Hub-hosted ladders have nothing to build."""


LADDERS: Registry[Ladder] = Registry("ladder")


def get_ladder(name: str) -> Ladder:
    return LADDERS.get(name)


def meta_model(arch: Arch) -> PreTrainedModel:
    """The architecture with no weights (meta device): enough to count and to plan, instant at any size."""
    import torch
    from transformers import GPTBigCodeForCausalLM

    with torch.device("meta"):
        return GPTBigCodeForCausalLM(arch.hf_config())


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, each shared tensor counted once (GPTBigCode ties wte and lm_head)."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        n = _numel(param)
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def _numel(param: torch.nn.Parameter) -> int:
    # DeepSpeed ZeRO-3 partitions parameters and keeps the full size in `ds_numel`.
    return int(getattr(param, "ds_numel", param.numel()))


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

    def load(self, scale: str, *, dtype: torch.dtype | None = None) -> LoadedModel:
        hf_id = self.scale(scale).hf_id
        assert hf_id is not None
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(hf_id)
            model = AutoModelForCausalLM.from_pretrained(hf_id, dtype=dtype)
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


# Registers the `micro` ladder (its module needs the names above, hence the import at the end).
import sweeper.micro.ladder  # noqa: E402, F401
