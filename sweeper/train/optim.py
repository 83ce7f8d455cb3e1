"""The optimizer's parameter groups and AdamW settings, shared by fine-tuning and micro pretraining."""

from __future__ import annotations

from typing import Any

import torch

ADAM_BETAS = (0.9, 0.999)  # HF Trainer defaults, which Astraios used
ADAM_EPS = 1e-8


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only, not on biases and LayerNorm gains (as HF Trainer does)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # DeepSpeed drops empty groups (LoRA has no bias), which would desynchronise the lr scheduler.
    return [group for group in groups if group["params"]]
