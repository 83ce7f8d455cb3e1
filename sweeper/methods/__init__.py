"""Tuning methods: a registry of name -> config class + `apply(model, config) -> model`.

The seven Astraios methods (arXiv 2401.00788) with the paper's settings as defaults: `fft`, `lora`,
`ptuning`, `ia3` (peft) and the bottleneck adapters `adapterh`, `adapterp`, `parallel` (written here),
then every other peft method that works on GPTBigCode. `sweeper methods` lists them with their sizes.

    settings = resolve_method_config("lora", {"r": 16}, source="my.yaml: methods.lora")
    model = apply_method(model, "lora", settings)          # only LoRA weights train
    count_method_parameters(arch, "lora", settings)        # (trainable, total), meta device

The names below load on first use (PEP 562): `sweeper.methods.commands` is imported by the CLI and
must not pull in torch and peft, so that `sweeper --help` stays instant.
"""

from typing import TYPE_CHECKING, Any

__all__ = [
    "METHODS",
    "UNSUPPORTED",
    "Method",
    "apply_method",
    "count_method_parameters",
    "get_method",
    "load_trainable_state_dict",
    "method_names",
    "resolve_method_config",
    "trainable_parameters",
    "trainable_state_dict",
]

if TYPE_CHECKING:
    from sweeper.methods._method import Method
    from sweeper.methods._peft import UNSUPPORTED
    from sweeper.methods._registry import (
        METHODS,
        apply_method,
        count_method_parameters,
        get_method,
        method_names,
        resolve_method_config,
    )
    from sweeper.methods._state import load_trainable_state_dict, trainable_parameters, trainable_state_dict

_HOMES = {
    "Method": "_method",
    "UNSUPPORTED": "_peft",
    "load_trainable_state_dict": "_state",
    "trainable_parameters": "_state",
    "trainable_state_dict": "_state",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f"{__name__}.{_HOMES.get(name, '_registry')}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(__all__)
