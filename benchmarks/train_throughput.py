"""Training tokens/s of sweeper's loop vs. a plain HF `Trainer` + peft on the same model, data and steps.

    python benchmarks/train_throughput.py [--steps 30] [--methods fft,lora,...] [--scales xs,s,m,l]

For every method x micro scale: the same base model with the method applied (`sweeper.methods`),
the same packed instruction data (`sweeper.data`), the same batch (8 x 256 tokens), optimizer
(AdamW, cosine, warmup) and number of steps, one torch thread (as one trial gets one core). sweeper's
figure is the loop's own tokens/s over its training steps (evaluation excluded); the Trainer's is
tokens / `train_runtime` with evaluation off. Writes benchmarks/train_throughput.json.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sweeper.core import provenance
from sweeper.data import prepare_data
from sweeper.ladders import get_ladder
from sweeper.methods import apply_method
from sweeper.schema import Trial
from sweeper.space import expand, load_space
from sweeper.train.loop import run_trial


def hf_trainer_tokens_per_s(cell, steps: int) -> float:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    ladder = get_ladder(cell.ladder)
    loaded = ladder.load(cell.scale)
    model = apply_method(loaded.model, cell.method, cell.method_config)
    data = prepare_data(cell.data, loaded.tokenizer, seed=cell.recipe.seed, files=ladder.instruction_files())
    rows = Dataset.from_dict({"input_ids": data.train_ids.tolist(), "labels": data.train_labels.tolist()})
    recipe = cell.recipe
    args = TrainingArguments(
        output_dir="/tmp/sweeper-bench-trainer", max_steps=steps, per_device_train_batch_size=recipe.micro_batch,
        gradient_accumulation_steps=recipe.global_batch // recipe.micro_batch, learning_rate=recipe.lr,
        lr_scheduler_type=recipe.schedule, warmup_steps=recipe.warmup_steps, weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.grad_clip, logging_steps=10**9, save_strategy="no", eval_strategy="no",
        report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=recipe.seed,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    result = trainer.train()
    return cell.train_tokens / result.metrics["train_runtime"]


def sweeper_tokens_per_s(cell, steps: int) -> float:
    outcome = run_trial(Trial(cell=cell, lr=cell.recipe.lr))
    train_points = [p for p in outcome.curve if p["step"] > 0]
    # tokens/s per evaluation window, weighted by the window's tokens: total tokens / total train time
    seconds = sum((p["tokens"] - q["tokens"]) / p["tokens_per_s"] for q, p in zip(outcome.curve, train_points,
                                                                                    strict=False))
    return outcome.tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--methods", default="fft,lora,ptuning,ia3,adapterh,adapterp,parallel")
    parser.add_argument("--scales", default="xs,s,m,l")
    args = parser.parse_args()
    torch.set_num_threads(1)
    space = load_space("micro", [f"recipe.steps={args.steps}", f"recipe.eval_every={args.steps}"])
    wanted_methods, wanted_scales = args.methods.split(","), args.scales.split(",")
    rows = []
    for cell in expand(space):
        if cell.method not in wanted_methods or cell.scale not in wanted_scales:
            continue
        ours = sweeper_tokens_per_s(cell, args.steps)
        torch.set_num_threads(1)
        theirs = hf_trainer_tokens_per_s(cell, args.steps)
        rows.append({"method": cell.method, "scale": cell.scale, "sweeper_tokens_per_s": round(ours),
                     "hf_trainer_tokens_per_s": round(theirs), "ratio": round(ours / theirs, 3)})
        print(json.dumps(rows[-1]), flush=True)
    result = {"command": "python benchmarks/train_throughput.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items()), "machine": platform.processor() or platform.machine(),
        "provenance": provenance.collect(), "rows": rows, "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    Path(__file__).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
