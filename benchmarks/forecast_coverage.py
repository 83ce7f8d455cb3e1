"""Do sweeper's 95% forecast intervals hold the truth 95% of the time? Synthetic ground truth.

Designs like the micro and astraios grids (4 scales, 7 methods, 1 or 3 seeds), a known truth per
method, log-normal run noise; the forecast (`analysis.forecast`) is made on each draw and judged at
2.2x and 4.5x the largest scale (the 34B- and 70B-equivalents of a 15.5B ladder). The draws are split
over several truths (sets of 7 methods drawn afresh). Scenarios:

  a  saturating power law, one exponent for every method, noise 0.3% and 1%
  b  the same, each method with its own exponent
  c  as a at 0.3%, 3 seeds per cell
  d  a truth that is not any candidate: a smoothly broken power law (Caballero et al. 2022) whose
     slope changes inside or just beyond the data, steepening for some methods, flattening for others

Each scenario runs the default ensemble ("averaged") and each candidate law alone (what `--law X`
does), each kind of fit (independent, joint) included. Draws are batched: the first draw of a truth is
fitted with the full multi-start search and every draw of it is refitted from that optimum (as the
calibration line of a report does); `--check N` reruns N draws with the full search each, to show the
shortcut changes nothing that matters.

    python benchmarks/forecast_coverage.py --draws 200 [--truth-sets 10] [--check 20] [--json out.json]
"""

import argparse
import json
import time

import numpy as np

from analysis.forecast import Design, Target, Variant, candidates, forecast
from analysis.laws import LAWS

SCALES = np.array([1e9, 3e9, 7e9, 15.5e9])  # StarCoderBase sizes (parameters)
MULTIPLES = {"2.2x": 34 / 15.5, "4.5x": 70 / 15.5}
GROUPS = 7
LEVEL = 0.95


def truth_power(rng, shared_alpha: bool):
    E = rng.uniform(1.0, 2.0, GROUPS)
    alpha = np.full(GROUPS, 0.3) if shared_alpha else rng.uniform(0.1, 0.6, GROUPS)
    reducible = rng.uniform(0.15, 0.5, GROUPS)  # share of the loss above the floor at the smallest scale
    A = E * reducible / (1 - reducible) * SCALES[0] ** alpha
    return lambda x, g: E[g] + A[g] * x ** -alpha[g]


def truth_broken(rng):
    """E + A x^-a1 (1 + (x/xb)^(1/f))^(-(a2-a1) f): slope a1 below the break xb, a2 above it."""
    E = rng.uniform(1.0, 2.0, GROUPS)
    a1 = rng.uniform(0.15, 0.35, GROUPS)
    a2 = a1 + rng.choice([-1, 1], GROUPS) * rng.uniform(0.1, 0.25, GROUPS)
    xb = np.exp(rng.uniform(np.log(3e9), np.log(3e10), GROUPS))
    reducible = rng.uniform(0.15, 0.5, GROUPS)
    A = E * reducible / (1 - reducible) * SCALES[0] ** a1
    f = 0.5

    def curve(x, g):
        return E[g] + A[g] * x ** -a1[g] * (1 + (x / xb[g]) ** (1 / f)) ** (-(a2[g] - a1[g]) * f)

    return curve


SCENARIOS = {
    "a 0.3%": dict(noise=0.003, seeds=1, truth=lambda rng: truth_power(rng, True)),
    "a 1%": dict(noise=0.01, seeds=1, truth=lambda rng: truth_power(rng, True)),
    "b 0.3%": dict(noise=0.003, seeds=1, truth=lambda rng: truth_power(rng, False)),
    "b 1%": dict(noise=0.01, seeds=1, truth=lambda rng: truth_power(rng, False)),
    "c 3 seeds": dict(noise=0.003, seeds=3, truth=lambda rng: truth_power(rng, True)),
    "d broken 0.3%": dict(noise=0.003, seeds=1, truth=truth_broken),
}


def design(seeds: int) -> Design:
    X = np.tile(np.repeat(SCALES, seeds), GROUPS)[:, None]
    groups = np.repeat(np.arange(GROUPS), len(SCALES) * seeds)
    levels = np.tile(np.repeat(np.arange(len(SCALES)), seeds), GROUPS)
    return Design(X=X, groups=groups, group_names=tuple(f"m{g}" for g in range(GROUPS)), levels=levels)


def targets() -> list[Target]:
    return [Target(g, label, np.array([SCALES[-1] * m])) for g in range(GROUPS) for label, m in MULTIPLES.items()]


def judge(tg: list[Target], estimate: np.ndarray, lower: np.ndarray, upper: np.ndarray, truth: np.ndarray,
          new_run: np.ndarray | None = None) -> dict:
    """Per distance: coverage of the true curve and (given `new_run`, the truth with its run noise, which
    is what a predictive interval claims to hold) of a new run; median relative width; median
    |relative error| of the estimate against the curve. Arrays (B, T)."""
    out = {}
    for label in MULTIPLES:
        columns = [j for j, t in enumerate(tg) if t.label == label]
        low, high, true = lower[:, columns], upper[:, columns], truth[:, columns]
        out[label] = {"coverage": float(((low <= true) & (true <= high)).mean()),
                      "median_width": float(np.median((high - low) / true)),
                      "median_abs_error": float(np.median(np.abs(estimate[:, columns] / true - 1)))}
        if new_run is not None:
            run = new_run[:, columns]
            out[label]["coverage_new_run"] = float(((low <= run) & (run <= high)).mean())
    return out


