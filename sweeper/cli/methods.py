"""`sweeper methods`: every registered tuning method with its size on a chosen model.

Counting builds the model on the meta device: no weights, no download, any scale.
"""

import json
import warnings
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sweeper.core.console import console
from sweeper.core.errors import UserError

if TYPE_CHECKING:
    from sweeper.ladders import Arch

LadderOption = Annotated[str, typer.Option("--ladder", help="A ladder from `sweeper ladder show`.")]
ScaleOption = Annotated[str, typer.Option("--scale", help="A scale of that ladder.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
SizedLikeOption = Annotated[str | None, typer.Option(
    "--sized-like", metavar="SPACE@SCALE",
    help="Instead: size each of SPACE's methods on every scale of --ladder so that its trainable fraction is "
         "nearest the one it has on SCALE (sweeper/methods/sizing.py), and print the settings as overrides.")]


def methods(
    ladder: LadderOption = "starcoderbase", scale: ScaleOption = "1b", json_: JsonOption = False,
    sized_like: SizedLikeOption = None,
) -> None:
    """List tuning methods with trainable and total parameters on a ladder's scale (default settings)."""
    from sweeper.ladders import get_ladder

    if sized_like is not None:
        _sized_like(ladder, sized_like, json_)
        return
    arch = get_ladder(ladder).scale(scale).arch
    rows = _method_rows(arch, show_progress=not json_)
    if json_:
        typer.echo(json.dumps({"ladder": ladder, "scale": scale, "methods": rows}, indent=2))
    else:
        _print_table(ladder, scale, rows)


def _method_rows(arch: "Arch", *, show_progress: bool) -> list[dict[str, Any]]:
    """One row per method: its default config counted on `arch`, or why it does not fit `arch`."""
    from rich.console import Console
    from rich.progress import Progress

    from sweeper.methods import count_method_parameters, get_method, method_names, resolve_method_config

    rows = []
    # peft warns while building some methods (missing CUDA kernels, layer norms as targets): noise when
    # only counting on the meta device.
    with warnings.catch_warnings(), Progress(
        console=Console(stderr=True), transient=True, disable=not show_progress
    ) as progress:
        warnings.simplefilter("ignore")
        for name in progress.track(method_names(), description="counting parameters"):
            method = get_method(name)
            row: dict[str, Any] = {
                "name": name, "description": method.description, "frozen_base": method.frozen_base,
            }
            try:
                config = resolve_method_config(name, {}, source=f"method {name}")
                trainable, total = count_method_parameters(arch, name, config)
                row |= {"trainable": trainable, "total": total, "trainable_pct": 100 * trainable / total}
            except UserError as err:
                row |= {"trainable": None, "total": None, "trainable_pct": None, "error": str(err)}
            rows.append(row)
    return rows


def _print_table(ladder: str, scale: str, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=f"tuning methods on {ladder} {scale} (default settings)")
    for column in ("method", "trainable", "total", "trainable %", "description"):
        table.add_column(column, justify="right" if column in ("trainable", "total", "trainable %") else "left")
    for row in rows:
        if row["trainable"] is None:
            table.add_row(row["name"], "-", "-", "-", f"does not fit: {row['error']}")
        else:
            table.add_row(
                row["name"], f"{row['trainable']:,}", f"{row['total']:,}", f"{row['trainable_pct']:.4f}",
                row["description"],
            )
    console().print(table)


def _sized_like(ladder: str, reference: str, json_: bool) -> None:
    """`--sized-like`: the matched settings per scale, as a table and a space's overrides block."""
    from rich.table import Table

    from sweeper.ladders import get_ladder
    from sweeper.methods.sizing import match_ladder, overrides_yaml
    from sweeper.space import load_space

    space_name, _, scale_name = reference.partition("@")
    if not space_name or not scale_name:
        raise UserError(f"--sized-like {reference!r}: expected SPACE@SCALE, e.g. astraios@1b")
    space = load_space(space_name, [])
    target = get_ladder(ladder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's warnings while counting on the meta device (see _method_rows)
        _, matched = match_ladder({name: scale.arch for name, scale in target.scales.items()},
                                  get_ladder(space.ladder).scale(scale_name).arch, dict(space.methods))
    if json_:
        rows = [{"scale": scale, "method": size.method, "settings": size.settings, "trainable": size.trainable,
                 "total": size.total, "trainable_pct": 100 * size.fraction,
                 "reference_pct": 100 * size.reference_fraction} for scale, sizes in matched.items() for size in sizes]
        typer.echo(json.dumps({"ladder": ladder, "sized_like": reference, "methods": rows}, indent=2))
        return
    table = Table(title=f"methods on {ladder}, sized like {reference} (nearest trainable fraction)")
    for column in ("scale", "method", "setting", "trainable", "trainable %", f"% on {reference}"):
        table.add_column(column, justify="left" if column in ("scale", "method", "setting") else "right")
    for scale, sizes in matched.items():
        for size in sorted(sizes, key=lambda size: -size.trainable):
            setting = ", ".join(f"{key} {value}" for key, value in size.settings.items()) or "-"
            table.add_row(scale, size.method, setting, f"{size.trainable:,}", f"{100 * size.fraction:.3f}",
                          f"{100 * size.reference_fraction:.3f}")
    console().print(table)
    typer.echo(overrides_yaml(matched))
