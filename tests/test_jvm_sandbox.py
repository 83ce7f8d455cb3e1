"""The JVM sandbox (bubblewrap + javac + java): the harness's verdicts, HumanEvalPack-Java's own programs,
and hostile programs contained.

Each containment program exits 0 only when its escape works, so a pass would mean an escape: the tests
assert that it failed, and that it failed for the reason it reports ("contained: ..."), not for a
compile error that would make the check vacuous."""

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sweeper.core.errors import UserError
from sweeper.core.paths import PROJECT_ROOT
from sweeper.evals.jvm_sandbox import MAX_TASKS, JvmLimits, JvmSandbox, find_jdk
from sweeper.evals.sandbox_guard import seccomp_program

JAVA_DATA = PROJECT_ROOT.parent / "shared" / "data" / "humanevalpack" / "java.jsonl.gz"
HAVE_JVM = shutil.which("bwrap") is not None and shutil.which("javac") is not None
needs_jvm = pytest.mark.skipif(not HAVE_JVM, reason="bubblewrap (bwrap) or a JDK (javac) is not installed")
needs_data = pytest.mark.skipif(not JAVA_DATA.is_file(), reason="shared HumanEvalPack-Java data not present")
SHORT_TIMEOUT_S = 3.0
MARKER = "61.25"  # the seconds of the `sleep` children left behind by hostile programs: a unique argument


def main_class(body: str, imports: str = "") -> str:
    """A program whose `main` (declared `throws Exception`) runs `body`."""
    return f"{imports}\npublic class Main {{\n    public static void main(String[] args) throws Exception {{\n{body}\n    }}\n}}\n"


def java_strings(texts: list[str]) -> str:
    """A Java array initializer of these strings (JSON string literals are Java's, for ASCII)."""
    return "{" + ", ".join(json.dumps(text) for text in texts) + "}"


def start_or_skip(box: JvmSandbox) -> JvmSandbox:
    try:
        box.start()
    except UserError as err:
        pytest.skip(f"bubblewrap cannot build the JVM sandbox here: {err}")
    return box


@pytest.fixture(scope="module")
def box():
    if not HAVE_JVM:
        pytest.skip("bubblewrap (bwrap) or a JDK (javac) is not installed")
    with start_or_skip(JvmSandbox(workers=2)) as sandbox:
        yield sandbox


def run_one(box: JvmSandbox, program: str):
    return box.run([program], description=None)[0]