def run_scenario(spec: dict, draws: int, truth_sets: int, check: int, seed: int,
                 only: tuple[str, ...] | None = None) -> dict:
    """`truth_sets` sets of 7 methods, draws / truth_sets noisy draws of each; `only` names the fits to run
    (default: the ensemble and every candidate alone)."""
    rng = np.random.default_rng(seed)
    d, tg = design(spec["seeds"]), targets()
    ensembles = {"averaged": candidates(None, 1, GROUPS)}
    for law in ("power", "loglog", "curved"):
        for joint in (False, True):
            if joint and not LAWS.get(law).exponents:
                continue
            variant = Variant(LAWS.get(law), joint)
            ensembles[variant.name] = [variant]
    ensembles = {label: variants for label, variants in ensembles.items() if only is None or label in only}
    per_set = draws // truth_sets
    sets = []
    for _ in range(truth_sets):
        truth = spec["truth"](rng)
        mean = np.array([truth(d.X[i, 0], d.groups[i]) for i in range(len(d.groups))])
        at_targets = np.array([truth(t.X[0], t.group) for t in tg])
        y = mean * np.exp(spec["noise"] * rng.standard_normal((per_set, len(mean))))
        runs = at_targets * np.exp(spec["noise"] * rng.standard_normal((per_set, len(at_targets))))
        sets.append((y, np.repeat(at_targets[None, :], per_set, axis=0), runs))
    report = {}
    for label, variants in ensembles.items():
        started = time.perf_counter()
        lower, upper, estimate, truth, runs, full = [], [], [], [], [], []
        for y, at_targets, new_runs in sets:
            reference = forecast(d, y[:1], tg, variants, LEVEL)
            batched = forecast(d, y, tg, variants, LEVEL, starts=reference.starts)
            lower.append(batched.lower), upper.append(batched.upper), estimate.append(batched.estimate)
            truth.append(at_targets)
            runs.append(new_runs)
            if check and label == "averaged":
                full += [(forecast(d, y[i : i + 1], tg, variants, LEVEL), batched, i, at_targets[i])
                         for i in range(min(check // truth_sets, per_set))]
        entry = {"seconds": time.perf_counter() - started,
                 **judge(tg, np.concatenate(estimate), np.concatenate(lower), np.concatenate(upper), np.concatenate(truth),
                         np.concatenate(runs))}
        if full:
            entry["full_search_check"] = {
                "draws": len(full),
                **judge(tg, *(np.concatenate([getattr(f, k) for f, _, _, _ in full]) for k in ("estimate", "lower", "upper")),
                        np.array([t for _, _, _, t in full])),
                "batched_same_draws": judge(tg, *(np.stack([getattr(b, k)[i] for _, b, i, _ in full])
                                                  for k in ("estimate", "lower", "upper")),
                                            np.array([t for _, _, _, t in full])),
            }
        report[label] = entry
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--truth-sets", type=int, default=10, help="sets of methods (truths) the draws are split over")
    parser.add_argument("--check", type=int, default=0, help="draws rerun with the full multi-start search")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {}
    for index, name in enumerate(args.scenarios.split(",")):
        results[name] = run_scenario(SCENARIOS[name], args.draws, args.truth_sets, args.check, args.seed + index)
        print(f"## {name} ({args.draws} draws)")
        print("| fit | coverage 2.2x (new run) | width 2.2x | coverage 4.5x (new run) | width 4.5x | median error 4.5x | s |")
        print("|---|---|---|---|---|---|---|")
        for label, entry in results[name].items():
            near, far = entry["2.2x"], entry["4.5x"]
            print(f"| {label} | {near['coverage']:.1%} ({near['coverage_new_run']:.1%}) | {near['median_width']:.2%} | "
                  f"{far['coverage']:.1%} ({far['coverage_new_run']:.1%}) | {far['median_width']:.2%} | "
                  f"{far['median_abs_error']:.2%} | {entry['seconds']:.1f} |")
            if "full_search_check" in entry:
                c = entry["full_search_check"]
                b = c["batched_same_draws"]
                print(f"|   full search, first {c['draws']} draws | {c['2.2x']['coverage']:.1%} | "
                      f"{c['2.2x']['median_width']:.2%} | {c['4.5x']['coverage']:.1%} | {c['4.5x']['median_width']:.2%} | "
                      f"{c['4.5x']['median_abs_error']:.2%} | |")
                print(f"|   batched, same draws | {b['2.2x']['coverage']:.1%} | {b['2.2x']['median_width']:.2%} | "
                      f"{b['4.5x']['coverage']:.1%} | {b['4.5x']['median_width']:.2%} | {b['4.5x']['median_abs_error']:.2%} | |")
        print(flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
