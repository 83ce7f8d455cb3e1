"""The method registry: resolved configs, bad input, parameter counts (meta device), `sweeper methods`."""

import json
import os
import subprocess
import sys

import pytest

from sweeper.core.errors import UserError
from sweeper.core.paths import PROJECT_ROOT
from sweeper.ladders import Arch, get_ladder
from sweeper.methods import (
    UNSUPPORTED,
    count_method_parameters,
    get_method,
    method_names,
    resolve_method_config,
)

ASTRAIOS = ["fft", "lora", "ptuning", "ia3", "adapterh", "adapterp", "parallel"]

# Trainable parameters of the seven Astraios methods on StarCoderBase-1B (the sizes of the released
# Astraios checkpoints and adapter files).
STARCODERBASE_1B = {
    "fft": 1_137_207_296,
    "lora": 3_588_096,
    "ptuning": 12_650_496,
    "ia3": 251_904,
    "adapterh": 50_331_648,
    "adapterp": 25_165_824,
    "parallel": 26_738_688,
}


def test_astraios_methods_come_first_in_paper_order():
    assert method_names()[:7] == ASTRAIOS
    assert {"dora", "rslora", "vera", "loha", "lokr", "oft", "boft", "prompt_tuning", "prefix_tuning",
            "ln_tuning", "fourierft", "hra"} <= set(method_names())
    assert [get_method(name).frozen_base for name in ASTRAIOS] == [False] + [True] * 6


@pytest.mark.parametrize("name", ASTRAIOS)
def test_exact_trainable_counts_on_starcoderbase_1b(name):
    arch = get_ladder("starcoderbase").scale("1b").arch
    trainable, total = count_method_parameters(arch, name, resolve_method_config(name, {}, "test"))
    assert trainable == STARCODERBASE_1B[name]
    assert total == STARCODERBASE_1B["fft"] + (0 if name == "fft" else trainable)


SMALL = Arch(n_layer=2, n_embd=64, n_head=4, n_inner=256, vocab_size=512, n_positions=64)


