"""Bottleneck adapters: `adapterh`, `adapterp`, `parallel`, placed as in the Astraios code release.

Astraios (arXiv 2401.00788) used the LLM-Adapters peft fork (Hu et al. 2023, arXiv 2304.01933).
Upstream peft has no bottleneck adapters and the `adapters` package pins transformers 4.x, so they
are written here: each adapter is `scaling * up(act(down(h)))`, no bias, no dropout, both projections
drawn from N(0, init_std) (LLM-Adapters' init: the adapter is not zero at the start).

Placement on every GPTBigCode block (`h` = hidden width, `b` = bottleneck size):
- `adapterh` (Houlsby et al. 2019 style): two per block, on the MLP input (`c_fc(x + A(x))`) and on
  the MLP output (`y + A(y)` with `y = c_proj(...)`); 4 h b parameters per block.
- `adapterp` (Pfeiffer et al. 2021 style): one per block on the MLP output; 2 h b per block.
- `parallel` (He et al. 2022): one per block beside the QKV projection, `c_attn(x) + A(x)`, from the
  width h to the QKV width (h + 2 head_dim with multi-query attention); b (2 h + 2 head_dim) per block.
"""

from typing import Literal

import torch
from pydantic import FiniteFloat, PositiveFloat, PositiveInt, field_validator
from torch import nn
from transformers.activations import ACT2FN

from sweeper.core.config import Frozen
from sweeper.core.errors import UserError
from sweeper.methods._method import Method

Placement = Literal["input", "output", "parallel"]


class BottleneckConfig(Frozen):
    """LLM-Adapters' `bottleneck_size`, `non_linearity`, `scaling` and init, with Astraios' values."""

    bottleneck_size: PositiveInt = 256  # adapter hidden width
    activation: str = "tanh"  # a name from transformers' ACT2FN table
    init_std: PositiveFloat = 0.02  # std of the normal init of both projections
    scaling: FiniteFloat = 1.0  # multiplies the adapter output before it is added

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, name: str) -> str:
        if name not in ACT2FN:
            raise ValueError(f"unknown activation; valid: {', '.join(sorted(ACT2FN))}")
        return name


class Bottleneck(nn.Module):
    """`scaling * up(act(down(h)))`; fp32 weights under a half-precision base, as peft keeps its adapters."""

    def __init__(self, in_features: int, out_features: int, config: BottleneckConfig, device: torch.device):
        super().__init__()
        self.down = nn.Linear(in_features, config.bottleneck_size, bias=False, device=device)
        self.up = nn.Linear(config.bottleneck_size, out_features, bias=False, device=device)
        self.act = ACT2FN[config.activation]
        self.scaling = config.scaling
        for projection in (self.down, self.up):
            nn.init.normal_(projection.weight, mean=0.0, std=config.init_std)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.up(self.act(self.down(hidden.to(self.down.weight.dtype))))
        return (self.scaling * out).to(hidden.dtype)


class Adapted(nn.Module):
    """A frozen linear layer `base` with an adapter on its input, on its output, or beside it."""

    def __init__(self, base: nn.Linear, placement: Placement, config: BottleneckConfig):
        super().__init__()
        self.base = base
        self.placement = placement
        sizes = {
            "input": (base.in_features, base.in_features),
            "output": (base.out_features, base.out_features),
            "parallel": (base.in_features, base.out_features),
        }[placement]
        self.adapter = Bottleneck(*sizes, config, device=base.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.placement == "input":
            return self.base(x + self.adapter(x))
        y = self.base(x)
        if self.placement == "output":
            return y + self.adapter(y)
        return y + self.adapter(x)


def add_adapters(
    model: nn.Module, config: BottleneckConfig, *, name: str, sites: tuple[tuple[str, Placement], ...]
) -> nn.Module:
    """Freeze `model` and wrap every linear layer whose name ends with a site's suffix (every block)."""
    model.requires_grad_(False)
    for suffix, placement in sites:
        targets = [
            module_name for module_name, module in model.named_modules()
            if module_name.endswith(f".{suffix}") and isinstance(module, nn.Linear)
        ]
        if not targets:
            raise UserError(
                f"method {name!r}: the model has no linear layer `*.{suffix}` (it expects GPTBigCode)"
            )
        for target in targets:
            parent, _, child = target.rpartition(".")
            holder = model.get_submodule(parent)
            setattr(holder, child, Adapted(getattr(holder, child), placement, config))
    return model


def _bottleneck_method(name: str, description: str, sites: tuple[tuple[str, Placement], ...]) -> Method:
    def apply(model: nn.Module, config: BottleneckConfig) -> nn.Module:
        return add_adapters(model, config, name=name, sites=sites)

    return Method(
        name=name,
        description=description,
        config_cls=BottleneckConfig,
        apply=apply,
        settable=tuple(BottleneckConfig.model_fields),
    )


BOTTLENECK_METHODS = (
    _bottleneck_method(
        "adapterh",
        "Houlsby-style bottleneck adapters, two per block (MLP input and output), as Astraios",
        (("mlp.c_fc", "input"), ("mlp.c_proj", "output")),
    ),
    _bottleneck_method(
        "adapterp",
        "Pfeiffer-style bottleneck adapter, one per block on the MLP output, as Astraios",
        (("mlp.c_proj", "output"),),
    ),
    _bottleneck_method(
        "parallel",
        "parallel bottleneck adapter beside the attention QKV projection, one per block, as Astraios",
        (("attn.c_attn", "parallel"),),
    ),
)
