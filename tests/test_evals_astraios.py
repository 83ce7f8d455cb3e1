"""Scoring the released Astraios 1B generations reproduces the reference pass@1 table."""

import pytest

from sweeper.core.paths import PROJECT_ROOT
from sweeper.evals.evaluate import score_generations
from sweeper.evals.sandbox import Sandbox

DATA = PROJECT_ROOT.parent / "shared" / "data"
PACK = DATA / "humanevalpack" / "python.jsonl.gz"
ASTRAIOS = DATA / "astraios"
TOLERANCE = 0.7  # points of pass@1: run-to-run noise from timeouts on a loaded machine (data README)

# pass@1 (%) of the 1B models, from shared/data/README.md
REFERENCE = {
    "humanevalsynthesize": {"fft": 16.95, "lora": 17.26, "ptuning": 15.79, "ia3": 16.25, "adapterh": 15.70,
                            "adapterp": 17.04, "parallel": 15.98},
    "humanevalfix": {"fft": 3.26, "lora": 3.29, "ptuning": 1.86, "ia3": 2.01, "adapterh": 3.14,
                     "adapterp": 3.69, "parallel": 4.91},
}
FILES = {
    "humanevalsynthesize": "humanevalsynthesize-python/generations-humanevalsynthesizepython-starcoderbase-1b-{}.json.gz",
    "humanevalfix": "humanevalfixtests-python/generations-humanevalfixtests-python-starcoderbase-1b-{}.json.gz",
}


@pytest.mark.slow
@pytest.mark.skipif(not (PACK.is_file() and ASTRAIOS.is_dir()), reason="shared Astraios data not present")
def test_astraios_1b_pass_at_1_is_reproduced():
    measured = {}
    # One sandbox for the 14 files: identical programs across methods are executed once.
    with Sandbox(allow_weak=True) as sandbox:  # exactness does not depend on the isolation level
        for task, methods in REFERENCE.items():
            for method in methods:
                report = score_generations(task, ASTRAIOS / FILES[task].format(method), data=PACK, sandbox=sandbox)
                measured[task, method] = 100 * report["metrics"][0]["value"]
        rejected = sandbox.counts["rejected"]  # the screen rejects no released generation
    gaps = {key: round(value - REFERENCE[key[0]][key[1]], 2) for key, value in measured.items()}
    assert all(abs(gap) <= TOLERANCE for gap in gaps.values()), gaps
    assert rejected == 0


# HumanEvalExplainSynthesize-Python, 1B: the harness scores each of the 3,280 programs (20 descriptions per
# problem) with a 10 s limit (shared/data/README.md). One file of the seven keeps the test short (each takes
# about a minute here); fft 15.37 and parallel 19.70 were reproduced too (see the closing note of issue 13).
EXPLAIN = {"lora": 20.49}
EXPLAIN_FILE = "humanevalexplainsynthesize-python/generations-humanevalexplainsynthesize-python-starcoderbase-1b-{}.json.gz"


@pytest.mark.slow
@pytest.mark.skipif(not (PACK.is_file() and ASTRAIOS.is_dir()), reason="shared Astraios data not present")
def test_astraios_1b_explain_synthesize_is_reproduced():
    from sweeper.evals.sandbox import SandboxLimits

    measured = {}
    with Sandbox(SandboxLimits(timeout_s=10.0), allow_weak=True) as sandbox:
        for method in EXPLAIN:
            report = score_generations("humanevalexplain", ASTRAIOS / EXPLAIN_FILE.format(method), data=PACK,
                                       sandbox=sandbox)
            [pass_at_1] = [m for m in report["metrics"] if m["metric"] == "pass@1"]
            assert pass_at_1["n"] == 164
            measured[method] = 100 * pass_at_1["value"]
    gaps = {method: round(value - EXPLAIN[method], 2) for method, value in measured.items()}
    assert all(abs(gap) <= TOLERANCE for gap in gaps.values()), gaps
