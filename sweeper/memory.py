"""GPU memory of one training rank of a cell: weights, gradients, optimizer states, activations, buffers.

A pure function of numbers (no torch): `sweeper plan` shows it for every cell, and `sweeper.backend.cluster`
checks before a launch that every cell fits some node type. Sizes are in bytes until the end, GiB
(2^30 bytes) in the result. What sits on one GPU depends on the engine `sweeper.train.engines` picks:

Plain PyTorch (`recipe.zero_stage` 0; DDP when `resources.workers` > 1), bf16/fp16 autocast:
- trainable parameters in fp32 (they are the master weights: 4 B), fp32 gradients (4 B) and AdamW's
  two fp32 moments (8 B) per trainable parameter;
- the frozen base of a PEFT method in bf16 under bf16 (`sweeper.train.load_base`: 2 B), fp32 otherwise;
- the 16-bit copies autocast makes of every fp32 matrix, cached until the forward pass ends (2 B per
  fp32 parameter; LayerNorm gains are not cast, < 0.1% of the parameters, counted anyway);
- with `recipe.base_quantization: int8` (LLM.int8 via bitsandbytes, Astraios' PEFT runs) the blocks'
  linear weights take 1 B plus one fp32 scale per output row, and the rest of the base (embeddings,
  LayerNorms, biases) is fp32 (peft's prepare_model_for_kbit_training casts it), with its autocast copies;
  the 8-bit linears keep fp32 inputs for the backward pass (`activation_bytes`); their transient buffers
  are not counted;
- no DDP buckets beside the gradients: `sweeper.train.engines` sets `gradient_as_bucket_view=True`, so the
  gradients are views into the buckets (PyTorch's default would copy each into a bucket: 4 B more).

DeepSpeed ZeRO (`zero_stage` 2 or 3; Rajbhandari et al. 2020, "ZeRO", section 3: 2 + 2 + 12 B):
- the whole module in 16 bits (2 B per parameter, frozen ones too), 16-bit gradients (2 B) and
  fp32 master weights + two fp32 moments (12 B) per trainable parameter; under fp32 the module and
  gradients take 4 B each and DeepSpeed still keeps its own fp32 copy of the partition (12 B);
- stage 2 partitions gradients and optimizer states over the N ranks, stage 3 the parameters too;
- buffers: one gradient reduce bucket (`reduce_bucket_size`, DeepSpeed's default 5e8 elements) and,
  under stage 3, the full parameters of the module being computed (the largest: the tied embedding
  in GPTBigCode) plus the prefetch bucket (`stage3_prefetch_bucket_size`, default 5e7 elements).

Activations: see `activation_bytes`. Not counted: PyTorch's CUDA context, cuBLAS/NCCL workspaces and the
caching allocator's fragmentation: `USABLE_FRACTION` leaves room for them. A tight cell should be
checked on the device.
"""

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

from sweeper.ladders import Arch, get_ladder
from sweeper.schema import Cell

