"""The method registry and what the rest of sweeper does with a method: resolve, apply, count."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sweeper.core.errors import UserError
from sweeper.core.registry import Registry
from sweeper.ladders.base import Arch, count_parameters, meta_model
from sweeper.methods._bottleneck import BOTTLENECK_METHODS
from sweeper.methods._full import FULL_FINE_TUNING
from sweeper.methods._method import Method
from sweeper.methods._peft import ASTRAIOS_PEFT_METHODS, OTHER_PEFT_METHODS, UNSUPPORTED

METHODS: Registry[Method] = Registry("method")
# The seven Astraios methods first, in the paper's order, then the other peft methods.
for _method in (FULL_FINE_TUNING, *ASTRAIOS_PEFT_METHODS, *BOTTLENECK_METHODS, *OTHER_PEFT_METHODS):
    METHODS.add(_method.name, _method)


def method_names() -> list[str]:
    return METHODS.names()


def get_method(name: str) -> Method:
    """The registered method; a known but unsupported peft method fails with the reason."""
    if name in UNSUPPORTED:
        raise UserError(f"method {name!r} is not supported on GPTBigCode: {UNSUPPORTED[name]}")
    return METHODS.get(name)


def resolve_method_config(name: str, settings: Mapping[str, Any] | None, source: str) -> dict[str, Any]:
    """Validate a method's YAML settings; the full config (defaults filled in) as a sorted JSON-ready dict.

    Resolving a resolved config gives it back unchanged, so overrides can re-resolve it.
    """
    method = get_method(name)
    return method.config_dict(method.parse_config(settings, source))


def apply_method(model: nn.Module, name: str, config: Mapping[str, Any]) -> nn.Module:
    """The model with the method applied: only the method's parameters train (all of them for fft)."""
    method = get_method(name)
    return method.apply(model, method.parse_config(config, f"method {name}"))


def count_method_parameters(arch: Arch, name: str, config: Mapping[str, Any]) -> tuple[int, int]:
    """(trainable, total) parameters of `arch` with the method applied; built on the meta device, no weights.

    Total = base parameters + the method's own (shared tensors counted once).
    """
    method = get_method(name)
    parsed = method.parse_config(config, f"method {name}")
    default_device = torch.device("meta" if method.count_under_meta_device else "cpu")
    with default_device:
        return count_parameters(method.apply(meta_model(arch), parsed))
