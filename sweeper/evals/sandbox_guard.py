"""What the program's own process P is left with (standard library only; used by `sandbox_worker`).

Installed in P after its isolation and before the program's first statement, in this order:
- `take_exit()`: removes every way to end the process with a chosen status (`os._exit`, `posix._exit`,
  the exec family, and `_imp.create_builtin` / `exec_builtin`, which would make a fresh `posix` with its
  own `_exit`) and returns the one remaining reference, which the runner keeps in a local variable.
- `remove_signal_functions()`: with every signal at its default action (`default_signal_actions()`, set
  once in the worker), no way to install a Python handler, so that nothing can raise an exception into
  the runner asynchronously (a handler raising `SystemExit` at the wrong moment, `interrupt_main()`).
- `seccomp_installer()`: a kernel filter (seccomp BPF) on P and everything it starts: no sockets (of any
  family: network and Unix sockets on disk alike), no exec, no ptrace / process_vm_*, no io_uring
  (which could open sockets around the filter), no new namespaces, no kernel keyrings.
- `install_audit_hook()`: a PEP 578 hook that cannot be removed, refusing the interpreter primitives
  that reach frames or replace code when a program gets to them dynamically, where the static screen
  (`sandbox_screen`) cannot see them: frames (`sys._getframe`, `tb_frame`, `gi_frame`, `cr_frame`,
  `ag_frame`, `sys._current_frames`), tracing and profiling (`sys.settrace`, `sys.setprofile`, new audit
  hooks), the object graph (`gc.get_objects` / `get_referrers` / `get_referents`), new or replaced code
  (`code.__new__`, setting `__code__`, `marshal.loads`), `pickle.find_class` (a universal getattr),
  ctypes, exec and spawn, sockets, and the CPython test modules (`_testcapi`, ...).

With frames unreachable the runner's local reference to `_exit` is unreachable too, so the only way for
P to end with status 0 is to run the program to its end. `sys._getframe` fails with ValueError, its own
"no such frame" error: the standard library's callers (namedtuple, TypeVar, Enum) then fall back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
import struct
import sys

SECCOMP = "seccomp (no sockets, exec, ptrace)"  # the isolation feature's name
EXEC_NAMES = ("execv", "execve", "fexecve", "posix_spawn", "posix_spawnp")
DENIED_EVENTS = frozenset({
    "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile", "sys.addaudithook",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "code.__new__", "marshal.loads", "marshal.load",
    "pickle.find_class", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.forkpty", "subprocess.Popen",
    "setopencodehook", "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
})
# The audited attributes that lead to a frame (the others, `__code__`, `f_code`, `gi_code`, give code).
FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
DENIED_IMPORTS = frozenset({
    "ctypes", "_ctypes", "cffi", "_cffi_backend", "_testcapi", "_testinternalcapi", "_testbuffer",
    "_testmultiphase", "_testsinglephase", "_testimportmultiple", "_testclinic", "_xxsubinterpreters",
    "_xxinterpchannels", "_xxtestfuzz", "_ctypes_test", "_lsprof", "_tracemalloc", "faulthandler",
})

# seccomp (linux/seccomp.h, linux/filter.h, linux/audit.h)
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
EACCES, ENOSYS, EPERM = 13, 38, 1
# (audit arch, syscall numbers) per machine; an unknown machine gets no filter (reported as missing).
SYSCALLS = {
    "x86_64": (0xC000003E, {
        "socket": 41, "execve": 59, "execveat": 322, "ptrace": 101, "process_vm_readv": 310,
        "process_vm_writev": 311, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "unshare": 272, "setns": 308, "clone": 56, "clone3": 435, "keyctl": 250, "add_key": 248,
        "request_key": 249, "mount": 165, "umount2": 166, "pivot_root": 155}),
    "aarch64": (0xC00000B7, {
        "socket": 198, "execve": 221, "execveat": 281, "ptrace": 117, "process_vm_readv": 270,
        "process_vm_writev": 271, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "unshare": 97, "setns": 268, "clone": 220, "clone3": 435, "keyctl": 219, "add_key": 217,
        "request_key": 218, "mount": 40, "umount2": 39, "pivot_root": 41}),
}
PROGRAM_DENIED = ("socket", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
                  "io_uring_setup", "io_uring_enter", "io_uring_register", "unshare", "setns", "keyctl",
                  "add_key", "request_key", "mount", "umount2", "pivot_root")


def take_exit():
    """Remove the process-ending primitives from every module and return `posix._exit`."""
    import _imp
    import _posixsubprocess
    import posix

    exit_ = posix._exit
    for module in (posix, os):
        for name in ("_exit", "abort", *EXEC_NAMES):
            module.__dict__.pop(name, None)
    for name in ("create_builtin", "exec_builtin"):
        _imp.__dict__.pop(name, None)
    _posixsubprocess.__dict__.pop("fork_exec", None)
    subprocess = sys.modules.get("subprocess")
    if subprocess is not None:
        subprocess.__dict__.pop("_fork_exec", None)
    return exit_


def default_signal_actions() -> None:
    """In the worker, once: every signal to its default action (SIGPIPE and SIGXFSZ stay ignored, as
    Python sets them, so that a closed pipe or RLIMIT_FSIZE is an exception rather than a kill). The
    programs inherit this; no Python-level handler (Python's own SIGINT one included) is left."""
    for number in range(1, signal.NSIG):
        if number in (signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE, signal.SIGXFSZ):
            continue
        with contextlib.suppress(OSError, ValueError):  # numbers the C library reserves
            if signal.getsignal(number) not in (signal.SIG_DFL, None):
                signal.signal(number, signal.SIG_DFL)


def remove_signal_functions() -> None:
    """In P: no way to install a handler, change the mask or raise into the main thread."""
    import _signal
    import _thread

    for module in (signal, _signal):
        for name in ("signal", "setitimer", "alarm", "pthread_sigmask", "set_wakeup_fd", "siginterrupt",
                     "raise_signal", "pthread_kill"):
            module.__dict__.pop(name, None)
    _thread.__dict__.pop("interrupt_main", None)


def seccomp_program(denied: dict[str, int], deny_namespace_clones: bool) -> bytes | None:
    """A classic-BPF seccomp filter returning errno `denied[name]` for those syscalls (and for clone with a
    namespace flag), ENOSYS for clone3 (so that the C library falls back to clone, whose flags the
    filter can read), EPERM for any other ABI (x32, i386), and allowing everything else."""
    machine = SYSCALLS.get(platform.machine())
    if machine is None:
        return None
    arch, numbers = machine
    rules = [(numbers[name], SECCOMP_RET_ERRNO | errno) for name, errno in denied.items()]
    if deny_namespace_clones:
        rules.append((numbers["clone3"], SECCOMP_RET_ERRNO | ENOSYS))
    insns: list[tuple[int, int, int, int]] = [
        (BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (BPF_JEQ_K, 1, 0, arch),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        (BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (BPF_JGE_K, 0, 1, 0x40000000),  # x32 syscalls
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
    ]
    for number, action in rules:
        insns += [(BPF_JEQ_K, 0, 1, number), (BPF_RET_K, 0, 0, action)]
    if deny_namespace_clones:
        insns += [
            (BPF_JEQ_K, 0, 3, numbers["clone"]),
            (BPF_LD_W_ABS, 0, 0, 16),  # seccomp_data.args[0], low 32 bits (little-endian): the flags
            (BPF_JSET_K, 0, 1, NAMESPACE_FLAGS),
            (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        ]
    insns.append((BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    return b"".join(struct.pack("=HBBI", *insn) for insn in insns)


def seccomp_installer(program: bytes):
    """A function installing a filter made by `seccomp_program` on the calling process (which needs
    no_new_privs or CAP_SYS_ADMIN); it is inherited by every child and cannot be removed. The ctypes
    objects are built here, once, so that installing costs one prctl. The installer raises OSError
    when the kernel refuses."""
    buffer = ctypes.create_string_buffer(program, len(program))

    class Fprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    fprog = Fprog(len(program) // 8, ctypes.addressof(buffer))
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def install() -> None:
        if prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"seccomp: {os.strerror(errno)}")

    install.keep = (buffer, fprog)  # the filter's memory lives as long as the installer
    return install


def install_seccomp(program: bytes) -> None:
    """Install a filter made by `seccomp_program` on this process (see `seccomp_installer`)."""
    seccomp_installer(program)()


def program_seccomp() -> bytes | None:
    """The filter every sandboxed program runs under (see the module docstring)."""
    return seccomp_program(dict.fromkeys(PROGRAM_DENIED, EACCES), deny_namespace_clones=True)


def install_audit_hook() -> None:
    """Refuse the dynamic routes to frames and code (see the module docstring). Imports then compile
    from source (`marshal.loads` of a .pyc is refused): `sys.pycache_prefix` points nowhere."""
    denied, denied_imports, frame_attributes = DENIED_EVENTS, DENIED_IMPORTS, FRAME_ATTRIBUTES

    def hook(event: str, args: tuple) -> None:
        if event in denied or event[:7] == "ctypes.":
            raise PermissionError(f"sweeper sandbox: {event} is not allowed")
        if event == "sys._getframe":
            raise ValueError("sweeper sandbox: frames are not available")
        if event == "object.__getattr__" and args[1] in frame_attributes:  # code objects may be read
            raise AttributeError(f"sweeper sandbox: {args[1]} is not available")
        if event == "object.__setattr__" and (type(args[1]) is not str or args[1] == "__code__"):
            raise PermissionError("sweeper sandbox: replacing code is not allowed")
        if event == "import" and (type(args[0]) is not str or args[0] in denied_imports):
            raise ImportError(f"sweeper sandbox: import of {args[0]!s} is not allowed")

    sys.pycache_prefix = "/nonexistent/sweeper-sandbox"
    sys.dont_write_bytecode = True
    sys.addaudithook(hook)
