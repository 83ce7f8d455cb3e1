"""Entry points: evaluate a loaded model on tasks, or score generations someone already sampled."""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from sweeper.core import provenance
from sweeper.core.errors import UserError
from sweeper.core.io import atomic_write_json

if TYPE_CHECKING:
    from sweeper.evals.jvm_sandbox import JvmSandbox
    from sweeper.evals.sandbox import Sandbox
    from sweeper.ladders import LoadedModel

ROW_KEYS = ("task", "metric", "value", "n", "k", "settings")


def check_task_names(tasks: list[str]) -> list[str]:
    from sweeper.evals.tasks import TASKS

    if not tasks:
        raise UserError("--tasks: no task given; valid tasks: " + ", ".join(TASKS.names()))
    for name in tasks:
        TASKS.get(name)
    return tasks


def check_sampling(n_samples: int | None, temperature: float | None, limit: int | None) -> None:
    """Validate the sampling options shared by `sweeper eval` and `sweeper eval model` (None: each task's preset)."""
    if n_samples is not None and n_samples < 1:
        raise UserError(f"--n-samples must be at least 1 (got {n_samples})")
    if temperature is not None and not 0 <= temperature < float("inf"):
        raise UserError(f"--temperature must be a finite number >= 0 (got {temperature})")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1 (got {limit})")


def evaluate_model(
    loaded: LoadedModel,
    tasks: list[str],
    *,
    n_samples: int | None = None,
    temperature: float | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    out_dir: Path | None = None,
    data: Path | None = None,
    max_new_tokens: int | None = None,
    sandbox: Sandbox | None = None,
) -> list[dict]:
    """Run `tasks` on a model; one row per (task, metric): task, metric, value, n, k, settings (JSON).
    Sampling settings left at None take each task's preset (the paper's); the settings record the
    decoding each task used.

    With `out_dir`, each task's generations are saved as `generations_<task>.json`
    (bigcode-evaluation-harness format) with its other artifacts and the seconds each task took.
    """
    from rich.console import Console

    from sweeper.evals.lm import HFLanguageModel
    from sweeper.evals.sandbox import Sandbox
    from sweeper.evals.tasks import TASKS, Context

    check_task_names(tasks)
    check_sampling(n_samples, temperature, limit)
    console = Console(stderr=True)
    lm = HFLanguageModel(loaded, batch_size=batch_size)
    own_sandbox = sandbox is None
    sandbox = sandbox or Sandbox()
    jvm = _jvm_for(tasks, workers=sandbox.n_workers)
    rows: list[dict] = []
    timings: dict[str, float] = {}
    try:
        ctx = Context(sandbox, n_samples, temperature, limit, max_new_tokens, data, jvm)
        for name in tasks:
            started = time.perf_counter()
            task = TASKS.get(name)()
            before = _batches(sandbox, jvm)
            result = task.evaluate(lm, ctx)
            timings[name] = round(time.perf_counter() - started, 3)
            console.print(f"[dim]{name}: {timings[name]:.1f} s[/dim]")
            settings = {**ctx.settings(), **task.decoding_record(ctx), **result.details, "model": loaded.source,
                        **_runner_settings(sandbox, jvm, before), "batch_size": batch_size}
            rows.extend(_rows(name, result.metrics, settings))
            if out_dir is not None:
                _save(Path(out_dir), name, result)
    finally:
        if own_sandbox:
            sandbox.close()
        if jvm is not None:
            jvm.close()
    if out_dir is not None:
        from sweeper.core.io import atomic_write_json

        atomic_write_json(Path(out_dir) / "timings.json", {"seconds_per_task": timings})
    return rows


