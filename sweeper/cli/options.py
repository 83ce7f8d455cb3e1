"""Options shared by several commands, and the checks of their values."""

import re
from typing import Annotated

import typer

from sweeper.core.errors import UserError

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


def names(option: str, text: str | None) -> list[str] | None:
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


def check_address(address: str | None) -> None:
    if address is None or address in ("auto", "local"):
        return
    match = _ADDRESS.match(address)
    if match is None or not 0 < int(match.group(3)) < 65536:
        raise UserError(f"--address {address!r}: expected host:port (e.g. 10.0.0.5:6379), ray://host:port, "
                        "'auto' or 'local'")
