"""Tuning methods implemented by peft: the Astraios three (`lora`, `ptuning`, `ia3`) and every other
peft method that works on GPTBigCode: it trains, keeps the model causal, generates what `forward`
predicts, and can be counted on the meta device.

Each method's config class is the peft config dataclass itself, so every peft field can be set from
YAML. Sweeper's defaults: the Astraios settings where the paper fixed them, otherwise peft's own
defaults with peft's GPTBigCode target modules written out (so that they are part of the cell id).

The peft methods left out, with the reason, are in `UNSUPPORTED`. `tests/test_methods_training.py`
checks every registered method, checks that each reproducible reason still holds, and that the two
tables together cover every peft method, so a peft upgrade cannot add or fix one unnoticed.
"""

import copy
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from peft import PeftConfig, PeftType, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from torch import nn

from sweeper.core.errors import UserError, first_line
from sweeper.methods._method import Method

# Fields of every peft config that are bookkeeping, and the numbers prompt-learning methods read
# from the model itself: not settable from YAML.
NOT_SETTABLE = frozenset({
    "task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
    "inference_mode", "token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers",
})

# Astraios' LoRA (the paper's code release): rank 8, alpha 16, dropout 0.05, on the QKV projection
# and on both output projections (`c_proj` matches `attn.c_proj` and `mlp.c_proj` by suffix).
ASTRAIOS_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["c_attn", "c_proj"]}


def attach(model: nn.Module, config: PeftConfig, *, name: str) -> nn.Module:
    """`get_peft_model` for a causal LM; a config that does not fit the model is a `UserError`."""
    config = copy.deepcopy(config)  # peft writes model numbers into the config it is given
    if hasattr(config, "encoder_hidden_size") and config.encoder_hidden_size is None:
        # P-Tuning's prompt encoder (and prefix tuning's projection) is as wide as the model, as in Astraios.
        config.encoder_hidden_size = model.config.hidden_size
    try:
        tuned = get_peft_model(model, config)
    except ValueError as err:
        raise UserError(f"method {name!r} does not fit this model: {first_line(err)}") from None
    if config.is_prompt_learning:
        tuned.base_model_prepare_inputs_for_generation = _cache_under_peft_name(
            tuned.base_model_prepare_inputs_for_generation
        )
    return tuned


