"""Isolation that does not silently degrade (issue 11, section 2).

- Below the minimum isolation the sandbox refuses to score unless the caller opts in, and says what is
  missing and how to get it. A kernel that refuses namespaces is simulated as Docker's default seccomp
  profile does it: a seccomp filter making unshare / mount / setns fail with EPERM, installed in a
  helper process that then starts the sandbox (its workers inherit the filter).
- In that weak mode, sockets are still refused by the kernel (`_socket` included).
- A program sees only the Python runtime (not the project, the home folder, or anything in /var/tmp),
  cannot reach a Unix socket on disk, holds no descriptor but stdin/stdout/stderr (not the supervisor's
  result pipe), and its processes together are held to the memory limit.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sweeper.core.paths import PROJECT_ROOT
from sweeper.evals.problems import load_humaneval
from sweeper.evals.sandbox import Sandbox, SandboxLimits, WeakSandboxError
from sweeper.evals.sandbox_guard import seccomp_program

TIMEOUT_S = 2.0

# Runs in a fresh interpreter: refuse what Docker's default profile refuses, then run the given code.
DOCKER_LIKE = """
import sys
from sweeper.evals import sandbox_guard
program = sandbox_guard.seccomp_program(dict.fromkeys(("unshare", "setns", "mount", "umount2", "pivot_root"), 1),
                                        deny_namespace_clones=True)
