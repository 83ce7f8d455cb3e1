"""Hostile programs are contained, scored as failures, and the harness survives them.

The containment tests run with the static screen off (`raw`): they bypass the Python-level guards on
purpose (`posix.fork`, `_socket`), so that what they check is the kernel's isolation."""

import os
import socket
import tempfile
from pathlib import Path

import pytest

from sweeper.evals.sandbox import Sandbox, SandboxLimits, WeakSandboxError
from sweeper.evals.sandbox_guard import SECCOMP

TIMEOUT_S = 2.0


def _strict(**kwargs) -> Sandbox:
    """A sandbox with at least the minimum isolation; these tests skip where the kernel refuses it
    (the refusal itself is tested in test_sandbox_isolation.py)."""
    box = Sandbox(SandboxLimits(timeout_s=TIMEOUT_S), workers=2, **kwargs)
    try:
        box.start()
    except WeakSandboxError as err:
        pytest.skip(f"this kernel refuses the sandbox's minimum isolation: {err}")
    return box


@pytest.fixture(scope="module")
def sandbox():
    with _strict() as box:
        yield box


@pytest.fixture(scope="module")
def raw():
    with _strict(screen=False) as box:
        yield box


def run_one(sandbox: Sandbox, program: str):
    return sandbox.run([program], description=None)[0]


def assert_alive(sandbox: Sandbox) -> None:
    """A well-behaved program still passes after the hostile one, on every worker."""
    outcomes = sandbox.run([f"assert {i} + 1 == {i + 1}" for i in range(1000, 1004)], description=None)
    assert all(o.passed for o in outcomes), outcomes


def test_passing_and_failing_programs(sandbox):
    assert run_one(sandbox, "import numpy as np\nassert np.arange(4).sum() == 6").passed
    failed = run_one(sandbox, "def f(x):\n    return x\nassert f(1) == 2")
    assert failed.status == "failed" and "AssertionError" in failed.detail


def test_isolation_reported(sandbox):
    # At least the minimum, or the sandbox would not have started (no opt-in here).
    isolation = sandbox.isolation
    assert "network namespace" in isolation or SECCOMP in isolation
    assert {"pid namespace", "private read-only root", "private /tmp"} <= set(isolation), isolation
    assert any(name.startswith("process limit") for name in isolation), isolation
    assert sandbox.settings()["below_minimum"] == []


@pytest.mark.parametrize("program", [
    "import sys\nsys.exit(0)\nassert False",
    "import os\nos._exit(0)\nassert False",
    "import posix\nposix._exit(0)\nassert False",
    "exit(0)\nassert False",
    "raise SystemExit(0)",
])
def test_exit_before_the_tests_is_a_failure(sandbox, raw, program):
    for box in (sandbox, raw):
        assert run_one(box, program).status in ("failed", "rejected")
        assert_alive(box)


def test_syntax_error_is_a_failure_of_the_program(sandbox):
    outcome = run_one(sandbox, "def f(:\n    pass")
    assert outcome.status == "failed" and "SyntaxError" in outcome.detail


def test_infinite_loop_times_out(sandbox):
    outcome = run_one(sandbox, "while True:\n    pass")
    assert outcome.status == "timeout"
    assert outcome.seconds < TIMEOUT_S + 2
    assert_alive(sandbox)


def _process_count() -> int:
    return sum(name.isdigit() for name in os.listdir("/proc"))


def test_fork_bomb_is_contained(raw):
    before = _process_count()
    # posix.fork bypasses the reliability guard's os.fork = None: the kernel limits must hold.
    bomb = "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass"
    outcome = run_one(raw, bomb)
    assert not outcome.passed
    assert outcome.seconds < TIMEOUT_S + 3
    assert _process_count() < before + 20  # every process of the bomb is gone (others run on this machine)
    assert_alive(raw)


def test_bounded_fork_count(raw):
    program = (
        "import posix, time\ncount = 0\nfor _ in range(200):\n    try:\n        pid = posix.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(5)\n        raise SystemExit\n"
        "    count += 1\nprint('forked', count)\nassert count < 200"
    )
    outcome = run_one(raw, program)
    forked = int(outcome.detail.split("forked")[1].split()[0])
    assert forked < raw.limits.max_processes
    assert outcome.passed


@pytest.mark.parametrize("program", [
    "x = bytearray(16 * 2**30)",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(2**26))",
])
def test_memory_bomb_is_contained(sandbox, program):
    assert not run_one(sandbox, program).passed
    assert_alive(sandbox)


def test_huge_output_is_cut(sandbox):
    outcome = run_one(sandbox, "import sys\nsys.stdout.write('x' * 100_000_000)")
    assert outcome.status == "output_limit"
    assert len(outcome.detail) <= 4096
    assert_alive(sandbox)


def test_files_outside_the_work_directory_are_protected(raw):
    outside = Path(tempfile.mkdtemp(dir="/var/tmp"))  # on the real disk, outside the program's /tmp
    try:
        victim = outside / "victim.txt"
        victim.write_text("keep me")
        for program in (
            f"import os\nos.remove({str(victim)!r})",
            f"import posix\nposix.unlink({str(victim)!r})",
            f"open({str(victim)!r}, 'w').write('overwritten')",
            f"open({str(outside / 'new.txt')!r}, 'w').write('x')",
            f"import shutil\nshutil.rmtree({str(outside)!r})",
        ):
            assert not run_one(raw, program).passed, program
        assert victim.read_text() == "keep me"
        assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    finally:
        victim.unlink(missing_ok=True)
        outside.rmdir()
    assert_alive(raw)


def test_fresh_temporary_directory_per_program(sandbox):
    write = "import os\nassert os.listdir('.') == []\nopen('scratch.txt', 'w').write('x')"
    assert [o.passed for o in sandbox.run([write, write + "\n"], description=None)] == [True, True]


def test_no_network(raw):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        for program in (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'pwned')",
            f"import _socket\ns = _socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', {port}))",
        ):
            assert not run_one(raw, program).passed, program
        server.setblocking(False)  # the kernel completes connections nobody accepted yet
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


@pytest.mark.parametrize("program", [
    "import os\nos.kill(os.getppid(), 9)",
    # Bypass the guard, and find the real parent through /proc: outside the program's PID namespace.
    "import posix\nppid = int(open('/proc/self/status').read().split('PPid:')[1].split()[0])\n"
    "assert ppid > 1, 'parent not visible'\nposix.kill(ppid, 9)",
    "import posix\nposix.kill(-1, 9)",
])
def test_killing_the_parent_is_contained(raw, program):
    assert not run_one(raw, program).passed
    assert_alive(raw)


def test_worker_death_is_an_error_not_a_crash(sandbox):
    sandbox._workers[0]._proc.kill()  # as if the worker process had died
    outcomes = sandbox.run([f"assert {i} == {i}" for i in range(10)], description=None)
    assert all(o.passed for o in outcomes)


def test_duplicate_programs_run_once(sandbox):
    program = "import random\nprint(random.random())"
    first, second = sandbox.run([program, program], description=None)
    assert first is second


def test_limits_are_validated():
    from sweeper.core.errors import UserError

    with pytest.raises(UserError, match="timeout_s"):
        SandboxLimits.parse({"timeout_s": -1}, "limits")
