"""Save and restore exactly the trained tensors of an applied method (checkpoints, tuned models).

A tuned model is rebuilt as: base model -> `apply_method` -> `load_trainable_state_dict`. Frozen
random parts of a method (VeRA's projections, FourierFT's frequencies) are re-created from the seeds
in its config, so the trainable tensors are all a checkpoint needs.
"""

from collections.abc import Mapping

import torch
from torch import nn

from sweeper.core.errors import UserError


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Name -> every parameter with `requires_grad`, in the model's order."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Name -> tensor of every parameter with `requires_grad`. The tensors share storage with the model:
    save or clone them before training on."""
    return {name: param.detach() for name, param in trainable_parameters(model).items()}


def load_trainable_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy `state` into the model's trainable parameters; any missing, unexpected or misshapen tensor is a
    `UserError` raised before anything is copied."""
    params = trainable_parameters(model)
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise UserError(
            "trained weights do not match the model's trainable parameters: "
            f"{_some(missing)} missing, {_some(unexpected)} unexpected"
        )
    for name, param in params.items():
        if tuple(state[name].shape) != tuple(param.shape):
            raise UserError(
                f"trained weight {name!r} has shape {tuple(state[name].shape)}, "
                f"the model expects {tuple(param.shape)}"
            )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name])


def _some(names: list[str], shown: int = 3) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} ({', '.join(names[:shown])}{more})"
