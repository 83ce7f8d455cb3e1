"""The per-GPU memory estimate: hand-computed values, sanity facts at StarCoderBase scale, and the
activation formula against the tensors autograd really saves (CPU, tiny GPTBigCode)."""

import pytest

from sweeper.ladders import Arch, get_ladder
from sweeper.memory import (
    GIB,
    activation_bytes,
    estimate_memory,
    fits,
    gpus_needed,
)
from sweeper.schema import Cell, DataConfig, EarlyStopping, Recipe, Resources, Search

TINY = Arch(n_layer=2, n_embd=64, n_head=4, n_inner=256, vocab_size=1000, n_positions=512)  # kv = 16
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["c_attn", "c_proj"]}
A100_80GB, L4 = 80.0, 23034 / 1024  # GiB per GPU


def make_cell(method="fft", method_config=None, *, ladder="micro", scale="tiny", seq_len=128, workers=1,
              **recipe) -> Cell:
    return Cell(
        space="test", ladder=ladder, scale=scale, method=method, method_config=method_config or {},
        data=DataConfig(seq_len=seq_len), recipe=Recipe(**recipe), search=Search(),
        early_stopping=EarlyStopping(), resources=Resources(workers=workers, gpus_per_worker=1),
    )


# -- hand-computed values (tiny arch: h 64, a 4, kv 16, f 256, V 1000, 2 blocks; 2 x 128 tokens) -----------


def test_full_fine_tuning_under_autocast_by_hand():
    cell = make_cell(micro_batch=2, global_batch=2, precision="bf16")
    got = estimate_memory(cell, trainable=100_000, total=100_000, arch=TINY)
    p = 100_000
    assert got.weights_gib * GIB == 4 * p + 2 * p  # fp32 master weights + autocast's bf16 copies
    assert got.gradients_gib * GIB == 4 * p
    assert got.optimizer_gib * GIB == 8 * p
    assert got.buffers_gib == 0
    # Per token and block: LayerNorm inputs in fp32 2*4*64, q/k/v 2*(64+32), attention output 2*64,
    # log-sum-exp 4*4, GELU input 2*256, dropout masks 2*64, inputs of c_attn, c_fc, mlp.c_proj 2*(64+64+256).
    block = 512 + 192 + 128 + 16 + 512 + 128 + 768
    # Embedding mask 64, ln_f input 4*64, head input 2*64, logits + fp32 log-probs + 2 fp32 grads (2+12)*1000.
    outside = 64 + 256 + 128 + 14 * 1000
    assert got.activations_gib * GIB == 2 * 128 * (2 * block + outside)
    assert got.total_gib * GIB == 6 * p + 4 * p + 8 * p + 2 * 128 * (2 * block + outside)


def test_zero3_with_checkpointing_by_hand():
    cell = make_cell(micro_batch=2, global_batch=8, workers=4, zero_stage=3, gradient_checkpointing=True)
    got = estimate_memory(cell, trainable=100_000, total=100_000, arch=TINY)
    p = 100_000
    assert got.weights_gib * GIB == 2 * p / 4  # bf16 module, partitioned (stage 3)
    assert got.gradients_gib * GIB == 2 * p / 4
    assert got.optimizer_gib * GIB == 12 * p / 4  # fp32 master + 2 moments, partitioned
    # A reduce bucket of min(5e8, p) bf16 gradients + the gathered parameters, capped at the model.
    assert got.buffers_gib * GIB == 2 * p + 2 * p
    assert got.partitioned_gib * GIB == 16 * p
    # DeepSpeed runs the module in bf16 without autocast: LayerNorm inputs in 2 bytes.
    block = 256 + 192 + 128 + 16 + 512 + 128 + 768
    outside = 64 + 128 + 128 + 14 * 1000
    kept_inputs = 2 * 2 * 64  # two blocks keep their bf16 input; one block is recomputed at a time
    assert got.activations_gib * GIB == 2 * 128 * (kept_inputs + block + outside)


def test_lora_with_ddp_by_hand():
    cell = make_cell("lora", LORA, micro_batch=2, global_batch=4, workers=2)
    got = estimate_memory(cell, trainable=4_000, total=100_000, arch=TINY)
    t, frozen = 4_000, 96_000
    assert got.weights_gib * GIB == 4 * t + 2 * frozen + 2 * t  # bf16 base, fp32 LoRA + its bf16 copies
    assert got.gradients_gib * GIB == 4 * t
    assert got.optimizer_gib * GIB == 8 * t
    assert got.buffers_gib == 0  # the gradients are DDP's buckets (gradient_as_bucket_view=True)
    # A frozen base keeps no inputs of its linear layers; LoRA on c_attn, attn.c_proj and mlp.c_proj
    # ("c_proj" matches both) keeps each input in bf16 + a 1-byte dropout mask, and lora_B's 8-wide input.
    lora = (3 * 64 + 2 * 8) + (3 * 64 + 2 * 8) + (3 * 256 + 2 * 8)
    block = 512 + 192 + 128 + 16 + 512 + 128 + lora
    outside = 64 + 256 + 14 * 1000
    assert got.activations_gib * GIB == 2 * 128 * (2 * block + outside)


