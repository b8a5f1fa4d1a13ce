"""The sampling study: which policy trains well on noisy labels and finds them, from one run.

Noise models symmetric 0 / 20 / 40% and pair-flip (c -> c + 1) 20 / 40% on the training part of
the embedded MNIST digits (8,000 / 2,000 split per seed); configurations from
``study_common.CONFIGS`` (random order, the original greedy, greedy with ``max_visits=10``, the
balanced default and the candidates tried); 3 seeds; a 2,000-sample training set for the
eviction check; cleanlab on 5-fold out-of-fold probabilities as the detection reference.
Runs are cached per configuration, code revision (``study_common.code_revision``) and machine
(``study_common.machine``).

    .venv/bin/pip install -e '.[study]'
    .venv/bin/python benchmarks/studies/study_sampling.py --shard 0/2 &   # on 2 cores, then
    .venv/bin/python benchmarks/studies/study_sampling.py --shard 1/2; wait
    .venv/bin/python benchmarks/studies/study_sampling.py                 # the report
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from result_cache import ResultCache
from study_common import (
    CONFIGS,
    NOISE_KINDS,
    RunKey,
    add_study_arguments,
    cached_run,
    code_revision,
    machine,
    machine_description,
    parse_shard,
    run_revision,
)
from study_detection import cleanlab_aurocs

CELLS = [("sym", 0.0), ("sym", 0.2), ("sym", 0.4), ("pair", 0.2), ("pair", 0.4)]
# On the 2,000-sample training set: the eviction check, with the frontier of reject_scale.
SMALL_CONFIGS = [
    "random",
    "balanced",
    "balanced reject_scale=0",
    "balanced reject_scale=0.5",
    "balanced doubt_evidence=None",
    "balanced evidence_odds=None",
]
SCORE = "suspicion"  # the dashboard's default ranking: mean loss over coverage visits


def epochs_to_reach(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose test accuracy reaches ``target``; None if none does."""
    for epoch, value in enumerate(curve, start=1):
        if value >= target:
            return epoch
    return None


def cell_figures(runs: list[dict[str, Any]], random_final: list[float]) -> dict[str, Any]:
    """Mean over seeds of one configuration's figures in one cell."""
    last = [run["epochs"][-1] for run in runs]
    curves = [[e["test_accuracy"] for e in run["epochs"]] for run in runs]
    reach = [epochs_to_reach(c, r) for c, r in zip(curves, random_final, strict=True)]
    figures: dict[str, Any] = {
        "final": float(np.mean([row["test_accuracy"] for row in last])),
        "final_sd": float(np.std([row["test_accuracy"] for row in last], ddof=1)),
        "best": float(np.mean([max(c) for c in curves])),
        "reach": reach,
        "evicted": float(np.mean([row["evicted"] for row in last])),
        "sampler_s": float(
            np.mean([r["epochs"][-1]["sampler_seconds"] / len(r["epochs"]) for r in runs])
        ),
        "run_s": float(np.mean([run["seconds"] for run in runs])),
    }
    if "detection" in last[0]:
        detections = [row["detection"] for row in last]
        figures["auroc"] = [d[SCORE]["auroc"] for d in detections]
        figures["auroc_mean_loss"] = [d["mean loss"]["auroc"] for d in detections]
        figures["precision"] = float(np.mean([d["evicted"]["precision"] for d in detections]))
        figures["recall"] = float(np.mean([d["evicted"]["recall"] for d in detections]))
    return figures


def fmt_reach(reach: list[int | None]) -> str:
    if any(r is None for r in reach):
        return "/".join("-" if r is None else str(r) for r in reach)
    return f"{np.mean(reach):.1f}"  # type: ignore[arg-type]


