"""GPU training throughput and model FLOPs utilisation (MFU): sweeper's step engine vs. HF `Trainer`.

    python benchmarks/gpu_mfu.py                  # on a GPU: StarCoderBase-1B shape, bf16, seq 2048
    python benchmarks/gpu_mfu.py --tiny           # on a CPU: micro-xs shape, checks the script runs

A randomly initialised GPTBigCode at the StarCoderBase-1B shape (`sweeper.ladders`, no download), one
GPU, bf16 autocast with fp32 master weights (frozen bases kept in bf16, as `sweeper.train.load_base`
does), global batch 32 x 2048 tokens, random token ids. For `fft` and `lora` (Astraios settings from
`sweeper.methods`): sweeper's `TorchEngine.train_step` (the call `run_trial` makes for every
optimizer step, with the same fused AdamW, cosine schedule and clipping) against `transformers.Trainer`
with the same model, batch, optimizer settings and `bf16=True`. Steps after `--warmup` are timed
(CUDA synchronised). Writes benchmarks/gpu_mfu.json (not with --tiny).

MFU = model FLOPs per token x tokens/s / peak, with the PaLM count (Chowdhery et al. 2022, app. B):
linear layers 6 N for full fine-tuning, 4 N + 2 N_trainable with a frozen base (activation gradients
still flow through it), plus attention 12 x n_layer x n_embd x seq_len. Peak: dense bf16 of the card
from sweeper's accelerator table (H100 and H200: 989 TFLOP/s).
"""

import argparse
import json
import time
from pathlib import Path

import torch

from sweeper.core import provenance
from sweeper.ladders import count_parameters, get_ladder
from sweeper.methods import apply_method
from sweeper.plan import ACCELERATORS, trial_flops
from sweeper.schema import Recipe
from sweeper.space import expand, load_space
from sweeper.train.engines import make_engine

PEAK_BY_CARD = {"H100": ACCELERATORS["H100-80GB"].peak_tflops, "H200": ACCELERATORS["H100-80GB"].peak_tflops,
                "A100": ACCELERATORS["A100-80GB"].peak_tflops}


def build_model(arch, method: str, device: torch.device) -> tuple[torch.nn.Module, int, int]:
    from transformers import GPTBigCodeForCausalLM

    torch.manual_seed(0)
    with device:
        model = GPTBigCodeForCausalLM(arch.hf_config())
    cell = next(cell for cell in expand(load_space("astraios")) if cell.method == method and cell.scale == "1b")
    if cell.frozen_base and device.type == "cuda":
        model.to(torch.bfloat16)
    model = apply_method(model, method, cell.method_config)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    trainable, total = count_parameters(model)
    return model.to(device), trainable, total


def random_batches(vocab: int, rows: int, seq_len: int) -> torch.Tensor:
    return torch.randint(0, vocab, (rows, seq_len), generator=torch.Generator().manual_seed(0))


def time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds for the steps after the warm-up ones."""
    for index in range(warmup):
        step(index)
    sync(device)
    start = time.perf_counter()
    for index in range(warmup, warmup + steps):
        step(index)
    sync(device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def sweeper_seconds(model, recipe: Recipe, ids: torch.Tensor, steps: int, warmup: int, device) -> float:
    engine = make_engine(model, recipe, device, world=1)
    batch = recipe.global_batch

    def step(index: int) -> None:
        rows = ids[index * batch:(index + 1) * batch]
        engine.train_step(rows, rows, recipe.micro_batch, rows.numel())

    return time_steps(step, steps, warmup, device)


def trainer_seconds(model, recipe: Recipe, ids: torch.Tensor, steps: int, warmup: int, device) -> float:
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    marks: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            marks.append(time.perf_counter())

    rows = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(
        output_dir="/tmp/sweeper-bench-gpu-trainer", max_steps=warmup + steps,
        per_device_train_batch_size=recipe.micro_batch,
        gradient_accumulation_steps=recipe.global_batch // recipe.micro_batch, learning_rate=recipe.lr,
        lr_scheduler_type=recipe.schedule, warmup_steps=recipe.warmup_steps, weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.grad_clip, bf16=recipe.precision == "bf16", optim="adamw_torch_fused",
        logging_steps=10**9, save_strategy="no", eval_strategy="no", report_to=[], dataloader_num_workers=0,
        disable_tqdm=True, seed=recipe.seed, use_cpu=device.type == "cpu",
    )
    Trainer(model=model, args=args, train_dataset=rows, callbacks=[StepClock()]).train()
    return marks[-1] - marks[warmup - 1]


def model_flops_per_token(arch, total: int, trainable: int, seq_len: int) -> float:
    return trial_flops(total, trainable, train_tokens=1, eval_tokens=0) + 12 * arch.n_layer * arch.n_embd * seq_len


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="fft,lora")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--tiny", action="store_true", help="micro-xs shape, seq 128, on the CPU")
    args = parser.parse_args()
    if args.tiny:
        device, arch, seq_len, peak = torch.device("cpu"), get_ladder("micro").scale("xs").arch, 128, None
    else:
        if not torch.cuda.is_available():
            raise SystemExit("error: no CUDA device; run with --tiny to check the script on a CPU")
        device, arch, seq_len = torch.device("cuda"), get_ladder("starcoderbase").scale("1b").arch, 2048
        name = torch.cuda.get_device_name()
        peak = next((tflops for card, tflops in PEAK_BY_CARD.items() if card in name), None)
    recipe = Recipe(lr=1e-4, steps=args.warmup + args.steps, warmup_steps=1, global_batch=32,
                    micro_batch=args.micro_batch, eval_every=args.warmup + args.steps, precision="bf16")
    ids = random_batches(arch.vocab_size, recipe.global_batch * recipe.steps, seq_len)
    tokens = args.steps * recipe.global_batch * seq_len
    rows = []
    for method in args.methods.split(","):
        row = {"method": method}
        for name, run in (("sweeper", sweeper_seconds), ("hf_trainer", trainer_seconds)):
            model, trainable, total = build_model(arch, method, device)
            seconds = run(model, recipe, ids, args.steps, args.warmup, device)
            rate = tokens / seconds
            flops = model_flops_per_token(arch, total, trainable, seq_len)
            row.update({"total_params": total, "trainable_params": trainable, f"{name}_tokens_per_s": round(rate),
                        f"{name}_mfu": round(flops * rate / (peak * 1e12), 4) if peak else None})
            if device.type == "cuda":
                row[f"{name}_peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
                torch.cuda.reset_peak_memory_stats()
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        row["ratio"] = round(row["sweeper_tokens_per_s"] / row["hf_trainer_tokens_per_s"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result = {"command": "python benchmarks/gpu_mfu.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "tiny") + (" --tiny" if args.tiny else ""),
        "device": card, "peak_tflops": peak, "seq_len": seq_len, "global_batch": recipe.global_batch,
        "provenance": provenance.collect(), "rows": rows, "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    if not args.tiny:  # the CPU check proves the script runs; its numbers are not a result
        Path(__file__).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
