"""The only module that talks to Ray Tune (and, through `_train_worker`, to Ray Train).

One Tuner runs every pending trial of the grid:
- `CellTrialSearcher` hands out trials cell by cell; a cell with a search range draws its lr from
  its own Optuna study (one study per cell replicate, persisted in the sweep folder), which is how
  per-cell search coexists with a grid (Optuna cannot be combined with `grid_search`).
- `PerCellASHA` runs one ASHA per cell replicate, so early stopping only ever compares trials of the
  same (method, scale) cell and seed: one method never stops another, and every replicate of every
  cell keeps a trial that runs to the end (ASHA always lets the best trial at a rung continue).
- A replicate (`seeds: K` in the space) repeats the whole procedure of a cell (lr search, early
  stopping, training) with the seed recipe.seed + r, so the spread of the replicates' best losses is
  the run-to-run noise of a cell's result. Sharing one study or one ASHA across replicates would not
  give that: the study would pick later replicates' lrs from earlier ones' results, and one ASHA
  keeps only the cell's best few trials, so whole replicates could end with no finished trial.
- A trial whose cell has a single CPU worker runs the training loop directly in the Tune trial
  actor, with actors reused between trials (torch & co. stay imported). Other cells (several
  workers, GPUs, DeepSpeed) run a Ray Train `TorchTrainer` from the trial. Measured here: a
  trivial `TorchTrainer.fit()` inside a Tune trial costs 30-45 s of start and teardown; a direct
  trial costs well under a second (benchmarks/sweep.md).
- `LedgerCallback` turns Tune's events into ledger records and the live table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from sweeper.errors import UserError, first_line
from sweeper.ledger import Ledger
from sweeper.progress import LiveTable
from sweeper.space import Cell

DRIVER_CPU = 0.01  # a Train-backed trial's driver only waits on its workers
DRIVER_SLOTS = 1000  # trial drivers local Ray can hold at once (as cluster.yaml's head declares)
RUNNING = "running"


@dataclass(frozen=True)
class TrialSlot:
    """Search trial `index` of replicate `replicate` (0 .. cell.seeds - 1) of a cell."""

    cell: Cell
    index: int
    replicate: int = 0

    @property
    def seed(self) -> int:
        return self.cell.recipe.seed + self.replicate

    @property
    def search_id(self) -> str:
        """The trials that search the lr together (one Optuna study, one ASHA): one replicate's. Replicate 0
        keeps the cell id, the study's name before replicates existed, so older sweeps resume their study."""
        return self.cell.id if self.replicate == 0 else f"{self.cell.id}-s{self.seed}"

    @property
    def key(self) -> str:
        """Stable across reruns: the checkpoint folder (under the sweep's own `<storage>/<sweep id>`) and ledger
        records are found by it. Replicate 0 keeps the key of a cell without replicates, so older sweep
        folders still resume."""
        trial = f"{self.cell.id}-t{self.index}"
        return trial if self.replicate == 0 else f"{trial}-s{self.seed}"


def runs_direct(cell: Cell) -> bool:
    """A single CPU worker without DeepSpeed needs no Ray Train: run the loop in the Tune trial."""
    r = cell.resources
    return r.workers == 1 and r.gpus_per_worker == 0 and cell.recipe.zero_stage == 0


def trial_resources(cell: Cell, pin_drivers: bool = False) -> dict[str, float]:
    """What the Tune trial itself holds; a Train-backed trial's workers ask for their own. On a cluster
    whose head offers the driver resource, those drivers are pinned to the head, off the GPU nodes."""
    if runs_direct(cell):
        return {"CPU": cell.resources.cpus_per_worker}
    from sweeper.cluster import DRIVER_RESOURCE

    # Not even a fraction of a CPU where the driver resource exists: on a 2-CPU machine a 0.01-CPU
    # driver leaves 1.99 CPUs, and a 2-worker trial would wait for its workers forever.
    return {DRIVER_RESOURCE: 1} if pin_drivers else {"CPU": DRIVER_CPU}


