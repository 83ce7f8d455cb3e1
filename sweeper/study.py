"""The main job, `sweeper launch grid`: train the grid on Ray, then evaluate the tuned models, then report.

Policy lives here, not in the command line: evaluation runs in the same job only when the grid finished
and trained on CPUs (a GPU cluster evaluates on a GPU node: `sweeper eval`); the report is written when
the grid finished, and a report that cannot be made is said, not an error of the job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sweeper.core.errors import UserError
from sweeper.plan import Plan
from sweeper.sweep.folder import SweepFolder
from sweeper.sweep.launch import LaunchOptions, LaunchResult, launch_grid

Say = Callable[[str], None]


@dataclass(frozen=True)
class StudySteps:
    evaluate: bool = True  # evaluate the tuned models (CPU grids only)
    eval_limit: int = 40  # problems per task
    report: bool = True  # fit scaling laws and write the report
    allow_weak_sandbox: bool = False


def run_study(plan: Plan, space_source: str, options: LaunchOptions, steps: StudySteps, *, say: Say,
              warn: Say) -> LaunchResult:
    """Train, evaluate, report; `say` / `warn` print a line on stdout / stderr. Returns the grid's result."""
    result = launch_grid(plan, space_source, options)
    folder = SweepFolder(result.out)
    say(f"ledger: {folder.cells}, {folder.curves.name} (`sweeper status --out {result.out}`)")
    if result.failed or result.pending:
        return result
    on_cpu = all(cell.resources.gpus_per_worker == 0 for cell in plan.cells)
    if steps.evaluate and on_cpu:
        from sweeper.evals.sweep import evaluate_sweep

        # One greedy sample per problem, not the tasks' presets (n=20 for HumanEvalPack): the main job's budget
        # on 2 CPUs; `sweeper eval --out ...` scores with the paper's decoding.
        evals = evaluate_sweep(result.out, None, None, n_samples=1, temperature=0.0, limit=steps.eval_limit,
                               allow_weak=steps.allow_weak_sandbox or None)
        say(f"downstream scores: {evals}")
    elif steps.evaluate:
        say(f"evaluate the tuned models on a GPU node: sweeper eval --out {result.out}")
    if steps.report:
        _report(result.out, say, warn)
    return result


def _report(out: Path, say: Say, warn: Say) -> None:
    from analysis.commands import warning_lines, write_default_report

    try:
        analysis, folder, written = write_default_report(out)
    except UserError as err:  # the grid itself succeeded: say why there is no report, keep exit 0
        warn(f"report not written: {err}")
        return
    for line in warning_lines(analysis):
        warn(line)
    say(f"wrote {folder / 'report.md'} and {folder / 'report.html'} (+ {len(written) - 2} files)")