sandbox_guard.install_seccomp(program)
"""


def _docker_like(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DOCKER_LIKE + code, *args], capture_output=True, text=True,
                          timeout=120, cwd=PROJECT_ROOT, env={**os.environ, **(env or {})})


needs_seccomp = pytest.mark.skipif(seccomp_program({}, deny_namespace_clones=False) is None,
                                   reason="no seccomp filter for this machine's architecture")


@pytest.fixture(scope="module")
def raw():
    box = Sandbox(SandboxLimits(timeout_s=TIMEOUT_S), workers=2, screen=False)
    try:
        box.start()
    except WeakSandboxError as err:
        pytest.skip(f"this kernel refuses the sandbox's minimum isolation: {err}")
    with box:
        yield box


def run_one(box: Sandbox, program: str):
    return box.run([program], description=None)[0]


@needs_seccomp
def test_refuses_to_score_below_the_minimum_and_says_how_to_fix_it():
    done = _docker_like(
        "from sweeper.evals.sandbox import Sandbox, WeakSandboxError\n"
        "try:\n    Sandbox(workers=1).start()\nexcept WeakSandboxError as err:\n    print('REFUSED', err)\n"
        "else:\n    print('SCORED')\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("REFUSED"), done.stdout
    message = done.stdout
    for needed in ("PID namespace", "private read-only root", "Operation not permitted", "--allow-weak-sandbox",
                   "--cap-add=SYS_ADMIN", "seccomp=unconfined", "SWEEPER_ALLOW_WEAK_SANDBOX"):
        assert needed in message, needed


@needs_seccomp
def test_the_cli_refuses_then_scores_with_the_opt_in(tmp_path):
    generations = tmp_path / "generations.json"
    generations.write_text(json.dumps([[p.prompt + p.canonical_solution] for p in load_humaneval()]))
    command = ("from sweeper.cli.main import main\nsys.argv = ['sweeper', 'eval', 'score', '--task', 'humanevalsynthesize', "
               "'--generations', sys.argv[1]] + sys.argv[2:]\nmain()\n")
    refused = _docker_like(command, str(generations))
    assert refused.returncode == 2 and "--allow-weak-sandbox" in refused.stderr, refused.stderr[-2000:]
    scored = _docker_like(command, str(generations), "--allow-weak-sandbox")
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert "100.00%" in scored.stdout and "sandbox below the minimum" in scored.stdout
    by_env = _docker_like(command, str(generations), "--json", env={"SWEEPER_ALLOW_WEAK_SANDBOX": "1"})
    assert by_env.returncode == 0, by_env.stderr[-2000:]
    settings = json.loads(by_env.stdout)["settings"]["sandbox"]
    assert any("private read-only root" in need for need in settings["below_minimum"])


def _connected(server: socket.socket) -> bool:
    """Whether anyone connected to a listening socket (the kernel completes connections unaccepted)."""
    server.setblocking(False)
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return False
    return True


@needs_seccomp
def test_weak_mode_still_refuses_sockets_even_through__socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        done = _docker_like(
            "import json\nfrom sweeper.evals.sandbox import Sandbox, SandboxLimits\n"
            "programs = [\n"
            f"    'import _socket\\ns = _socket.socket()\\ns.settimeout(1)\\ns.connect((\"127.0.0.1\", {port}))',\n"
            f"    'import socket\\nsocket.create_connection((\"127.0.0.1\", {port}), timeout=1)',\n"
            "]\n"
            "with Sandbox(SandboxLimits(timeout_s=3), workers=1, allow_weak=True, screen=False) as box:\n"
            "    print(json.dumps({'isolation': box.isolation, 'passed': [o.passed for o in box.run(programs, None)]}))\n"
        )
        connected = _connected(server)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "pid namespace" not in result["isolation"]  # the simulation took
    assert result["passed"] == [False, False]
    assert not connected


def test_a_program_sees_only_the_python_runtime(raw):
    secret_dir = Path(tempfile.mkdtemp(dir="/var/tmp"))
    secret = secret_dir / "token"
    secret.write_text("hf_secret")
    try:
        for path in (secret, PROJECT_ROOT / "pyproject.toml", Path.home() / ".bashrc", Path("/etc/passwd")):
            if path.exists():
                outcome = run_one(raw, f"open({str(path)!r}).read()")
                assert not outcome.passed and "FileNotFoundError" in outcome.detail, (path, outcome)
        listing = run_one(raw, f"import os\nprint(sorted(os.listdir({str(PROJECT_ROOT)!r})))")
        if listing.passed:  # the project folder exists in the root only where the runtime lives under it
            assert "pyproject.toml" not in listing.detail and "sweeper" not in listing.detail
        # ... but it has what programs need: the stdlib, numpy, /dev/null, a writable /tmp
        assert run_one(raw, "import fractions, numpy, os\nopen(os.devnull, 'w').write('x')\n"
                            "open('/tmp/x', 'w').write('y')").passed
        assert not run_one(raw, "open('/usr/evil', 'w')").passed  # and it is read-only
    finally:
        secret.unlink()
        secret_dir.rmdir()


def test_a_unix_socket_on_disk_is_unreachable(raw):
    folder = Path(tempfile.mkdtemp(dir="/var/tmp"))
    path = folder / "service.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    try:
        for program in (f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(path)!r})",
                        f"import _socket\ns = _socket.socket(_socket.AF_UNIX)\ns.connect({str(path)!r})"):
            assert not run_one(raw, program).passed
        connected = _connected(server)
    finally:
        server.close()
        path.unlink()
        folder.rmdir()
    assert not connected


def test_the_program_holds_no_descriptor_of_the_supervisor(raw):
    fds = "import os\nfds = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\nassert fds[:3] == [0, 1, 2] and len(fds) == 4, fds"
    assert run_one(raw, fds).passed
    forged = json.dumps({"status": "passed", "detail": "", "seconds": 0.0})
    forge = f"import os\nfor fd in range(3, 1024):\n    try:\n        os.write(fd, {forged!r}.encode())\n    except OSError:\n        pass\nassert False"
    outcome = run_one(raw, forge)
    assert outcome.status == "failed" and "AssertionError" in outcome.detail


def test_memory_limit_holds_for_the_whole_tree():
    """3 children of 300 MB each against a 512 MB limit: each is under its own RLIMIT_AS, together not."""
    program = (
        "import posix, time\nchildren = []\nfor _ in range(3):\n    pid = posix.fork()\n    if pid == 0:\n"
        "        block = b'x' * (300 * 2**20)\n        time.sleep(1.5)\n        raise SystemExit\n    children.append(pid)\n"
        "codes = [posix.waitstatus_to_exitcode(posix.waitpid(pid, 0)[1]) for pid in children]\n"
        "assert all(code >= 0 for code in codes), codes  # none was killed\nprint('held 900 MB')\n"
    )
    with Sandbox(SandboxLimits(timeout_s=8.0, memory_mb=512), workers=1, screen=False, allow_weak=True) as box:
        if "memory cgroup" not in box.isolation:
            pytest.skip("no memory cgroup on this machine (not root, or no writable memory hierarchy)")
        outcome = box.run([program], description=None)[0]
        assert not outcome.passed, outcome
        assert outcome.status == "memory_limit", outcome
        assert box.run(["x = b'x' * (100 * 2**20)"], description=None)[0].passed  # and the next program runs