def closed_form_trainable(arch: Arch, name: str) -> int:
    """The Astraios methods' sizes written out for a multi-query GPTBigCode (bias everywhere, tied lm_head)."""
    layers, width, ffn = arch.n_layer, arch.n_embd, arch.n_inner
    qkv = width + 2 * (width // arch.n_head)  # multi-query: all query heads, one key head, one value head
    bottleneck, rank, virtual_tokens = 256, 8, 30
    norms = 2 * (2 * width)  # ln_1, ln_2: weight + bias
    attention = (width * qkv + qkv) + (width * width + width)  # c_attn, c_proj
    mlp = (width * ffn + ffn) + (ffn * width + width)  # c_fc, c_proj
    block = norms + attention + mlp
    return {
        "fft": arch.vocab_size * width + arch.n_positions * width + layers * block + 2 * width,
        # rank-r A and B on c_attn, attn.c_proj and mlp.c_proj
        "lora": layers * rank * ((width + qkv) + (width + width) + (ffn + width)),
        # one scale per c_attn output and per mlp.c_proj input
        "ia3": layers * (qkv + ffn),
        # prompt embeddings + the MLP encoder width -> width -> width -> width (with biases)
        "ptuning": virtual_tokens * width + 3 * (width * width + width),
        "adapterh": layers * 2 * (2 * width * bottleneck),
        "adapterp": layers * (2 * width * bottleneck),
        "parallel": layers * (width * bottleneck + bottleneck * qkv),
    }[name]


@pytest.mark.parametrize("name", ASTRAIOS)
def test_closed_form_counts_on_a_small_arch(name):
    base = closed_form_trainable(SMALL, "fft")
    expected = closed_form_trainable(SMALL, name)
    counted = count_method_parameters(SMALL, name, resolve_method_config(name, {}, "test"))
    assert counted == (expected, base if name == "fft" else base + expected)


def test_settings_change_the_count():
    lora_r16 = resolve_method_config("lora", {"r": 16}, "test")
    assert count_method_parameters(SMALL, "lora", lora_r16)[0] == 2 * closed_form_trainable(SMALL, "lora")
    half = resolve_method_config("adapterp", {"bottleneck_size": 128}, "test")
    assert count_method_parameters(SMALL, "adapterp", half)[0] == closed_form_trainable(SMALL, "adapterp") // 2


def test_all_astraios_cells_count():
    ladder = get_ladder("starcoderbase")
    configs = {name: resolve_method_config(name, {}, "test") for name in ASTRAIOS}
    counts = {
        (name, scale): count_method_parameters(ladder.scale(scale).arch, name, configs[name])
        for name in ASTRAIOS for scale in ladder.scales
    }
    assert len(counts) == 28
    for scale in ladder.scales:
        full = counts["fft", scale][0]
        assert all(0 < counts[name, scale][0] < full for name in ASTRAIOS[1:])
    assert counts["fft", "15b"][0] == 15_517_456_384  # StarCoderBase 15.5B


def test_defaults_are_the_paper_settings():
    lora = resolve_method_config("lora", {}, "test")
    assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == (8, 16, 0.05)
    assert lora["target_modules"] == ["c_attn", "c_proj"]
    ia3 = resolve_method_config("ia3", {}, "test")
    assert (ia3["target_modules"], ia3["feedforward_modules"]) == (["c_attn", "mlp.c_proj"], ["mlp.c_proj"])
    ptuning = resolve_method_config("ptuning", {}, "test")
    assert (ptuning["num_virtual_tokens"], ptuning["encoder_reparameterization_type"]) == (30, "MLP")
    assert ptuning["encoder_hidden_size"] is None  # = model width, read at apply time
    for name in ("adapterh", "adapterp", "parallel"):
        assert resolve_method_config(name, {}, "test") == {
            "activation": "tanh", "bottleneck_size": 256, "init_std": 0.02, "scaling": 1.0,
        }
    assert resolve_method_config("fft", {}, "test") == {}
    assert resolve_method_config("dora", {}, "test")["use_dora"] is True


@pytest.mark.parametrize("name", method_names())
def test_resolved_config_is_plain_sorted_and_stable(name):
    resolved = resolve_method_config(name, {}, "test")
    assert list(resolved) == sorted(resolved)
    assert json.loads(json.dumps(resolved)) == resolved  # plain JSON values only: no sets, enums, objects
    assert resolve_method_config(name, {}, "test") == resolved
    assert resolve_method_config(name, resolved, "test") == resolved  # overrides re-resolve resolved configs


def test_set_valued_fields_resolve_in_a_fixed_order():
    one = resolve_method_config("lora", {"target_modules": ["c_proj", "c_attn", "c_fc"]}, "test")
    other = resolve_method_config("lora", {"target_modules": ["c_fc", "c_attn", "c_proj"]}, "test")
    assert one["target_modules"] == other["target_modules"] == ["c_attn", "c_fc", "c_proj"]


def test_resolved_configs_do_not_depend_on_the_process():
    # peft keeps target modules as sets, whose order follows the per-process string hash seed.
    script = (
        "import json; from sweeper.methods import method_names, resolve_method_config; "
        "print(json.dumps({n: resolve_method_config(n, {}, 't') for n in method_names()}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=PROJECT_ROOT, timeout=120, check=True)
    here = {name: resolve_method_config(name, {}, "t") for name in method_names()}
    assert json.loads(done.stdout.strip().splitlines()[-1]) == here


@pytest.mark.parametrize(
    ("name", "settings", "expected"),
    [
        ("lorra", {}, "unknown method 'lorra'; valid methods: fft, lora, ptuning, ia3, adapterh"),
        ("lora", {"rr": 4}, "my.yaml: methods.lora: unknown field 'rr' for method 'lora'; valid fields: "),
        ("lora", {"r": "eight"}, "my.yaml: methods.lora: r: "),
        ("vera", {"projection_prng_key": [1]}, "projection_prng_key"),
        ("adapterh", {"bottleneck_size": 0}, "my.yaml: methods.adapterh: bottleneck_size: "),
        ("parallel", {"bottleneck_size": -8}, "bottleneck_size"),
        ("adapterp", {"bottleneck": 64},
         "unknown field 'bottleneck' for method 'adapterp'; valid fields: activation, bottleneck_size, init_std, scaling"),
        ("adapterp", {"activation": "wiggle"}, "activation: unknown activation; valid: "),
        ("adapterp", {"scaling": "big"}, "scaling"),
        ("adapterp", {"init_std": 0}, "init_std"),
        ("fft", {"lr": 1e-4}, "unknown field 'lr' for method 'fft'"),
        ("lora", ["r", 8], "expected a mapping of lora settings"),
        ("adalora", {}, "method 'adalora' is not supported on GPTBigCode: AdaLoRA needs the training loop"),
    ],
)
def test_bad_method_settings_are_one_clear_line(name, settings, expected):
    with pytest.raises(UserError) as caught:
        resolve_method_config(name, settings, "my.yaml: methods." + name)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_misspelled_peft_field_lists_the_real_ones():
    with pytest.raises(UserError, match=r"valid fields: .*\blora_alpha\b.*\br\b.*target_modules"):
        resolve_method_config("lora", {"lora_alhpa": 32}, "test")


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_methods_say_why(name):
    assert name not in method_names()
    with pytest.raises(UserError, match=f"method '{name}' is not supported on GPTBigCode: .{{20}}"):
        get_method(name)


def test_null_means_the_default():
    assert resolve_method_config("ptuning", {"encoder_hidden_size": None}, "t")["encoder_hidden_size"] is None
    assert resolve_method_config("ptuning", {"encoder_hidden_size": 512}, "t")["encoder_hidden_size"] == 512


def test_methods_command_json(run_cli):
    code, out, err = run_cli("methods", "--json")
    assert code == 0, err
    listing = json.loads(out)
    assert (listing["ladder"], listing["scale"]) == ("starcoderbase", "1b")
    rows = {row["name"]: row for row in listing["methods"]}
    assert list(rows) == method_names()
    for name, trainable in STARCODERBASE_1B.items():
        assert rows[name]["trainable"] == trainable
        assert rows[name]["total"] == STARCODERBASE_1B["fft"] + (0 if name == "fft" else trainable)
    assert rows["fft"]["trainable_pct"] == 100
    assert all(row["description"] for row in rows.values())


def test_methods_command_table_and_bad_scale(run_cli):
    code, out, err = run_cli("methods", "--scale", "3b")
    assert code == 0, err
    assert "adapterh" in out and "7,372,800" in out  # LoRA on StarCoderBase-3B
    code, out, err = run_cli("methods", "--scale", "2b")
    assert code == 2
    assert err.strip() == "error: ladder 'starcoderbase' has no scale '2b'; valid scales: 1b, 3b, 7b, 15b"