def _jvm_for(tasks: list[str], timeout_s: float | None = None, workers: int | None = None) -> JvmSandbox | None:
    """A JVM sandbox when one of the tasks runs Java programs (it starts on its first program), with as
    many parallel programs as the Python sandbox beside it (one per evaluation worker in a sweep)."""
    from sweeper.evals.tasks import TASKS

    languages = {getattr(TASKS.get(name), "language", None) for name in tasks}
    if not any(language is not None and language.runner == "jvm" for language in languages):
        return None
    from sweeper.evals.jvm_sandbox import JvmLimits, JvmSandbox

    return JvmSandbox(JvmLimits(timeout_s=timeout_s) if timeout_s else None, workers=workers)


def _batches(sandbox: Sandbox, jvm: JvmSandbox | None) -> tuple[int, int]:
    return sandbox.batches, jvm.batches if jvm is not None else 0


def _runner_settings(sandbox: Sandbox, jvm: JvmSandbox | None, before: tuple[int, int] = (0, 0)) -> dict:
    """The sandboxes that ran programs for a score since `before` (`_batches`), for its record (None: the
    task executed nothing)."""
    python_ran, jvm_ran = (now > then for now, then in zip(_batches(sandbox, jvm), before, strict=True))
    return {"sandbox": sandbox.settings() if python_ran else None,
            **({"jvm_sandbox": jvm.settings()} if jvm is not None and jvm_ran else {})}


def _rows(task: str, metrics: list, settings: dict) -> list[dict]:
    text = json.dumps(settings, sort_keys=True, default=str)
    return [{"task": task, "metric": m.name, "value": m.value, "n": m.n, "k": m.k, "settings": text} for m in metrics]


def _save(out_dir: Path, task: str, result) -> None:
    if result.generations is not None:
        atomic_write_json(out_dir / f"generations_{task}.json", result.generations)
    for name, artifact in result.artifacts.items():
        atomic_write_json(out_dir / f"{task}.{name}.json", artifact)


def read_generations(path: Path) -> list:
    """A bigcode-evaluation-harness generations file (.json or .json.gz): a JSON list, one entry per item
    (a list of programs for the program tasks; each task checks the shape it scores)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            generations = json.load(f)
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise UserError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(generations, list):
        raise UserError(f"{path}: expected a JSON list with one entry per problem (bigcode-evaluation-harness "
                        f"generations), got {type(generations).__name__}")
    return generations


def score_generations(
    task: str, generations_path: Path, *, data: Path | None = None, timeout_s: float | None = None,
    sandbox: Sandbox | None = None, allow_weak: bool | None = None,
) -> dict:
    """Score saved generations of a program task; returns metrics, settings and provenance.

    `allow_weak`: score even below the sandbox's minimum isolation (None: SWEEPER_ALLOW_WEAK_SANDBOX)."""
    from sweeper.evals.sandbox import Sandbox, SandboxLimits
    from sweeper.evals.tasks import TASKS, Context

    runner = TASKS.get(task)()
    generations = read_generations(generations_path)
    own_sandbox = sandbox is None
    if sandbox is None:
        sandbox = Sandbox(SandboxLimits(timeout_s=timeout_s) if timeout_s else None, allow_weak=allow_weak)
    jvm = _jvm_for([task], timeout_s)
    try:
        counts_before = sandbox.counts.copy()
        before = _batches(sandbox, jvm)
        n_samples = min((len(g) for g in generations if isinstance(g, list)), default=0)
        ctx = Context(sandbox, data=data, jvm=jvm)
        result = runner.score(generations, ctx)
        outcomes = dict((sandbox.counts - counts_before) + (jvm.counts if jvm is not None else Counter()))
        settings = {**ctx.settings(), **result.details, **_runner_settings(sandbox, jvm, before),
                    "generations": str(generations_path), "decoding": "not run here: the generations were given",
                    "samples_per_item": n_samples}
    finally:
        if own_sandbox:
            sandbox.close()
        if jvm is not None:
            jvm.close()
    return {
        "task": task,
        "metrics": [{"metric": m.name, "value": m.value, "n": m.n, "k": m.k} for m in result.metrics],
        "outcomes": outcomes,  # status -> distinct programs executed for this file (not cached before)
        "settings": settings,
        "provenance": provenance.collect(),
    }
