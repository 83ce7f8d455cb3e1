"""`sweeper cluster check`: validate a cluster config for `ray up` offline."""

from typing import Annotated

import typer

from sweeper.cli.options import SetOption
from sweeper.core.console import console


def cluster_check(
    path: Annotated[str, typer.Argument(help="A cluster config for `ray up`.")] = "cluster.yaml",
    space: Annotated[str | None, typer.Option(help="Also check that every cell of this space fits a node type.")] = None,
    set_: SetOption = None,
) -> None:
    """Validate a cluster config offline (Ray's own schema + sweeper's checks) and list its node types."""
    from rich.table import Table

    from sweeper.backend.cluster import check_cells_fit, validate_cluster

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
        from sweeper.space import load_space
        from sweeper.sweep.launch import memory_plan

        grid = planning.make_plan(load_space(space, set_ or ()))
        check_cells_fit(grid.cells, memory_plan(grid), spec.node_types)
        typer.echo(f"all {len(grid.cells)} cells of space {grid.space.name!r} fit a node type")