def test_adapter_sites_follow_peft_target_rules():
    def block(config: dict) -> float:
        return activation_bytes(make_cell("lora", config), TINY).block

    base = block({**LORA, "target_modules": []})
    assert block({**LORA, "target_modules": ["mlp.c_proj"]}) - base == 3 * 256 + 2 * 8
    assert block({**LORA, "target_modules": r".*\.attn\.c_attn"}) - base == 3 * 64 + 2 * 8
    assert block({**LORA, "target_modules": "all-linear", "lora_dropout": 0.0}) - base == (
        2 * (64 + 64 + 64 + 256) + 4 * 2 * 8)


def test_prompt_tokens_lengthen_every_sequence():
    plain = estimate_memory(make_cell("ptuning", {}), trainable=10, total=100_000, arch=TINY)
    prompted = estimate_memory(make_cell("ptuning", {"num_virtual_tokens": 32}), trainable=10, total=100_000,
                               arch=TINY)
    assert prompted.activations_gib == pytest.approx(plain.activations_gib * (128 + 32) / 128)


# -- sanity facts at StarCoderBase scale ----------------------------------------------------------------


def gptbigcode_parameters(arch: Arch) -> int:
    """GPTBigCode's parameter count (tied embedding and head), by hand."""
    h, f = arch.n_embd, arch.n_inner
    kv = h // arch.n_head
    block = 2 * h + (h * (h + 2 * kv) + h + 2 * kv) + (h * h + h) + 2 * h + (h * f + f) + (f * h + h)
    return arch.vocab_size * h + arch.n_positions * h + arch.n_layer * block + 2 * h


def test_parameter_count_by_hand_matches_the_model():
    from sweeper.ladders import count_parameters, meta_model

    arch = get_ladder("starcoderbase").scale("1b").arch
    assert count_parameters(meta_model(arch)) == (gptbigcode_parameters(arch),) * 2


def starcoder(scale: str, method: str = "fft", method_config=None, **recipe):
    arch = get_ladder("starcoderbase").scale(scale).arch
    total = gptbigcode_parameters(arch)
    trainable = total if method == "fft" else 4_000_000
    workers = recipe.pop("workers", 1)
    recipe = {"micro_batch": 4, "global_batch": 32, "precision": "bf16", **recipe}
    cell = make_cell(method, method_config, ladder="starcoderbase", scale=scale, seq_len=2048, workers=workers,
                     **recipe)
    return estimate_memory(cell, trainable, total)


def test_full_fine_tuning_of_15b_needs_zero():
    alone = starcoder("15b")
    assert alone.total_gib > 16 * 15.5e9 / GIB  # 16 B per parameter before any activation
    assert not fits(alone, A100_80GB)
    assert gpus_needed(alone, A100_80GB) is None  # nothing is partitioned without ZeRO

    sharded = starcoder("15b", zero_stage=3, gradient_checkpointing=True, workers=8)
    assert fits(sharded, A100_80GB)


def test_gpus_needed_is_the_fewest_zero3_ranks_that_fit():
    needed = gpus_needed(starcoder("15b", zero_stage=3, gradient_checkpointing=True, workers=8), A100_80GB)
    assert needed is not None and 1 < needed <= 8
    assert fits(starcoder("15b", zero_stage=3, gradient_checkpointing=True, workers=needed), A100_80GB)
    assert not fits(starcoder("15b", zero_stage=3, gradient_checkpointing=True, workers=needed - 1), A100_80GB)


def test_lora_of_1b_fits_a_24gb_gpu():
    checkpointed = starcoder("1b", "lora", LORA, gradient_checkpointing=True)
    assert fits(checkpointed, L4)
    assert fits(starcoder("1b", "lora", LORA, micro_batch=1), L4)
    # Without checkpointing, 4 x 2048 tokens of activations do not leave room on it.
    assert not fits(starcoder("1b", "lora", LORA), L4)


def test_each_saving_lowers_the_estimate():
    plain = starcoder("3b")
    assert starcoder("3b", gradient_checkpointing=True).activations_gib < plain.activations_gib / 3
    assert starcoder("3b", zero_stage=2, workers=8).total_gib < plain.total_gib
    assert starcoder("3b", zero_stage=3, workers=8).total_gib < starcoder("3b", zero_stage=2, workers=8).total_gib
    assert starcoder("3b", "lora", LORA).total_gib < plain.total_gib


