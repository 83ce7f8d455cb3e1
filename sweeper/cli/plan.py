"""`sweeper plan`: the grid a space describes and what it will cost, before anything trains."""

import math
from typing import Annotated

import typer

from sweeper.cli.options import JsonOption, MethodsOption, ScalesOption, SetOption, SpaceOption, names
from sweeper.core.errors import UserError

PLAN_HELP = """Print the grid a space describes and what it will cost, before anything trains.

Per cell: parameters (total, trainable; counted on the meta device, no weights), training tokens
T = steps x global_batch x seq_len, FLOPs and device-hours and dollars.

FLOPs = (4 N + 2 N_trainable) T + 2 N T_eval. The forward pass costs 2 N T; the backward pass
costs 2 N T for activation gradients (they flow through the frozen base too) plus 2 N_trainable T
for weight gradients. Full fine-tuning (N_trainable = N) gives the familiar 6 N T; a frozen base
gives about 4 N T. T_eval = validation tokens x number of evaluations (forward only).

Device-hours = FLOPs / (peak FLOP/s x utilisation x 3600); $ = device-hours x price per hour.
Peak, utilisation and price come from the accelerator table and `cost:` in the space (overridable
with --set cost.peak_tflops=..., cost.utilization=..., cost.usd_per_hour=...).

On GPU accelerators each cell also gets its peak memory per GPU (weights, gradients, optimizer
states, activations at micro_batch x seq_len, with its ZeRO stage and activation checkpointing)
and the fewest GPUs of that size it fits on (--gpu-memory-gib picks another node type).
"""


def plan(
    space: SpaceOption = "micro",
    set_: SetOption = None,
    methods: MethodsOption = None,
    scales: ScalesOption = None,
    gpu_memory_gib: Annotated[
        float | None,
        typer.Option("--gpu-memory-gib", help="GPU memory of the node type to plan for (default: the accelerator's)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    from sweeper import plan as planning
    from sweeper.space import load_space, select

    if gpu_memory_gib is not None and not 0 < gpu_memory_gib < math.inf:
        raise UserError(f"--gpu-memory-gib: expected a positive finite number of GiB (got {gpu_memory_gib})")
    chosen = select(load_space(space, set_ or ()), names("--methods", methods), names("--scales", scales))
    grid = planning.make_plan(chosen, gpu_memory_gib)
    if json_:
        typer.echo(planning.to_json(grid))
    else:
        planning.print_plan(grid)
