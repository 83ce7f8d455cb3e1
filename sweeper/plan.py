"""What a grid will cost before anything trains: parameters, tokens, FLOPs, device-hours, dollars.

FLOPs per trial = (4 N + 2 N_trainable) T + 2 N T_eval   (Kaplan et al. 2020, appendix: 2 FLOPs per
parameter per token forward; backward = activation gradients (2 N, through the frozen base too)
+ weight gradients (2 N_trainable)). Full fine-tuning gives 6 N T, a frozen base about 4 N T.
N counts every parameter once (GPTBigCode ties the embedding and the output head, and the head's
matmul is 2 x vocab x width FLOPs per token, so the embedding belongs in N).

A cell runs `seeds` replicates of `search.trials` search trials each, and costs at most that many
times one trial (ASHA may stop some early), so the plan is an upper bound.
"""

import json
import math
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

from sweeper.core.console import console as make_console
from sweeper.core.errors import UserError
from sweeper.core.memo import DiskMemo
from sweeper.schema import Cell, Cost, Space
from sweeper.space import expand


class Accelerator(NamedTuple):
    peak_tflops: float  # dense bf16 peak (fp32 for CPUs), TFLOP/s
    fp32_tflops: float  # fp32 peak without tensor cores: PyTorch keeps TF32 off for matmuls by default
    usd_per_hour: float  # on-demand price of one device
    memory_gib: float | None  # device memory as nvidia-smi reports it; None for CPUs (not modelled)


# Peaks: NVIDIA datasheets (dense, no sparsity; fp32 is the non-tensor-core figure). Prices: AWS on-demand us-east-1, per GPU
# (instance price / GPUs): p5.48xlarge $98.32/h, p4de.24xlarge $40.97/h, p4d.24xlarge $32.77/h,
# g6.xlarge $0.805/h. `cpu-core`: one AVX-512 server core (2 x 256-bit FMA pipes at ~3 GHz,
# fp32), priced as half a c7a.large ($0.103/h for 2 vCPUs). All overridable in the space's `cost:`.
ACCELERATORS: dict[str, Accelerator] = {
    "H100-80GB": Accelerator(989.0, 67.0, 12.29, 79.6),
    "A100-80GB": Accelerator(312.0, 19.5, 5.12, 80.0),
    "A100-40GB": Accelerator(312.0, 19.5, 4.10, 40.0),
    "L4": Accelerator(121.0, 30.3, 0.805, 22.5),
    "cpu-core": Accelerator(0.1, 0.1, 0.0515, None),
}


@dataclass(frozen=True)
class CellEstimate:
    cell_id: str
    method: str
    scale: str
    total_params: int
    trainable_params: int
    trials: int  # all trials of the cell: seeds x search trials
    seeds: int  # replicates of the cell
    train_tokens: int  # per trial
    eval_tokens: int  # per trial
    flops: float  # all trials
    device_hours: float
    usd: float
    memory_gib: float | None = None  # peak per GPU at the cell's workers (sweeper.memory); None on CPU
    gpus_needed: int | None = None  # fewest GPUs of the plan's accelerator the cell fits on


@dataclass(frozen=True)
class Plan:
    space: Space
    cells: list[Cell]
    estimates: list[CellEstimate]
    peak_tflops: float
    fp32_tflops: float  # the peak of cells trained in fp32 (recipe.precision)
    utilization: float
    usd_per_hour: float
    gpu_memory_gib: float | None

    @property
    def total_trials(self) -> int:
        return sum(e.trials for e in self.estimates)

    @property
    def total_flops(self) -> float:
        return sum(e.flops for e in self.estimates)

    @property
    def total_device_hours(self) -> float:
        return sum(e.device_hours for e in self.estimates)

    @property
    def total_usd(self) -> float:
        return sum(e.usd for e in self.estimates)