# -- the activation formula against what autograd saves (CPU) ---------------------------------------------
# CPU differs from CUDA in ways the formula does not model, so the expectation is adjusted for them:
# dropout is off here (CPU keeps masks in the input's dtype; CUDA in 1 byte), CPU's flash kernel copies
# K and V (2 x e x kv per block), and CPU autocast runs LayerNorm on a bf16 input in bf16 (CUDA: fp32).
# Small per-token tensors (token ids, labels, LayerNorm statistics) are left to the 1% tolerance.

H, HEADS, F, VOCAB, BATCH, SEQ = 96, 6, 384, 1000, 3, 40
KV = H // HEADS


def saved_bytes_per_token(method: str, settings: dict, n_layer: int, *, precision: str = "bf16",
                          checkpointing: bool = False) -> float:
    """Bytes autograd saves for backward per token: activations only (no parameters, no casts of them)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers import GPTBigCodeForCausalLM

    from sweeper.methods import apply_method, resolve_method_config

    torch.manual_seed(0)
    arch = Arch(n_layer=n_layer, n_embd=H, n_head=HEADS, n_inner=F, vocab_size=VOCAB, n_positions=64)
    model = GPTBigCodeForCausalLM(arch.hf_config(attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0))
    if method != "fft":
        model = model.bfloat16()  # sweeper.train.load_base: a frozen base in bf16
    model = apply_method(model, method, resolve_method_config(method, settings, "test"))
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    saved: dict[int, tuple[int, tuple]] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved.setdefault(storage.data_ptr(), (storage.nbytes(), tuple(tensor.shape)))
        return tensor

    params = {p.data_ptr() for p in model.parameters()}
    param_shapes = {tuple(p.shape) for p in model.parameters()} | {tuple(p.shape)[::-1] for p in model.parameters()}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    # fp32 has no flash kernel on CUDA: run the math kernel as CUDA would.
    backend = sdpa_kernel(SDPBackend.MATH if precision == "fp32" else SDPBackend.FLASH_ATTENTION)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast, backend:
        model(input_ids=ids, labels=ids)
    total = sum(n for ptr, (n, shape) in saved.items() if ptr not in params and shape not in param_shapes)
    return total / (BATCH * SEQ)


def formula(method: str, settings: dict, precision: str = "bf16"):
    arch = Arch(n_layer=1, n_embd=H, n_head=HEADS, n_inner=F, vocab_size=VOCAB, n_positions=64)
    from sweeper.methods import resolve_method_config

    cell = make_cell(method, resolve_method_config(method, settings, "test"), seq_len=SEQ, precision=precision)
    return activation_bytes(cell, arch)


def per_block(method: str, settings: dict, **options) -> float:
    # Blocks 2 and 3 are fully recorded even for adapters (block 1 may start before the first adapter).
    return saved_bytes_per_token(method, settings, 3, **options) - saved_bytes_per_token(method, settings, 2,
                                                                                         **options)


CUDA_ONLY_MASKS = 2 * H  # two residual dropout masks per block (1 byte each)
CPU_KV_COPIES = 2 * 2 * KV  # bf16


@pytest.mark.parametrize(("method", "settings"), [
    ("fft", {}),
    ("lora", {"lora_dropout": 0.0}),
    ("ia3", {}),
    ("adapterh", {}),
    ("parallel", {}),
])
def test_block_activations_match_autograd(method, settings):
    expected = formula(method, settings).block - CUDA_ONLY_MASKS + CPU_KV_COPIES
    if method != "fft":
        expected -= 2 * 2 * H  # the two LayerNorm inputs: bf16 on CPU, fp32 on CUDA
    assert per_block(method, settings) == pytest.approx(expected, rel=0.01)


def test_fp32_math_attention_matches_autograd():
    terms = formula("fft", {}, precision="fp32")
    # Without attention dropout the math kernel keeps the probabilities only (no mask, no dropped copy).
    expected = terms.block - CUDA_ONLY_MASKS - (4 + 1) * HEADS * SEQ
    assert per_block("fft", {}, precision="fp32") == pytest.approx(expected, rel=0.01)


def test_outside_blocks_match_autograd():
    terms = formula("fft", {})
    whole = saved_bytes_per_token("fft", {}, 2)
    # Not saved tensors: the bf16 logits the output holds and the two fp32 gradients of backward; and
    # the CUDA-only embedding dropout mask.
    expected_outside = terms.outside_blocks - (2 + 8) * VOCAB - H
    expected = 2 * (terms.block - CUDA_ONLY_MASKS + CPU_KV_COPIES) + expected_outside
    assert whole == pytest.approx(expected, rel=0.01)


def test_checkpointing_keeps_only_block_inputs():
    terms = formula("fft", {})
    assert terms.block_input == 4 * H  # fft under autocast: an fp32 residual stream
    assert per_block("fft", {}, checkpointing=True) == pytest.approx(terms.block_input, rel=0.01)
