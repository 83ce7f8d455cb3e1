"""A program that does not solve its problem cannot be scored as passing (issue 11, section 1).

Each attack is a wrong answer to a one-line problem preceded by a trick that tries to turn its failure
into a pass: reading the old success marker through frame introspection, replacing the test's `check`
through a trace hook, hooking the runner's failure path, or ending the process with status 0 early.
Each must fail with the static screen on (then most are `rejected: ...` without running) and with it
off (then the audit hook, the removed primitives and the exit-status verdict must hold on their own).
"""

import pytest

from sweeper.evals.problems import harness_program, load_humaneval
from sweeper.evals.sandbox import Sandbox, SandboxLimits
from sweeper.evals.sandbox_screen import screen

WRONG = "def add(a, b):\n    return a - b\n"
RIGHT = "def add(a, b):\n    return a + b\n"
TEST = "\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n\ncheck(add)\n"

# Prints every 32-byte value in the locals of the frames above `f`, then ends the process with status 0:
# the marker of a runner that printed one, found where it keeps it.
LEAK = """
def _leak(f):
    import os
    while f is not None:
        for value in list(f.f_locals.values()):
            if isinstance(value, bytes) and len(value) == 32:
                os.write(1, value)
        f = f.f_back
    os._exit(0)
"""

FRAME_INTROSPECTION = {
    "sys._getframe": LEAK + "import sys\n_leak(sys._getframe())\n",
    "traceback tb_frame": LEAK + "try:\n    raise RuntimeError\nexcept RuntimeError as e:\n    _leak(e.__traceback__.tb_frame)\n",
    "inspect.stack": LEAK + "import inspect\n_leak(inspect.stack()[0].frame)\n",
    "generator gi_frame": LEAK + "def _g():\n    yield _me.gi_frame.f_back\n_me = _g()\n_leak(next(_me))\n",
    "sys._current_frames": LEAK + "import sys\n_leak(list(sys._current_frames().values())[0])\n",
    "eval-built _getframe": LEAK + "_leak(eval(\"__import__('sys')._get\" + \"frame\")())\n",
}

REPLACE_CHECK = (
    "    if 'check' in g and g['check'].__name__ == 'check':\n"
    "        g['check'] = lambda candidate: None\n"
)


def tracer_program(swap: str, install: str) -> str:
    """A program that arms a trace function in every caller's frame; on each event it runs `swap` (which may
    replace the harness's `check` in the module's globals `g`). `install` sets the tracer going."""
    return (
        "def _tracer(frame, event, arg):\n"
        "    if event == 'call' and frame.f_back is not None:\n"
        "        frame.f_back.f_trace = _tracer\n"
        "    g = frame.f_globals\n"
        f"{swap}"
        "    return _tracer\n"
        f"{install}\n"
        "def _noop():\n    pass\n_noop()\n"
    )


TRACE_HOOKS = {
    # Line events in the module's frame: replace `check` with a no-op just before it is called.
    "settrace replaces check": "import sys\n" + tracer_program(REPLACE_CHECK, "sys.settrace(_tracer)"),
    "settrace swaps check's code": "import sys\n" + tracer_program(
        "    if 'check' in g:\n        g['check'].__code__ = (lambda candidate: None).__code__\n",
        "sys.settrace(_tracer)"),
    "settrace reached by eval": tracer_program(REPLACE_CHECK, "eval(\"__import__('sys').set\" + \"trace\")(_tracer)"),
    "setprofile arms a line tracer": (
        "import sys\n"
        "def _lines(frame, event, arg):\n"
        "    g = frame.f_globals\n"
        "    if 'check' in g and g['check'].__name__ == 'check':\n"
        "        g['check'] = lambda candidate: None\n"
        "    return _lines\n"
        "def _profile(frame, event, arg):\n"
        "    if event == 'call' and frame.f_back is not None:\n"
        "        sys.settrace(_lines)\n"
        "        frame.f_back.f_trace = _lines\n"
        "sys.setprofile(_profile)\n"
        "def _noop():\n    pass\n_noop()\n"
    ),
}

