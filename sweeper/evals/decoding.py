"""How a task samples from the model: its preset from the paper's release scripts, and the run's overrides.

Every generative task declares a `Decoding` preset: the bigcode-evaluation-harness flags that the
Astraios scripts pass for it (bigcode-project/astraios `evaluation/*.sh`, harness branch `astraios`):
samples per problem, temperature (top_p stays the harness's 0.95), `max_length_generation` (prompt +
completion tokens) and the stop words. A run may override n, temperature and a new-token cap
(`DecodingOverrides`, from `sweeper eval --n-samples/--temperature`); the decoding actually used is
recorded with every score, with the overrides the task did not take.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sweeper.evals.lm import TOP_P

if TYPE_CHECKING:
    from sweeper.evals.lm import LanguageModel


@dataclass(frozen=True)
class Decoding:
    """One task's sampling settings, in the harness's terms."""

    n_samples: int
    temperature: float  # 0 = greedy
    max_length: int | None  # `max_length_generation`: prompt + completion tokens; None: `max_new_tokens` alone
    stop: tuple[str, ...]
    source: str  # where the numbers come from (a release script), or "override"
    max_new_tokens: int | None = None  # a cap on new tokens, used when `max_length` is None
    fixed_sampling: bool = False  # the metric is defined on this n and temperature (robust pass@1, detection F1)

    def record(self) -> dict:
        return {"n_samples": self.n_samples, "temperature": self.temperature,
                "top_p": None if self.temperature <= 0 else TOP_P, "max_length_generation": self.max_length,
                "max_new_tokens": self.max_new_tokens, "stop": list(self.stop), "source": self.source}


@dataclass(frozen=True)
class DecodingOverrides:
    """What the run asked for; None keeps the task's preset."""

    n_samples: int | None = None
    temperature: float | None = None
    max_new_tokens: int | None = None  # replaces the preset's total length with a cap on new tokens

    def apply(self, preset: Decoding) -> tuple[Decoding, dict]:
        """The decoding to use, and the overrides left out (a metric defined on its own sampling keeps it)."""
        changes: dict = {}
        ignored: dict = {}
        if self.n_samples is not None and self.n_samples != preset.n_samples:
            (ignored if preset.fixed_sampling else changes)["n_samples"] = self.n_samples
        if self.temperature is not None and self.temperature != preset.temperature:
            (ignored if preset.fixed_sampling else changes)["temperature"] = self.temperature
        if self.max_new_tokens is not None:
            changes |= {"max_new_tokens": self.max_new_tokens, "max_length": None}
        if not changes:
            return preset, ignored
        return replace(preset, **changes, source=f"{preset.source}, overridden: {', '.join(sorted(changes))}"), ignored

    def record(self) -> dict:
        return {"n_samples": self.n_samples, "temperature": self.temperature, "max_new_tokens": self.max_new_tokens}


def token_budget(lm: LanguageModel, prompt: str, decoding: Decoding) -> int:
    """New tokens after `prompt`: what `max_length` leaves once the prompt's own tokens are counted (all
    of it when the model exposes no tokenizer), or the decoding's new-token cap."""
    if decoding.max_length is None:
        assert decoding.max_new_tokens is not None, "a decoding needs max_length or max_new_tokens"
        return decoding.max_new_tokens
    tokenizer = getattr(lm, "tokenizer", None)
    used = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if tokenizer is not None else 0
    return max(1, decoding.max_length - used)


def sample(lm: LanguageModel, prompts: Sequence[str], decoding: Decoding, *,
           max_prompt_tokens: int | None = None) -> list[list[str]]:
    """`decoding.n_samples` completions per prompt, cut at the stop words. Prompts of equal token budget
    are generated together; under greedy decoding a repeated prompt is generated once."""
    greedy = decoding.temperature <= 0
    todo = list(dict.fromkeys(prompts)) if greedy else list(prompts)
    groups: dict[int, list[int]] = defaultdict(list)
    for index, prompt in enumerate(todo):
        groups[token_budget(lm, prompt, decoding)].append(index)
    answers: list[list[str]] = [[] for _ in todo]
    for budget, indices in sorted(groups.items(), reverse=True):
        outputs = lm.generate([todo[i] for i in indices], n=decoding.n_samples, temperature=decoding.temperature,
                              max_new_tokens=budget, stop=decoding.stop, max_prompt_tokens=max_prompt_tokens)
        for i, completions in zip(indices, outputs, strict=True):
            answers[i] = list(completions)
    if not greedy:
        return answers
    by_prompt = dict(zip(todo, answers, strict=True))
    return [list(by_prompt[prompt]) for prompt in prompts]
