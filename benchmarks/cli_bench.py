"""Wall time of the front door: `sweeper --help` and `sweeper plan --space astraios` (issue 2's goals:
under 1 s and 3 s on a 2-core machine), each a fresh process, median of 5.

    python benchmarks/cli_bench.py

`plan` is timed twice: with an empty cache (the resolved method configs and the meta-device
parameter counts are computed, which imports torch, transformers and peft) and with the cache
those runs leave behind (what every later `plan` of a known space costs). Appends to cli_bench.json.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 5


def seconds(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sweeper", *args], check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        base = {**os.environ}
        results["help_s"] = statistics.median(seconds(["--help"], base) for _ in range(RUNS))
        cold = []
        for run in range(RUNS):
            env = {**base, "SWEEPER_CACHE": str(Path(scratch) / f"cold-{run}")}
            cold.append(seconds(["plan", "--space", "astraios"], env))
        results["plan_astraios_cold_cache_s"] = statistics.median(cold)
        warm_env = {**base, "SWEEPER_CACHE": str(Path(scratch) / "cold-0")}
        results["plan_astraios_warm_cache_s"] = statistics.median(
            seconds(["plan", "--space", "astraios"], warm_env) for _ in range(RUNS))
    results = {k: round(v, 2) for k, v in results.items()}
    results.update(command="python benchmarks/cli_bench.py", runs=RUNS, measured_at=time.strftime("%Y-%m-%d %H:%M"),
                   cpus=os.cpu_count())
    print(json.dumps(results))
    path = Path(__file__).with_suffix(".json")
    history = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*history, results], indent=2) + "\n")


if __name__ == "__main__":
    main()
