"""The kernel features the sandbox is made of (standard library only; used by `sandbox_worker`).

Namespaces, the private read-only root, cgroups, capabilities and rlimits, each a small function over
ctypes and /proc; what each contains, and what is relied on where the kernel refuses it, is described
in `sandbox_worker`'s docstring.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import resource
import select
import sys
import sysconfig
import time
from collections.abc import Callable

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_CAPBSET_DROP, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 24, 4, 38
SYS_MOUNT_SETATTR = 442  # same number on every Linux architecture (syscall added in 5.12)
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
MNT_DETACH = 2
CAPABILITY_VERSION_3 = 0x20080522
# Extension modules of CPython's own test suite: raw memory access and crash helpers. The private root
# covers each with an empty file, so that no route at all (not even `_imp.create_dynamic`) loads them.
HIDDEN_EXTENSIONS = ("_testcapi", "_testinternalcapi", "_testbuffer", "_testmultiphase", "_testsinglephase",
                     "_testimportmultiple", "_testclinic", "_xxsubinterpreters", "_xxinterpchannels",
                     "_xxtestfuzz", "_ctypes_test", "xxlimited", "xxlimited_35", "xxsubtype")
SYSTEM_DIRS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")  # directories or symlinks into /usr
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")

SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}  # by machine (glibc has no wrapper)

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


def unshare(flags: int, what: str) -> None:
    _check(libc.unshare(flags), f"unshare({what})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def encode(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    _check(libc.mount(encode(source), target.encode(), encode(fstype), flags, encode(data)), f"mount {target}")


def _map_own_ids() -> None:
    """Map our uid/gid to themselves in the user namespace just entered (allowed without privilege)."""
    uid, gid = os.geteuid(), os.getegid()
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


# -- the worker's own isolation (once per worker) ---------------------------------------------------

def enter_worker_namespaces() -> bool:
    """New network + mount namespaces for W (and so for everything it forks). As root this needs
    CAP_SYS_ADMIN; without it (a container with no extra capabilities), or when not root, a user
    namespace provides it. Returns whether a user namespace was needed; raises OSError when refused."""
    flags = CLONE_NEWNET | CLONE_NEWNS
    if os.geteuid() == 0:
        try:
            unshare(flags, "CLONE_NEWNET | CLONE_NEWNS")
            return False
        except OSError:
            pass
    unshare(CLONE_NEWUSER | flags, "CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS")
    _map_own_ids()
    return True


def library_paths() -> list[str]:
    """The Python runtime's library folders: stdlib, lib-dynload, site-packages (of the venv and of
    its base); not the other entries of sys.path (an editable install puts the project there)."""
    paths = set()
    for base in ({}, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        scheme = sysconfig.get_paths(vars=base)
        paths.update(scheme[key] for key in ("stdlib", "platstdlib", "purelib", "platlib"))
    paths.update(p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages"))
    kept: list[str] = []  # as the paths are spelled (sys.path's spelling is what imports resolve)
    for path in sorted(os.path.abspath(p) for p in paths if os.path.isdir(p)):
        if not any(path == k or path.startswith(k + os.sep) for k in kept):
            kept.append(path)
    return kept


def make_readonly(target: str, attrs: int) -> None:
    attr = MountAttr(attr_set=attrs)
    if libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, target.encode(), AT_RECURSIVE, ctypes.byref(attr),
                    ctypes.sizeof(attr)) == 0:
        return
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | (MS_NOSUID if attrs & MOUNT_ATTR_NOSUID else 0) | (
        MS_NODEV if attrs & MOUNT_ATTR_NODEV else 0)
    mount(None, target, None, flags)  # kernels before 5.12: the top mount only


def enter_private_root(in_user_namespace: bool) -> list[tuple[str, str]]:
    """Pivot W into a fresh root that holds only what a program needs, all read-only (a new mount
    namespace must have been entered). Built once per worker; S and P inherit it.

    Returns (copy, path) for the libraries that live under /tmp (a venv made there): S's private /tmp
    covers them, so a second read-only view of each, at `copy`, lets S put them back."""
    libraries = library_paths()
    under_tmp = [path for path in libraries if path == "/tmp" or path.startswith("/tmp/")]
    system_dirs = [f"/{name}" for name in SYSTEM_DIRS if os.path.isdir(f"/{name}") and not os.path.islink(f"/{name}")]
    links = {f"/{name}": os.readlink(f"/{name}") for name in SYSTEM_DIRS if os.path.islink(f"/{name}")}
    files = [path for path in SYSTEM_FILES if os.path.exists(path)]
    devices = [path for path in DEVICES if os.path.exists(path)]
    folders = [f for lib in libraries for f in (lib, os.path.join(lib, "lib-dynload")) if os.path.isdir(f)]
    hidden = [os.path.join(f, name) for f in folders for name in os.listdir(f) if name.split(".")[0] in HIDDEN_EXTENSIONS]
    # Open every source first: the new root is built on /tmp, which may hold some of them.
    sources = {path: os.open(path, os.O_PATH | os.O_CLOEXEC)
               for path in ["/usr", *system_dirs, *libraries, *files, *devices]}
    try:
        mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
        new = "/tmp"
        mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for path, fd in sources.items():
            target = new + path
            is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
            os.makedirs(target if is_dir else os.path.dirname(target), exist_ok=True)
            if not is_dir:
                open(target, "a").close()
            mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
            device = path in devices
            make_readonly(target, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | (0 if device else MOUNT_ATTR_NODEV))
    finally:
        for fd in sources.values():
            os.close(fd)
    for link, destination in links.items():
        os.symlink(destination, new + link)
    open(f"{new}/.empty", "w").close()
    for path in hidden:
        mount(f"{new}/.empty", new + path, None, MS_BIND)
    kept = [(f"/.tmp-library-{i}", path) for i, path in enumerate(under_tmp)]
    for copy, path in kept:
        os.makedirs(new + copy)
        mount(new + path, new + copy, None, MS_BIND | MS_REC)
    for folder in ("proc", "tmp", ".old"):
        os.makedirs(f"{new}/{folder}", exist_ok=True)
    if in_user_namespace:
        # An unprivileged proc mount (P's own) needs a fully visible proc in its mount namespace: the
        # host's, which P's covers before the program runs.
        mount("/proc", f"{new}/proc", None, MS_BIND | MS_REC)
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(0, f"pivot_root: unknown machine {platform.machine()}")
    _check(libc.syscall(number, new.encode(), f"{new}/.old".encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old", MNT_DETACH), "umount the old root")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return kept


class Cgroup:
    """A cgroup of this worker (one program runs at a time), held as directory descriptors so that it
    stays usable after the pivot into the private root."""

    PREFIX = "sweeper-sandbox-"

    def __init__(self, parent_fd: int, name: str, fd: int, v2: bool, controllers: list[str]):
        self.parent_fd, self.name, self.fd, self.v2, self.controllers = parent_fd, name, fd, v2, controllers

    @classmethod
    def create(cls, folder: str, v2: bool, settings: dict[str, str], optional: tuple[str, ...],
               controllers: list[str]) -> Cgroup | None:
        _remove_stale_cgroups(folder)
        name = f"{cls.PREFIX}{os.getpid()}"
        path = os.path.join(folder, name)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            return None
        try:
            for key, value in settings.items():
                try:
                    with open(os.path.join(path, key), "w") as f:
                        f.write(value)
                except OSError:
                    if key not in optional:
                        raise
            return cls(os.open(folder, os.O_RDONLY | os.O_DIRECTORY), name,
                       os.open(path, os.O_RDONLY | os.O_DIRECTORY), v2, controllers)
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            return None

    def join(self) -> None:
        """Move the calling process into this cgroup ("0" = the writer, in every PID namespace)."""
        fd = os.open("cgroup.procs", os.O_WRONLY, dir_fd=self.fd)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    def oom_kills(self) -> int:
        if "memory" not in self.controllers:
            return 0
        try:
            fd = os.open("memory.events" if self.v2 else "memory.oom_control", os.O_RDONLY, dir_fd=self.fd)
            try:
                text = os.read(fd, 4096).decode()
            finally:
                os.close(fd)
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
            os.rmdir(self.name, dir_fd=self.parent_fd)
            os.close(self.parent_fd)


def _remove_stale_cgroups(folder: str) -> None:
    """Cgroups of workers that were killed before they could remove theirs (rmdir only succeeds on
    an empty cgroup, so a live one is never touched)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            pid = name.removeprefix(Cgroup.PREFIX)
            if name.startswith(Cgroup.PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(folder, name))