def accelerator_terms(cost: Cost) -> tuple[float, float, float]:
    """(16-bit peak TFLOP/s, fp32 peak TFLOP/s, $ per device-hour) from the table, with the space's
    overrides applied; each peak has its own override (an accelerator outside the table runs fp32 at
    cost.peak_tflops unless cost.fp32_peak_tflops says otherwise)."""
    known = ACCELERATORS.get(cost.accelerator)
    if known is None and (cost.peak_tflops is None or cost.usd_per_hour is None):
        raise UserError(
            f"cost.accelerator: unknown accelerator {cost.accelerator!r}; valid: {', '.join(ACCELERATORS)} "
            "(or give cost.peak_tflops and cost.usd_per_hour)"
        )
    peak = cost.peak_tflops if cost.peak_tflops is not None else known.peak_tflops
    price = cost.usd_per_hour if cost.usd_per_hour is not None else known.usd_per_hour
    if cost.fp32_peak_tflops is not None:
        fp32 = cost.fp32_peak_tflops
    else:
        fp32 = known.fp32_tflops if known is not None else peak
    return peak, fp32, price


def evaluations(steps: int, eval_every: int) -> int:
    """Validation passes of one trial: at step 0 (the divergence baseline), every `eval_every`, and the last step."""
    return 1 + steps // eval_every + (1 if steps % eval_every else 0)


def trial_flops(total: int, trainable: int, train_tokens: int, eval_tokens: int, recompute: bool = False) -> float:
    """Forward 2 N T, backward 2 N T (activation gradients flow through a frozen base too) + 2 N_trainable T
    (weight gradients), validation 2 N T_eval; with activation checkpointing (`recompute`) the forward pass
    runs again during backward: + 2 N T (Korthikanti et al. 2022, section 5)."""
    return (4 * total + 2 * trainable + (2 * total if recompute else 0)) * train_tokens + 2 * total * eval_tokens


def estimate_cell(cell: Cell, trainable: int, total: int, peak_tflops: float, utilization: float,
                  usd_per_hour: float) -> CellEstimate:
    recipe, data = cell.recipe, cell.data
    train_tokens = cell.train_tokens
    eval_tokens = evaluations(recipe.steps, recipe.eval_every) * data.max_val_sequences * data.seq_len
    trials = cell.seeds * cell.search.trials
    flops = trials * trial_flops(total, trainable, train_tokens, eval_tokens, recipe.gradient_checkpointing)
    device_hours = flops / (peak_tflops * 1e12 * utilization * 3600)
    return CellEstimate(
        cell_id=cell.id, method=cell.method, scale=cell.scale, total_params=total, trainable_params=trainable,
        trials=trials, seeds=cell.seeds, train_tokens=train_tokens, eval_tokens=eval_tokens, flops=flops,
        device_hours=device_hours, usd=device_hours * usd_per_hour,
    )


def with_memory(estimate: CellEstimate, cell: Cell, gpu_memory_gib: float | None) -> CellEstimate:
    """Add the per-GPU memory estimate and the GPUs the cell needs (GPU accelerators only)."""
    if gpu_memory_gib is None:
        return estimate
    from dataclasses import replace

    from sweeper.memory import estimate_memory, gpus_needed

    memory = estimate_memory(cell, estimate.trainable_params, estimate.total_params)
    return replace(estimate, memory_gib=memory.total_gib, gpus_needed=gpus_needed(memory, gpu_memory_gib))


def make_plan(space: Space, gpu_memory_gib: float | None = None) -> Plan:
    """The plan of a space. GPU memory per device comes from the accelerator table unless given."""
    cells = expand(space)
    check_context(cells)
    peak, fp32, price = accelerator_terms(space.cost)
    known = ACCELERATORS.get(space.cost.accelerator)
    memory = gpu_memory_gib if gpu_memory_gib is not None else (known.memory_gib if known else None)
    estimates = [
        with_memory(estimate_cell(cell, trainable, total, fp32 if cell.recipe.precision == "fp32" else peak,
                                  space.cost.utilization, price), cell, memory)
        for cell, (trainable, total) in zip(cells, parameter_counts(cells), strict=True)
    ]
    return Plan(space=space, cells=cells, estimates=estimates, peak_tflops=peak, fp32_tflops=fp32,
                utilization=space.cost.utilization, usd_per_hour=price, gpu_memory_gib=memory)


