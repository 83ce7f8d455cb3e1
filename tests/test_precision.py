"""Precision as Astraios ran it: an 8-bit base for PEFT methods (bitsandbytes LLM.int8 + peft's
prepare_model_for_kbit_training) and fp32 full fine-tuning; checked in configs, training, ledger, memory
and plan. bitsandbytes' CPU backend runs the 8-bit matmuls here; on a GPU the same code path runs CUDA's."""

import json
import sys

import pytest
import torch

from sweeper.core.errors import UserError
from sweeper.ladders import Arch, get_ladder
from sweeper.ladders.base import INT8_THRESHOLD, from_pretrained_kwargs
from sweeper.memory import GIB, estimate_memory
from sweeper.plan import ACCELERATORS, make_plan
from sweeper.schema import Cell, Trial
from sweeper.space import expand, load_space
from sweeper.sweep.ledger import trial_row
from sweeper.train.loop import load_base, run_trial

TINY = Arch(n_layer=2, n_embd=64, n_head=4, n_inner=256, vocab_size=1000, n_positions=512)  # kv = 16


def micro_cell(method: str, *sets: str, quantization: str = "int8") -> Cell:
    space = load_space("micro", ["ladder=micro-smoke", "recipe.steps=8", "recipe.warmup_steps=1",
                                 "recipe.eval_every=4", *sets])
    cell = next(c for c in expand(space) if (c.method, c.scale) == (method, "s"))
    raw = cell.model_dump()
    raw["recipe"]["base_quantization"] = quantization
    return Cell.model_validate(raw)


def test_full_fine_tuning_cannot_quantize_its_base(run_cli):
    code, _, err = run_cli("plan", "--space", "micro", "--set", "recipe.base_quantization=int8")
    assert code == 2
    assert "base_quantization int8" in err and "'fft'" in err and "Traceback" not in err


def test_int8_does_not_combine_with_zero(run_cli):
    code, _, err = run_cli("plan", "--space", "astraios", "--methods", "lora",
                           "--set", "recipe.base_quantization=int8", "--set", "recipe.zero_stage=2")
    assert code == 2
    assert "zero_stage 2" in err and "Traceback" not in err


def test_the_default_leaves_every_cell_id_as_it_was():
    """Sweeps recorded before `base_quantization` existed keep their cells."""
    import hashlib

    cell = expand(load_space("micro"))[0]
    science = cell.model_dump(mode="json", exclude={"space", "resources", "seeds"})
    del science["recipe"]["base_quantization"]
    assert cell.id == hashlib.sha256(json.dumps(science, sort_keys=True).encode()).hexdigest()[:12]
    assert micro_cell("lora").id != micro_cell("lora", quantization="none").id


def test_astraios_runs_peft_on_an_8_bit_base_and_fft_in_fp32():
    for cell in expand(load_space("astraios")):
        if cell.method == "fft":
            assert (cell.recipe.precision, cell.recipe.base_quantization) == ("fp32", "none")
        else:
            assert (cell.recipe.precision, cell.recipe.base_quantization) == ("bf16", "int8")
            assert cell.recipe.gradient_checkpointing  # prepare_model_for_int8_training's default


def test_missing_bitsandbytes_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(UserError, match=r"needs bitsandbytes; install it with pip install 'sweeper\[int8\]'"):
        from_pretrained_kwargs(torch.float32, torch.device("cpu"))


def test_an_8_bit_base_trains_a_peft_and_a_bottleneck_method_like_the_full_precision_one(smoke_ladder):
    """LoRA (peft's own 8-bit layers) and AdapterH (sweeper's adapters around an 8-bit linear); the other
    methods' layers are peft's (P-Tuning, (IA)3) or the same adapters (AdapterP, Parallel)."""
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.nn import Linear8bitLt

    for method in ("lora", "adapterh"):
        cell = micro_cell(method)
        base = load_base(cell, torch.device("cpu"))
        quantized = [name for name, module in base.model.named_modules() if isinstance(module, Linear8bitLt)]
        n_layer = get_ladder(cell.ladder).scale(cell.scale).arch.n_layer
        assert len(quantized) == 4 * n_layer  # c_attn, attn.c_proj, c_fc and mlp.c_proj of every block
        assert base.model.transformer.h[0].attn.c_attn.state.threshold == INT8_THRESHOLD
        assert not any(p.requires_grad for p in base.model.parameters())  # prepare_model_for_kbit_training froze it

        int8 = run_trial(Trial(cell=cell, lr=cell.recipe.lr))
        full = run_trial(Trial(cell=micro_cell(method, quantization="none"), lr=cell.recipe.lr))
        assert int8.trainable_params == full.trainable_params
        # LLM.int8 keeps the function: same start within 8-bit rounding, and training moves it the same way
        assert int8.initial_val_loss == pytest.approx(full.initial_val_loss, abs=0.05)
        assert int8.final_val_loss < int8.initial_val_loss


