"""Independent fits of an analysis spread over the machine's cores.

A report fits each method's curve alone and all of them jointly, for two views and their backtests,
and a loss -> score link per task: dozens of independent fits, each with its own bootstrap, that one
process would run one after another on one core. (Python threads share one interpreter lock: two
threads measured no faster. Splitting one bootstrap's batch over processes gains little either: the
batch's iterations cost per step, not per row.) Inside `pool()`, `starmap` runs such calls on worker
processes; outside it, or where processes cannot be started, it runs them in order here. Either way
the answers are the same, call for call.

The workers are forked when `pool()` is entered, before the CLI starts its progress-bar thread, and only
from a process with no other thread: a fork copies only the calling thread, so a lock another thread
holds at that moment would stay held in the child forever. Forking (not spawning) also spares a caller's unguarded script from being re-run as the
workers' main module. A worker's own calls run serially (it holds no pool).
"""

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

_active: ProcessPoolExecutor | None = None  # the pool of the open `pool()` block


def cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def pool(workers: int | None = None) -> Iterator[None]:
    """Run `starmap` calls on `workers` processes (default: one per core) until the block ends."""
    global _active
    count = workers or cores()
    # Fork only a single-threaded process: after `sweeper launch grid` the driver still has Ray's threads
    # (gRPC among them), whose locks a child would inherit held. There the fits run serially.
    if count < 2 or _active is not None or threading.active_count() > 1:
        yield
        return
    try:
        executor = ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context("fork"))
        executor.submit(int).result()  # forks every worker now, before the CLI's progress-bar thread exists
    except (OSError, BrokenProcessPool):
        yield
        return
    _active = executor
    try:
        yield
    finally:
        _active = None
        executor.shutdown(cancel_futures=True)


def starmap(function: Callable, calls: list[tuple]) -> list:
    """[function(*arguments) for arguments in calls], on the workers of `pool()` when one is open.
    The function and its arguments must pickle (module-level functions, plain data)."""
    if _active is None or len(calls) < 2:
        return [function(*arguments) for arguments in calls]
    try:
        futures = [_active.submit(function, *arguments) for arguments in calls]
        return [future.result() for future in futures]
    except (OSError, BrokenProcessPool):
        return [function(*arguments) for arguments in calls]