def check_context(cells: list[Cell]) -> None:
    """Refuse sequences longer than the model's learned positions: seq_len tokens plus the virtual tokens
    of prompt methods (P-Tuning / prompt tuning prepend them; prefix tuning shifts the position ids by
    them). Past n_positions the position embedding lookup fails only once a trial runs."""
    from sweeper.ladders import get_ladder

    for cell in cells:
        limit = get_ladder(cell.ladder).scale(cell.scale).arch.n_positions
        virtual = int(cell.method_config.get("num_virtual_tokens") or 0)
        if cell.data.seq_len + virtual > limit:
            prompt = f" + {virtual} virtual tokens of {cell.method}" if virtual else ""
            raise UserError(f"data.seq_len: {cell.data.seq_len}{prompt} exceeds the {limit} positions of "
                            f"{cell.ladder}/{cell.scale}; expected at most {limit - virtual}")


def only_cells(plan: Plan, pairs: set[tuple[str, str]]) -> Plan:
    """The plan of just these (method, scale) cells (an advice file's runs)."""
    keep = [i for i, cell in enumerate(plan.cells) if (cell.method, cell.scale) in pairs]
    missing = sorted(pairs - {(plan.cells[i].method, plan.cells[i].scale) for i in keep})
    if missing:
        raise UserError(f"no cell {', '.join(f'{m}@{s}' for m, s in missing)} in space {plan.space.name!r}")
    return replace(plan, cells=[plan.cells[i] for i in keep], estimates=[plan.estimates[i] for i in keep])


def parameter_counts(cells: list[Cell]) -> list[tuple[int, int]]:
    """(trainable, total) per cell: counted on the meta device once, then remembered on disk."""
    from sweeper.ladders import get_ladder

    memo = DiskMemo("parameter_counts")
    counts = []
    for cell in cells:
        arch = get_ladder(cell.ladder).scale(cell.scale).arch

        def count(cell: Cell = cell, arch=arch) -> list[int]:
            from sweeper.methods import count_method_parameters

            return list(count_method_parameters(arch, cell.method, cell.method_config))

        trainable, total = memo.get([arch.model_dump(), cell.method, cell.method_config], count)
        counts.append((trainable, total))
    memo.save()
    return counts


def check_budget(plan: Plan, budget_usd: float | None) -> None:
    """Refuse a grid whose estimate exceeds the budget (CLI flag first, then the space's `budget_usd`)."""
    if budget_usd is not None and not 0 <= budget_usd < math.inf:
        raise UserError(f"--budget-usd: expected a non-negative finite number of dollars (got {budget_usd})")
    budget = budget_usd if budget_usd is not None else plan.space.budget_usd
    if budget is not None and plan.total_usd > budget:
        raise UserError(
            f"estimated cost ${plan.total_usd:,.2f} ({plan.total_device_hours:,.1f} device-hours, "
            f"{len(plan.cells)} cells) exceeds the budget ${budget:,.2f}; raise --budget-usd or shrink the grid"
        )


def to_json(plan: Plan) -> str:
    return json.dumps(
        {
            "space": plan.space.name,
            "ladder": plan.space.ladder,
            "assumptions": {
                "accelerator": plan.space.cost.accelerator,
                "peak_tflops": plan.peak_tflops,
                "fp32_peak_tflops": plan.fp32_tflops,
                "utilization": plan.utilization,
                "usd_per_hour": plan.usd_per_hour,
                "flops_formula": "(4 N + 2 N_trainable [+ 2 N with gradient checkpointing]) T + 2 N T_eval, per trial",
                "gpu_memory_gib": plan.gpu_memory_gib,
            },
            "cells": [asdict(e) for e in plan.estimates],
            "totals": {
                "cells": len(plan.estimates),
                "trials": plan.total_trials,
                "flops": plan.total_flops,
                "device_hours": plan.total_device_hours,
                "usd": plan.total_usd,
            },
        },
        indent=2,
    )


