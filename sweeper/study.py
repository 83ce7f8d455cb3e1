"""The main job, `sweeper launch grid`: train the grid on Ray, then evaluate the tuned models, then report.

Policy lives here, not in the command line: evaluation runs in the same job only when the grid finished
and trained on CPUs (a GPU cluster evaluates on a GPU node: `sweeper eval`); the report is written when
the grid finished, and a report that cannot be made is said, not an error of the job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sweeper.core.errors import UserError
from sweeper.plan import Plan
from sweeper.schema import Space
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


@dataclass(frozen=True)
class AdviseRounds:
    """`--advise-rounds`: after the grid, K rounds of advise -> run -> refit (issue 15)."""

    rounds: int
    target: str  # METHOD@SCALE[,...], as `sweeper advise --target`
    budget_usd: float  # what all rounds together may spend, at the plan's prices
    target_width: float | None = None  # stop once the target's relative interval width is at most this
    draws: int = 16


def run_advised_rounds(space: Space, space_source: str, options: LaunchOptions, steps: StudySteps,
                       rounds: AdviseRounds, *, say: Say, warn: Say) -> list[dict]:
    """Each round: advise on the sweep as it stands within what is left of the budget, run the chosen
    runs (`--with` their advice file), refit. Stops when nothing is expected to help, the budget is
    spent, or the target width is reached. Each round's forecast and spend go to SWEEP/advice/rounds.json
    and rounds.png (the forecast interval against the money spent)."""
    import sys

    from analysis.advice import current_study, measure, run_advice, write_record, write_rounds
    from analysis.sources import load_source
    from sweeper.sweep.advice import advised_plan

    out = Path(options.out) if options.out else Path("sweeps") / space.name
    history: list[dict] = []
    spent, ran = 0.0, False  # ran: runs were bought since the last forecast was recorded
    for number in range(1, rounds.rounds + 1):
        source = load_source(out)
        left = rounds.budget_usd - spent
        try:
            advice = run_advice(source, rounds.target, "width", left, None, "all", rounds.draws, seed=number)
        except UserError as err:  # e.g. the budget left is below the cheapest candidate: the loop is over
            say(f"round {number}: {err}; stopping")
            break
        record, file = write_record(source, advice, sys.argv[1:])
        # The targets as sizes from now on: "70B-equivalent" is a multiple of the largest trained size,
        # which a round's runs can move.
        names = advice.study.data.group_names
        target = ",".join(dict.fromkeys(f"{names[t.group]}@{float(t.X[0])!r}" for t in advice.study.targets))
        rounds = replace(rounds, target=target)
        history.append({"round": number, "spent_usd": spent, "record": record.name, **measure(advice.study)})
        ran = False
        if rounds.target_width is not None and advice.before <= rounds.target_width:
            say(f"round {number}: width {advice.before:.4f} is at most the target {rounds.target_width:g}; stopping")
            break
        if file is None:
            say(f"round {number}: no run is expected to narrow the forecast within ${left:.3g}; stopping")
            break
        chosen = advice.choice
        say(f"round {number}: running {', '.join(a.candidate.name for a in chosen.chosen)} "
            f"(${sum(a.candidate.usd for a in chosen.chosen):.3g}); width {advice.before:.4f} -> "
            f"{chosen.together.after:.4f} expected")
        plan, followed = advised_plan(space, str(file))
        result = run_study(plan, space_source, replace(options, out=str(out), fresh=False, advice=followed),
                           steps, say=say, warn=warn)
        # the advice's own prices: one run per new scale, one replicate per extra seed (the plan of a
        # cell with more seeds prices all of them, though only the new one runs)
        spent += sum(a.candidate.usd for a in chosen.chosen)
        ran = True
        if result.failed or result.pending:
            warn(f"round {number}: {result.failed} failed, {result.pending} unfinished trial(s); stopping")
            break
    if ran:  # the forecast once the last round's runs are in
        try:
            study = current_study(load_source(out), rounds.target)
            history.append({"round": len(history) + 1, "spent_usd": spent, "record": None, **measure(study)})
        except UserError as err:  # e.g. a round bought the target's own scale: it is no longer a forecast
            say(f"after round {len(history)}: {err}")
    if history:
        written = write_rounds(SweepFolder(out).root / "advice", history)
        say(f"advice rounds: {', '.join(str(p) for p in written)}")
    return history
