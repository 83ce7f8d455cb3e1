"""`sweeper status`: a sweep folder's trials (recorded, running, pending) and device-hours used vs. planned.

A cell with replicates (`seeds: K`) also gets the mean and the sample standard deviation, over its
seeds, of the final validation loss of each seed's best done trial: the point the analysis fits for
that seed, so the spread shown is the run-to-run noise the scaling fit has to account for.

A folder launched with more than one space (`--force` with a changed space, or other `--methods` /
`--scales` / `--set`) shows every space's trials, one table per space: a trial belongs to the space
its latest row recorded (`space_hash`), or, not yet recorded, to the latest space whose grid holds it.
A recorded trial that no launched grid holds is shown too: nothing recorded is left out.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from sweeper.core.console import console as make_console
from sweeper.core.errors import UserError
from sweeper.schema import Cell, Space, Trial
from sweeper.sweep.ledger import (
    LaunchedSpace,
    Ledger,
    launched_spaces,
    plural,
    row_space,
    space_changes,
    warn,
)
from sweeper.sweep.progress import TrialView, render_table
from sweeper.sweep.trials import grid_trials, views

UNKNOWN_SPACE = "unknown"  # a recorded trial of no launched grid


def collect(out: Path) -> dict[str, Any]:
    ledger = Ledger(out)
    manifest = ledger.manifest()
    if manifest is None:
        raise UserError(f"{out}: no manifest.json; expected a sweep folder made by `sweeper launch grid`")
    spaces = launched_spaces(manifest)
    trials, trial_space = _launched_trials(spaces)
    rows = ledger.rows()
    table = views(trials, rows) + _unlaunched(trials, rows)
    space_of = _trial_spaces(table, rows, spaces, trial_space)
    by_key = {view.trial_id: view for view in table}
    for live in ledger.live():
        view = by_key.get(live.get("trial_id"))
        if view is not None and view.status in ("pending", "failed"):  # failed: an earlier attempt; a retry runs
            view.status = "running"
            view.step, view.tokens = live.get("steps") or 0, live.get("tokens") or 0
            view.val_loss = _num(live.get("final_val_loss"))
            view.best_val_loss = _num(live.get("best_val_loss"))
            view.tokens_per_s = _num(live.get("tokens_per_s"))
    used = sum(row["device_hours"] or 0.0 for row in rows)
    planned = manifest["plan"]["totals"]["device_hours"]
    return {
        "out": str(out),
        "sweep_id": manifest.get("sweep_id"),
        "space": manifest["space"]["name"],
        "trials": [{**_view_dict(v), "space_hash": space_of[v.trial_id]} for v in table],
        "cells_done": len({v.cell_id for v in table if v.status == "done"}),
        "cells_total": len({v.cell_id for v in table}),
        "replicates": replicate_summary(table),
        "attempts_recorded": len(rows),
        "device_hours_used": used,
        "device_hours_planned": planned,
        "spaces": _space_summaries(spaces, table, rows, space_of),
    }


def _launched_trials(spaces: list[LaunchedSpace]) -> tuple[list[Trial], dict[str, str]]:
    """Every trial of every launched grid (each once, first launched first) and the latest space holding it."""
    trials: dict[str, Trial] = {}
    latest: dict[str, str] = {}
    for launched in spaces:
        try:
            grid = grid_trials(_cells(launched))
        except (UserError, ValueError) as err:  # a space this sweeper no longer reads: its rows still show
            warn(f"space {launched.hash} of this folder cannot be expanded any more ({str(err).splitlines()[0]}); "
                 "its recorded trials are shown from their rows")
            continue
        for trial in grid:
            trials.setdefault(trial.trial_id, trial)
            latest[trial.trial_id] = launched.hash
    return list(trials.values()), latest


def _cells(launched: LaunchedSpace) -> list[Cell]:
    """A launched grid's cells: as its launch recorded them, else (a launch before cells were recorded)
    expanded again from its space, which resolves the methods (and imports torch and peft)."""
    if launched.resolved_cells:
        return [Cell.model_validate(cell) for cell in launched.resolved_cells]
    from sweeper.space import expand

    return expand(Space.model_validate(launched.space))


def _unlaunched(trials: list[Any], rows: list[dict[str, Any]]) -> list[TrialView]:
    """A view for each recorded trial that no launched grid holds (its grid could not be expanded, or it
    was recorded under a space this manifest never listed), from its latest finished row, else its latest."""
    known = {trial.trial_id for trial in trials}
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["trial_id"] not in known:
            by_trial.setdefault(row["trial_id"], []).append(row)
    result = []
    for trial_id, mine in by_trial.items():
        row = ([r for r in mine if r["status"] != "failed"] or mine)[-1]
        steps, tokens = row.get("steps") or 0, row.get("tokens") or 0
        result.append(TrialView(trial_id=trial_id, cell_id=row["cell_id"], method=row.get("method") or "?",
                                scale=row.get("scale") or "?", steps_total=steps, tokens_total=tokens,
                                seed=row.get("seed") or 0, status=row["status"], step=steps, tokens=tokens,
                                val_loss=_num(row.get("final_val_loss")), best_val_loss=_num(row.get("best_val_loss"))))
    return result


def _trial_spaces(table: list[TrialView], rows: list[dict[str, Any]], spaces: list[LaunchedSpace],
                  trial_space: dict[str, str]) -> dict[str, str]:
    """Trial key -> the space it is shown under: its latest row's, else the latest grid holding it."""
    latest_row = {row["trial_id"]: row for row in rows}
    result = {}
    for view in table:
        row = latest_row.get(view.trial_id)
        recorded = row_space(row, spaces) if row is not None else None
        result[view.trial_id] = recorded or trial_space.get(view.trial_id) or UNKNOWN_SPACE
    return result


