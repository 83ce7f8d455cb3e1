"""`sweeper status`: a sweep folder's trials (recorded, running, pending) and device-hours used vs. planned.

A cell with replicates (`seeds: K`) also gets the mean and the sample standard deviation, over its
seeds, of the final validation loss of each seed's best done trial: the point the analysis fits for
that seed, so the spread shown is the run-to-run noise the scaling fit has to account for.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from sweeper.errors import UserError
from sweeper.ledger import Ledger
from sweeper.progress import TrialView, render_table
from sweeper.space import Space, expand


def collect(out: Path) -> dict[str, Any]:
    ledger = Ledger(out)
    manifest = ledger.manifest()
    if manifest is None:
        raise UserError(f"{out}: no manifest.json; expected a sweep folder made by `sweeper launch grid`")
    space = Space.model_validate(manifest["space"])
    from sweeper.launch import trial_slots, views

    slots = trial_slots(expand(space))
    rows = ledger.rows()
    table = views(slots, rows)
    by_key = {view.trial_id: view for view in table}
    for live in ledger.live():
        view = by_key.get(live.get("trial_id"))
        if view is not None and view.status in ("pending", "failed"):  # failed: an earlier attempt; a retry runs
            view.status = "running"
            view.step, view.tokens = live.get("step") or 0, live.get("tokens") or 0
            view.val_loss = _num(live.get("val_loss"))
            view.best_val_loss = _num(live.get("best_val_loss"))
            view.tokens_per_s = _num(live.get("tokens_per_s"))
    used = sum(row["device_hours"] or 0.0 for row in rows)
    planned = manifest["plan"]["totals"]["device_hours"]
    return {
        "out": str(out),
        "space": space.name,
        "trials": [_view_dict(v) for v in table],
        "cells_done": len({v.cell_id for v in table if v.status == "done"}),
        "cells_total": len({v.cell_id for v in table}),
        "replicates": replicate_summary(table),
        "attempts_recorded": len(rows),
        "device_hours_used": used,
        "device_hours_planned": planned,
    }


def replicate_summary(views: list[TrialView]) -> list[dict[str, Any]]:
    """Per cell with more than one seed done: mean and sample sd of the seeds' best final val losses."""
    seeds: dict[str, set[int]] = {}
    best: dict[str, dict[int, float]] = {}
    cells: dict[str, TrialView] = {}
    for v in views:
        cells.setdefault(v.cell_id, v)
        seeds.setdefault(v.cell_id, set()).add(v.seed)
        if v.status == "done" and math.isfinite(v.val_loss):
            per_seed = best.setdefault(v.cell_id, {})
            per_seed[v.seed] = min(per_seed.get(v.seed, math.inf), v.val_loss)
    summary = []
    for cell_id, per_seed in best.items():
        if len(per_seed) < 2:  # no spread from a single run
            continue
        losses = [per_seed[seed] for seed in sorted(per_seed)]
        summary.append({
            "cell_id": cell_id, "method": cells[cell_id].method, "scale": cells[cell_id].scale,
            "seeds": len(seeds[cell_id]), "seeds_done": len(losses),
            "mean_val_loss": statistics.mean(losses), "sd_val_loss": statistics.stdev(losses),
            "val_loss_by_seed": {str(seed): per_seed[seed] for seed in sorted(per_seed)},
        })
    return summary


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _view_dict(view: TrialView) -> dict[str, Any]:
    return {
        "trial_id": view.trial_id, "cell_id": view.cell_id, "method": view.method, "scale": view.scale,
        "status": view.status, "step": view.step, "steps_total": view.steps_total, "tokens": view.tokens,
        "tokens_total": view.tokens_total, "seed": view.seed,
        "val_loss": None if math.isnan(view.val_loss) else view.val_loss,
        "best_val_loss": None if math.isnan(view.best_val_loss) else view.best_val_loss,
        "tokens_per_s": None if math.isnan(view.tokens_per_s) else view.tokens_per_s,
    }


def print_status(summary: dict[str, Any]) -> None:
    from sweeper.console import console as make_console

    views = [
        TrialView(**{**t, "val_loss": _num(t["val_loss"]), "best_val_loss": _num(t["best_val_loss"]),
                     "tokens_per_s": _num(t["tokens_per_s"])})
        for t in summary["trials"]
    ]
    console = make_console()
    console.print(render_table(views, f"sweep {summary['space']!r} in {summary['out']}"))
    if summary["replicates"]:
        console.print(render_replicates(summary["replicates"]))
    console.print(
        f"{summary['cells_done']}/{summary['cells_total']} cells done, {summary['attempts_recorded']} trial "
        f"attempts recorded; device-hours used {summary['device_hours_used']:.3g} of "
        f"{summary['device_hours_planned']:.3g} planned"
    )


def render_replicates(replicates: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="replicates: final val loss of each seed's best done trial", expand=False)
    for name in ("cell", "method", "scale", "seeds done", "mean ± sd (k seeds)"):
        table.add_column(name, justify="right" if name == "seeds done" else "left")
    for r in replicates:
        table.add_row(r["cell_id"], r["method"], r["scale"], f"{r['seeds_done']}/{r['seeds']}",
                      f"{r['mean_val_loss']:.4g} ± {r['sd_val_loss']:.2g} ({r['seeds_done']} seeds)")
    return table


def status_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2)