def human(n: float) -> str:
    """1234567 -> '1.23M' (SI prefixes, three significant digits)."""
    for unit, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def print_plan(plan: Plan) -> None:
    from rich.table import Table

    space = plan.space
    replicated = any(e.seeds > 1 for e in plan.estimates)  # the seeds column only when it says something
    table = Table(title=f"plan: space {space.name!r}, ladder {space.ladder!r}, {len(plan.cells)} cells")
    for column in ("cell", "method", "scale", "params", "trainable", "%", *(("seeds",) if replicated else ()),
                   "trials", "tokens", "FLOPs", "device-h", "$", "GiB/GPU", "GPUs"):
        table.add_column(column, justify="left" if column in ("cell", "method", "scale") else "right")
    for e in plan.estimates:
        gpus = "-" if e.memory_gib is None else ("none fit" if e.gpus_needed is None else str(e.gpus_needed))
        table.add_row(
            e.cell_id, e.method, e.scale, human(e.total_params), human(e.trainable_params),
            f"{100 * e.trainable_params / e.total_params:.3g}", *((str(e.seeds),) if replicated else ()),
            str(e.trials), human(e.train_tokens), human(e.flops), f"{e.device_hours:.3g}", f"{e.usd:,.2f}",
            "-" if e.memory_gib is None else f"{e.memory_gib:.1f}", gpus,
        )
    table.add_section()
    table.add_row("total", "", "", "", "", "", *(("",) if replicated else ()),
                  str(plan.total_trials), "", human(plan.total_flops),
                  f"{plan.total_device_hours:.3g}", f"{plan.total_usd:,.2f}", "", "")
    console = make_console()
    console.print(table)
    data, recipe = space.data, space.recipe
    origin = f" ({data.path})" if data.path else f" (packages {', '.join(data.packages)})" if data.packages else ""
    console.print(
        f"data: {data.source}{origin}, {data.seq_len}-token sequences, loss on "
        f"{'all tokens' if data.loss_on == 'all' else 'answers'}, at most {data.max_val_sequences} validation "
        f"sequences; recipe: lr {recipe.lr:g} {recipe.schedule}, {recipe.steps} steps x {recipe.global_batch} "
        f"sequences, {_precisions(plan.cells)}"
    )
    console.print(
        ("trials = seeds x search trials. " if replicated else "")
        + "FLOPs = (4 N + 2 N_trainable) T + 2 N T_eval per trial"
        + (" (+ 2 N T where activations are recomputed)" if any(c.recipe.gradient_checkpointing for c in plan.cells) else "")
        + f"; {space.cost.accelerator}: "
        f"{plan.peak_tflops:g} TFLOP/s peak"
        + (f" ({plan.fp32_tflops:g} for fp32 cells)" if any(c.recipe.precision == "fp32" for c in plan.cells) else "")
        + f" x {plan.utilization:g} utilisation, ${plan.usd_per_hour:g}/device-hour."
        + (f" Budget: ${space.budget_usd:,.2f}." if space.budget_usd is not None else "")
    )
    if plan.gpu_memory_gib is not None:
        console.print(
            f"GiB/GPU: peak memory of one rank at the cell's workers and ZeRO stage (weights, gradients, "
            f"optimizer states, activations at micro_batch x seq_len); GPUs: fewest {plan.gpu_memory_gib:g} GiB "
            "GPUs the cell fits on (90% usable)."
        )


def _precisions(cells: list[Cell]) -> str:
    """How the grid's cells run, e.g. `fp32 (fft); bf16 with an int8 base (lora, ia3)`."""
    groups: dict[str, list[str]] = {}
    for cell in cells:
        recipe = cell.recipe
        how = recipe.precision + (f" with an {recipe.base_quantization} base" if recipe.base_quantization != "none" else "")
        groups.setdefault(how, [])
        if cell.method not in groups[how]:
            groups[how].append(cell.method)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{how} ({', '.join(methods)})" for how, methods in groups.items())
