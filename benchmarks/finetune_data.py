"""Benchmark: how far the micro study's fine-tuning data is from the ladder's pretraining (issue 14).

    python benchmarks/finetune_data.py [--sequences 128] [--json finetune_data.json]

Instruction tuning should move a model to a distribution it was not pretrained on; fine-tuning on its
own pretraining distribution is continued pretraining. For every micro scale this prints the base
model's loss (nats per token, on every token, as the sweep trains) on:
- its pretraining validation blocks (the ladder's recorded final validation loss);
- `local-code` instructions mined from the standard-library files held out of pretraining
  (the micro study's data before issue 14);
- the micro space's data: instructions mined from third-party packages (`data.packages`).
The first `--sequences` packed sequences of each set (train and validation splits together: the base
model has seen neither). Needs the ladder cached (`sweeper ladder build`).
"""

import argparse
import json
import os
import platform

import torch


def mean_loss(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor, batch_size: int = 16) -> float:
    """Mean next-token loss over every labelled token of the rows."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            logits = model(ids[start : start + batch_size]).logits[:, :-1]
            target = labels[start : start + batch_size, 1:]
            keep = target != -100
            losses = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
            total += float(losses)
            count += int(keep.sum())
    return total / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=128, help="packed sequences of each data set")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    from sweeper.core import provenance
    from sweeper.data import prepare_data
    from sweeper.ladders.micro.build import cached_scale
    from sweeper.ladders.micro.ladder import MICRO
    from sweeper.space import load_space

    torch.set_num_threads(os.cpu_count() or 1)
    space = load_space("micro", [])
    packages = space.data
    heldout = packages.model_copy(update={"packages": ()})
    sets = {"stdlib held out": (heldout, MICRO.instruction_files()), "packages": (packages, None)}
    rows = []
    for scale in space.scales:
        meta = cached_scale(MICRO, scale)
        if meta is None:
            raise SystemExit(f"micro scale {scale!r} is not built: run `sweeper ladder build` first")
        loaded = MICRO.load(scale)
        loaded.model.eval()
        row = {"scale": scale, "pretraining": round(meta["final_val_loss"], 3)}
        for name, (config, files) in sets.items():
            data = prepare_data(config, loaded.tokenizer, files=files)
            ids = torch.cat([data.train_ids, data.val_ids])[: args.sequences]
            labels = torch.cat([data.train_labels, data.val_labels])[: args.sequences]
            row[name] = round(mean_loss(loaded.model, ids, labels), 3)
        rows.append(row)
    versions = provenance.package_versions()
    mined = provenance.import_versions(packages.packages)
    print(f"cpus: {os.cpu_count()}  python {platform.python_version()}  torch {versions.get('torch')}  "
          f"git {provenance.git_state()[0][:7]}  packages: {', '.join(f'{k} {v}' for k, v in mined.items())}")
    print("| scale | pretraining validation | stdlib held out (local-code) | packages (micro space) |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['scale']} | {row['pretraining']:.3f} | {row['stdlib held out']:.3f} | {row['packages']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "sequences": args.sequences, "packages": list(packages.packages)}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
