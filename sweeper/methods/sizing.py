"""Method sizes matched to a reference model: the rule behind the micro space's method settings.

A method's share of trainable parameters depends on the model it is put on: with the paper's settings
(LoRA rank 8, adapter bottleneck 256, 30 virtual tokens through a model-width encoder), a 1.4M-parameter
micro model trains LoRA on 3% of its weights and (IA)3 on 0.2%, against 0.3% and 0.02% on StarCoderBase-1B,
and the order of the methods by size comes out reversed. "Loss vs. updated parameters", the paper's
central axis, is then a different experiment.

The rule (issue 14): on each scale, every method that has a size setting gets the value whose trainable
fraction is nearest, in log space, to the fraction the method has on the reference model with the
reference space's settings (Astraios: StarCoderBase-1B, the nearest of its scales to any micro model):
- `lora`: the rank `r`, with `lora_alpha = 2 r` (the paper's 16 / 8, so the update's scale stays the same);
- `ptuning`: the prompt encoder's hidden width (`encoder_hidden_size`; the 30 virtual tokens stay);
- `adapterh`, `adapterp`, `parallel`: `bottleneck_size`, at most the model width (beyond it the adapter
  is no bottleneck; only the smallest scales reach the cap).
`fft` trains everything and `ia3` has no size setting: theirs are what they are. Trainable counts rise
with each setting, so the nearest value is found by bisection on counts made on the meta device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeper.ladders import Arch


@dataclass(frozen=True)
class SizeSetting:
    """A method's size setting: its name, and the settings one value of it means."""

    name: str
    settings: Callable[[int], dict[str, Any]]


def _single(field: str) -> SizeSetting:
    return SizeSetting(field, lambda value: {field: value})


SIZE_SETTINGS: dict[str, SizeSetting] = {
    "lora": SizeSetting("r", lambda rank: {"r": rank, "lora_alpha": 2 * rank}),
    "ptuning": _single("encoder_hidden_size"),
    "adapterh": _single("bottleneck_size"),
    "adapterp": _single("bottleneck_size"),
    "parallel": _single("bottleneck_size"),
}


@dataclass(frozen=True)
class MatchedSize:
    method: str
    settings: dict[str, Any]  # the method's settings with the matched value (empty: nothing to size)
    trainable: int
    total: int
    reference_fraction: float  # trainable / total on the reference model

    @property
    def fraction(self) -> float:
        return self.trainable / self.total


def fraction_of(arch: Arch, method: str, settings: dict[str, Any]) -> tuple[int, int, float]:
    """(trainable, total, trainable / total) of `method` with `settings` on `arch`."""
    from sweeper.methods import count_method_parameters, resolve_method_config

    config = resolve_method_config(method, settings, source=f"method {method}")
    trainable, total = count_method_parameters(arch, method, config)
    return trainable, total, trainable / total


def match_size(arch: Arch, method: str, base: dict[str, Any], reference_fraction: float) -> MatchedSize:
    """`method` on `arch` with `base` settings, its size setting (if any) chosen so that its trainable
    fraction is nearest `reference_fraction` in log space, within 1 .. the model width."""
    setting = SIZE_SETTINGS.get(method)
    if setting is None:
        trainable, total, _ = fraction_of(arch, method, base)
        return MatchedSize(method, {}, trainable, total, reference_fraction)

    @functools.cache  # the bisection, the last comparison and the result count the same values again
    def counted(value: int) -> tuple[int, int, float]:
        return fraction_of(arch, method, base | setting.settings(value))

    low, high = 1, arch.n_embd
    while low < high:  # the smallest value whose fraction reaches the reference (or the width)
        middle = (low + high) // 2
        if counted(middle)[2] >= reference_fraction:
            high = middle
        else:
            low = middle + 1
    candidates = [value for value in (low - 1, low) if value >= 1]
    best = min(candidates, key=lambda value: abs(math.log(counted(value)[2] / reference_fraction)))
    trainable, total, _ = counted(best)
    return MatchedSize(method, setting.settings(best), trainable, total, reference_fraction)


def reference_fractions(arch: Arch, methods: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each method's trainable fraction on the reference `arch` with the reference space's settings."""
    return {method: fraction_of(arch, method, settings)[2] for method, settings in methods.items()}


def match_ladder(archs: dict[str, Arch], reference: Arch, methods: dict[str, dict[str, Any]]
                 ) -> tuple[dict[str, float], dict[str, list[MatchedSize]]]:
    """Each method's fraction on the `reference` model with its `methods` settings, and for each scale
    of `archs` (name -> architecture) the same methods matched to them (those settings as the base)."""
    fractions = reference_fractions(reference, methods)
    matched = {scale: [match_size(arch, method, dict(methods[method]), fraction)
                       for method, fraction in fractions.items()] for scale, arch in archs.items()}
    return fractions, matched


def overrides_yaml(matched: dict[str, list[MatchedSize]]) -> str:
    """The matched settings as a space's `overrides:` block, one rule per scale and setting value."""
    lines = ["overrides:"]
    for scale, sizes in matched.items():
        groups: dict[str, list[str]] = {}
        for size in sizes:
            if size.settings:
                assignments = ", ".join(f"method_config.{key}: {value}" for key, value in size.settings.items())
                groups.setdefault(assignments, []).append(size.method)
        lines += [f"  - {{methods: [{', '.join(methods)}], scales: [{scale}], set: {{{assignments}}}}}"
                  for assignments, methods in groups.items()]
    return "\n".join(lines)