# -- Ray start and cluster checks ------------------------------------------------------------------


def start_ray(address: str | None) -> bool:
    """Start local Ray (with the dashboard: Tune's trial cleanup needs the State API) or connect.
    False when Ray was already up in this process (then the caller leaves it up)."""
    import ray

    if ray.is_initialized():
        return False
    if address not in (None, "local", "auto") and not address.startswith("ray://"):
        _check_reachable(address)
    try:
        if address in (None, "local"):
            from sweeper.cluster import DRIVER_RESOURCE

            ray.init(address="local", include_dashboard=True, log_to_driver=False,
                     logging_level=logging.WARNING, resources={DRIVER_RESOURCE: DRIVER_SLOTS})
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        target = f"--address {address}" if address not in (None, "local") else "local Ray"
        raise UserError(f"{target}: Ray could not start or connect ({first_line(err)})") from None
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r}: expected host:port of a Ray head, 'auto' or 'local'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise UserError(f"--address {address}: no Ray head reachable there ({err.strerror or err})") from None


def stop_ray() -> None:
    import ray

    ray.shutdown()


def cluster_node_types() -> list[Any]:
    """The node types a launch can use: the alive nodes, plus the autoscaler's node types when this
    is the head of a `ray up` cluster (its workers may not be started yet)."""
    import ray
    import yaml

    from sweeper.cluster import live_node_types, node_types_of

    types = live_node_types(ray.nodes())
    bootstrap = Path("~/ray_bootstrap_config.yaml").expanduser()
    if bootstrap.is_file():
        types.extend(node_types_of(yaml.safe_load(bootstrap.read_text()), source=str(bootstrap)))
    return types


def has_driver_resource() -> bool:
    """A `ray up` cluster from cluster.yaml marks its head for trial drivers (sweeper.cluster)."""
    import ray

    from sweeper.cluster import DRIVER_RESOURCE

    return DRIVER_RESOURCE in ray.cluster_resources()


def alive_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


# -- search and scheduling ------------------------------------------------------------------------


class CellTrialSearcher(Searcher):
    """Hands out the pending trials in order; per-cell lr from the Optuna study of that cell replicate."""

    def __init__(self, slots: list[TrialSlot], common: dict[str, Any], journal: Path,
                 scheduler: PerCellASHA):
        super().__init__(metric="val_loss", mode="min")
        self.queue = list(slots)
        self.common = common
        self.journal = journal
        self.scheduler = scheduler
        self.studies: dict[str, Any] = {}
        self.asked: dict[str, tuple[Any, int]] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self.queue:
            return Searcher.FINISHED
        slot = self.queue.pop(0)
        lr = slot.cell.recipe.lr
        if slot.cell.search.lr is not None:
            study = self._study(slot)
            number, lr = self._trial_for(study, slot)
            self.asked[trial_id] = (study, number)
        return {**self.common, "cell": slot.cell.model_dump(mode="json"), "cell_id": slot.cell.id,
                "search_id": slot.search_id, "replicate": slot.replicate, "trial_key": slot.key, "lr": lr,
                "direct": runs_direct(slot.cell)}

    def _study(self, slot: TrialSlot) -> Any:
        if slot.search_id not in self.studies:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(self.journal)))
            sampler = (optuna.samplers.TPESampler(seed=slot.seed) if slot.cell.search.sampler == "tpe"
                       else optuna.samplers.RandomSampler(seed=slot.seed))
            self.studies[slot.search_id] = optuna.create_study(
                storage=storage, study_name=slot.search_id, sampler=sampler, direction="minimize",
                load_if_exists=True)
        return self.studies[slot.search_id]

    @staticmethod
    def _trial_for(study: Any, slot: TrialSlot) -> tuple[int, float]:
        """The Optuna trial of this slot: the unfinished one from an earlier run, else a new one."""
        import optuna

        for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if frozen.user_attrs.get("trial_key") == slot.key:
                return frozen.number, float(frozen.params["lr"])
        lr_range = slot.cell.search.lr
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(lr_range.low, lr_range.high, log=True)})
        trial.set_user_attr("trial_key", slot.key)
        return trial.number, float(trial.params["lr"])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.asked:
            return
        import optuna

        study, number = self.asked.pop(trial_id)
        status = (result or {}).get("status")
        value = (result or {}).get("val_loss")
        if error or status == "diverged" or value is None or not math.isfinite(value):
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        elif status == "done":
            study.tell(number, value)
        elif trial_id in self.scheduler.stopped:
            study.tell(number, state=optuna.trial.TrialState.PRUNED)
        # else: interrupted; the Optuna trial stays RUNNING and the rerun resumes it with the same lr


