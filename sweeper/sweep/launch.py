"""Launching a grid: plan -> checks -> sweep folder and manifest -> Ray (`sweeper.backend`) -> ledger.

Everything that can be refused is checked before anything is written: the budget, the tracker,
the folder (writable, not holding another space), Ray (starts or is reachable) and the cluster
(every cell fits). The folder's check is made again under its lock, which is the check that counts:
another driver may have changed the folder while this one started Ray. A rerun of the same command
skips finished cells, resumes unfinished trials from their checkpoints and retries failed ones up
to `max_retries`.

Checkpoints go to `<storage>/<sweep id>/<trial key>/`: the sweep id is made when a folder is first
launched and kept in its manifest, so two sweeps (two folders, or a `--fresh` one next to an old one)
never share a checkpoint path even when every sweep of a cluster gets the same storage prefix.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweeper.core import provenance
from sweeper.core.errors import UserError
from sweeper.core.io import check_writable
from sweeper.core.paths import STORAGE_ENV
from sweeper.ladders import get_ladder
from sweeper.plan import Plan, to_json
from sweeper.sweep.folder import SweepFolder
from sweeper.sweep.ledger import Ledger, new_sweep_id, space_hash, warn
from sweeper.sweep.progress import LiveTable
from sweeper.sweep.trials import grid_trials, pending_trials, views

TRACKERS = ("mlflow", "wandb", "tensorboard")


@dataclass(frozen=True)
class LaunchOptions:
    out: str | None = None
    address: str | None = None
    storage: str | None = None
    fresh: bool = False
    force: bool = False
    tracking: str | None = None
    advice: dict[str, Any] | None = None  # the advice file this launch runs (`--with`), for its record


@dataclass(frozen=True)
class LaunchResult:
    out: Path
    recorded: int  # trial attempts recorded by this run
    pending: int  # trials that still have to run (interrupted or failed)
    failed: int


def resolve_out(space_name: str, options: LaunchOptions) -> Path:
    folder = SweepFolder(Path(options.out)) if options.out else SweepFolder.default(space_name)
    if options.fresh and folder.manifest.exists():
        folder = folder.fresh()
    return folder.root


def check_same_space(ledger: Ledger, plan: Plan, force: bool) -> None:
    """Refuse to mix two configurations of one grid point in one folder (unless --force)."""
    manifest = ledger.manifest()
    if manifest is None or force:
        return
    if manifest["space"]["name"] != plan.space.name:
        raise UserError(f"--out {ledger.out} holds space {manifest['space']['name']!r}, not {plan.space.name!r}; "
                        "use another --out, --fresh for a new folder, or --force")
    recorded = {(c["method"], c["scale"]): c["id"] for c in manifest["cells"]}
    for cell in plan.cells:
        old = recorded.get((cell.method, cell.scale))
        if old is not None and old != cell.id:
            raise UserError(
                f"--out {ledger.out} holds cell {cell.method}/{cell.scale} with a different config (id {old}, "
                f"now {cell.id}); use --fresh for a new folder or --force to add to this one"
            )


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """One driver per sweep folder: a second launch on the same folder is refused, not interleaved."""
    out.mkdir(parents=True, exist_ok=True)
    handle = open(SweepFolder(out).lock, "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"--out {out}: another sweeper is running on this folder") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def write_manifest(ledger: Ledger, plan: Plan, space_source: str, storage: str | None = None,
                   advice: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add this launch to the folder's manifest (and give the folder its sweep id on its first launch,
    or on the first launch of a folder made before sweep ids); returns the manifest written. Every
    launch keeps its own space, so a `--force` launch with a changed space adds to the record instead
    of replacing it; `space` and `plan` at the top are the latest launch's (what the folder runs now).
    A launch records its resolved cells, so that `sweeper status` rebuilds the grid without resolving
    methods again (which would import torch and peft)."""
    previous = ledger.manifest() or {}
    launches = list(previous.get("launches", []))
    sweep_id = previous.get("sweep_id")
    legacy = bool(previous.get("legacy_checkpoints"))
    if sweep_id is None:
        sweep_id = new_sweep_id()
        if previous:
            legacy = _migrate(ledger.out, previous, launches, storage)
    known = {c["id"]: c for c in previous.get("cells", [])}
    known.update({c.id: {"id": c.id, "method": c.method, "scale": c.scale} for c in plan.cells})
    space = plan.space.model_dump(mode="json")
    plan_json = json.loads(to_json(plan))
    identity: dict[str, Any] = {"sweep_id": sweep_id, **({"legacy_checkpoints": True} if legacy else {})}
    launch = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "argv": sys.argv[1:], **provenance.collect(),
              "sweep_id": sweep_id, "space_hash": space_hash(space), "space": space,
              "cells": [c.id for c in plan.cells], "resolved_cells": [c.model_dump(mode="json") for c in plan.cells],
              "device_hours_planned": plan_json["totals"]["device_hours"],
              "checkpoints": checkpoint_store(ledger.out, storage, identity) if storage else None,
              **({"advice": advice} if advice else {})}
    manifest = {
        **identity,
        "space": space,
        "space_source": space_source,
        "plan": plan_json,
        "cells": list(known.values()),
        "launches": [*launches, launch],
    }
    ledger.write_manifest(manifest)
    return manifest


