"""`sweeper ladder build|show`: pretrain and cache the micro ladder; list any ladder's scales.

Module level imports stay light (stdlib, typer): `sweeper --help` must not load torch.
"""

import json
from typing import Annotated, Any

import typer

from sweeper.core.cache import CorruptEntry
from sweeper.core.console import console
from sweeper.core.errors import UserError

LadderOption = Annotated[str, typer.Option("--ladder", help="A registered ladder (micro, starcoderbase).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def build(
    ladder: LadderOption = "micro",
    scales: Annotated[str | None, typer.Option("--scales", help="Only these scales: a,b.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even what is cached and intact.")] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Pretraining processes (default: one per core).")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Pretrain the micro ladder's scales and cache them (a second call is instant).

    Builds the corpus (this Python's standard library), trains the BPE tokenizer, then pretrains the
    ladder's default scales (micro: xs, s, m, l; ml and xl with --scales), one process per core, biggest
    first, with a progress bar per scale (a line per scale every 30 s off a terminal). Results go to
    the content-addressed cache (SWEEPER_CACHE, default ~/.cache/sweeper); a damaged entry is
    detected by its sha256 and rebuilt.
    """
    from sweeper.ladders.micro.build import build_ladder

    micro = _micro(ladder)
    names = [part.strip() for part in scales.split(",") if part.strip()] if scales else None
    built = build_ladder(micro, names, force=force, workers=workers)
    rows = [
        {
            "scale": name,
            "parameters": meta["parameters"],
            "pretrain_tokens": meta["pretrain_tokens"],
            "seconds": round(meta["seconds"], 1),
            "final_val_loss": round(meta["final_val_loss"], 4),
            "key": meta["key"],
        }
        for name, meta in built.items()
    ]
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    _print_table(
        f"ladder {micro.name}: built",
        ["scale", "parameters", "pretrain tokens", "pretrain seconds", "final val loss"],
        [[r["scale"], f"{r['parameters']:,}", _compact(r["pretrain_tokens"]), f"{r['seconds']:.1f}",
          f"{r['final_val_loss']:.3f}"] for r in rows],
    )


def show(ladder: LadderOption = "micro", json_: JsonOption = False) -> None:
    """List a ladder's scales: architecture, total parameters, pretraining tokens and, for the micro
    ladder, the final pretraining validation loss from the cache ("not built" when absent)."""
    from sweeper.ladders import count_parameters, get_ladder, meta_model
    from sweeper.ladders.micro.build import cached_scale, plan_ladder
    from sweeper.ladders.micro.ladder import MicroLadder

    chosen = get_ladder(ladder)
    plan = plan_ladder(chosen) if isinstance(chosen, MicroLadder) else None
    rows: list[dict[str, Any]] = []
    for name, scale in chosen.scales.items():
        row: dict[str, Any] = {
            "scale": name,
            "n_layer": scale.arch.n_layer,
            "n_embd": scale.arch.n_embd,
            "n_head": scale.arch.n_head,
            "parameters": count_parameters(meta_model(scale.arch))[1],
            "pretrain_tokens": scale.pretrain_tokens,
            "hf_id": scale.hf_id,
            "final_val_loss": None,
            "status": "hub" if plan is None else "not built",
        }
        if plan is not None:
            try:
                meta = cached_scale(chosen, name, plan)
            except CorruptEntry:
                row["status"] = "damaged (rebuilt by the next build)"
            else:
                if meta is not None:
                    row.update(final_val_loss=meta["final_val_loss"], status="built")
        rows.append(row)
    if json_:
        typer.echo(json.dumps({"ladder": chosen.name, "description": chosen.description, "scales": rows}, indent=2))
        return
    _print_table(
        f"ladder {chosen.name}: {chosen.description}",
        ["scale", "layers x width", "heads", "parameters", "pretrain tokens", "final val loss"],
        [[r["scale"], f"{r['n_layer']} x {r['n_embd']}", str(r["n_head"]), f"{r['parameters']:,}",
          _compact(r["pretrain_tokens"]),
          f"{r['final_val_loss']:.3f}" if r["final_val_loss"] is not None else r["status"]] for r in rows],
    )


def _micro(name: str) -> Any:
    from sweeper.ladders import get_ladder
    from sweeper.ladders.micro.ladder import MicroLadder

    chosen = get_ladder(name)
    if not isinstance(chosen, MicroLadder):
        raise UserError(f"--ladder {name!r}: its weights come from the HF hub; only a micro ladder is built locally")
    return chosen


def _compact(count: int) -> str:
    """1024000 -> 1.02M, 10**12 -> 1T: token counts span too many digits to read in full."""
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def _print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console().print(table)