class PerCellASHA(FIFOScheduler):
    """One ASHA per cell replicate (time = optimizer step reported by the worker, never training_iteration)."""

    def __init__(self) -> None:
        super().__init__()
        self.per_cell: dict[str, AsyncHyperBandScheduler | None] = {}
        self.stopped: set[str] = set()

    def _asha(self, trial: Any) -> AsyncHyperBandScheduler | None:
        search_id = trial.config["search_id"]
        if search_id not in self.per_cell:
            cell = Cell.model_validate(trial.config["cell"])
            stop = cell.early_stopping
            self.per_cell[search_id] = (
                AsyncHyperBandScheduler(time_attr="step", metric="val_loss", mode="min", max_t=cell.recipe.steps,
                                        grace_period=stop.grace_steps, reduction_factor=stop.reduction_factor)
                if stop.asha and cell.search.trials > 1 else None
            )
        return self.per_cell[search_id]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        asha = self._asha(trial)
        if asha:
            asha.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        asha = self._asha(trial)
        if asha is None or result.get("status") != RUNNING:
            return TrialScheduler.CONTINUE
        decision = asha.on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self.stopped.add(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        asha = self._asha(trial)
        if asha and trial.trial_id in asha._trial_info:
            asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        asha = self._asha(trial)
        if asha and trial.trial_id in asha._trial_info:
            asha.on_trial_remove(tune_controller, trial)


# -- what runs in the trial actors ----------------------------------------------------------------


def _trial_from(config: dict[str, Any]):
    from sweeper.train import Trial

    return Trial(cell=Cell.model_validate(config["cell"]), trial_key=config["trial_key"], lr=config["lr"],
                 replicate=config["replicate"], store=config["store"])


def _with_nodes(report: Any, nodes: list[str]) -> Any:
    """Report through Ray with the Ray node ids that ran the trial's ranks (provenance: one machine
    can hold several Ray nodes, so the host name alone does not say where a trial ran)."""

    def send(metrics: dict[str, Any]) -> None:
        hardware = {**json.loads(metrics["hardware"]), "ray_nodes": nodes}
        report({**metrics, "hardware": json.dumps(hardware, sort_keys=True)})

    return send


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _trial_driver(config: dict[str, Any]) -> None:
    """The Tune trainable: the loop itself (direct) or a TorchTrainer whose workers run it."""
    if config["direct"]:
        from sweeper.train import run_trial

        run_trial(_trial_from(config), report=_with_nodes(tune.report, [_node_id()]))
        return
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = Cell.model_validate(config["cell"]).resources
    use_gpu = resources.gpus_per_worker > 0
    per_worker = {"CPU": resources.cpus_per_worker, **({"GPU": resources.gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            # Named after the stable trial key: a rerun of the trial lands in the same Train run folder.
            name=config["trial_key"],
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

    from sweeper.train import run_trial

    if not config["cell"]["resources"]["gpus_per_worker"]:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    nodes: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(nodes, _node_id())
    run_trial(_trial_from(config), report=_with_nodes(ray.train.report, nodes))


# -- the driver's view: ledger records and the live table ----------------------------------------


class LedgerCallback(tune.Callback):
    def __init__(self, ledger: Ledger, slots: dict[str, TrialSlot], scheduler: PerCellASHA,
                 provenance: dict[str, Any], table: LiveTable, space_hash: str | None = None):
        self.ledger, self.slots, self.scheduler = ledger, slots, scheduler
        self.provenance, self.table = provenance, table
        self.space_hash = space_hash  # the launch's space, recorded with every row (manifest `launches`)
        self.last: dict[str, dict[str, Any]] = {}
        self.started: dict[str, float] = {}
        self.finished: list[str] = []

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment folder (for Tuner.restore, which sweeper
        # does not use: it resumes from its own ledger); the live terminal table cannot be pickled.
        return {key: value for key, value in self.__dict__.items() if key != "table"}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started[trial.trial_id] = time.time()
        self.table.update(trial.config["trial_key"], status=RUNNING)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.last[trial.trial_id] = result
        key = trial.config["trial_key"]
        live = {k: result.get(k) for k in ("step", "tokens", "val_loss", "best_val_loss", "tokens_per_s", "status",
                                           "pid", "hardware")}
        self.ledger.update_live(key, {"trial_id": key, "cell_id": trial.config["cell_id"], **live})
        self.table.update(key, status=RUNNING, step=result["step"], tokens=result["tokens"],
                          val_loss=result["val_loss"], best_val_loss=result["best_val_loss"],
                          tokens_per_s=result.get("tokens_per_s", math.nan))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = self.last.get(trial.trial_id, {})
        status = result.get("status")
        if status == RUNNING and trial.trial_id in self.scheduler.stopped:
            status = "stopped-early"
        if status in ("done", "diverged", "stopped-early"):
            self._record(trial, status, result)
        else:
            self.table.update(trial.config["trial_key"], status="pending")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _error_text(trial)
        lines = [line for line in error.strip().splitlines() if line.strip()]
        self._record(trial, "failed", self.last.get(trial.trial_id, {}), error=lines[-1] if lines else error)

    def _record(self, trial: Any, status: str, result: dict[str, Any], error: str | None = None) -> None:
        key = trial.config["trial_key"]
        slot = self.slots[key]
        cell = slot.cell
        wall = result.get("elapsed_s") or (time.time() - self.started.get(trial.trial_id, time.time()))
        r = cell.resources
        devices = r.workers * (r.gpus_per_worker or r.cpus_per_worker)
        provenance = self.provenance
        row = {
            # No attempt number: the ledger gives the next free one as it writes the record.
            "space": cell.space, "space_hash": self.space_hash, "cell_id": cell.id, "trial_id": key,
            "ladder": cell.ladder, "scale": cell.scale, "method": cell.method,
            "method_config": json.dumps(cell.method_config, sort_keys=True),
            "lr": trial.config["lr"], "hparams": json.dumps({"lr": trial.config["lr"]}),
            "status": status, "steps": result.get("step"), "tokens": result.get("tokens"),
            "initial_val_loss": result.get("initial_val_loss"), "final_val_loss": result.get("val_loss"),
            "best_val_loss": result.get("best_val_loss"), "trainable_params": result.get("trainable_params"),
            "total_params": result.get("total_params"), "wall_seconds": wall,
            "device_hours": wall * devices / 3600, "checkpoint": result.get("final_checkpoint"), "error": error,
            "resumed_at": json.dumps(result.get("resumed_at") or []),
            "model_source": result.get("model_source"), "dataset_fingerprint": result.get("dataset_fingerprint"),
            "seed": slot.seed, "git_sha": provenance["git_sha"], "git_dirty": provenance["git_dirty"],
            "versions": json.dumps(provenance["versions"], sort_keys=True),
            "hardware": result.get("hardware") or json.dumps(provenance["hardware"], sort_keys=True),
            "started_at": _iso(self.started.get(trial.trial_id)), "finished_at": _iso(time.time()),
        }
        self.ledger.record(row, result.get("curve") or [])
        self.finished.append(key)
        self.table.update(key, status=status, step=result.get("step") or 0, tokens=result.get("tokens") or 0,
                          val_loss=_num(result.get("val_loss")), best_val_loss=_num(result.get("best_val_loss")))


def _error_text(trial: Any) -> str:
    """The trial's error trace. Tune writes it to the trial's local folder first and syncs it to
    storage later, so `trial.get_error()` (which reads storage) is still empty when the callback runs."""
    local = trial.error_file
    if local and Path(local).is_file():
        return Path(local).read_text()
    return str(trial.get_error() or "unknown error (Tune recorded no trace)")


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def _quiet_ray(log_path: Path) -> Iterator[None]:
    """Ray's console output (Tune's banners, warnings) goes to the sweep's ray.log, not the terminal."""
    log_file = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed in finally
    handler = logging.StreamHandler(log_file)
    loggers = [logging.getLogger(name) for name in ("ray", "ray.tune", "ray.train", "ray.air")]
    saved = [(lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers = [handler]
        lg.propagate = False
    try:
        with contextlib.redirect_stdout(log_file), contextlib.redirect_stderr(log_file):
            yield
    finally:
        for lg, (handlers, propagate) in zip(loggers, saved, strict=True):
            lg.handlers, lg.propagate = handlers, propagate
        log_file.close()


def run_trials(slots: list[TrialSlot], *, ledger: Ledger, store: str, max_failures: int,
               provenance: dict[str, Any], table: LiveTable, tracking: str | None,
               max_concurrent: int | None, space_hash: str | None = None) -> list[str]:
    """Run the given trials to completion (or until interrupted); returns the trial keys recorded.
    `store` is this sweep's own checkpoint prefix (`<storage>/<sweep id>`): Ray's results go under it too."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    ray_storage = str((ledger.out / "ray_results").resolve()) if "://" not in store else f"{store}/ray_results"
    scheduler = PerCellASHA()
    common = {"store": store, "ray_storage": ray_storage, "max_failures": max_failures}
    searcher = CellTrialSearcher(slots, common, ledger.out / "optuna.journal", scheduler)
    by_key = {slot.key: slot for slot in slots}
    recorder = LedgerCallback(ledger, by_key, scheduler, provenance, table, space_hash)
    callbacks: list[Any] = [recorder, *tracking_callbacks(tracking, ledger.out, slots[0].cell.space)]
    pin = has_driver_resource()
    resources = {slot.key: trial_resources(slot.cell, pin) for slot in slots}
    trainable = tune.with_resources(_trial_driver, lambda config: tune.PlacementGroupFactory(
        [resources[config["trial_key"]]]))
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=len(slots),
                                    reuse_actors=True, max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(
            name=f"sweeper-{slots[0].cell.space}", storage_path=ray_storage, callbacks=callbacks, verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    )
    with _quiet_ray(ledger.out / "ray.log"):
        tuner.fit()
    return recorder.finished


def tracking_callbacks(tracking: str | None, out: Path, experiment: str) -> list[Any]:
    """Experiment tracking through Ray Tune's own logger callbacks."""
    if tracking is None:
        return []
    if tracking == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        # MLflow 3 keeps its file store read-only: a local SQLite file is its local backend now.
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(out / 'mlflow.db').resolve()}"
        return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment, save_artifact=False)]
    if tracking == "wandb":
        from ray.air.integrations.wandb import WandbLoggerCallback

        return [WandbLoggerCallback(project=experiment)]
    if tracking == "tensorboard":
        from ray.tune.logger import TBXLoggerCallback

        return [TBXLoggerCallback()]
    raise UserError(f"--tracking: unknown tracker {tracking!r}; valid: mlflow, wandb, tensorboard")
