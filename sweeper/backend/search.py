"""Which trial runs next and which stops early: per-cell Optuna search and per-cell ASHA inside one Tuner.

- `CellTrialSearcher` hands out the pending trials cell by cell; a cell with a search range draws its lr
  from its own Optuna study (one study per cell replicate, persisted in the sweep folder), which is how
  per-cell search coexists with a grid (Optuna cannot be combined with `grid_search`).
- `PerCellASHA` runs one ASHA per cell replicate, so early stopping only ever compares trials of the
  same (method, scale) cell and seed: one method never stops another, and every replicate of every
  cell keeps a trial that runs to the end (ASHA always lets the best trial at a rung continue).
- A replicate (`seeds: K` in the space) repeats the whole procedure of a cell (lr search, early
  stopping, training) with the seed recipe.seed + r, so the spread of the replicates' best losses is
  the run-to-run noise of a cell's result. Sharing one study or one ASHA across replicates would not
  give that: the study would pick later replicates' lrs from earlier ones' results, and one ASHA
  keeps only the cell's best few trials, so whole replicates could end with no finished trial.

Metric and time are the ledger's names as the trial reports them (`TrialReport`): `final_val_loss`
(the latest validation loss) and `steps` (optimizer steps: `training_iteration` resets on a restart).
Ray's own trial ids are the `trial_id` Tune passes to a searcher and `trial.trial_id` of its trial objects;
sweeper's are `Trial.trial_id` of the config's `"trial"`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from sweeper.schema import Trial

METRIC, TIME = "final_val_loss", "steps"
RUNNING = "running"


class CellTrialSearcher(Searcher):
    """Hands out the pending trials in order; per-cell lr from the Optuna study of that cell replicate.
    Each Tune config is `{"trial": Trial, **common, **per_trial(trial)}`: the trial with its lr and checkpoint
    store, and what the driver decided for it (`per_trial`: e.g. whether it runs without Ray Train, decided
    in the driver process, where a benchmark or test may override the rule)."""

    def __init__(self, trials: list[Trial], common: dict[str, Any], journal: Path, scheduler: PerCellASHA,
                 per_trial: Callable[[Trial], dict[str, Any]] | None = None):
        super().__init__(metric=METRIC, mode="min")
        self.queue = list(trials)
        self.common = common
        self.per_trial = per_trial or (lambda trial: {})
        self.journal = journal
        self.scheduler = scheduler
        self.studies: dict[str, Any] = {}
        self.asked: dict[str, tuple[Any, int]] = {}

    # Tune passes Ray's trial id by keyword, as `trial_id`: the parameter keeps Tune's name.
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self.queue:
            return Searcher.FINISHED
        trial = self.queue.pop(0)
        lr = trial.cell.recipe.lr
        if trial.cell.search.lr is not None:
            study = self._study(trial)
            number, lr = self._trial_for(study, trial)
            self.asked[trial_id] = (study, number)
        return {**self.common, **self.per_trial(trial), "trial": dataclasses.replace(trial, lr=lr)}

    def _study(self, trial: Trial) -> Any:
        if trial.search_id not in self.studies:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(self.journal)))
            sampler = (optuna.samplers.TPESampler(seed=trial.seed) if trial.cell.search.sampler == "tpe"
                       else optuna.samplers.RandomSampler(seed=trial.seed))
            self.studies[trial.search_id] = optuna.create_study(
                storage=storage, study_name=trial.search_id, sampler=sampler, direction="minimize",
                load_if_exists=True)
        return self.studies[trial.search_id]

    @staticmethod
    def _trial_for(study: Any, trial: Trial) -> tuple[int, float]:
        """The Optuna trial of this sweeper trial: the unfinished one from an earlier run, else a new one.
        (The user attribute keeps its old name, `trial_key`, so that older sweeps resume their studies.)"""
        import optuna

        for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if frozen.user_attrs.get("trial_key") == trial.trial_id:
                return frozen.number, float(frozen.params["lr"])
        lr_range = trial.cell.search.lr
        asked = study.ask({"lr": optuna.distributions.FloatDistribution(lr_range.low, lr_range.high, log=True)})
        asked.set_user_attr("trial_key", trial.trial_id)
        return asked.number, float(asked.params["lr"])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.asked:
            return
        import optuna

        study, number = self.asked.pop(trial_id)
        status = (result or {}).get("status")
        value = (result or {}).get(METRIC)
        if error or status == "diverged" or value is None or not math.isfinite(value):
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        elif status == "done":
            study.tell(number, value)
        elif trial_id in self.scheduler.stopped:
            study.tell(number, state=optuna.trial.TrialState.PRUNED)
        # else: interrupted; the Optuna trial stays RUNNING and the rerun resumes it with the same lr


class PerCellASHA(FIFOScheduler):
    """One ASHA per cell replicate (time = optimizer steps reported by the worker, never training_iteration)."""

    def __init__(self) -> None:
        super().__init__()
        self.per_cell: dict[str, AsyncHyperBandScheduler | None] = {}
        self.stopped: set[str] = set()  # Ray trial ids

    def _asha(self, ray_trial: Any) -> AsyncHyperBandScheduler | None:
        trial: Trial = ray_trial.config["trial"]
        if trial.search_id not in self.per_cell:
            cell = trial.cell
            stop = cell.early_stopping
            self.per_cell[trial.search_id] = (
                AsyncHyperBandScheduler(time_attr=TIME, metric=METRIC, mode="min", max_t=cell.recipe.steps,
                                        grace_period=stop.grace_steps, reduction_factor=stop.reduction_factor)
                if stop.asha and cell.search.trials > 1 else None
            )
        return self.per_cell[trial.search_id]

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
