"""The method ranking of one grid under two designs, side by side (`--against OTHER_SWEEP`; issue 14).

A method ranking is only fair when the methods had the same chance: one learning rate for every method
(the paper's design), or a per-cell search with the same budget for every method. The two can rank
the methods differently (a method that needs a larger step loses under one shared rate), so a study
that ran both shows both: for every scale the two sweeps share, each sweep's order by validation loss
(replicates averaged), the Kendall tau between the orders, whether they agree on the best method, and
the learning rate each method trained at in each sweep.
"""

from dataclasses import dataclass

import numpy as np
import polars as pl

from analysis.downstream import Correlation, kendall
from analysis.formatting import number
from analysis.sources import Source
from sweeper.core.errors import UserError
from sweeper.schema import without_neutral_defaults

LOSS = "final_val_loss"


@dataclass(frozen=True)
class Design:
    name: str  # the sweep's name
    policy: str  # how its learning rates were set (`learning_rate_policy`)
    loss: dict[str, dict[str, float]]  # scale -> method -> mean validation loss
    lr: dict[str, dict[str, float]]  # scale -> method -> median learning rate of its results


@dataclass(frozen=True)
class ScaleAgreement:
    scale: str
    orders: tuple[list[str], list[str]]  # each design's order of the methods both ran, best first
    tau: Correlation  # between the two designs' losses of the common methods


@dataclass(frozen=True)
class SideBySide:
    designs: tuple[Design, Design]
    scales: list[ScaleAgreement]  # the common scales, smallest first


def learning_rate_policy(frame: pl.DataFrame, manifest: dict) -> str:
    """How a sweep's learning rates were set, which a method ranking depends on: searched per cell
    (the sweep's space says so), one for all, or one per method."""
    if "lr" not in frame.columns or "method" not in frame.columns:
        return "The learning rate of each run is not recorded in this table."
    space = manifest.get("space") or {}
    trials = (space.get("search") or {}).get("trials", 1)
    searched_by_rule = any(key.startswith("search.") for rule in space.get("overrides") or () for key in rule["set"])
    if trials > 1 or searched_by_rule:
        budget = f"{trials} trials per cell" if not searched_by_rule else "a search set per cell by the space's overrides"
        return (f"Learning rates: searched per cell ({budget}), so a ranking compares methods at their own best "
                "step size; it is fair only where every method had the same search budget.")
    by_method = {method: sorted(set(frame.filter(frame["method"] == method)["lr"].to_list()))
                 for method in dict.fromkeys(frame["method"].to_list())}
    values = {lr for lrs in by_method.values() for lr in lrs}
    if len(values) == 1:
        return (f"Learning rate: one for every method ({number(values.pop(), 3)}), as the paper (1e-4 for every "
                "method); a method that needs a larger step is ranked at this one.")
    listed = "; ".join(f"{method} {', '.join(number(lr, 3) for lr in lrs)}" for method, lrs in by_method.items())
    return (f"Learning rates differ by method ({listed}): a ranking mixes each method with its step size. For a fair "
            "comparison use one learning rate for all, or the per-cell search with the same budget for every method.")


def side_by_side(this: Source, other: Source, level_names: list[str]) -> SideBySide:
    """The two sweeps' rankings at every scale both ran (`level_names`: this study's scales, smallest first).
    Sweeps of different ladders or data are not two designs of one grid: a UserError says so."""
    if not this.is_sweep:
        raise UserError(f"--against: {this.path} is a table, not a sweep folder; the ranking comparison is of two sweeps")
    if not other.is_sweep:
        raise UserError(f"--against {other.path}: not a sweep folder (the ranking comparison needs a sweep's ledger)")
    for key in ("ladder", "data"):
        # fields added since a sweep was recorded do not make its data another's (schema.ID_NEUTRAL_DEFAULTS)
        mine, theirs = (without_neutral_defaults({key: (s.manifest.get("space") or {}).get(key)})[key]
                        for s in (this, other))
        if mine != theirs:
            raise UserError(f"--against {other.path}: its {key} ({theirs}) is not this sweep's ({mine}); two designs "
                            "of one grid share the ladder and the data")
    designs = (_design(this), _design(other))
    scales = [scale for scale in level_names if scale in designs[0].loss and scale in designs[1].loss]
    agreements = []
    for scale in scales:
        common = sorted(set(designs[0].loss[scale]) & set(designs[1].loss[scale]))
        if len(common) < 2:
            continue
        orders = tuple(sorted(common, key=d.loss[scale].get) for d in designs)
        tau = kendall(*(np.array([d.loss[scale][m] for m in common]) for d in designs))
        agreements.append(ScaleAgreement(scale, orders, tau))
    if not agreements:
        raise UserError(f"--against {other.path}: it shares no scale with two or more of this sweep's methods")
    return SideBySide(designs, agreements)


def _design(source: Source) -> Design:
    table = source.table
    missing = [c for c in ("method", "scale", "lr", LOSS) if c not in table.columns]
    if missing:
        raise UserError(f"{source.path}: the ledger lacks {', '.join(missing)}, which the ranking comparison needs")
    means = table.group_by("scale", "method").agg(pl.col(LOSS).mean(), pl.col("lr").median())
    loss: dict[str, dict[str, float]] = {}
    lr: dict[str, dict[str, float]] = {}
    for scale, method, value, rate in means.select("scale", "method", LOSS, "lr").iter_rows():
        loss.setdefault(scale, {})[method] = float(value)
        lr.setdefault(scale, {})[method] = float(rate)
    return Design(source.name, learning_rate_policy(table, source.manifest), loss, lr)