GIB = 2**30
# Share of a GPU's memory the estimate may fill: the CUDA context (~0.5 GiB), cuBLAS/NCCL workspaces and
# the caching allocator's fragmentation take the rest.
USABLE_FRACTION = 0.9
# DeepSpeed ZeRO defaults (deepspeed/runtime/zero/config.py), in elements; sweeper.train.engines keeps them.
REDUCE_BUCKET_ELEMENTS = 500_000_000
PREFETCH_BUCKET_ELEMENTS = 50_000_000
FP32 = 4
HALF = 2


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one training rank (one GPU), GiB."""

    weights_gib: float  # parameters held (this rank's share under ZeRO-3) + autocast's 16-bit copies
    gradients_gib: float
    optimizer_gib: float  # AdamW moments (+ DeepSpeed's fp32 master weights)
    activations_gib: float  # at recipe.micro_batch x data.seq_len
    buffers_gib: float  # DDP buckets / ZeRO reduce bucket and gathered parameters
    ranks: int  # data-parallel ranks (resources.workers) the ZeRO states are split over
    partitioned_gib: float  # whole-model size of the ZeRO-partitioned states; each rank holds 1/ranks

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.gradients_gib + self.optimizer_gib + self.activations_gib + self.buffers_gib

    @property
    def replicated_gib(self) -> float:
        """What every rank holds in full, whatever the number of ranks."""
        return self.total_gib - self.partitioned_gib / self.ranks


class ActivationBytes(NamedTuple):
    """Activation bytes per token of a micro-batch (multiply by micro_batch x tokens per sequence)."""

    block: float  # what one transformer block keeps for its backward pass, adapters included
    block_input: float  # a block's input alone (all gradient checkpointing keeps of a block)
    outside_blocks: float  # embedding, final LayerNorm, output head and loss, at the start of backward


# GPTBigCode's linear layers in every block: name -> (input width, output width) for h, kv, f.
def _block_linears(h: int, kv: int, f: int) -> dict[str, tuple[int, int]]:
    return {"attn.c_attn": (h, h + 2 * kv), "attn.c_proj": (h, h), "mlp.c_fc": (h, f), "mlp.c_proj": (f, h)}


# Where sweeper's bottleneck adapters sit (mirrors sweeper/methods/_bottleneck.py): (linear, placement).
BOTTLENECK_SITES = {
    "adapterh": (("mlp.c_fc", "input"), ("mlp.c_proj", "output")),
    "adapterp": (("mlp.c_proj", "output"),),
    "parallel": (("attn.c_attn", "parallel"),),
}


def activation_bytes(cell: Cell, arch: Arch) -> ActivationBytes:
    """Per-token activation bytes of GPTBigCode with the cell's method, as transformers runs it on a GPU.

    Per block, Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
    Models", section 4.1: 34 h + 5 a s bytes per token with 16-bit activations), adapted:
    - multi-query attention: K and V have one head of kv = h / a channels;
    - bf16/fp16 run PyTorch SDPA's flash kernel (transformers' default): no s x s terms; it keeps
      q, k, v (views of c_attn's output), its output (which c_proj reuses) and a fp32 log-sum-exp per
      head. fp32 has no flash kernel and falls back to the math kernel: q, k and v repeated to all
      heads, and per head the s x s probabilities, their dropout mask and the dropped probabilities;
    - an MLP of width f = n_inner (4 h in StarCoderBase and the micro ladder);
    - autocast (the plain engine) runs LayerNorm in fp32 on CUDA: its inputs are kept in 4 bytes;
    - dropout (GPTBigCode's default 0.1 everywhere) keeps 1-byte masks on CUDA;
    - a frozen linear layer keeps no input (its weight needs no gradient); the method's adapters keep
      their own (`_adapter_bytes`).
    With 16-bit everything, multi-head attention, f = 4 h and every weight trained this is 34 h.
    Measured against the tensors autograd saves on CPU in tests/test_memory.py.
    """
    recipe = cell.recipe
    h, a, f, vocab = arch.n_embd, arch.n_head, arch.n_inner, arch.vocab_size
    kv = h // a if arch.multi_query else h
    half = recipe.precision in ("bf16", "fp16")
    e = HALF if half else FP32  # bytes of a matmul input
    autocast = half and recipe.zero_stage == 0
    norm = FP32 if autocast or not half else HALF  # bytes of a LayerNorm input
    mask = 1  # a CUDA dropout mask element (bool)
    trained = not cell.frozen_base  # do the base's linear layers keep their inputs?

    if half:
        attention = e * (h + 2 * kv) + e * h + FP32 * a  # q, k, v; output (= c_proj input); log-sum-exp
    else:
        attention = e * 3 * h + (2 * e + mask) * a * cell.data.seq_len + (e * h if trained else 0)
    block = (
        2 * norm * h  # ln_1 and ln_2 inputs
        + attention
        + e * f  # GELU input
        + 2 * mask * h  # attention and MLP residual dropout
        + (e * h + e * h + e * f if trained else 0)  # c_attn, c_fc and mlp.c_proj inputs
        # An 8-bit linear (bitsandbytes' MatMul8bitLt, outside autocast) keeps its input whenever that needs a
        # gradient, in fp32: ln_1's and ln_2's outputs and the GELU output (attn.c_proj's input is the attention
        # output, kept already). From reading bitsandbytes 0.50, not measured.
        + (FP32 * (2 * h + f) if recipe.base_quantization == "int8" else 0)
        + _adapter_bytes(cell, h, kv, f, e, autocast)
    )
    outside = (
        mask * h  # embedding dropout
        + norm * h  # ln_f input
        + (e * h if trained else 0)  # output head input
        # Logits (kept by the model output), the fp32 log-probabilities HF's loss keeps (it upcasts the
        # logits), and at the start of backward their two fp32 gradients: e + 4 + 8 bytes per vocab entry.
        + (e + 3 * FP32) * vocab
    )
    # The residual stream is fp32 when the embedding is: fft under autocast, any fp32 base, or an 8-bit
    # base (its embeddings are cast to fp32).
    fp32_base = not half or recipe.base_quantization == "int8" or (autocast and (trained or recipe.precision != "bf16"))
    return ActivationBytes(block=block, block_input=(FP32 if fp32_base else e) * h, outside_blocks=outside)


def _adapter_bytes(cell: Cell, h: int, kv: int, f: int, e: int, autocast: bool) -> float:
    """Bytes per token and block that the method's own modules keep (measured on CPU, see the tests):
    - LoRA family (`r`, `lora_dropout`): per targeted linear, its input in 16 bits (lora_A's input),
      the 1-byte dropout mask when dropout is on, and lora_B's r-wide input;
    - (IA)^3: an input-scaled (feed-forward) linear keeps its input in the adapter's dtype (fp32 under
      autocast), an output-scaled one its output;
    - bottleneck adapters: the adapter's input and its bottleneck activation, in 16 bits;
    - any other method with `target_modules`: one 16-bit copy of each targeted linear's input (an
      assumption, not measured). Methods without target modules keep nothing beyond the base.
    """
    config = cell.method_config
    linears = _block_linears(h, kv, f)
    if cell.method in BOTTLENECK_SITES:
        width = config["bottleneck_size"]
        return sum(e * (linears[name][1] if placement == "output" else linears[name][0]) + e * width
                   for name, placement in BOTTLENECK_SITES[cell.method])
    targets = [name for name in linears if _targeted(name, config.get("target_modules"))]
    if "lora_dropout" in config and "r" in config:
        mask = 1 if config["lora_dropout"] > 0 else 0
        return sum((e + mask) * linears[name][0] + e * config["r"] for name in targets)
    if "feedforward_modules" in config:
        feedforward = [name for name in targets if _targeted(name, config["feedforward_modules"])]
        return sum((FP32 if autocast else e) * linears[name][0] if name in feedforward else e * linears[name][1]
                   for name in targets)
    return sum(e * linears[name][0] for name in targets)


def _targeted(name: str, targets: str | list[str] | None) -> bool:
    """peft's rule for matching a module name: a string is a full regex match, a list matches a name
    that equals an entry or ends with `.entry`; "all-linear" takes every linear of the blocks."""
    full = f"transformer.h.0.{name}"
    if targets is None:
        return False
    if targets == "all-linear":
        return True
    if isinstance(targets, str):
        return re.fullmatch(targets, full) is not None
    return any(full == target or full.endswith(f".{target}") for target in targets)


def _plain_weight_bytes(cell: Cell, arch: Arch, trainable: int, frozen: int) -> float:
    """Weights on one rank of the plain engine, with the 16-bit copies autocast caches (module docstring)."""
    recipe = cell.recipe
    half = recipe.precision in ("bf16", "fp16")
    if recipe.base_quantization == "int8":
        kv = arch.n_embd // arch.n_head if arch.multi_query else arch.n_embd
        linears = _block_linears(arch.n_embd, kv, arch.n_inner).values()
        int8 = arch.n_layer * sum(width_in * width_out for width_in, width_out in linears)
        row_scales = arch.n_layer * sum(width_out for _, width_out in linears)
        fp32_params = trainable + frozen - int8
        return int8 + FP32 * row_scales + FP32 * fp32_params + (HALF * fp32_params if half else 0)
    frozen_bytes = HALF if cell.frozen_base and recipe.precision == "bf16" else FP32
    fp32_params = trainable + (frozen if frozen_bytes == FP32 else 0)
    return FP32 * trainable + frozen_bytes * frozen + (HALF * fp32_params if half else 0)


def estimate_memory(cell: Cell, trainable: int, total: int, arch: Arch | None = None) -> MemoryEstimate:
    """Peak memory of one GPU rank of `cell`, given its parameter counts (as `sweeper.plan` counts them).
    A CPU rank (the micro ladder) is not modelled: it keeps its base in fp32 and has no flash kernel."""
    if arch is None:
        arch = get_ladder(cell.ladder).scale(cell.scale).arch
    recipe = cell.recipe
    ranks = cell.resources.workers
    half = recipe.precision in ("bf16", "fp16")
    frozen = total - trainable
    partitioned = 0.0

    if recipe.zero_stage == 0:
        weights = _plain_weight_bytes(cell, arch, trainable, frozen)
        gradients = FP32 * trainable
        optimizer = 2 * FP32 * trainable
        buffers = 0.0  # DDP's buckets are the gradients (gradient_as_bucket_view)
    else:
        e = HALF if half else FP32
        weights, gradients, optimizer = e * total, e * trainable, 3 * FP32 * trainable
        sharded_weights = recipe.zero_stage == 3
        partitioned = gradients + optimizer + (weights if sharded_weights else 0)
        gradients, optimizer = gradients / ranks, optimizer / ranks
        buffers = e * min(REDUCE_BUCKET_ELEMENTS, trainable)
        if sharded_weights:
            weights /= ranks
            buffers += e * min(total, _largest_module(arch) + PREFETCH_BUCKET_ELEMENTS)

    per_token = activation_bytes(cell, arch)
    if recipe.gradient_checkpointing:
        # Korthikanti et al. 2022, section 5: full recomputation keeps each block's input, and the
        # block being back-propagated holds all of its activations again while it runs.
        blocks = arch.n_layer * per_token.block_input + per_token.block
    else:
        blocks = arch.n_layer * per_token.block
    # Prompt methods (P-Tuning, prompt tuning) put their virtual tokens in front of every sequence.
    tokens = recipe.micro_batch * (cell.data.seq_len + cell.method_config.get("num_virtual_tokens", 0))
    activations = tokens * (blocks + per_token.outside_blocks)

    return MemoryEstimate(
        weights_gib=weights / GIB, gradients_gib=gradients / GIB, optimizer_gib=optimizer / GIB,
        activations_gib=activations / GIB, buffers_gib=buffers / GIB, ranks=ranks,
        partitioned_gib=partitioned / GIB,
    )


def _largest_module(arch: Arch) -> int:
    """Parameters of GPTBigCode's largest module: the (tied) token embedding or a block's c_fc / c_attn."""
    h = arch.n_embd
    kv = h // arch.n_head if arch.multi_query else h
    return max(arch.vocab_size * h, (h + 1) * arch.n_inner, (h + 1) * (h + 2 * kv))


def usable_gib(gpu_memory_gib: float) -> float:
    return gpu_memory_gib * USABLE_FRACTION


def fits(estimate: MemoryEstimate, gpu_memory_gib: float) -> bool:
    return estimate.total_gib <= usable_gib(gpu_memory_gib)


def gpus_needed(estimate: MemoryEstimate, node_gpu_memory_gib: float) -> int | None:
    """The fewest GPUs (one rank each) for one rank's memory to fit a GPU of this size, given the cell's
    ZeRO stage: the partitioned states shrink with more ranks, the rest does not. None when no number
    of GPUs is enough (nothing partitioned and too big, or the replicated part alone too big)."""
    room = usable_gib(node_gpu_memory_gib) - estimate.replicated_gib
    if estimate.partitioned_gib == 0:
        return 1 if room >= 0 else None
    if room <= 0:
        return None
    return max(1, math.ceil(estimate.partitioned_gib / room))