def leftover_processes(wait_s: float = 5.0) -> list[str]:
    """Command lines of this machine's processes that hostile programs started (their `sleep MARKER`),
    once the kernel had up to `wait_s` seconds to empty their PID namespaces (it does so as the sandbox's
    PID 1 dies, which is not synchronous with `run` returning)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if MARKER.encode() in argv:
                found.append(b" ".join(argv).decode(errors="replace"))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


# -- the harness's verdicts -------------------------------------------------------------------------------

@needs_jvm
def test_verdicts_of_plain_programs(box):
    ok = main_class('        String s = "h\\u00e9llo \u00e9t\u00e9";\n'  # non-ASCII source: UTF-8, as on a usual host
                    '        if (s.length() != 9) throw new AssertionError(s);\n        System.out.println("fine");')
    assertion = main_class("        throw new AssertionError();")
    compile_error = main_class("        int x = ;")
    unknown_symbol = main_class("        System.out.println(undefinedName);")
    says_passed = main_class('        System.out.println("passed");\n        System.exit(1);')
    heap = main_class("        long[][] a = new long[1 << 20][];\n        for (int i = 0; i < a.length; i++) a[i] = new long[1 << 20];")
    outcomes = box.run([ok, assertion, compile_error, unknown_symbol, says_passed, heap], description=None)
    status = [o.status for o in outcomes]
    assert status == ["passed", "failed", "failed", "failed", "failed", "memory_limit"], outcomes
    assert "fine" in outcomes[0].detail
    assert "AssertionError" in outcomes[1].detail
    assert outcomes[2].detail.startswith("compile error: ") and "Main.java:4: error:" in outcomes[2].detail
    assert "cannot find symbol" in outcomes[3].detail
    assert "Java heap space" in outcomes[5].detail


@needs_jvm
def test_huge_output_is_stopped_at_the_output_limit(box):
    outcome = run_one(box, main_class('        while (true) System.out.println("x".repeat(1000));'))
    assert outcome.status == "output_limit", outcome
    assert f"more than {box.limits.max_output_bytes} bytes" in outcome.detail


@needs_jvm
@pytest.mark.timeout(120)
def test_endless_loop_times_out_and_leaves_nothing_behind():
    program = main_class(f'        new ProcessBuilder("sleep", "{MARKER}").start();\n        while (true) {{ }}')
    with start_or_skip(JvmSandbox(JvmLimits(timeout_s=SHORT_TIMEOUT_S), workers=1)) as short:
        outcome = run_one(short, program)
    assert outcome.status == "timeout", outcome
    assert SHORT_TIMEOUT_S <= outcome.seconds < SHORT_TIMEOUT_S + 2.0
    assert "time limit of 3.0 s" in outcome.detail
    assert leftover_processes() == []  # the child went with the sandbox's PID namespace


@needs_jvm
def test_each_distinct_program_runs_once(box):
    program = main_class('        System.out.println("cached");')
    before = sum(box.counts.values())
    first = box.run([program, program], description=None)
    again = box.run([program], description=None)
    assert sum(box.counts.values()) == before + 1
    assert first[0] == first[1] == again[0] and first[0].passed


@needs_jvm
def test_settings_record_limits_isolation_and_jdk(box):
    settings = box.settings()
    assert settings["timeout_s"] == 10.0 and settings["heap_mb"] == 512
    assert settings["runner"].startswith("javac + java (OpenJDK ")
    assert "bubblewrap" in settings["isolation"] and "user/pid/net/ipc/uts/cgroup namespaces" in settings["isolation"]


# -- HumanEvalPack-Java itself (data README: canonical programs pass, buggy ones fail) ----------------------

@needs_jvm
@needs_data
@pytest.mark.timeout(120)
def test_humanevalpack_java_canonical_pass_and_buggy_fail(box):
    with gzip.open(JAVA_DATA, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(8), f, strict=False)]
    assert [row["task_id"] for row in rows] == [f"Java/{i}" for i in range(8)]
    canonical = [row["prompt"] + row["canonical_solution"] + "\n" + row["test"] for row in rows]
    # Java/10, Java/39 and Java/76 (not among the first 8) are buggy programs that never finish.
    buggy = [row["prompt"] + row["buggy_solution"] + "\n" + row["test"] for row in rows
             if row["task_id"] not in ("Java/10", "Java/39", "Java/76")]
    outcomes = box.run(canonical + buggy, description=None)
    assert [o.status for o in outcomes[:8]] == ["passed"] * 8, outcomes[:8]
    assert [o.status for o in outcomes[8:]] == ["failed"] * len(buggy), outcomes[8:]


# -- hostile programs ---------------------------------------------------------------------------------------

def hostile_programs(port: int, secret: Path) -> dict[str, str]:
    forbidden = [str(PROJECT_ROOT), "/etc/passwd", "/etc/hostname", "/root", "/home", str(Path.home()), "/var",
                 "/run", "/sys/kernel", str(secret)]
    jdk = find_jdk()
    jdk_config = [str(path) for etc in jdk.etc_dirs for path in sorted(Path(etc).iterdir()) if path.is_file()][:1]
    not_writable = [os.path.join(jdk.home, "release"), "/work/Main.java", "/proc/sys/kernel/core_pattern", *jdk_config]
    new_files = ["/sweeper-escape", "/dev/shm/sweeper-escape", "/dev/sweeper-escape", "/work/sweeper-escape",
                 "/usr/sweeper-escape"]
    return {
        "network": main_class(
            f'        String[][] targets = {{{{"127.0.0.1", "{port}"}}, {{"1.1.1.1", "53"}}, {{"8.8.8.8", "443"}}}};\n'
            "        for (String[] t : targets) {\n"
            "            try (Socket s = new Socket()) {\n"
            "                s.connect(new InetSocketAddress(t[0], Integer.parseInt(t[1])), 2000);\n"
            '                System.out.println("ESCAPED: connected to " + t[0]); System.exit(0);\n'
            '            } catch (IOException e) { System.out.println("contained: " + t[0] + ": " + e.getMessage()); }\n'
            "        }\n        System.exit(1);",
            "import java.io.*;\nimport java.net.*;"),
        "files": main_class(
            f"        String[] forbidden = {java_strings(forbidden)};\n"
            "        for (String p : forbidden) if (new File(p).exists()) { System.out.println(\"ESCAPED: sees \" + p); System.exit(0); }\n"
            '        Set<String> allowed = Set.of("usr", "bin", "lib", "lib32", "lib64", "libx32", "sbin", "etc", "proc", "dev", "tmp", "work");\n'
            '        for (String name : new File("/").list()) if (!allowed.contains(name)) { System.out.println("ESCAPED: sees /" + name); System.exit(0); }\n'
            '        for (String name : new File("/etc").list()) if (!name.startsWith("java")) { System.out.println("ESCAPED: sees /etc/" + name); System.exit(0); }\n'
            '        System.out.println("contained: / holds " + String.join(" ", new File("/").list())); System.exit(1);',
            "import java.io.*;\nimport java.util.*;"),
        "writes": main_class(
            f"        String[] existing = {java_strings(not_writable)};\n"
            f"        String[] created = {java_strings(new_files)};\n"
            "        for (String p : existing) {  // opened for appending, never written: nothing changes even on escape\n"
            '            try (FileOutputStream out = new FileOutputStream(p, true)) { System.out.println("ESCAPED: may write " + p); System.exit(0); }\n'
            '            catch (IOException e) { System.out.println("contained: " + e.getMessage()); }\n'
            "        }\n"
            "        for (String p : created) {\n"
            '            try (FileOutputStream out = new FileOutputStream(p)) { System.out.println("ESCAPED: created " + p); System.exit(0); }\n'
            '            catch (IOException e) { System.out.println("contained: " + e.getMessage()); }\n'
            "        }\n        System.exit(1);",
            "import java.io.*;"),
        "processes": main_class(
            "        long n = ProcessHandle.allProcesses().count(), me = ProcessHandle.current().pid();\n"
            '        if (n > 3 || me > 3) { System.out.println("ESCAPED: sees " + n + " processes, is pid " + me); System.exit(0); }\n'
            '        System.out.println("contained: " + n + " processes, own pid " + me); System.exit(1);'),
        "identity": main_class(
            '        String status = Files.readString(Path.of("/proc/self/status"));\n'
            '        String uid = status.split("\\nUid:\\\\s+")[1].split("\\\\s")[0];\n'
            '        String caps = status.split("\\nCapEff:\\\\s+")[1].split("\\\\s")[0];\n'
            '        String env = String.join(",", new TreeSet<>(System.getenv().keySet()));\n'
            '        boolean clean = env.equals("HOME,LANG,PATH,PWD");  // bwrap sets PWD (--chdir)\n'
            '        if (uid.equals("0") || !caps.matches("0+") || !clean) { System.out.println("ESCAPED: uid " + uid + ", caps " + caps + ", env " + env); System.exit(0); }\n'
            '        System.out.println("contained: uid " + uid + ", caps " + caps + ", env " + env); System.exit(1);',
            "import java.nio.file.*;\nimport java.util.*;"),
        "threads": main_class(
            "        int n = 0;\n"
            "        try {\n"
            f"            while (n < {4 * MAX_TASKS}) {{\n"
            "                Thread t = new Thread(() -> { try { Thread.sleep(60000); } catch (InterruptedException e) { } });\n"
            "                t.setDaemon(true); t.start(); n++;\n"
            "            }\n"
            '        } catch (Throwable e) { System.out.println("contained: thread " + n + " refused"); Runtime.getRuntime().halt(1); }\n'
            '        System.out.println("ESCAPED: " + n + " threads"); Runtime.getRuntime().halt(0);'),
        "children": main_class(
            "        int n = 0;\n"
            "        try {\n"
            f'            while (n < {4 * MAX_TASKS}) {{ new ProcessBuilder("sleep", "{MARKER}").start(); n++; }}\n'
            '        } catch (Throwable e) { System.out.println("contained: child " + n + " refused"); Runtime.getRuntime().halt(1); }\n'
            '        System.out.println("ESCAPED: " + n + " children"); Runtime.getRuntime().halt(0);'),
    }


@pytest.fixture(scope="module")
def hostile(box, tmp_path_factory):
    """The outcome of every hostile program, run together (in parallel) once."""
    secret = tmp_path_factory.mktemp("host") / "secret.txt"
    secret.write_text("the sandbox must not see this file")
    with socket.socket() as listener:  # on this machine's loopback: the sandbox has its own
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        programs = hostile_programs(listener.getsockname()[1], secret)
        outcomes = box.run(list(programs.values()), description=None)
    return dict(zip(programs, outcomes, strict=True))


@needs_jvm
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["network", "files", "writes", "processes", "identity", "threads", "children"])
def test_hostile_program_is_contained(hostile, name):
    outcome = hostile[name]
    assert not outcome.passed, outcome
    assert outcome.status == "failed" and "contained: " in outcome.detail and "ESCAPED" not in outcome.detail, outcome


@needs_jvm
def test_what_the_hostile_programs_ran_into(hostile):
    assert "Network is unreachable" in hostile["network"].detail
    assert "Connection refused" in hostile["network"].detail  # the sandbox's own loopback, not this machine's
    assert "Read-only file system" in hostile["writes"].detail
    assert leftover_processes() == []  # the children went with their sandbox's PID namespace


@needs_jvm
def test_the_program_may_write_its_private_tmp_and_read_its_classes(box):
    program = main_class(
        '        Files.writeString(Path.of("/tmp/scratch.txt"), "x".repeat(1 << 20));\n'
        '        if (!Files.exists(Path.of("/work/Main.class")) || Files.size(Path.of("/tmp/scratch.txt")) != 1 << 20)\n'
        "            throw new AssertionError();",
        "import java.nio.file.*;")
    assert run_one(box, program).passed


@needs_jvm
def test_private_tmp_is_size_limited(box):
    fill = main_class(
        f'        Files.write(Path.of("/tmp/big"), new byte[{box.limits.tmpfs_mb + 1} << 20]);', "import java.nio.file.*;")
    outcome = run_one(box, fill)
    assert outcome.status == "failed" and "No space left on device" in outcome.detail, outcome


# -- bad setups ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("missing,needed", [("bwrap", "apt-get install bubblewrap"),
                                            ("javac", "apt-get install openjdk-17-jdk-headless")])
def test_a_missing_tool_is_one_line_that_says_how_to_get_it(monkeypatch, missing, needed):
    # The other tools "exist" (they are not run: the check for the missing one comes first).
    monkeypatch.setattr(shutil, "which", lambda name, *_args, **_kwargs: None if name == missing else f"/usr/bin/{name}")
    with pytest.raises(UserError) as raised:
        JvmSandbox().start()
    message = str(raised.value)
    assert "\n" not in message and needed in message and missing in message


@needs_jvm
@pytest.mark.parametrize("version,refusal,said", [
    ("0.8.0", "bwrap: No permissions to create a new namespace", "user.max_user_namespaces"),
    ("0.6.1", "", "needs 0.8.0 or newer"),
])
def test_a_bwrap_that_cannot_build_the_sandbox_is_refused(monkeypatch, version, refusal, said):
    """A bwrap that fails as it does where the kernel refuses user namespaces, or one too old for the flags."""
    folder = Path(tempfile.mkdtemp(prefix="sweeper-fake-bwrap-"))
    try:
        folder.chmod(0o755)  # bwrap runs as nobody when the tests run as root
        fake = folder / "bwrap"
        fake.write_text(f'#!/bin/sh\n[ "$1" = --version ] && echo "bubblewrap {version}" && exit 0\n'
                        f"echo '{refusal}' >&2\nexit 1\n")
        fake.chmod(0o755)
        (folder / "javac").symlink_to(shutil.which("javac"))
        monkeypatch.setenv("PATH", str(folder))
        with pytest.raises(UserError) as raised:
            JvmSandbox().start()
    finally:
        shutil.rmtree(folder)
    message = str(raised.value)
    assert "\n" not in message and refusal in message and said in message


@needs_jvm
@pytest.mark.timeout(120)
@pytest.mark.skipif(seccomp_program({}, deny_namespace_clones=False) is None,
                    reason="no seccomp filter for this machine's architecture")
def test_a_kernel_that_refuses_namespaces_is_refused():
    """As Docker's default seccomp profile does it: unshare and clone with namespace flags fail with EPERM."""
    code = (
        "from sweeper.evals import sandbox_guard\n"
        "sandbox_guard.install_seccomp(sandbox_guard.seccomp_program(dict.fromkeys(('unshare', 'setns', 'mount'), 1),"
        " deny_namespace_clones=True))\n"
        "from sweeper.core.errors import UserError\nfrom sweeper.evals.jvm_sandbox import JvmSandbox\n"
        "try:\n    JvmSandbox().start()\nexcept UserError as err:\n    print('REFUSED', err)\nelse:\n    print('STARTED')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("REFUSED bubblewrap cannot build the JVM sandbox here"), done.stdout
    assert "unprivileged user namespaces" in done.stdout and done.stdout.count("\n") == 1
