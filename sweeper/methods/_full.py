"""`fft`: full fine-tuning, every weight trained (the Astraios baseline)."""

from torch import nn

from sweeper.core.config import Frozen
from sweeper.methods._method import Method


class FullConfig(Frozen):
    """Full fine-tuning has no settings of its own (lr, precision, ZeRO stage belong to the recipe)."""


def train_everything(model: nn.Module, config: FullConfig) -> nn.Module:
    return model.requires_grad_(True)


FULL_FINE_TUNING = Method(
    name="fft",
    description="full fine-tuning: every weight trained",
    config_cls=FullConfig,
    apply=train_everything,
    settable=tuple(FullConfig.model_fields),
)