FAILURE_PATH_HOOKS = {
    "traceback.print_exc": LEAK + "import sys, traceback\ntraceback.print_exc = lambda *a, **k: _leak(sys._getframe(1))\n",
    "os._exit": (
        "import os, sys\n_real_exit = os._exit\n"
        "def _exit(code):\n"
        "    marker = sys._getframe(1).f_locals.get('marker')\n"
        "    if marker:\n        os.write(1, marker)\n"
        "    _real_exit(0)\n"
        "os._exit = _exit\n"
    ),
    "sys.stderr.flush": LEAK + (
        "import sys\n"
        "class _Err:\n"
        "    def write(self, text):\n        return len(text)\n"
        "    def flush(self):\n        _leak(sys._getframe(1))\n"
        "sys.stderr = _Err()\n"
    ),
    "excepthook and SIGALRM raising SystemExit(0)": (
        "import signal, sys\n"
        "sys.excepthook = lambda *a: None\n"
        "signal.signal(signal.SIGALRM, lambda *a: sys.exit(0))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.05)\n"
        "import atexit, os\natexit.register(lambda: os._exit(0))\n"
    ),
}

EARLY_EXITS = {
    "os._exit": "import os\nos._exit(0)\n",
    "posix._exit": "import posix\nposix._exit(0)\n",
    "fresh posix from _imp": "import _imp, importlib.machinery\n"
                             "_imp.create_builtin(importlib.machinery.ModuleSpec('posix', None))._exit(0)\n",
    "reloaded posix": "import importlib, posix\nimportlib.reload(posix)\nposix._exit(0)\n",
    "exec /bin/true": "import os\nos.execv('/bin/true', ['true'])\n",
    "ctypes": "import ctypes\nctypes.CDLL(None)._exit(0)\n",
    "the worker's libc": "import sys\nsys.modules['__main__'].libc._exit(0)\n",
    "builtins through print.__self__": "print.__self__.__import__('os')._exit(0)\n",
    "pickle": "import pickle\npickle.loads(b'cposix\\n_exit\\n(I0\\ntR.')\n",
    "eval-built": "eval(\"__import__('o' + 's')._e\" + \"xit\")(0)\n",
    "SystemExit": "raise SystemExit(0)\n",
    # Break the runner's own exception handling (patched builtins, no recursion left for a moment) so
    # that an exception escapes it into the worker's frames, whose `os._exit(0)` now raises SystemExit(0).
    "escape from the runner": (
        "import os, sys, threading, time\n"
        "class _Never(Exception):\n    pass\n"
        "def _raise(*args):\n    raise SystemExit(0)\n"
        "os._exit = _raise\n"
        "setattr(eval('print.__self__'), 'BaseException', _Never)\n"
        "def _starve():\n    sys.setrecursionlimit(6)\n    time.sleep(0.05)\n    sys.setrecursionlimit(1000)\n"
        "threading.Thread(target=_starve).start()\n"
    ),
}

# Python the interpreter accepts, and only the static screen can refuse: the solution's text itself
# changes what the concatenated tests mean, or patches what they call.
REWRITES = {  # name -> (the end of the solution, the test it defeats)
    "dangling decorator": ("@(lambda f: lambda candidate: None)\n", TEST),
    "dangling decorator that swallows failures": (
        "def _lenient(f):\n    def run(*a):\n        try:\n            f(*a)\n        except AssertionError:\n"
        "            pass\n    return run\n@_lenient\n", TEST),
    "shadowed builtin": ("def abs(x):\n    return 0\n",
                         "\n\ndef check(candidate):\n    assert abs(candidate(2, 3) - 5) < 1e-6\n\ncheck(add)\n"),
    "patched module": ("import math\nmath.fabs = lambda x: 0.0\n",
                       "\n\ndef check(candidate):\n    import math\n    assert math.fabs(candidate(2, 3) - 5) < 1e-6\n\ncheck(add)\n"),
    "patched through an import hidden in a function": (
        "def _f():\n    global _m\n    import math as _m\n_f()\n_m.fabs = lambda x: 0.0\n",
        "\n\ndef check(candidate):\n    import math\n    assert math.fabs(candidate(2, 3) - 5) < 1e-6\n\ncheck(add)\n"),
    "builtin rebound through global": ("def _g():\n    global abs\n    abs = lambda x: 0\n_g()\n",
                                       "\n\ndef check(candidate):\n    assert abs(candidate(2, 3) - 5) < 1e-6\n\ncheck(add)\n"),
    "patched module by setattr": ("import math\nsetattr(math, 'isclose', lambda *a, **k: True)\n",
                                  "\n\ndef check(candidate):\n    import math\n    assert math.isclose(candidate(2, 3), 5)\n\ncheck(add)\n"),
}

ATTACKS = {**{f"frames: {k}": v for k, v in FRAME_INTROSPECTION.items()},
           **{f"trace: {k}": v for k, v in TRACE_HOOKS.items()},
           **{f"failure path: {k}": v for k, v in FAILURE_PATH_HOOKS.items()},
           **{f"exit: {k}": v for k, v in EARLY_EXITS.items()}}