def test_the_ledger_records_precision_and_quantization():
    cell = micro_cell("lora")
    provenance = {"git_sha": "x", "git_dirty": False, "versions": {}, "hardware": {}}
    row = trial_row(Trial(cell=cell, lr=1e-3), None, "failed", error="e", provenance=provenance,
                    space_hash=None, started_at=None, finished_at=0.0)
    assert (row["precision"], row["base_quantization"]) == (cell.recipe.precision, "int8") == ("fp32", "int8")


def test_memory_of_an_8_bit_base_by_hand():
    from tests.test_memory import LORA, make_cell

    trainable, total = 4_000, 100_000
    int8 = make_cell("lora", LORA, base_quantization="int8")
    bf16 = make_cell("lora", LORA)
    got = estimate_memory(int8, trainable, total, arch=TINY)
    # per block: c_attn 64 x 96, c_proj 64 x 64, c_fc 64 x 256, mlp.c_proj 256 x 64 in 1 byte, a fp32 scale per row
    linear = 2 * (64 * 96 + 64 * 64 + 64 * 256 + 256 * 64)
    rows = 2 * (96 + 64 + 256 + 64)
    rest = total - linear  # embeddings, LayerNorms, biases and LoRA: fp32, with their bf16 autocast copies
    assert got.weights_gib * GIB == linear + 4 * rows + (4 + 2) * rest
    assert got.weights_gib < estimate_memory(bf16, trainable, total, arch=TINY).weights_gib * 2


def test_an_8_bit_1b_base_takes_about_half_the_weights_of_bf16():
    plan = make_plan(load_space("astraios"))
    lora_1b = next(e for e in plan.estimates if (e.method, e.scale) == ("lora", "1b"))
    cell = next(c for c in plan.cells if c.id == lora_1b.cell_id)
    bf16 = Cell.model_validate({**cell.model_dump(), "recipe": {**cell.recipe.model_dump(), "base_quantization": "none"}})
    int8_weights = estimate_memory(cell, lora_1b.trainable_params, lora_1b.total_params).weights_gib
    bf16_weights = estimate_memory(bf16, lora_1b.trainable_params, lora_1b.total_params).weights_gib
    assert 0.5 < int8_weights / bf16_weights < 0.8  # 1 B per block weight, fp32 embeddings (117M of 1.14G)


def test_fp32_cells_are_priced_at_the_fp32_peak():
    plan = make_plan(load_space("astraios"))
    a100 = ACCELERATORS["A100-80GB"]
    for estimate, cell in zip(plan.estimates, plan.cells, strict=True):
        peak = a100.fp32_tflops if cell.recipe.precision == "fp32" else a100.peak_tflops
        assert estimate.device_hours == pytest.approx(estimate.flops / (peak * 1e12 * 0.4 * 3600))
    overridden = make_plan(load_space("astraios", ["cost.fp32_peak_tflops=156"]))
    fft = next(e for e in overridden.estimates if e.method == "fft")
    assert fft.device_hours == pytest.approx(fft.flops / (156e12 * 0.4 * 3600))
    # each peak has its own override: a 16-bit one leaves the table's fp32 peak
    sixteen = make_plan(load_space("astraios", ["cost.peak_tflops=500"]))
    fft = next(e for e in sixteen.estimates if e.method == "fft")
    assert fft.device_hours == pytest.approx(fft.flops / (a100.fp32_tflops * 1e12 * 0.4 * 3600))


def test_a_space_launched_before_the_new_fields_keeps_its_hash():
    from sweeper.sweep.ledger import space_hash

    dump = load_space("micro", ["data.packages=[]"]).model_dump(mode="json")
    older = json.loads(json.dumps(dump))
    del older["recipe"]["base_quantization"], older["cost"]["fp32_peak_tflops"], older["data"]["packages"]
    assert space_hash(dump) == space_hash(older)
    dump["recipe"]["base_quantization"] = "int8"
    assert space_hash(dump) != space_hash(older)
