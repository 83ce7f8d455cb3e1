"""What runs a trial on Ray: the Tune trainable, the Ray Train `TorchTrainer` glue, and the Tuner over all.

A trial whose cell has a single CPU worker runs the training loop directly in the Tune trial actor,
with actors reused between trials (torch & co. stay imported). Other cells (several workers, GPUs,
DeepSpeed) run a Ray Train `TorchTrainer` from the trial. Measured here: a trivial
`TorchTrainer.fit()` inside a Tune trial costs 30-45 s of start and teardown; a direct trial costs
well under a second (benchmarks/sweep.md).

Across the boundary travel exactly two types: a `Trial` in (the Tune config's `"trial"`), a
`TrialReport` out (its `metrics()`, read back by `TrialReport.from_metrics`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ray import tune

from sweeper.backend import runtime
from sweeper.backend.callbacks import LedgerCallback, tracking_callbacks
from sweeper.backend.cluster import DRIVER_RESOURCE
from sweeper.backend.search import CellTrialSearcher, PerCellASHA
from sweeper.schema import Cell, Trial, TrialReport
from sweeper.sweep.folder import SweepFolder
from sweeper.sweep.ledger import Ledger
from sweeper.sweep.progress import LiveTable

DRIVER_CPU = 0.01  # a Train-backed trial's driver only waits on its workers


def runs_direct(cell: Cell) -> bool:
    """A single CPU worker without DeepSpeed needs no Ray Train: run the loop in the Tune trial."""
    r = cell.resources
    return r.workers == 1 and r.gpus_per_worker == 0 and cell.recipe.zero_stage == 0


def trial_resources(cell: Cell, pin_drivers: bool = False) -> dict[str, float]:
    """What the Tune trial itself holds; a Train-backed trial's workers ask for their own. On a cluster
    whose head offers the driver resource, those drivers are pinned to the head, off the GPU nodes."""
    if runs_direct(cell):
        return {"CPU": cell.resources.cpus_per_worker}
    # Not even a fraction of a CPU where the driver resource exists: on a 2-CPU machine a 0.01-CPU
    # driver leaves 1.99 CPUs, and a 2-worker trial would wait for its workers forever.
    return {DRIVER_RESOURCE: 1} if pin_drivers else {"CPU": DRIVER_CPU}


def _with_nodes(report: Any, nodes: list[str]) -> Any:
    """Report through Ray with the Ray node ids that ran the trial's ranks (provenance: one machine
    can hold several Ray nodes, so the host name alone does not say where a trial ran)."""

    def send(trial_report: TrialReport) -> None:
        hardware = {**json.loads(trial_report.hardware), "ray_nodes": nodes}
        report(dataclasses.replace(trial_report, hardware=json.dumps(hardware, sort_keys=True)).metrics())

    return send


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _trial_driver(config: dict[str, Any]) -> None:
    """The Tune trainable: the loop itself (direct) or a TorchTrainer whose workers run it."""
    trial: Trial = config["trial"]
    if config["direct"]:  # decided in the driver process (`run_trials`), not in this actor
        from sweeper.train.loop import run_trial

        run_trial(trial, report=_with_nodes(tune.report, [_node_id()]))
        return
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = trial.cell.resources
    use_gpu = resources.gpus_per_worker > 0
    per_worker = {"CPU": resources.cpus_per_worker, **({"GPU": resources.gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            # Named after the stable trial id: a rerun of the trial lands in the same Train run folder.
            name=trial.trial_id,
            storage_path=config["ray_storage"],
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=config["max_failures"]),
        ),
    )
    trainer.fit()


def _train_worker(config: dict[str, Any]) -> None:
    """Every Train rank runs the same loop and reports (Tune sees rank 0's metrics)."""
    import ray.train
    import torch.distributed as dist

    from sweeper.train.loop import run_trial

    trial: Trial = config["trial"]
    if not trial.cell.resources.gpus_per_worker:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    nodes: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(nodes, _node_id())
    run_trial(trial, report=_with_nodes(ray.train.report, nodes))


def run_trials(trials: list[Trial], *, ledger: Ledger, store: str, max_failures: int,
               provenance: dict[str, Any], table: LiveTable, tracking: str | None,
               max_concurrent: int | None, space_hash: str | None = None) -> list[str]:
    """Run the given trials to completion (or until interrupted); returns the trial ids recorded.
    `store` is this sweep's own checkpoint prefix (`<storage>/<sweep id>`): Ray's results go under it too."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    folder: SweepFolder = ledger.folder
    ray_storage = str(folder.ray_results.resolve()) if "://" not in store else f"{store}/ray_results"
    scheduler = PerCellASHA()
    common = {"ray_storage": ray_storage, "max_failures": max_failures}
    with_store = [dataclasses.replace(trial, store=store) for trial in trials]
    searcher = CellTrialSearcher(with_store, common, folder.optuna_journal, scheduler,
                                 per_trial=lambda trial: {"direct": runs_direct(trial.cell)})
    recorder = LedgerCallback(ledger, scheduler, provenance, table, space_hash)
    callbacks: list[Any] = [recorder, *tracking_callbacks(tracking, folder, trials[0].cell.space)]
    pin = runtime.has_driver_resource()
    resources = {trial.trial_id: trial_resources(trial.cell, pin) for trial in trials}
    trainable = tune.with_resources(_trial_driver, lambda config: tune.PlacementGroupFactory(
        [resources[config["trial"].trial_id]]))
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=len(trials),
                                    reuse_actors=True, max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(
            name=f"sweeper-{trials[0].cell.space}", storage_path=ray_storage, callbacks=callbacks, verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    )
    with runtime.quiet_ray(folder.ray_log):
        tuner.fit()
    return recorder.finished
