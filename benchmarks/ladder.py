"""Benchmark: build the whole micro ladder from scratch (corpus, tokenizer, pretraining of every
scale) and check its budget (at most 10 minutes on a 2-core machine) and that the final
pretraining validation loss decreases with scale. Results: benchmarks/ladder.md.

    nice -n 10 python benchmarks/ladder.py            # a fresh temporary cache
    nice -n 10 python benchmarks/ladder.py --seed 1   # another initialisation and data order
    python benchmarks/ladder.py --cache ~/.cache/sweeper --json ladder.json
"""

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="SWEEPER_CACHE to build into (default: a fresh temporary folder)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--seed", type=int, help="pretrain with this seed instead of the recipes' (robustness)")
    args = parser.parse_args()
    os.environ["SWEEPER_CACHE"] = args.cache or tempfile.mkdtemp(prefix="sweeper-ladder-bench-")

    from sweeper.ladders.micro.build import build_ladder
    from sweeper.ladders.micro.ladder import MICRO, MicroLadder

    ladder = MICRO
    if args.seed is not None:
        recipes = {name: r.model_copy(update={"seed": args.seed}) for name, r in MICRO.recipes.items()}
        ladder = MicroLadder(corpus=MICRO.corpus, tokenizer=MICRO.tokenizer, recipes=recipes)
    start = time.perf_counter()
    metas = build_ladder(ladder)
    total = time.perf_counter() - start
    start = time.perf_counter()
    build_ladder(ladder)
    cached = time.perf_counter() - start

    rows = [
        {"scale": name, "parameters": m["parameters"], "pretrain_tokens": m["pretrain_tokens"],
         "lr": ladder.recipes[name].lr, "seed": ladder.recipes[name].seed, "seconds": round(m["seconds"], 1),
         "tokens_per_second": round(m["tokens_per_second"]), "final_val_loss": round(m["final_val_loss"], 4)}
        for name, m in metas.items()
    ]
    losses = [row["final_val_loss"] for row in rows]
    decreasing = all(a > b for a, b in itertools.pairwise(losses))
    print(f"cache: {os.environ['SWEEPER_CACHE']}  cpus: {os.cpu_count()}  python {platform.python_version()}")
    print("| scale | parameters | pretrain tokens | peak lr | seconds | tokens/s | final val loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['scale']} | {row['parameters']:,} | {row['pretrain_tokens']:,} | {row['lr']:g} | "
              f"{row['seconds']} | {row['tokens_per_second']:,} | {row['final_val_loss']:.3f} |")
    print(f"whole ladder from scratch: {total:.0f} s (budget 600 s); second call (cached): {cached:.2f} s")
    print(f"validation loss decreases with scale: {decreasing}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"scales": rows, "total_seconds": total, "cached_seconds": cached,
                       "decreasing": decreasing}, f, indent=2)
    return 0 if decreasing and total <= 600 else 1


if __name__ == "__main__":
    sys.exit(main())