def own_checkpoints(out: Path) -> str:
    """The default storage of a one-node sweep: inside its own folder."""
    return str(SweepFolder(out).checkpoints.resolve())


def checkpoint_store(out: Path, storage: str, manifest: dict[str, Any]) -> str:
    """This sweep's checkpoint prefix on `storage`: `<storage>/<sweep id>`. The one exception is a folder made
    before sweep ids whose checkpoints were in its own OUT/checkpoints (`legacy_checkpoints`): nothing else
    writes inside a sweep folder, so those unkeyed trial folders are provably its own and it keeps them."""
    if manifest.get("legacy_checkpoints") and storage == own_checkpoints(out):
        return storage
    return f"{storage.rstrip('/')}/{manifest['sweep_id']}"


def _migrate(out: Path, previous: dict[str, Any], launches: list[dict[str, Any]], storage: str | None) -> bool:
    """A manifest from before sweep ids: give its last launch the space it wrote (the manifest's `space`),
    and say whether its unkeyed checkpoints stay in use. Only where they are in the folder's own
    OUT/checkpoints: on storage shared by sweeps, a trial folder of the same key may be another sweep's
    (resuming it, or overwriting its final weights, is the bug sweep ids fix), so its unfinished trials
    restart under the new keyed path. Done trials keep the weights their records point at."""
    if launches and "space_hash" not in launches[-1] and isinstance(previous.get("space"), dict):
        cells = [c["cell_id"] for c in (previous.get("plan") or {}).get("cells", []) if "cell_id" in c]
        launches[-1] = {**launches[-1], "space_hash": space_hash(previous["space"]), "space": previous["space"],
                        "cells": cells}
    if storage is not None and storage == own_checkpoints(out):
        return True
    if storage is not None:
        warn(f"{out}: made before sweep ids; its checkpoints now go to {storage.rstrip('/')}/<sweep id>, and an "
             f"unfinished trial restarts instead of resuming from {storage}, where other sweeps' checkpoints have "
             "the same names")
    return False


def prepare_base_models(plan: Plan) -> None:
    """Build what the trials share before they start (two trials must not build it twice at once): the
    ladder's weights, then, where its tokenizer is at hand, the packed instruction data."""
    from sweeper.data import prepare_data

    ladder = get_ladder(plan.space.ladder)
    scales = list(plan.space.scales)
    ladder.prepare(scales)
    tokenizer = ladder.local_tokenizer(scales[0])
    if tokenizer is not None:
        prepare_data(plan.space.data, tokenizer, files=ladder.instruction_files())


def memory_plan(plan: Plan) -> dict[str, Any]:
    from sweeper.memory import estimate_memory

    return {cell.id: estimate_memory(cell, e.trainable_params, e.total_params)
            for cell, e in zip(plan.cells, plan.estimates, strict=True)}


def storage_for(out: Path, options: LaunchOptions, nodes: int) -> str:
    """Checkpoints go where every node can reach them: --storage, $SWEEPER_STORAGE, or (one node) OUT."""
    storage = options.storage or os.environ.get(STORAGE_ENV)
    if storage:
        return storage
    if nodes > 1:
        raise UserError(f"--storage: the cluster has {nodes} nodes; give checkpoint storage every node reaches "
                        f"(s3://..., gs://..., or a shared mount) with --storage or ${STORAGE_ENV}")
    return own_checkpoints(out)


def launch_grid(plan: Plan, space_source: str, options: LaunchOptions) -> LaunchResult:
    """Run the grid's pending trials on Ray (the only place this package calls into `sweeper.backend`)."""
    from sweeper.backend import cluster, driver, runtime

    if options.tracking is not None and options.tracking not in TRACKERS:
        raise UserError(f"--tracking: unknown tracker {options.tracking!r}; valid: {', '.join(TRACKERS)}")
    out = resolve_out(plan.space.name, options)
    check_writable(out)
    ledger = Ledger(out)
    check_same_space(ledger, plan, options.force)  # refused before Ray starts; made again under the lock
    prepare_base_models(plan)
    started = runtime.start_ray(options.address)
    try:
        cluster.check_cells_fit(plan.cells, memory_plan(plan), runtime.cluster_node_types())
        storage = storage_for(out, options, runtime.alive_nodes())
        with exclusive(out):
            check_same_space(ledger, plan, options.force)  # the check that counts: nobody changes it now
            launch = write_manifest(ledger, plan, space_source, storage, options.advice)["launches"][-1]
            ledger.rebuild_views()
            ledger.clear_live()
            trials = grid_trials(plan.cells)
            rows = ledger.rows()
            todo, _ = pending_trials(trials, rows, plan.space.max_retries)
            table = LiveTable(views(trials, rows), title=f"sweep {plan.space.name} -> {out}")
            recorded: list[str] = []
            if todo:
                with table:
                    recorded = driver.run_trials(
                        todo, ledger=ledger, store=launch["checkpoints"], max_failures=plan.space.max_retries,
                        provenance=provenance.collect(), table=table, tracking=options.tracking,
                        max_concurrent=plan.space.resources.max_concurrent_trials, space_hash=launch["space_hash"],
                    )
            ledger.clear_live()
            still, given_up = pending_trials(trials, ledger.rows(), plan.space.max_retries)
    finally:
        if started:
            runtime.stop_ray()
    failed = len(given_up)
    return LaunchResult(out=out, recorded=len(recorded), pending=len(still), failed=failed)