def _cache_under_peft_name(prepare: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Hand peft's prompt-learning generation the KV cache under the name it reads.

    transformers 5.2x renamed the generation input `past_key_values` to `cache` (the old name is accepted
    until 5.40). peft 0.21 looks for `past_key_values` only, so with a cache it re-inserts the virtual
    tokens at every decoding step (P-Tuning, prompt tuning: wrong tokens, then an index error past
    n_positions) or loses the prefix (prefix tuning). With the old name, `generate` gives the tokens that
    greedy decoding with `forward` gives (tests/test_methods_training.py checks every method).
    """

    @functools.wraps(prepare)
    def prepare_with_peft_name(*args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = prepare(*args, **kwargs)
        if "cache" in inputs and "past_key_values" not in inputs:
            inputs["past_key_values"] = inputs.pop("cache")
        return inputs

    return prepare_with_peft_name


def peft_method(
    name: str, peft_type: PeftType, description: str, *, count_under_meta_device: bool = True, **defaults: Any
) -> Method:
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    fields = {field.name for field in dataclasses.fields(config_cls)}
    if "target_modules" in fields and "target_modules" not in defaults:
        known = getattr(PEFT_TYPE_TO_TUNER_MAPPING[peft_type], "target_module_mapping", None) or {}
        if "gpt_bigcode" in known:
            defaults["target_modules"] = list(known["gpt_bigcode"])
    return Method(
        name=name,
        description=description,
        config_cls=config_cls,
        apply=functools.partial(attach, name=name),
        settable=tuple(sorted(fields - NOT_SETTABLE)),
        defaults=defaults,
        fixed={"task_type": "CAUSAL_LM"},
        count_under_meta_device=count_under_meta_device,
    )


ASTRAIOS_PEFT_METHODS = (
    peft_method("lora", PeftType.LORA, "LoRA, rank 8 on c_attn and both c_proj, as Astraios",
                **ASTRAIOS_LORA),
    peft_method(
        "ptuning", PeftType.P_TUNING,
        "P-Tuning: 30 virtual tokens from an MLP prompt encoder of model width, as Astraios",
        num_virtual_tokens=30, encoder_reparameterization_type="MLP",
    ),
    peft_method(
        "ia3", PeftType.IA3, "(IA)^3: learned scales on c_attn outputs and mlp.c_proj inputs, as Astraios",
        target_modules=["c_attn", "mlp.c_proj"], feedforward_modules=["mlp.c_proj"],
    ),
)

OTHER_PEFT_METHODS = (
    peft_method("dora", PeftType.LORA, "DoRA: weight-decomposed LoRA (Astraios LoRA settings)",
                **ASTRAIOS_LORA, use_dora=True),
    peft_method("rslora", PeftType.LORA, "rank-stabilised LoRA, alpha/sqrt(r) (Astraios LoRA settings)",
                **ASTRAIOS_LORA, use_rslora=True),
    peft_method("vera", PeftType.VERA, "VeRA: shared frozen random matrices, trained scaling vectors"),
    peft_method("loha", PeftType.LOHA, "LoHa: low-rank Hadamard-product update"),
    peft_method("lokr", PeftType.LOKR, "LoKr: low-rank Kronecker-product update"),
    peft_method("oft", PeftType.OFT, "OFT: block-diagonal orthogonal fine-tuning"),
    peft_method("boft", PeftType.BOFT, "BOFT: butterfly-factorised orthogonal fine-tuning",
                count_under_meta_device=False),
    peft_method("hra", PeftType.HRA, "HRA: Householder reflection adaptation"),
    peft_method("fourierft", PeftType.FOURIERFT, "FourierFT: trained sparse spectral coefficients"),
    peft_method("ln_tuning", PeftType.LN_TUNING, "LN tuning: only the layer norms are trained",
                target_modules=["ln_1", "ln_2", "ln_f"]),
    peft_method("prompt_tuning", PeftType.PROMPT_TUNING, "prompt tuning: 30 trained soft-prompt embeddings",
                num_virtual_tokens=30),
    peft_method("prefix_tuning", PeftType.PREFIX_TUNING,
                "prefix tuning: 30 trained key/value prefixes per layer", num_virtual_tokens=30),
    peft_method("beft", PeftType.BEFT, "BEFT: trained bias vectors on every linear layer",
                target_modules=["c_attn", "c_proj", "c_fc"]),
    peft_method("c3a", PeftType.C3A,
                "C3A: circular-convolution adaptation (block size must divide the widths)"),
    # No frozen tokens: a frozen random first token could not be restored from the trained weights.
    peft_method("cartridge", PeftType.CARTRIDGE, "Cartridges: a trained key/value cache of 30 tokens",
                num_virtual_tokens=30, num_frozen_tokens=0),
    peft_method("deft", PeftType.DEFT, "DEFT: decompositional residual-projection update"),
    peft_method("delora", PeftType.DELORA, "DeLoRA: decoupled low-rank adaptation"),
    peft_method("glora", PeftType.GLORA, "GLoRA: generalised LoRA (weight, bias and prompt paths)"),
    peft_method("gralora", PeftType.GRALORA, "GraLoRA: granular block-wise LoRA"),
    peft_method("hira", PeftType.HIRA, "HiRA: Hadamard high-rank adaptation"),
    peft_method("miss", PeftType.MISS, "MiSS: matrix shard sharing"),
    peft_method("osf", PeftType.OSF, "OSF: trains the low singular subspace of each weight"),
    peft_method("peanut", PeftType.PEANUT, "PEANuT: weight-aware neural tweakers"),
    peft_method("psoft", PeftType.PSOFT, "PSOFT: orthogonal fine-tuning in the principal subspace"),
    peft_method("pvera", PeftType.PVERA, "PVeRA: probabilistic VeRA"),
    peft_method("randlora", PeftType.RANDLORA, "RandLoRA: full-rank update from shared random bases"),
    peft_method("road", PeftType.ROAD, "RoAd: 2D rotary adaptation (group size must divide the widths)"),
    peft_method("supertuning", PeftType.SUPERTUNING,
                "Super-Tuning: trains a sparse support of weight entries"),
    peft_method("tinylora", PeftType.TINYLORA, "TinyLoRA: tiny trained vectors through fixed SVD projections"),
    peft_method("unilora", PeftType.UNILORA, "Uni-LoRA: one trained vector projected to every LoRA matrix",
                count_under_meta_device=False),
    peft_method("vblora", PeftType.VBLORA, "VB-LoRA: LoRA matrices from a shared vector bank (vector length "
                "must divide the widths)"),
    peft_method("waveft", PeftType.WAVEFT, "WaveFT: trained sparse wavelet-domain update"),
)

# peft methods that do not work for sweeper on GPTBigCode, found by trying each on a tiny GPTBigCode
# (train, causality, generate vs forward, meta-device count) with peft 0.21.2 and transformers 5.24.
UNSUPPORTED = {
    "adalora": "AdaLoRA needs the training loop to call update_and_allocate(step) after every backward pass "
               "and a total_step equal to the recipe's steps; sweeper.train.loop does neither, so its rank "
               "reallocation would silently never run (use lora, dora or rslora)",
    "adaption_prompt": "peft implements adaption prompts only for Llama-style attention "
                       "(peft: unsupported model type 'gpt_bigcode')",
    "adamss": "AdaMSS sizes its subspaces from an SVD of the base weights, so its parameter count cannot be "
              "known on the meta device, where sweeper counts every cell before training",
    "cpt": "CPT needs its own per-example token-type masks (cpt_token_ids, cpt_mask, cpt_tokens_type_mask); "
           "on instruction batches its loss is NaN",
    "frod": "FRoD decomposes the base weights on the CPU at creation, which fails on the meta device, where "
            "sweeper counts every cell before training",
    "lily": "Lily mixes its experts with router weights averaged over every token of the batch, so a "
            "token's output depends on later tokens and on other sequences: the model is no longer causal "
            "(its training loss sees the future, and cached generation disagrees with forward)",
    "multitask_prompt_tuning": "it needs a task id per example (task_ids), which instruction data does not "
                               "have",
    "poly": "Poly needs a task id per example (task_ids), which instruction data does not have",
    "shadow": "ShadowPEFT threads its own KV cache through the model output, which transformers 5.2x "
              "generation does not pass back, so cached generation disagrees with forward",
    "shira": "SHiRA builds its sparse mask with torch.nonzero, which has no meta-device implementation, so "
             "sweeper cannot count it before training",
    "trainable_tokens": "it trains the embeddings of listed token ids (for adding tokens to a vocabulary); no "
                        "default fits instruction tuning of a whole model",
    "xlora": "X-LoRA mixes already-trained LoRA adapters (it needs their checkpoints) and requires "
             "use_cache=False",
}