@pytest.fixture(scope="module")
def screened():
    with Sandbox(SandboxLimits(timeout_s=2.0), workers=2, allow_weak=True) as box:  # no isolation needed here
        yield box


@pytest.fixture(scope="module")
def unscreened():
    """The layers behind the static screen, alone."""
    with Sandbox(SandboxLimits(timeout_s=2.0), workers=2, screen=False, allow_weak=True) as box:
        yield box


def _outcomes(box, programs):
    return dict(zip(programs, box.run(list(programs.values()), description=None), strict=True))


def test_a_file_of_tricks_scores_zero(screened, unscreened):
    """The issue's finding: 4 tricks and 1 wrong answer scored 80% pass@1."""
    samples = [WRONG, FRAME_INTROSPECTION["sys._getframe"] + WRONG, TRACE_HOOKS["settrace replaces check"] + WRONG,
               FAILURE_PATH_HOOKS["traceback.print_exc"] + WRONG, FAILURE_PATH_HOOKS["os._exit"] + WRONG]
    for box in (screened, unscreened):
        outcomes = box.run([sample + TEST for sample in samples], description=None)
        assert [o.passed for o in outcomes] == [False] * 5, outcomes


@pytest.mark.parametrize("screen", [True, False], ids=["screened", "unscreened"])
def test_no_attack_turns_a_wrong_answer_into_a_pass(screened, unscreened, screen):
    box = screened if screen else unscreened
    programs = {name: attack + WRONG + TEST for name, attack in ATTACKS.items()}
    passed = {name: o.detail[-300:] for name, o in _outcomes(box, programs).items() if o.passed}
    assert passed == {}


def test_rewrites_of_the_tests_are_rejected(screened):
    programs = {name: WRONG + rewrite + test for name, (rewrite, test) in REWRITES.items()}
    for name, outcome in _outcomes(screened, programs).items():
        assert outcome.status == "rejected", (name, outcome)
    assert all(o.passed for o in screened.run([RIGHT + test for _, test in REWRITES.values()], description=None))


def test_the_screen_rejects_the_static_forms_with_a_reason(screened):
    dynamic = {"frames: eval-built _getframe", "trace: settrace reached by eval", "exit: eval-built", "exit: SystemExit",
               "exit: builtins through print.__self__"}
    programs = {name: attack + WRONG + TEST for name, attack in ATTACKS.items() if name not in dynamic}
    for name, outcome in _outcomes(screened, programs).items():
        assert outcome.status == "rejected" and outcome.detail.startswith("rejected: "), (name, outcome)


def test_honest_programs_still_pass(screened, unscreened):
    honest = [
        RIGHT + TEST,
        # The standard library's own uses of frames fall back: namedtuple, TypeVar, Enum's functional API.
        "from collections import namedtuple\nfrom typing import TypeVar\nimport enum\nP = namedtuple('P', 'x y')\n"
        "T = TypeVar('T')\nColor = enum.Enum('Color', 'RED GREEN')\nassert P(1, 2).y == 2 and Color.RED.value == 1\n"
        + RIGHT + TEST,
        "import fractions, decimal, bisect, heapq, json\nassert fractions.Fraction(1, 3) * 3 == 1\n" + RIGHT + TEST,
        "expression = '3 + 4 * 5'\nassert eval(expression) == 23\n" + RIGHT + TEST,  # HumanEval/160's canonical solution
        "import sys\nsys.setrecursionlimit(10**6)\n" + RIGHT + TEST,
        "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    assert 'division' in str(e)\n" + RIGHT + TEST,
    ]
    for box in (screened, unscreened):
        outcomes = box.run(honest, description=None)
        assert all(o.passed for o in outcomes), [o.detail for o in outcomes if not o.passed]


def test_humaneval_own_limit_an_always_equal_object_passes(screened):
    """Not contained, in any harness: the tests compare with ==, which the program's object defines."""
    cheat = "class _Yes:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return _Yes()\n"
    assert screened.run([cheat + TEST], description=None)[0].passed


def test_failure_detail_still_names_the_error(screened):
    outcome = screened.run([WRONG + TEST], description=None)[0]
    assert outcome.status == "failed" and "AssertionError" in outcome.detail and "<program>" in outcome.detail


def test_the_screen_passes_every_canonical_solution():
    problems = load_humaneval()
    assert [p.task_id for p in problems if screen(harness_program(p.canonical_program, p.test))] == []
