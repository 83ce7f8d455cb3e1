"""The two things a task asks of a model: sample completions, and score a continuation's likelihood.

`LanguageModel` is that interface; `HFLanguageModel` implements it for a HF causal LM (plain, a peft
`PeftModel`, or with sweeper's bottleneck adapters) and respects the model's context size: prompts
are truncated from the left, new tokens are capped, and peft's virtual tokens (prompt/p-tuning) are
counted against the positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from sweeper.ladders import LoadedModel

TOP_P = 0.95  # nucleus sampling as in bigcode-evaluation-harness's defaults


class LanguageModel(Protocol):
    def generate(
        self, prompts: Sequence[str], *, n: int, temperature: float, max_new_tokens: int, stop: Sequence[str],
        max_prompt_tokens: int | None = None,
    ) -> list[list[str]]:
        """`n` completions per prompt (the text after the prompt, cut at the first stop string). A prompt
        longer than `max_prompt_tokens` (or than the model's context leaves) loses its beginning."""
        ...

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        """For each (context, continuation): sum of log p(continuation tokens | context) in nats, and
        the number of continuation tokens."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    positions = [text.find(word) for word in stop if word in text]
    return text[: min(positions)] if positions else text


class HFLanguageModel:
    def __init__(self, loaded: LoadedModel, batch_size: int = 8, seed: int = 0):
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.batch_size = batch_size
        self.seed = seed
        config = getattr(self.model, "config", None)
        positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 2048)
        self.virtual_tokens = _virtual_tokens(self.model)
        self.context_size = int(positions) - self.virtual_tokens
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(
        self, prompts: Sequence[str], *, n: int, temperature: float, max_new_tokens: int, stop: Sequence[str],
        max_prompt_tokens: int | None = None,
    ) -> list[list[str]]:
        import torch

        # Half the context at most for new tokens: the micro models have ~512 positions, and a prompt
        # cut to nothing would make the completion meaningless.
        new_tokens = max(1, min(max_new_tokens, self.context_size // 2))
        prompt_budget = min(self.context_size - new_tokens, max_prompt_tokens or self.context_size)
        greedy = temperature <= 0
        per_prompt = 1 if greedy else n  # greedy samples are identical: generate once, repeat
        torch.manual_seed(self.seed)
        self.model.eval()
        results: list[list[str]] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = [self._encode(p)[-prompt_budget:] for p in prompts[start : start + self.batch_size]]
            width = max(len(ids) for ids in batch)
            input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(batch):  # left padding: every prompt ends at the last column
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                attention[row, width - len(ids) :] = 1
            sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature, "top_p": TOP_P}
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                    max_new_tokens=new_tokens, num_return_sequences=per_prompt, pad_token_id=self.pad_id,
                    stop_strings=list(stop) or None, tokenizer=self.tokenizer, **sampling,
                    # peft 0.21 + transformers 5 re-prepend the virtual tokens at every cached step
                    # of prompt tuning (positions run past n_positions): generate without the cache.
                    use_cache=self.virtual_tokens == 0,
                )
            texts = self.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
            for row in range(len(batch)):
                completions = [cut_at_stop(t, stop) for t in texts[row * per_prompt : (row + 1) * per_prompt]]
                results.append(completions * n if greedy else completions)
        return results

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        import torch

        encoded = [self._split_encode(context, continuation) for context, continuation in requests]
        order = sorted(range(len(encoded)), key=lambda i: -sum(len(part) for part in encoded[i]))
        scores: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
        self.model.eval()
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            sequences = [encoded[i][0] + encoded[i][1] for i in chunk]
            width = max(len(s) for s in sequences)
            input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, ids in enumerate(sequences):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)).logits
            # Prompt-learning methods prepend virtual tokens to the logits: keep the real positions.
            logprobs = torch.log_softmax(logits[:, -width:].float(), dim=-1).cpu()
            for row, index in enumerate(chunk):
                context, continuation = encoded[index]
                positions = torch.arange(len(context) - 1, len(context) + len(continuation) - 1)
                token_logprobs = logprobs[row, positions, torch.tensor(continuation)]
                scores[index] = (float(token_logprobs.sum()), len(continuation))
        return scores

    def _split_encode(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of context and continuation as lm-evaluation-harness splits them: encode the
        whole text and cut it after as many tokens as the context alone has (a token spanning the
        boundary goes to the continuation, which keeps at least one token). Left-truncated to the
        context size, with at least one context token kept."""
        whole = self._encode(context + continuation)
        cut = max(1, min(len(self._encode(context)), len(whole) - 1))
        context_ids, continuation_ids = whole[:cut], whole[cut:]
        continuation_ids = continuation_ids[: self.context_size - 1]
        context_ids = context_ids[-(self.context_size - len(continuation_ids)) :]
        return context_ids, continuation_ids


def _virtual_tokens(model: object) -> int:
    config = getattr(model, "active_peft_config", None)
    return int(getattr(config, "num_virtual_tokens", 0) or 0) if config is not None else 0
