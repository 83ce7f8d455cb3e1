"""`sweeper`: the command line. Thin: each command parses options and calls one function.

Imports of torch, ray, transformers and friends happen inside the commands, so `sweeper --help`
stays instant. Exit codes: 0 ok, 2 bad input (one line on stderr, no traceback), 1 failure.
"""

import math
import re
import sys
import warnings
from typing import Annotated

import typer

from analysis import commands as analysis_commands
from sweeper.errors import UserError
from sweeper.evals import commands as eval_commands
from sweeper.methods import commands as method_commands
from sweeper.micro import commands as ladder_commands

app = typer.Typer(
    help="Which fine-tuning method at which model scale: method x scale sweeps on Ray, scaling laws on top.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
launch_app = typer.Typer(help="Run sweeps.", no_args_is_help=True)
ladder_app = typer.Typer(help="Model ladders: list scales, build the micro ladder.", no_args_is_help=True)
cluster_app = typer.Typer(help="Ray cluster configs for `ray up`.", no_args_is_help=True)
app.add_typer(launch_app, name="launch")
app.add_typer(ladder_app, name="ladder")
app.add_typer(cluster_app, name="cluster")
app.add_typer(eval_commands.app, name="eval")

SpaceOption = Annotated[
    str, typer.Option("--space", help="A shipped space name (micro, astraios) or a YAML path.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a space field: key.path=value (repeatable), e.g. recipe.lr=3e-4."),
]
MethodsOption = Annotated[str | None, typer.Option("--methods", help="Only these methods: a,b.")]
ScalesOption = Annotated[str | None, typer.Option("--scales", help="Only these scales: x,y.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

PLAN_HELP = """Print the grid a space describes and what it will cost, before anything trains.

Per cell: parameters (total, trainable; counted on the meta device, no weights), training tokens
T = steps x global_batch x seq_len, FLOPs and device-hours and dollars.

FLOPs = (4 N + 2 N_trainable) T + 2 N T_eval. The forward pass costs 2 N T; the backward pass
costs 2 N T for activation gradients (they flow through the frozen base too) plus 2 N_trainable T
for weight gradients. Full fine-tuning (N_trainable = N) gives the familiar 6 N T; a frozen base
gives about 4 N T. T_eval = validation tokens x number of evaluations (forward only).

Device-hours = FLOPs / (peak FLOP/s x utilisation x 3600); $ = device-hours x price per hour.
Peak, utilisation and price come from the accelerator table and `cost:` in the space (overridable
with --set cost.peak_tflops=..., cost.utilization=..., cost.usd_per_hour=...).

On GPU accelerators each cell also gets its peak memory per GPU (weights, gradients, optimizer
states, activations at micro_batch x seq_len, with its ZeRO stage and activation checkpointing)
and the fewest GPUs of that size it fits on (--gpu-memory-gib picks another node type).
"""


def _names(option: str, text: str | None) -> list[str] | None:
    """A comma-separated option's names (None: the option was not given). Given but empty (an unset
    shell variable, `--methods ''`) is a mistake, not a request for everything."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError(f"{option} {text!r}: expected a comma-separated list of names")
    return names


# host:port, optionally after ray://, http:// or https:// (a job address), or IPv6 in brackets.
_ADDRESS = re.compile(r"^(ray://|https?://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")


def _check_address(address: str | None) -> None:
    if address is None or address in ("auto", "local"):
        return
    match = _ADDRESS.match(address)
    if match is None or not 0 < int(match.group(3)) < 65536:
        raise UserError(f"--address {address!r}: expected host:port (e.g. 10.0.0.5:6379), ray://host:port, "
                        "'auto' or 'local'")


@app.command(help=PLAN_HELP)
def plan(
    space: SpaceOption = "micro",
    set_: SetOption = None,
    methods: MethodsOption = None,
    scales: ScalesOption = None,
    gpu_memory_gib: Annotated[
        float | None,
        typer.Option("--gpu-memory-gib", help="GPU memory of the node type to plan for (default: the accelerator's)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    from sweeper import plan as planning
    from sweeper.space import load_space, select

    if gpu_memory_gib is not None and not 0 < gpu_memory_gib < math.inf:
        raise UserError(f"--gpu-memory-gib: expected a positive finite number of GiB (got {gpu_memory_gib})")
    chosen = select(load_space(space, set_ or ()), _names("--methods", methods), _names("--scales", scales))
    grid = planning.make_plan(chosen, gpu_memory_gib)
    if json_:
        typer.echo(planning.to_json(grid))
    else:
        planning.print_plan(grid)


@launch_app.command("grid")
def launch_grid(
    space: SpaceOption = "micro",
    set_: SetOption = None,
    methods: MethodsOption = None,
    scales: ScalesOption = None,
    out: Annotated[str | None, typer.Option(help="Sweep folder (default: sweeps/<space name>).")] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster: host:port, 'auto', or 'local' (default: start Ray here).")
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="Checkpoint storage: a shared path or s3:// URI (default: OUT/checkpoints).")
    ] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over in a new folder next to OUT.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Add to an OUT that holds other configs.")] = False,
    tracking: Annotated[str | None, typer.Option(help="Also log to mlflow, wandb or tensorboard.")] = None,
    budget_usd: Annotated[
        float | None, typer.Option("--budget-usd", help="Refuse to start above this estimate ($).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit.")] = False,
    evaluate: Annotated[bool, typer.Option(
        help="Then evaluate the tuned models (`sweeper eval`; CPU grids only, GPU clusters run it separately).")] = True,
    eval_limit: Annotated[int, typer.Option("--eval-limit", help="Problems per task in that evaluation.")] = 40,
    report: Annotated[bool, typer.Option(help="Then fit scaling laws and write the report (`sweeper report`).")] = True,
    allow_weak_sandbox: Annotated[bool, typer.Option(
        "--allow-weak-sandbox", help="Let that evaluation score below the sandbox's minimum isolation.")] = False,
) -> None:
    """Run every cell of the grid (default: the micro space on local Ray), then evaluate and report.

    A rerun skips finished cells, resumes unfinished trials from their checkpoints and retries
    failed ones (up to the space's max_retries)."""
    from sweeper import plan as planning
    from sweeper.launch import TRACKERS, LaunchOptions
    from sweeper.launch import launch_grid as run
    from sweeper.space import load_space, resolve_space_path, select

    if tracking is not None and tracking not in TRACKERS:
        raise UserError(f"--tracking: unknown tracker {tracking!r}; expected one of {', '.join(TRACKERS)}")
    if eval_limit < 1:
        raise UserError(f"--eval-limit: expected a positive number of problems (got {eval_limit})")
    _check_address(address)
    if storage is not None and not storage.strip():
        raise UserError("--storage '': expected a shared folder or a URI such as s3://bucket/sweeps")
    chosen = select(load_space(space, set_ or ()), _names("--methods", methods), _names("--scales", scales))
    grid = planning.make_plan(chosen)
    planning.check_budget(grid, budget_usd)  # a dry run refuses what the real run would refuse
    if dry_run:
        planning.print_plan(grid)
        return
    options = LaunchOptions(out=out, address=address, storage=storage, fresh=fresh, force=force,
                            tracking=tracking)
    result = run(grid, str(resolve_space_path(space)), options)
    typer.echo(f"ledger: {result.out}/cells.parquet, curves.parquet (`sweeper status --out {result.out}`)")
    complete = not (result.failed or result.pending)
    on_cpu = all(cell.resources.gpus_per_worker == 0 for cell in grid.cells)
    if complete and evaluate and on_cpu:
        from sweeper.evals.sweep import evaluate_sweep

        evals = evaluate_sweep(result.out, None, None, n_samples=1, temperature=0.0, limit=eval_limit,
                               allow_weak=allow_weak_sandbox or None)
        typer.echo(f"downstream scores: {evals}")
    elif complete and evaluate:
        typer.echo(f"evaluate the tuned models on a GPU node: sweeper eval --out {result.out}")
    if complete and report:
        try:
            analysis_commands.report(str(result.out))
        except UserError as err:  # the grid itself succeeded: say why there is no report, keep exit 0
            typer.echo(f"report not written: {err}", err=True)
    if result.failed:
        typer.echo(f"{result.failed} trial(s) failed {chosen.max_retries + 1} times; see the `error` column "
                   f"of {result.out}/cells.parquet", err=True)
        raise typer.Exit(1)
    if result.pending:
        typer.echo(f"{result.pending} trial(s) unfinished: rerun the same command to continue", err=True)
        raise typer.Exit(1)


@app.command()
def status(
    out: Annotated[str, typer.Option(help="Sweep folder.")] = "sweeps/micro",
    json_: JsonOption = False,
) -> None:
    """Show the trials of a sweep folder: status, steps, losses, device-hours used vs. planned."""
    from pathlib import Path

    from sweeper.status import collect, print_status, status_json

    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out}: a file, expected a sweep folder")
    summary = collect(Path(out))
    if json_:
        typer.echo(status_json(summary))
    else:
        print_status(summary)


@cluster_app.command("check")
def cluster_check(
    path: Annotated[str, typer.Argument(help="A cluster config for `ray up`.")] = "cluster.yaml",
    space: Annotated[str | None, typer.Option(help="Also check that every cell of this space fits a node type.")] = None,
    set_: SetOption = None,
) -> None:
    """Validate a cluster config offline (Ray's own schema + sweeper's checks) and list its node types."""
    from rich.table import Table

    from sweeper.cluster import check_cells_fit, validate_cluster
    from sweeper.console import console

    spec = validate_cluster(path)
    for warning in spec.warnings:
        typer.echo(f"warning: {warning}", err=True)
    table = Table(title=f"{path}: valid; checkpoints and results on {spec.storage_path}")
    for column in ("node type", "head", "CPUs", "GPUs", "GPU", "GiB/GPU", "min", "max"):
        table.add_column(column)
    for node in spec.node_types:
        table.add_row(node.name, "yes" if node.head else "", f"{node.cpus:g}" if node.cpus is not None else "?",
                      str(node.gpus), node.accelerator or "-",
                      f"{node.gpu_memory_gib:.1f}" if node.gpu_memory_gib else "-", str(node.min_workers),
                      str(node.max_workers))
    console().print(table)
    if space is not None:
        from sweeper import plan as planning
        from sweeper.launch import memory_plan
        from sweeper.space import load_space

        grid = planning.make_plan(load_space(space, set_ or ()))
        check_cells_fit(grid.cells, memory_plan(grid), spec.node_types)
        typer.echo(f"all {len(grid.cells)} cells of space {grid.space.name!r} fit a node type")


app.command("methods")(method_commands.methods)
ladder_app.command("build")(ladder_commands.build)
ladder_app.command("show")(ladder_commands.show)
app.command("fit")(analysis_commands.fit)
app.command("report")(analysis_commands.report)


def _usage_errors() -> tuple[type[Exception], ...]:
    """The usage-error classes the parser may raise: click's, and the copy typer vendors (typer >= 0.29
    ships its own click, whose ClickException is not click's; its public BadParameter derives from it)."""
    vendored = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        import click  # ray's dependency, and what extensions built on click raise
    except ImportError:
        return (vendored,)
    return tuple({click.ClickException, vendored})


def _one_line(err: Exception) -> str:
    """A usage error as one line: the parser's message, and where to read the command's options."""
    message = " ".join(err.format_message().split())
    context = getattr(err, "ctx", None)
    command = context.command_path if context is not None else "sweeper"
    return f"{message} (see `{command} --help`)"


def main() -> None:
    # peft still calls transformers' renamed `is_gradient_checkpointing` on every model it wraps; the
    # deprecation is theirs to fix and would otherwise print under every plan and launch.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        # Without standalone mode click returns the code of a `typer.Exit` instead of exiting.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except UserError as err:
        _fail(str(err))
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `sweeper` or `sweeper launch` alone: the help
            typer.echo(err.ctx.get_help())
            sys.exit(2)
        if isinstance(err, _usage_errors()):
            _fail(_one_line(err))
        raise


def _fail(message: str) -> None:
    """Exit 2 with `error: <message>` on one line of stderr."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(2)
