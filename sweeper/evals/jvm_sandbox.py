"""Compile and run untrusted Java programs (HumanEvalPack-Java: the model's `class Solution` + the test's
`public class Main`) in bubblewrap, and say which ones passed.

What it does, per program, as bigcode-evaluation-harness's code_eval_octopack does for Java: write the
program to `Main.java` in a fresh directory, `javac Main.java`, then `java -cp . Main`; the program passes
when both exit 0 within the time limit (the harness's 10 s, here covering compile and run together). A
compile error is a failure. As in the harness, `java` runs without `-ea`, so a Java `assert` statement is
not checked (HumanEvalPack's tests throw `AssertionError` themselves; Java/151 also has an inert `assert`).
What it does not do: run any other language, screen the source, or judge anything but exit statuses.

Threat model. A program is hostile: it may try to look as if it passed, to reach the network or this
machine's files, or to outlive its time. So:
- The verdict is decided outside the sandbox, by the exit status of `bwrap` (which is the exit status of
  `javac`, then of `java`), as the kernel reports it. Nothing the program prints decides it; its output is
  only kept (the end of it) for the record. One label reads the output: a non-zero exit whose output names
  `java.lang.OutOfMemoryError` is reported as `memory_limit` instead of `failed` (a program can fake that
  line, which turns one failure into another, never into a pass).
- Each of `javac` and `java` runs in its own bubblewrap sandbox (two invocations; no shell, and the
  program's text only ever reaches a file, never a command line): new user, PID, network, IPC, UTS and
  cgroup namespaces, no further user namespaces inside, no capabilities and no_new_privs, a new session
  (no terminal injection), a clean environment. Its filesystem is a read-only root holding only /usr, the
  JDK's own /etc/java-* folder (both read-only; and the JDK's home where it is not under /usr), a read-only /proc of its own PID namespace, a minimal
  read-only /dev, a private size-limited /tmp (tmpfs) and its work directory at /work: writable for
  `javac` (which runs no program code: annotation processing is off), read-only for `java`. No /etc
  otherwise (no /etc/passwd), no home, no project folder, no sockets of this machine; only a loopback
  interface (connecting out fails with "Network is unreachable").
- Never as root: run as root, sweeper starts bwrap as the unprivileged `nobody` (uid 65534). As root,
  the sandbox's user would be this machine's root (uid 0) without capabilities, and that is not
  enough: /proc/sys files are writable by uid 0 without any capability (a sandbox could set
  kernel.core_pattern, a known escape; /proc is read-only here as well) and RLIMIT_NPROC does not apply
  to uid 0. A machine that refuses unprivileged user namespaces is refused (see `HOW_TO_GET_IT`).
- Processes and threads: at most `MAX_TASKS` together per sandbox (RLIMIT_NPROC, counted in the
  sandbox's own user namespace, so parallel programs do not share it); fork and thread bombs stop there.
  At the time limit (or past the output limit) bwrap's process group is killed with SIGKILL; bwrap's
  init, the sandbox's PID 1, dies with it (--die-with-parent) and the kernel kills every process left in
  the PID namespace. No core dumps (RLIMIT_CORE 0).
- Not contained, the harness's own limits (its rule is the exit status): a program that calls
  `System.exit(0)` or `Runtime.halt(0)` before the test's checks (say in a static initializer of
  `Solution`, run when the test first uses it) passes, and a top-level class of the program shadows an
  on-demand import of the test (a `class Arrays` whose `asList` returns an empty list makes
  HumanEvalPack's `correct.contains(false)` vacuous). Both were checked to pass here.
- Not contained: memory beyond the Java heap. `-Xmx` bounds the heap (an OutOfMemoryError is a failure),
  but not native memory (thread stacks, metaspace, `sun.misc.Unsafe.allocateMemory`, a JVM the program
  launches with its own flags), and there is no memory cgroup: a program can take this machine's memory
  until the time limit (the process limit caps it at a few JVMs). No seccomp filter either: a program may
  write a shared library to /tmp and `System.load` it, so native code gets the kernel's whole syscall
  surface inside the namespaces (a kernel bug is an escape, as for any namespace sandbox). CPU time is
  bounded by the wall clock only.

Identical programs are executed once (`JvmSandbox.run` caches outcomes by program text for the life of
the sandbox), programs run in parallel on threads, one JVM each; a JVM needs ~0.1 s to start and `javac`
~0.6 s to compile a HumanEval program.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import PositiveFloat, PositiveInt

from sweeper.core.config import Frozen
from sweeper.core.errors import UserError
from sweeper.evals.sandbox import Outcome, ProgramRunner, Status
from sweeper.evals.sandbox_kernel import read_output

NOBODY = 65534  # the uid and gid bwrap runs as when sweeper runs as root
MAX_TASKS = 256  # processes + threads of one sandbox (RLIMIT_NPROC); an idle JVM has ~20 threads
WORKDIR = "/work"  # the program's directory as the sandbox sees it
# Root entries that are (or link into) the system's binaries and libraries: the dynamic loader is
# /lib64/ld-linux-x86-64.so.2 even with a merged /usr.
SYSTEM_DIRS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")
DETAIL_CHARS = 1000  # of that output, in an outcome's detail
MIN_BWRAP = (0, 8, 0)  # --disable-userns
PROBE_TIMEOUT_S = 60.0  # for `java -version` in a first sandbox, at start()
HOW_TO_GET_IT = (
    "bubblewrap needs unprivileged user namespaces (as root too: it runs as nobody): sysctl "
    "user.max_user_namespaces > 0 and, where they exist, kernel.unprivileged_userns_clone=1 and "
    "kernel.apparmor_restrict_unprivileged_userns=0; in a Docker container start it with "
    "--security-opt seccomp=unconfined --security-opt apparmor=unconfined (cluster.yaml: docker.run_options)."
)


class JvmLimits(Frozen):
    """Per-program limits. The wall clock counts from the start of `javac` to the exit of `java`."""

    timeout_s: PositiveFloat = 10.0  # javac + java together (the harness's LANGUAGE_TO_TIMEOUT["java"])
    heap_mb: PositiveInt = 512  # -Xmx of java (-J-Xmx of javac)
    max_output_bytes: PositiveInt = 1 * 2**20  # stdout + stderr of javac and java together
    tmpfs_mb: PositiveInt = 64  # size of the private /tmp, the one place a program may write


@dataclass(frozen=True)
class Jdk:
    home: str  # resolved: /usr/lib/jvm/java-17-openjdk-amd64
    etc_dirs: tuple[str, ...]  # the /etc/java-* folders its configuration links point into

    @property
    def javac(self) -> str:
        return os.path.join(self.home, "bin", "javac")

    @property
    def java(self) -> str:
        return os.path.join(self.home, "bin", "java")


@dataclass(frozen=True)
class _Phase:
    stopped: Status | None  # "timeout" or "output_limit" when the sandbox was killed
    exit_code: int
    tail: bytes
    output_bytes: int


def find_jdk() -> Jdk:
    """The JDK of the `javac` on PATH (its `java` comes from the same home)."""
    javac = shutil.which("javac")
    if javac is None:
        raise UserError("javac not found on PATH: the JVM sandbox needs a JDK (apt-get install openjdk-17-jdk-headless)")
    home = os.path.dirname(os.path.dirname(os.path.realpath(javac)))
    if not os.access(os.path.join(home, "bin", "java"), os.X_OK):
        raise UserError(f"{home}: this JDK has javac but no bin/java (apt-get install openjdk-17-jdk-headless)")
    # Debian's JDK keeps its configuration in /etc/java-<version>-openjdk, linked from conf/ and lib/.
    etc_dirs = set()
    for folder, dirs, files in os.walk(home):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                parts = Path(os.path.realpath(path)).parts
                if len(parts) > 2 and parts[1] == "etc" and parts[2].startswith("java"):
                    etc_dirs.add(os.path.join("/etc", parts[2]))
    return Jdk(home, tuple(sorted(etc_dirs)))


class JvmSandbox(ProgramRunner):
    """Runs Java programs, each in two bubblewrap sandboxes (javac, then java). Use as a context
    manager, or call `close()`; `run` starts it when needed."""

    def __init__(self, limits: JvmLimits | None = None, workers: int | None = None):
        super().__init__(workers or os.cpu_count() or 1)
        self.limits = limits or JvmLimits()
        self._started = False
        self._bwrap = ""
        self._prlimit = ""
        self._jdk: Jdk | None = None
        self._version = ""
        self._root: str | None = None  # holds one fresh directory per program

    def __enter__(self) -> JvmSandbox:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def start(self) -> None:
        """Find bwrap, prlimit and the JDK, and run `java -version` in a sandbox: a machine where bwrap
        cannot build it raises a one-line UserError saying what is missing and how to get it."""
        if self._started:
            return
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise UserError("bwrap (bubblewrap) not found on PATH: the JVM sandbox needs it (apt-get install bubblewrap)")
        # prlimit runs inside the sandbox, which sees only /usr of this machine.
        prlimit = shutil.which("prlimit", path="/usr/bin")
        if prlimit is None:
            raise UserError("/usr/bin/prlimit not found: the JVM sandbox needs it (apt-get install util-linux)")
        version = _bwrap_version(bwrap)
        if version is not None and version < MIN_BWRAP:
            raise UserError(f"{bwrap} is bubblewrap {'.'.join(map(str, version))}; the JVM sandbox needs "
                            f"{'.'.join(map(str, MIN_BWRAP))} or newer (Debian 12, Ubuntu 24.04: apt-get install bubblewrap)")
        jdk = find_jdk()
        self._bwrap, self._prlimit, self._jdk = bwrap, prlimit, jdk
        self._root = tempfile.mkdtemp(prefix="sweeper-jvm-")
        try:
            if self._as_root:
                os.chmod(self._root, 0o711)  # nobody may enter its own directories, not list them
            workdir = self._new_workdir()
            probe = self._sandboxed(workdir, [jdk.java, "-Xmx64m", "-XX:-UsePerfData", "-version"], writable=False,
                                    deadline=time.monotonic() + PROBE_TIMEOUT_S, output_left=self.limits.max_output_bytes)
            shutil.rmtree(workdir, ignore_errors=True)
        except OSError as err:  # bwrap not executable (for nobody, when root), no right to change identity, ...
            self.close()
            who = f" as uid {NOBODY}" if self._as_root else ""
            raise UserError(f"cannot start {bwrap}{who} for the JVM sandbox: {err}") from None
        except BaseException:
            self.close()
            raise
        text = probe.tail.decode(errors="replace")
        version = re.search(r'version "([^"]+)"', text)
        if probe.stopped or probe.exit_code != 0 or version is None:
            self.close()
            said = text.strip().splitlines()[0] if text.strip() else f"exit status {probe.exit_code}"
            raise UserError(f"bubblewrap cannot build the JVM sandbox here ({said}). {HOW_TO_GET_IT}")
        self._version = version.group(1)
        self._started = True

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        self._started = False

    @property
    def isolation(self) -> list[str]:
        """What is applied to every program (module docstring), for the record."""
        identity = f"unprivileged uid {NOBODY} (sweeper is root)" if self._as_root else f"uid {os.geteuid()} (sweeper's)"
        return [
            "bubblewrap", "user/pid/net/ipc/uts/cgroup namespaces", "no nested user namespaces",
            "no capabilities, no_new_privs", "new session", "clean environment", identity,
            "read-only root with only /usr and the JDK's /etc/java-* (read-only)", "read-only /proc and /dev",
            f"private /tmp ({self.limits.tmpfs_mb} MB tmpfs)", "work dir read-only while the program runs",
            f"process limit ({MAX_TASKS} tasks, RLIMIT_NPROC)", "no core dumps",
            f"heap limit ({self.limits.heap_mb} MB, -Xmx; native memory not bounded)",
            "process group and PID namespace killed at the time limit",
        ]

    def settings(self) -> dict:
        """What a score depends on, for the record: the limits, the isolation and the JDK."""
        self.start()
        return {**self.limits.model_dump(), "isolation": self.isolation,
                "runner": f"javac + java (OpenJDK {self._version})"}

    def _run_one(self, program: str) -> Outcome:
        """javac, then java, in a fresh directory; one deadline and one output budget for both."""
        started = time.monotonic()
        deadline = started + self.limits.timeout_s
        workdir = None
        try:
            workdir = self._new_workdir()
            # errors="replace": a lone surrogate in a model's text would otherwise stop the whole run.
            Path(workdir, "Main.java").write_bytes(program.encode("utf-8", errors="replace"))
            heap = f"{self.limits.heap_mb}m"
            assert self._jdk is not None
            # -proc:none: no annotation processor runs, so javac executes nothing of the program. C1 only
            # (TieredStopAtLevel=1) makes javac ~30% faster on one small file; its output is the same.
            compiled = self._sandboxed(
                workdir, [self._jdk.javac, f"-J-Xmx{heap}", "-J-XX:-UsePerfData", "-J-XX:TieredStopAtLevel=1",
                          "-proc:none", "Main.java"],
                writable=True, deadline=deadline, output_left=self.limits.max_output_bytes)
            if compiled.stopped is None and compiled.exit_code == 0:
                ran = self._sandboxed(
                    workdir, [self._jdk.java, f"-Xmx{heap}", "-XX:-UsePerfData", "-cp", ".", "Main"],
                    writable=False, deadline=deadline, output_left=self.limits.max_output_bytes - compiled.output_bytes)
                return self._outcome(ran, time.monotonic() - started)
            if compiled.stopped is None and compiled.tail.startswith(b"bwrap:"):
                # javac runs no program code, so this line is bwrap's own: the sandbox, not the program, failed.
                return Outcome("error", _detail(compiled.tail), time.monotonic() - started)
            return self._outcome(compiled, time.monotonic() - started, compiling=True)
        except OSError as err:
            return Outcome("error", f"sandbox setup failed: {err}", time.monotonic() - started)
        finally:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)

    def _outcome(self, phase: _Phase, seconds: float, compiling: bool = False) -> Outcome:
        output = _detail(phase.tail)
        if phase.stopped is not None:
            why = (f"past the time limit of {self.limits.timeout_s} s" if phase.stopped == "timeout"
                   else f"more than {self.limits.max_output_bytes} bytes of output")
            killed = f"killed during {'javac' if compiling else 'java'}: {why} (javac + java)"
            return Outcome(phase.stopped, f"{output}\n{killed}".strip(), seconds)
        if phase.exit_code == 0:
            return Outcome("passed", output, seconds)
        detail = output or f"exit status {phase.exit_code}"
        if compiling:
            return Outcome("failed", f"compile error: {detail}", seconds)
        return Outcome("memory_limit" if b"java.lang.OutOfMemoryError" in phase.tail else "failed", detail, seconds)

    def _new_workdir(self) -> str:
        assert self._root is not None
        workdir = tempfile.mkdtemp(dir=self._root)
        if self._as_root:
            os.chown(workdir, NOBODY, NOBODY)
        return workdir

    def _bwrap_argv(self, workdir: str, command: list[str], writable: bool) -> list[str]:
        assert self._jdk is not None
        mounts = ["--ro-bind", "/usr", "/usr"]
        for name in SYSTEM_DIRS:
            path = "/" + name
            if os.path.islink(path):
                mounts += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):  # a system without a merged /usr
                mounts += ["--ro-bind", path, path]
        if not self._jdk.home.startswith("/usr/"):
            mounts += ["--ro-bind", self._jdk.home, self._jdk.home]
        for etc in self._jdk.etc_dirs:
            mounts += ["--ro-bind", etc, etc]
        return [
            self._bwrap,
            "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
            "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox",
            *mounts,
            "--proc", "/proc", "--remount-ro", "/proc",
            "--dev", "/dev", "--remount-ro", "/dev",
            "--size", str(self.limits.tmpfs_mb * 2**20), "--tmpfs", "/tmp",
            "--bind" if writable else "--ro-bind", workdir, WORKDIR,
            "--remount-ro", "/",  # last: every mount point above is made in the root first
            "--chdir", WORKDIR, "--clearenv", "--setenv", "PATH", "/usr/bin", "--setenv", "HOME", WORKDIR,
            # UTF-8 source and default charset, as on a usual harness machine (POSIX would make javac ASCII).
            "--setenv", "LANG", "C.UTF-8",
            "--", self._prlimit, f"--nproc={MAX_TASKS}", "--core=0", "--", *command,
        ]

    def _sandboxed(self, workdir: str, command: list[str], writable: bool, deadline: float, output_left: int) -> _Phase:
        """Run `command` in a sandbox on `workdir`; read its output until it exits, killing it at the
        deadline or past `output_left` bytes of output."""
        identity = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if self._as_root else {}
        proc = subprocess.Popen(
            self._bwrap_argv(workdir, command, writable), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env={}, cwd="/", start_new_session=True, **identity,
        )
        assert proc.stdout is not None
        pidfd = os.pidfd_open(proc.pid)
        try:  # its sandbox (PID namespace) goes with bwrap: the pipe closes once it has exited
            stopped, tail, total = read_output(pidfd, proc.stdout.fileno(), deadline, output_left)
        finally:
            # bwrap is not reaped yet (the group's id cannot be reused): killing the group is safe.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            exit_code = proc.wait()
            os.close(pidfd)
            proc.stdout.close()
        return _Phase(stopped, exit_code, tail, total)


def _bwrap_version(bwrap: str) -> tuple[int, ...] | None:
    """bubblewrap's version ("bubblewrap 0.8.0"), or None where it does not say."""
    try:
        said = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", said)
    return tuple(int(part) for part in found.groups()) if found else None


def _detail(tail: bytes) -> str:
    return tail.decode(errors="replace")[-DETAIL_CHARS:].strip()
