"""`sweeper`: the command line. One file per command group beside this one; each parses options, calls
one function and prints. This file assembles them and turns errors into exit codes.

Imports of torch, ray, transformers and friends happen inside the commands, so `sweeper --help`
stays instant. Exit codes: 0 ok, 2 bad input (one line on stderr, no traceback), 1 failure.
"""

import sys
import warnings

import typer

from analysis import commands as analysis_commands
from sweeper.cli import cluster, evals, ladder, launch, methods, plan, status
from sweeper.core.errors import UserError

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
app.add_typer(evals.app, name="eval")

app.command(help=plan.PLAN_HELP)(plan.plan)
launch_app.command("grid")(launch.launch_grid)
app.command()(status.status)
cluster_app.command("check")(cluster.cluster_check)
app.command("methods")(methods.methods)
ladder_app.command("build")(ladder.build)
ladder_app.command("show")(ladder.show)
app.command("fit")(analysis_commands.fit)
app.command("report")(analysis_commands.report)
app.command("advise")(analysis_commands.advise)


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