def _cgroup_places() -> dict[str, list[tuple[str, bool]]]:
    """controller -> the folders a cgroup for it can be made in, best first, each with "is v2": this
    process's own cgroup (so that limits set above it, a container's say, still apply), then the root
    of the hierarchy (on cgroup v2 the own cgroup usually cannot delegate: it holds processes)."""
    mounts: list[tuple[str, str, str, str]] = []  # (root, mountpoint, fstype, super options)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                mounts.append((fields[3], fields[4], tail[0], tail[2]))
    memberships: dict[str, str] = {}  # controller ("" for v2) -> path
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                memberships[controller] = path
    places: dict[str, list[tuple[str, bool]]] = {}
    for controller in ("pids", "memory"):
        for root, mountpoint, fstype, options in mounts:
            v2 = fstype == "cgroup2"
            path = memberships.get("" if v2 else controller)
            if path is None or (not v2 and controller not in options.split(",")):
                continue
            own = os.path.normpath(os.path.join(mountpoint, os.path.relpath(path, root)))
            usable = [(folder, v2) for folder in dict.fromkeys([own, mountpoint])
                      if not v2 or controller in _read_words(os.path.join(folder, "cgroup.subtree_control"))]
            if usable:
                places[controller] = usable
                break
    return places


def _read_words(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return []


def make_cgroups(limits: dict) -> list[Cgroup]:
    """As root, a pids cgroup (pids.max) and a memory cgroup (the program's whole tree under
    memory_mb, no swap) for this worker's programs; none where no writable hierarchy exists."""
    if os.geteuid() != 0:
        return []
    try:
        places = _cgroup_places()
    except OSError:
        return []
    memory = str(limits["memory_mb"] * 2**20)
    settings = {  # controller -> {v2: (settings, optional ones)}
        "pids": {v2: ({"pids.max": str(limits["max_processes"])}, ()) for v2 in (False, True)},
        "memory": {True: ({"memory.max": memory, "memory.swap.max": "0"}, ("memory.swap.max",)),
                   False: ({"memory.limit_in_bytes": memory, "memory.memsw.limit_in_bytes": memory},
                           ("memory.memsw.limit_in_bytes",))},
    }
    groups: list[Cgroup] = []
    while places:
        controller = next(iter(places))
        made = None
        for folder, v2 in places[controller]:
            # On v2 one cgroup holds every controller that can live in the same folder.
            together = [c for c, usable in places.items() if (folder, v2) in usable] if v2 else [controller]
            wanted = {k: v for c in together for k, v in settings[c][v2][0].items()}
            optional = tuple(k for c in together for k in settings[c][v2][1])
            made = Cgroup.create(folder, v2, wanted, optional, together)
            if made is not None:
                groups.append(made)
                break
        for c in made.controllers if made is not None else [controller]:
            places.pop(c, None)
    return groups



# -- the program's process P ---------------------------------------------------------------------------

def drop_capabilities() -> None:
    """No capability, none to regain by exec (empty bounding set; no_new_privs); not dumpable, so that
    nothing the program starts can ptrace it or open its /proc/<pid>/mem.

    As root this is what stops P from undoing the read-only mounts or leaving its namespaces."""
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    header = CapHeader(version=CAPABILITY_VERSION_3, pid=0)
    data = (CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")
    _check(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(dumpable)")


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
    """Fallback when neither a network namespace nor seccomp could be had: refuse to make sockets in
    Python (both `socket` and the `_socket` it wraps; a program with ctypes would still get around it,
    which the audit hook refuses)."""
    import _socket
    import socket

    def refuse(*_args, **_kwargs):
        raise PermissionError("network access is disabled in the sweeper sandbox")

    for module in (socket, _socket):
        for name in ("socket", "SocketType", "create_connection", "socketpair", "fromfd", "create_server"):
            if hasattr(module, name):
                setattr(module, name, refuse)


def close_fds_except(keep: set[int]) -> None:
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 16)


# -- reading a program's output ------------------------------------------------------------------------

TAIL_BYTES = 4096  # output kept per program for its outcome's detail


def read_output(pidfd: int, out_fd: int, deadline: float, max_output_bytes: int,
                on_exit: Callable[[], None] = lambda: None) -> tuple[str | None, bytes, int]:
    """Read a process's output (its pipe, `out_fd`) until it has exited (`pidfd` readable) and the pipe is
    closed, or until the `deadline` (time.monotonic) or past `max_output_bytes`. `on_exit` runs when it
    exits (to kill what it left holding the pipe open). Returns (why reading stopped early: "timeout",
    "output_limit" or None; the last TAIL_BYTES of output; the bytes read). The caller kills and reaps."""
    tail, total = b"", 0
    exited = eof = False
    while not (exited and eof):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout", tail, total
        watched = ([] if eof else [out_fd]) + ([] if exited else [pidfd])
        ready, _, _ = select.select(watched, [], [], remaining)
        if pidfd in ready:
            exited = True
            on_exit()
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
            if total > max_output_bytes:
                return "output_limit", tail, total
    return None, tail, total
