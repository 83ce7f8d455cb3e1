"""`sweeper eval` on a sweep folder: every finished cell's tuned model on the downstream tasks.

A cell's tuned model for each seed is the cell's result as the ledger defines it (`best_trials`: the
best done trial, the same rule the analysis joins on), rebuilt from the ledger's final checkpoint
(base from the ladder + method + trained tensors). Results go to (paths: `SweepFolder`)
    evals/<result>/records/<task>.<settings>.json   one record per (result, task, settings), written
                                                    atomically: the truth (<result>: `result_id`, the
                                                    cell id for its first seed)
    evals/<result>/<task>.<settings>/               generations (bigcode-evaluation-harness format)
    evals.parquet                    every row, rebuilt from the records after each one
so an interrupted evaluation keeps what it finished, and a rerun skips (result, task, settings) that
are already recorded. <settings> names the decoding the task used (its preset, or the run's overrides)
and the problem limit; scoring a task again with other settings moves the earlier record aside. Models are evaluated where the node has room: one worker process per GPU, each on
its own device, else one per CPU core with one torch thread each.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import polars as pl

from sweeper.core import provenance
from sweeper.core.errors import UserError
from sweeper.core.io import atomic_write, atomic_write_json, move_aside
from sweeper.sweep.folder import SweepFolder
from sweeper.sweep.ledger import CELL_COLUMNS, Ledger, best_trials, result_id, warn

# Tiny models score ~0 on executed pass@1: the likelihood-ranked variants give them a graded signal, and
# two scores that are not a likelihood of reference text test "loss predicts downstream" without
# circularity (issue 14): the YES/NO questions answered by contextually calibrated likelihoods (without
# calibration every micro model gave one answer to every pair) and the exact match of greedy line ends.
DEFAULT_TASKS = {
    "micro": ["humanevalsynthesize-ll", "humanevalfix-ll", "clone-detection-proxy-ll", "defect-detection-proxy-ll",
              "humaneval-line-end"],
    "micro-smoke": ["humanevalsynthesize-ll"],
}
# The paper's benchmarks, for every other ladder (Astraios section 4).
PAPER_TASKS = ["humanevalsynthesize", "humanevalfix", "humanevalexplain", "clone-detection", "defect-detection",
               "recode-format", "recode-natgen", "recode-func-name", "recode-nlaugmenter", "aatk-dow"]

EVAL_COLUMNS: dict[str, Any] = {
    "cell_id": pl.String, "trial_id": pl.String, "method": pl.String, "scale": pl.String, "task": pl.String,
    "metric": pl.String, "value": pl.Float64, "n": pl.Int64, "k": pl.Int64, "settings": pl.String,
    "git_sha": pl.String, "versions": pl.String, "hardware": pl.String, "recorded_at": pl.String,
}


def tuned_models(ledger: Ledger, cells: list[str] | None) -> list[dict[str, Any]]:
    """The ledger row of each cell's result per seed (`best_trials`) that has a tuned model, optionally
    only of the given cell ids, in ledger order."""
    rows = best_trials(pl.DataFrame(ledger.rows(), schema=CELL_COLUMNS)).filter(
        pl.col("checkpoint").is_not_null()).to_dicts()
    if not rows:
        raise UserError(f"{ledger.out}: no finished trial with a tuned model; run `sweeper launch grid` first")
    finished = list(dict.fromkeys(row["cell_id"] for row in rows))
    if cells:
        unknown = [c for c in cells if c not in finished]
        if unknown:
            raise UserError(f"--cells: {', '.join(unknown)} not finished in {ledger.out}; "
                            f"finished: {', '.join(finished)}")
        return [row for cell in cells for row in rows if row["cell_id"] == cell]
    return rows


# Bumped when what a key covers changes: 2 = the decoding a task used (presets, overrides), not the options.
SETTINGS_KEY_VERSION = 2


def settings_key(task: str, n_samples: int | None, temperature: float | None, limit: int | None) -> str:
    """Names a task's record for a result: the task, the decoding it uses with these options (a likelihood
    task: none, whatever was asked) and the problem limit."""
    from sweeper.evals.tasks import TASKS, Context

    asked = Context(sandbox=None, n_samples=n_samples, temperature=temperature)
    scorer = TASKS.get(task)
    decoding = scorer().decoding_record(asked)["decoding"]  # not the overrides it did not take
    # A task at version 1 keeps the names its records had before tasks had versions.
    version = [] if scorer.version == 1 else [scorer.version]
    blob = json.dumps([SETTINGS_KEY_VERSION, task, decoding, limit, *version], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _evaluate_cell(row: dict[str, Any], tasks: list[str], n_samples: int | None, temperature: float | None,
                   limit: int | None, out: str, allow_weak: bool | None = None, device: str = "cpu"
                   ) -> list[dict[str, Any]]:
    """Runs in a worker process: load the tuned model on `device`, evaluate, write one record per task."""
    import torch

    from sweeper.evals.evaluate import evaluate_model
    from sweeper.evals.sandbox import Sandbox
    from sweeper.train.artifacts import load_tuned_model

    if device == "cpu":
        torch.set_num_threads(1)  # one process per core
    loaded, _ = load_tuned_model(row["checkpoint"], device=device)
    folder = SweepFolder(Path(out))
    recorded = []
    info = provenance.collect()
    with Sandbox(workers=1, allow_weak=allow_weak) as box:
        for task in tasks:
            key = settings_key(task, n_samples, temperature, limit)
            results = evaluate_model(loaded, [task], n_samples=n_samples, temperature=temperature, limit=limit,
                                     out_dir=folder.eval_outputs(result_id(row), task, key), sandbox=box)
            rows = [{**result, "cell_id": row["cell_id"], "trial_id": row["trial_id"], "method": row["method"],
                     "scale": row["scale"], "git_sha": info["git_sha"],
                     "versions": json.dumps(info["versions"], sort_keys=True),
                     "hardware": json.dumps(info["hardware"], sort_keys=True), "recorded_at": info["recorded_at"]}
                    for result in results]
            atomic_write_json(folder.eval_record(result_id(row), task, key), rows)
            _supersede_other_settings(folder, result_id(row), task, key)
            recorded.extend(rows)
    return recorded


def _supersede_other_settings(folder: SweepFolder, result: str, task: str, key: str) -> None:
    """One record per result and task in evals.parquet: the analysis averages a task's scores per result, and
    two decodings (greedy n=1, the paper's n=20) averaged would be neither. A record made with other settings
    (or under an earlier key) is moved to `superseded/`, with a warning, once the new one is written."""
    current = folder.eval_record(result, task, key)
    for path in sorted(current.parent.glob(f"{task}.*.json")):
        if path != current:
            target = move_aside(path, path.parent.parent / "superseded")
            warn(f"{path}: {task} was scored again with other settings; the earlier record moved to {target}")


def _recorded(folder: SweepFolder, row: dict[str, Any], task: str, settings: str) -> bool:
    """Whether this result's tuned model is already scored on the task. A record of another trial in its place
    (the cell's best trial changed, or a folder evaluated when one trial per cell was scored across seeds)
    is moved aside to `superseded/`, with a warning, and the model is scored again."""
    path = folder.eval_record(result_id(row), task, settings)
    try:
        recorded = {r.get("trial_id") for r in json.loads(path.read_text())}
    except FileNotFoundError:
        return False
    except ValueError:
        raise UserError(f"{path}: corrupt evaluation record (not JSON)") from None
    if recorded == {row["trial_id"]}:
        return True
    target = move_aside(path, path.parent.parent / "superseded")
    warn(f"{path}: scores trial {', '.join(sorted(map(str, recorded)))}, not the cell's result {row['trial_id']}; "
         f"moved to {target} and scored again")
    return False


def _devices(models: int, workers: int | None) -> list[str]:
    """Where each worker evaluates: one worker per GPU of this node (`cuda:i`), else one per CPU core. The
    GPU count comes from NVML, which leaves this process without a CUDA context."""
    import torch

    gpus = torch.cuda.device_count()
    count = workers or (gpus if gpus else min(models, os.cpu_count() or 1))
    return [f"cuda:{n % gpus}" if gpus else "cpu" for n in range(max(1, count))]


def rebuild_evals(out: Path) -> Path:
    """evals.parquet from every record under evals/ (the records are the truth)."""
    folder = SweepFolder(Path(out))
    rows = []
    for path in folder.eval_records():
        try:
            rows.extend(json.loads(path.read_text()))
        except ValueError:
            raise UserError(f"{path}: corrupt evaluation record (not JSON)") from None
    table = pl.DataFrame([{c: r.get(c) for c in EVAL_COLUMNS} for r in rows], schema=EVAL_COLUMNS)
    target = folder.evals_table
    atomic_write(target, lambda tmp: table.write_parquet(tmp))
    return target


def evaluate_sweep(out: Path, tasks: list[str] | None, cells: list[str] | None, n_samples: int | None,
                   temperature: float | None, limit: int | None, workers: int | None = None,
                   allow_weak: bool | None = None) -> Path:
    """`allow_weak`: score even below the sandbox's minimum isolation (None: SWEEPER_ALLOW_WEAK_SANDBOX)."""
    from rich.progress import Progress

    from sweeper.evals.evaluate import check_task_names

    ledger = Ledger(out)
    manifest = ledger.manifest()
    if manifest is None:
        raise UserError(f"{out}: no manifest.json; expected a sweep folder made by `sweeper launch grid`")
    ladder = manifest["space"]["ladder"]
    tasks = check_task_names(tasks or DEFAULT_TASKS.get(ladder, PAPER_TASKS))
    todo = []
    for row in tuned_models(ledger, cells):
        missing = [t for t in tasks if not _recorded(ledger.folder, row, t, settings_key(t, n_samples, temperature, limit))]
        if missing:
            todo.append((row, missing))
    if not todo:
        return rebuild_evals(out)
    devices = _devices(len(todo), workers)
    # GPU workers are spawned, not forked (a CUDA context does not survive a fork); CPU workers fork, as
    # before, and skip a fresh interpreter's imports.
    context = multiprocessing.get_context("spawn") if devices[0] != "cpu" else None
    with Progress() as progress, ProcessPoolExecutor(len(devices), mp_context=context) as pool:
        bar = progress.add_task(f"evaluating {len(todo)} tuned models on {', '.join(sorted(set(devices)))}",
                                total=len(todo))
        futures = [pool.submit(_evaluate_cell, row, missing, n_samples, temperature, limit, str(out), allow_weak,
                               devices[n % len(devices)]) for n, (row, missing) in enumerate(todo)]
        for future in as_completed(futures):
            future.result()
            path = rebuild_evals(out)  # after every model, so that scores show while the rest run
            progress.advance(bar)
    return path
