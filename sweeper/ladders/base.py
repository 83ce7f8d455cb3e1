"""What a model ladder is (`Arch`, `Scale`, `Ladder`, the `LADDERS` registry) and how to count a model.

A ladder is a named series of scales of one architecture (GPTBigCode, multi-query attention); the
registered ones live beside this file (`starcoderbase`, `micro/`). Counting never needs weights:
`meta_model` builds the network on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import PositiveInt

from sweeper.core.config import Frozen
from sweeper.core.errors import UserError
from sweeper.core.registry import Registry

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
    has_instruction_files: bool = False  # whether `instruction_files()` gives files (checked without collecting them)

    def scale(self, name: str) -> Scale:
        if name not in self.scales:
            raise UserError(
                f"ladder {self.name!r} has no scale {name!r}; valid scales: {', '.join(self.scales)}"
            )
        return self.scales[name]

    def load(self, scale: str, *, dtype: torch.dtype | None = None, int8_on: torch.device | None = None) -> LoadedModel:
        """The scale's pretrained model and tokenizer. `int8_on`: load the linear weights in 8 bits
        (LLM.int8) directly onto that device (`from_pretrained_kwargs`)."""
        raise NotImplementedError

    def prepare(self, scales: list[str]) -> None:
        """Build the weights the trials of a sweep share before they start, so that concurrent trials
        never build them twice. Hub-hosted ladders have nothing to build."""

    def local_tokenizer(self, scale: str) -> PreTrainedTokenizerBase | None:
        """The scale's tokenizer when it is at hand without a download (to tokenize a sweep's
        instruction data once, before its trials start); None for hub-hosted ladders."""
        return None

    def instruction_files(self) -> list[Path] | None:
        """Python files this ladder never pretrained on: what the `local-code` data source mines when
        `data.path` is not given. None: the ladder has no such files (give data.path)."""
        return None


LADDERS: Registry[Ladder] = Registry("ladder")

# LLM.int8's outlier threshold (Dettmers et al. 2022): activations above it take the fp16 path. Astraios'
# finetune.py loads with `load_in_8bit=True` and bitsandbytes' default, 6.0.
INT8_THRESHOLD = 6.0


def from_pretrained_kwargs(dtype: torch.dtype | None, int8_on: torch.device | None) -> dict[str, Any]:
    """`from_pretrained` arguments for a ladder's load: a dtype, or an 8-bit base placed on `int8_on`
    (bitsandbytes quantizes while loading, so the model cannot be moved afterwards)."""
    if int8_on is None:
        return {"dtype": dtype}
    try:
        import bitsandbytes  # noqa: F401  (transformers' own check gives a multi-line message)
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise UserError("recipe.base_quantization int8 needs bitsandbytes; install it with "
                        "pip install 'sweeper[int8]'") from None
    config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=INT8_THRESHOLD)
    return {"dtype": dtype, "quantization_config": config, "device_map": {"": str(int8_on)}}


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
