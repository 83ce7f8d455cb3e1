"""`sweeper launch grid`: run a grid on Ray, then evaluate and report (the main job, `sweeper.study`)."""

from dataclasses import replace
from typing import Annotated

import typer

from sweeper.cli.options import MethodsOption, ScalesOption, SetOption, SpaceOption, check_address, names
from sweeper.core.errors import UserError


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
    with_: Annotated[str | None, typer.Option(
        "--with", help="Run exactly the runs of an advice file (`sweeper advise` writes SWEEP/advice/<id>.yaml): "
                       "its scales are added to the space, and the launch records the advice.")] = None,
    advise_rounds: Annotated[int, typer.Option(
        "--advise-rounds", min=0, help="Then K rounds of `sweeper advise` -> run the chosen runs -> refit, within "
                                       "--budget-usd (which then bounds the rounds, not the grid).")] = 0,
    target: Annotated[str | None, typer.Option(
        "--target", help="With --advise-rounds: the forecast to tighten, METHOD@SCALE[,...] as `sweeper advise`.")] = None,
    target_width: Annotated[float | None, typer.Option(
        "--target-width", min=0, help="With --advise-rounds: stop once the target's relative 95% interval width "
                                      "is at most this.")] = None,
) -> None:
    """Run every cell of the grid (default: the micro space on local Ray), then evaluate and report.

    A rerun skips finished cells, resumes unfinished trials from their checkpoints and retries
    failed ones (up to the space's max_retries)."""
    from sweeper import plan as planning
    from sweeper.space import load_space, resolve_space_path, select
    from sweeper.study import StudySteps, run_study
    from sweeper.sweep.launch import TRACKERS, LaunchOptions

    if tracking is not None and tracking not in TRACKERS:
        raise UserError(f"--tracking: unknown tracker {tracking!r}; expected one of {', '.join(TRACKERS)}")
    if eval_limit < 1:
        raise UserError(f"--eval-limit: expected a positive number of problems (got {eval_limit})")
    check_address(address)
    if storage is not None and not storage.strip():
        raise UserError("--storage '': expected a shared folder or a URI such as s3://bucket/sweeps")
    if advise_rounds and (target is None or budget_usd is None or with_ is not None or dry_run):
        raise UserError("--advise-rounds needs --target and --budget-usd, and does not combine with --with or --dry-run")
    chosen = select(load_space(space, set_ or ()), names("--methods", methods), names("--scales", scales))
    if advise_rounds:  # a mistyped target is said now, not after the whole grid has run
        unknown = sorted({part.partition("@")[0] for part in target.split(",")} - set(chosen.methods))
        if unknown or any("@" not in part for part in target.split(",")):
            raise UserError(f"--target {target!r}: expected METHOD@SCALE[,...] with methods of the space "
                            f"({', '.join(chosen.methods)})")
    advice = None
    if with_ is not None:
        from sweeper.sweep.advice import advised_plan

        if methods or scales:
            raise UserError("--with and --methods / --scales: give one (an advice file names its cells)")
        grid, advice = advised_plan(chosen, with_)
    else:
        grid = planning.make_plan(chosen)
    if not advise_rounds:  # with rounds, --budget-usd is what the rounds may spend
        planning.check_budget(grid, budget_usd)  # a dry run refuses what the real run would refuse
    if dry_run:
        planning.print_plan(grid)
        return
    options = LaunchOptions(out=out, address=address, storage=storage, fresh=fresh, force=force,
                            tracking=tracking, advice=advice)
    steps = StudySteps(evaluate=evaluate, eval_limit=eval_limit, report=report,
                       allow_weak_sandbox=allow_weak_sandbox)
    result = run_study(grid, str(resolve_space_path(space)), options, steps, say=typer.echo,
                       warn=lambda line: typer.echo(line, err=True))
    if result.failed:
        typer.echo(f"{result.failed} trial(s) failed {chosen.max_retries + 1} times; see the `error` column "
                   f"of {result.out}/cells.parquet", err=True)
        raise typer.Exit(1)
    if result.pending:
        typer.echo(f"{result.pending} trial(s) unfinished: rerun the same command to continue", err=True)
        raise typer.Exit(1)
    if advise_rounds:
        from sweeper.study import AdviseRounds, run_advised_rounds

        run_advised_rounds(chosen, str(resolve_space_path(space)), replace(options, out=str(result.out)), steps,
                           AdviseRounds(advise_rounds, target, budget_usd, target_width), say=typer.echo,
                           warn=lambda line: typer.echo(line, err=True))
