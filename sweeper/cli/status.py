"""`sweeper status`: the trials of a sweep folder."""

from typing import Annotated

import typer

from sweeper.cli.options import JsonOption
from sweeper.core.errors import UserError
from sweeper.sweep.folder import SweepFolder


def status(
    out: Annotated[str, typer.Option(help="Sweep folder.")] = str(SweepFolder.default().root),
    json_: JsonOption = False,
) -> None:
    """Show the trials of a sweep folder: status, steps, losses, device-hours used vs. planned."""
    from pathlib import Path

    from sweeper.sweep.status import collect, print_status, status_json

    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out}: a file, expected a sweep folder")
    summary = collect(Path(out))
    if json_:
        typer.echo(status_json(summary))
    else:
        print_status(summary)
