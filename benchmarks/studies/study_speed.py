"""Clean-label speed with more seeds: how many epochs each policy needs to reach random order's
final test accuracy, and how sure that figure is.

The sampling study measures this on 3 seeds, where one seed reaching the target an epoch later
moves the mean by a third of an epoch. This study repeats the clean-label cell (same splits,
model and training, cached in the same ``runs*.json``, so seeds 0-2 are the sampling study's
own runs) on more seeds and reports each policy's mean with its standard error.

    .venv/bin/python benchmarks/studies/study_speed.py --seeds 10 --shard 0/2 &  # 2 cores
    .venv/bin/python benchmarks/studies/study_speed.py --seeds 10 --shard 1/2; wait
    .venv/bin/python benchmarks/studies/study_speed.py --seeds 10                # the report
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from result_cache import ResultCache
from study_common import (
    RunKey,
    add_study_arguments,
    cached_run,
    parse_shard,
    run_revision,
)
from study_sampling import epochs_to_reach

POLICIES = ["random", "balanced", "balanced losses only", "greedy"]


def mean_se(values: list[float]) -> str:
    se = np.std(values, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.2f} ± {se:.2f}"


def report(runs: dict[str, list[dict[str, Any]]], epochs: int) -> None:
    curves = {
        policy: [[e["test_accuracy"] for e in run["epochs"]] for run in found]
        for policy, found in runs.items()
    }
    finals = [curve[-1] for curve in curves["random"]]
    # Random order's own epochs to its final accuracy: the budget the target halves.
    budget = [
        epochs_to_reach(c, f) or epochs for c, f in zip(curves["random"], finals, strict=True)
    ]
    seeds = len(finals)
    print(f"\nClean labels, {seeds} seeds, {epochs} epochs (mean ± standard error)\n")
    print("| policy | epochs to random's final | per seed | final accuracy | final - random |")
    print("|---|---|---|---|---|")
    for policy, policy_curves in curves.items():
        reach = [
            epochs_to_reach(c, f) or epochs + 1 for c, f in zip(policy_curves, finals, strict=True)
        ]
        last = [c[-1] for c in policy_curves]
        gap = [a - b for a, b in zip(last, finals, strict=True)]
        print(
            f"| {policy} | {mean_se([float(r) for r in reach])} | {', '.join(map(str, reach))} |"
            f" {np.mean(last):.4f} | {mean_se([g * 100 for g in gap])} points |"
        )
    print(f"\nhalf of random order's epochs to its own final accuracy: {np.mean(budget) / 2:.2f}")
    print(f"(never reaching it counts as {epochs + 1} epochs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, seeds=10)
    args = parser.parse_args()
    shard = parse_shard(args.shard)
    cache = ResultCache("runs", shard)
    runs: dict[str, list[dict[str, Any]]] = {}
    for policy in POLICIES:
        revision = run_revision(policy)
        found = [
            cached_run(cache, RunKey(policy, 0.0, seed, args.epochs, "small", code=revision))
            for seed in range(args.seeds)
        ]
        runs[policy] = [run for run in found if run is not None]
    if shard is None:
        report(runs, args.epochs)


if __name__ == "__main__":
    main()