def _space_summaries(spaces: list[LaunchedSpace], table: list[TrialView], rows: list[dict[str, Any]],
                     space_of: dict[str, str]) -> list[dict[str, Any]]:
    summaries = []
    hashes = [s.hash for s in spaces] + ([UNKNOWN_SPACE] if UNKNOWN_SPACE in space_of.values() else [])
    by_hash = {s.hash: s for s in spaces}
    for key in hashes:
        mine = [v for v in table if space_of[v.trial_id] == key]
        # Attempts count under the space that recorded them (a trial may have failed under one, then run in another).
        my_rows = [r for r in rows if (row_space(r, spaces) or space_of.get(r["trial_id"], UNKNOWN_SPACE)) == key]
        launched = by_hash.get(key)
        summaries.append({
            "space_hash": key, "name": launched.name if launched else None,
            "launches": launched.launches if launched else 0,
            "first_launched": launched.first_at if launched else None,
            "last_launched": launched.last_at if launched else None,
            "trials": len(mine), "cells": len({v.cell_id for v in mine}),
            "cells_done": len({v.cell_id for v in mine if v.status == "done"}),
            "attempts_recorded": len(my_rows),
            "device_hours_used": sum(r["device_hours"] or 0.0 for r in my_rows),
            "device_hours_planned": launched.device_hours_planned if launched else None,
            # What this space changed, against the first one launched here.
            "compared_to": spaces[0].hash if launched and launched is not spaces[0] else None,
            "changes": space_changes(spaces[0].space, launched.space) if launched and launched is not spaces[0] else None,
        })
    return summaries


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
    views = [
        TrialView(**{**{k: v for k, v in t.items() if k != "space_hash"}, "val_loss": _num(t["val_loss"]),
                     "best_val_loss": _num(t["best_val_loss"]), "tokens_per_s": _num(t["tokens_per_s"])})
        for t in summary["trials"]
    ]
    console = make_console()
    title = f"sweep {summary['space']!r} in {summary['out']}" + (f" (id {summary['sweep_id']})"
                                                                 if summary.get("sweep_id") else "")
    spaces = summary.get("spaces") or []
    if len(spaces) < 2:
        console.print(render_table(views, title))
    else:  # one table per space, each under a line that says what it is: which rows are whose
        console.print(f"{title}: {len(spaces)} spaces launched in this folder; a trial is listed under the space "
                      "that recorded it (the space_hash column of cells.parquet)")
        for space in spaces:
            mine = [v for v, t in zip(views, summary["trials"], strict=True) if t["space_hash"] == space["space_hash"]]
            console.print(_space_line(space), highlight=False)
            console.print(render_table(mine, ""))
    if summary["replicates"]:
        console.print(render_replicates(summary["replicates"]))
    console.print(
        f"{summary['cells_done']}/{summary['cells_total']} cells done, {summary['attempts_recorded']} trial "
        f"attempts recorded; device-hours used {summary['device_hours_used']:.3g} of "
        f"{summary['device_hours_planned']:.3g} planned"
    )


def _space_line(space: dict[str, Any]) -> str:
    if space["space_hash"] == UNKNOWN_SPACE:
        return "trials of no launched space"
    when = (space["first_launched"] if space["first_launched"] == space["last_launched"]
            else f"{space['first_launched']} .. {space['last_launched']}")
    changed = f"; vs {space['compared_to']}: {space['changes']}" if space.get("changes") else ""
    return (f"space {space['space_hash']} ({space['name']!r}, {plural(space['launches'], 'launch')} {when}{changed}): "
            f"{space['cells_done']}/{space['cells']} cells done, {plural(space['attempts_recorded'], 'attempt')}")


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
