"""Orchestration cost of the sweep on this machine (issue 4's figures), each run as a fresh process.

    python benchmarks/sweep_bench.py overhead [--steps 150]   # one cell: launch grid vs in-process
    python benchmarks/sweep_bench.py makespan                 # the micro grid vs sum(cell times)/concurrency
    python benchmarks/sweep_bench.py mainjob [--keep DIR]     # `sweeper launch grid`, cold and warm cache

`overhead` times the fft / l cell (the slowest micro cell) three ways, each a new Python process so
that imports count on both sides: `sweeper.train.loop.run_trial` called directly; `sweeper launch grid`
with the trial run directly in the Tune trial actor (sweeper's choice for a single CPU worker); and
the same launch with the trial forced through a Ray Train `TorchTrainer`. Results are appended to
benchmarks/sweep_bench.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable

IN_PROCESS = """
import sys
from sweeper.space import expand, load_space
from sweeper.schema import Trial
from sweeper.train.loop import run_trial
space = load_space("micro", sys.argv[1:])
cell = next(c for c in expand(space) if (c.method, c.scale) == ("fft", "l"))
outcome = run_trial(Trial(cell=cell, lr=cell.recipe.lr))
print(outcome.status, outcome.final_val_loss)
"""

THROUGH_TRAIN = """
import sys
import sweeper.backend.driver
sweeper.backend.driver.runs_direct = lambda cell: False  # force the TorchTrainer path for this benchmark
from sweeper.cli.main import main
sys.argv = ["sweeper", *sys.argv[1:]]
main()
"""


def timed(command: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> float:
    """Seconds the command took; `log`: where its stdout and stderr are written."""
    started = time.perf_counter()
    result = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if log is not None:
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds


def launch_args(out: Path, sets: list[str]) -> list[str]:
    return ["launch", "grid", "--methods", "fft", "--scales", "l", "--out", str(out), "--no-evaluate",
            "--no-report", *[arg for s in sets for arg in ("--set", s)]]


def overhead(steps: int) -> dict:
    sets = [f"recipe.steps={steps}", "recipe.eval_every=10"]
    with tempfile.TemporaryDirectory() as scratch:
        in_process = timed([PYTHON, "-c", IN_PROCESS, *sets])
        direct = timed([PYTHON, "-m", "sweeper", *launch_args(Path(scratch) / "direct", sets)])
        train = timed([PYTHON, "-c", THROUGH_TRAIN, *launch_args(Path(scratch) / "train", sets)])
        cell_seconds = json.loads(
            subprocess.run([PYTHON, "-c", "import polars as pl,sys; print(pl.read_parquet(sys.argv[1])"
                            "['wall_seconds'].to_list()[0])", str(Path(scratch) / "direct" / "cells.parquet")],
                           capture_output=True, text=True, check=True).stdout)
    return {"what": "overhead", "steps": steps, "in_process_s": round(in_process, 1),
            "launch_direct_s": round(direct, 1), "launch_torchtrainer_s": round(train, 1),
            "ratio_direct": round(direct / in_process, 3), "ratio_torchtrainer": round(train / in_process, 3),
            "cell_loop_s": round(cell_seconds, 1)}


def makespan() -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "grid"
        wall = timed([PYTHON, "-m", "sweeper", "launch", "grid", "--out", str(out), "--no-evaluate", "--no-report"])
        import polars as pl

        cells = pl.read_parquet(out / "cells.parquet")
    concurrency = os.cpu_count() or 1
    ideal = float(cells["wall_seconds"].sum()) / concurrency
    return {"what": "makespan", "cells": cells.height, "grid_wall_s": round(wall, 1),
            "sum_cell_s": round(float(cells["wall_seconds"].sum()), 1), "concurrency": concurrency,
            "ideal_s": round(ideal, 1), "ratio": round(wall / ideal, 3)}


def mainjob(keep: Path | None) -> dict:
    """Cold (empty cache: the ladder is built first) and warm; `keep`: where the warm sweep is left
    (its report is the one the README quotes)."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {"SWEEPER_CACHE": str(Path(scratch) / "cache")}
        warm_out = keep or Path(scratch) / "warm"
        cold = timed([PYTHON, "-m", "sweeper", "launch", "grid", "--out", str(Path(scratch) / "cold")], env)
        warm = timed([PYTHON, "-m", "sweeper", "launch", "grid", "--out", str(warm_out)], env,
                     log=keep.with_suffix(".log") if keep else None)
    return {"what": "mainjob", "cold_s": round(cold, 1), "warm_s": round(warm, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("overhead", "makespan", "mainjob"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--keep", type=Path, help="mainjob: leave the warm run's sweep folder here")
    args = parser.parse_args()
    result = {"overhead": lambda: overhead(args.steps), "makespan": makespan,
              "mainjob": lambda: mainjob(args.keep)}[args.what]()
    result.update(command=f"python benchmarks/sweep_bench.py {' '.join(sys.argv[1:])}",
                  measured_at=time.strftime("%Y-%m-%d %H:%M"), cpus=os.cpu_count())
    print(json.dumps(result), flush=True)
    path = HERE / "sweep_bench.json"
    history = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*history, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