def report(
    table: dict[tuple[str, float], dict[str, dict[str, Any]]],
    cleanlab: dict[tuple[str, float], list[float]],
    small: dict[tuple[str, float], dict[str, dict[str, Any]]],
    epochs: int,
) -> None:
    print(
        f"\ncode revision {code_revision()}, machine {machine()}: {machine_description()};"
        f" {epochs} epochs, 3-seed means\n"
    )
    print(
        "| noise | configuration | final acc | best acc | epochs to random's final |"
        " suspicion AUROC | random-order mean-loss AUROC | evicted | precision / recall |"
        " sampler s/epoch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (kind, noise), by_config in table.items():
        random_auroc = by_config["random"].get("auroc_mean_loss")
        for config, f in by_config.items():
            auroc = f"{np.mean(f['auroc']):.4f}" if "auroc" in f else "-"
            ref = f"{np.mean(random_auroc):.4f}" if random_auroc else "-"
            pr = f"{f['precision']:.3f} / {f['recall']:.3f}" if "precision" in f else "-"
            print(
                f"| {kind} {noise:.0%} | {config} | {f['final']:.4f} ± {f['final_sd']:.4f} |"
                f" {f['best']:.4f} | {fmt_reach(f['reach'])} | {auroc} | {ref} |"
                f" {f['evicted']:.0f} | {pr} | {f['sampler_s']:.3f} |"
            )
    print(
        "\ncleanlab (5-fold out-of-fold probabilities, 10 epochs per fold), self-confidence AUROC"
    )
    print(
        "\n| noise | cleanlab AUROC | balanced suspicion AUROC | worst seed: balanced - random |"
        " balanced losses only | worst seed: losses only - random |"
    )
    print("|---|---|---|---|---|---|")
    for cell, aurocs in cleanlab.items():
        random_aurocs = table[cell]["random"]["auroc_mean_loss"]
        row = f"| {cell[0]} {cell[1]:.0%} | {np.mean(aurocs):.4f} |"
        for config in ("balanced", "balanced losses only"):
            ranking = table[cell][config]["auroc"]
            gap = min(b - r for b, r in zip(ranking, random_aurocs, strict=True))
            row += f" {np.mean(ranking):.4f} | {gap:+.4f} |"
        print(row)
    print("\n2,000 training samples (same split seeds, 10 epochs)\n")
    print("| noise | configuration | final acc | evicted | precision / recall |")
    print("|---|---|---|---|---|")
    for (kind, noise), by_config in small.items():
        for config, f in by_config.items():
            pr = f"{f['precision']:.3f} / {f['recall']:.3f}" if "precision" in f else "-"
            print(
                f"| {kind} {noise:.0%} | {config} | {f['final']:.4f} |"
                f" {f['evicted']:.0f} ({f['evicted'] / 20:.2f}%) | {pr} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--no-cleanlab", action="store_true")
    args = parser.parse_args()
    shard = parse_shard(args.shard)
    runs = ResultCache("runs", shard)
    cleanlab_cache = ResultCache("cleanlab", shard)

    def collect(configs: list[str], size: int) -> dict[tuple[str, float], dict[str, Any]]:
        found: dict[tuple[str, float], dict[str, Any]] = {}
        for kind, noise in CELLS:
            found[(kind, noise)] = {
                config: [
                    cached_run(
                        runs,
                        RunKey(
                            config,
                            noise,
                            seed,
                            args.epochs,
                            "small",
                            size,
                            NOISE_KINDS[kind],
                            run_revision(config),
                        ),
                    )
                    for seed in range(args.seeds)
                ]
                for config in configs
            }
        return found

    big = collect(args.configs, 8000)
    small_runs = collect(SMALL_CONFIGS, 2000)
    cleanlab: dict[tuple[str, float], list[float]] = {}
    if not args.no_cleanlab:
        for kind, noise in CELLS[1:]:
            cleanlab[(kind, noise)] = cleanlab_aurocs(
                cleanlab_cache, noise, NOISE_KINDS[kind], args.seeds, args.epochs
            )
    if shard is not None:
        return

    def figures(found: dict[tuple[str, float], dict[str, Any]]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for cell, by_config in found.items():
            random_final = [r["epochs"][-1]["test_accuracy"] for r in by_config["random"]]
            out[cell] = {c: cell_figures(rs, random_final) for c, rs in by_config.items()}
        return out

    report(figures(big), cleanlab, figures(small_runs), args.epochs)


if __name__ == "__main__":
    main()
