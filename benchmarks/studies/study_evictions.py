"""What eviction hides from a losses-only run's ranking: where its AUROC falls short of random
order's on the same seed, and of cleanlab's.

At symmetric noise the ``balanced losses only`` run ranks slightly below cleanlab 5-fold and
random order's mean loss. This study trains that run and the same seed's random-order run with
every coverage visit kept, and splits the ranking's error (the share of (clean, flipped) pairs
ranked the wrong way, which is 1 - AUROC) by whether the priority run evicted each of the two
samples. The same split under random order's mean loss, with the same groups, shows which
pairs priority sampling loses: the clean samples it evicts, whose losses stop being measured,
or the flipped samples it keeps. It also reports how the model saw the evicted clean samples
(their margins, which the loop computes but this configuration does not report).

    .venv/bin/python benchmarks/studies/study_evictions.py --shard 0/2 &   # on 2 cores, then
    .venv/bin/python benchmarks/studies/study_evictions.py --shard 1/2; wait
    .venv/bin/python benchmarks/studies/study_evictions.py                 # the report
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from result_cache import ResultCache
from study_common import (
    NOISE_KINDS,
    RunKey,
    add_study_arguments,
    parse_shard,
    run_revision,
    train_config,
    train_run,
)
from study_detection import cleanlab_aurocs
from study_scores import CoverageTracker, auroc_unscored_last, mean_over_epochs

from datasetq.training import make_splits

CELLS = [("sym", 0.2), ("sym", 0.4)]
PRIORITY = "balanced losses only"
GROUPS = ("clean evicted", "clean kept", "flipped evicted", "flipped kept")


class EvictionTracker(CoverageTracker):
    """A CoverageTracker that also keeps the evicted set the run was last scored with."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.evicted = np.zeros(0, dtype=np.int64)

    def scores(self, evicted: np.ndarray) -> dict[str, np.ndarray]:
        self.evicted = np.asarray(evicted, dtype=np.int64).copy()
        return super().scores(evicted)


def _tracked(key: RunKey) -> EvictionTracker:
    tracker = EvictionTracker(key.train_size)
    train_run(key, tracker)  # which closes every epoch, the last included, with new_epoch()
    return tracker


def misordered_shares(
    score: np.ndarray, groups: dict[str, np.ndarray], pairs: int
) -> dict[str, float]:
    """Per (clean group, flipped group): the share of all (clean, flipped) pairs in which the
    clean sample scores at least as high as the flipped one (ties count as wrong)."""
    shares = {}
    for clean in ("clean evicted", "clean kept"):
        ranked = np.sort(score[groups[clean]])
        for flipped in ("flipped evicted", "flipped kept"):
            above = len(ranked) - np.searchsorted(ranked, score[groups[flipped]], side="left")
            shares[f"{clean} / {flipped}"] = float(above.sum()) / pairs
    return shares


def seed_keys(noise: float, kind: str, seed: int, epochs: int) -> dict[str, RunKey]:
    """The losses-only priority run and the random-order run of one seed."""
    return {
        config: RunKey(
            config, noise, seed, epochs, "small", 8000, NOISE_KINDS[kind], run_revision(config)
        )
        for config in (PRIORITY, "random")
    }


def compare_seed(keys: dict[str, RunKey]) -> dict[str, Any]:
    """Trains the two runs of :func:`seed_keys`; the split of each ranking's error by the
    priority run's evictions, and how both models saw the samples."""
    _, _, flipped_ids = make_splits(train_config(keys[PRIORITY]))
    truth = np.zeros(keys[PRIORITY].train_size, dtype=bool)
    truth[flipped_ids] = True
    tracked = {config: _tracked(key) for config, key in keys.items()}
    evicted = np.zeros(len(truth), dtype=bool)
    evicted[tracked[PRIORITY].evicted] = True
    groups = {
        "clean evicted": ~truth & evicted,
        "clean kept": ~truth & ~evicted,
        "flipped evicted": truth & evicted,
        "flipped kept": truth & ~evicted,
    }
    pairs = int((~truth).sum()) * int(truth.sum())
    figures: dict[str, Any] = {"sizes": {name: int(mask.sum()) for name, mask in groups.items()}}
    for config, tracker in tracked.items():
        loss, margin = np.stack(tracker.losses), np.stack(tracker.margins)
        score = mean_over_epochs(loss)
        last_margin = _last_visit(margin)
        auroc, misordered = (
            auroc_unscored_last(truth, score),
            misordered_shares(score, groups, pairs),
        )
        # The four parts are the whole error (no two scores tie in these runs).
        assert abs(sum(misordered.values()) - (1 - auroc)) < 1e-9, (auroc, misordered)
        figures[config] = {
            "auroc": auroc,
            "misordered": misordered,
            "mean score": {name: float(score[mask].mean()) for name, mask in groups.items()},
            # Whether the model ranked the given label above every other class at the sample's
            # last coverage visit (for an evicted sample: the visit that evicted it).
            "accepted at last visit": {
                name: float((last_margin[mask] > 0).mean()) for name, mask in groups.items()
            },
        }
    return figures


def _last_visit(values: np.ndarray) -> np.ndarray:
    """Each sample's value at its last epoch with a coverage visit (epochs x samples)."""
    seen = ~np.isnan(values)
    last = values.shape[0] - 1 - np.argmax(seen[::-1], axis=0)
    return values[last, np.arange(values.shape[1])]


def report(found: dict[tuple[str, float], list[dict[str, Any]]], cleanlab: Any) -> None:
    for (kind, noise), seeds in found.items():
        print(f"\n### {kind} {noise:.0%}, {len(seeds)} seeds (means)\n")
        reference = np.mean(cleanlab[(kind, noise)])
        print(f"cleanlab 5-fold AUROC {reference:.4f} (1 - AUROC {1 - reference:.5f})\n")
        print("| | " + " | ".join(GROUPS) + " |")
        print("|---|" + "---|" * len(GROUPS))
        sizes = [np.mean([s["sizes"][g] for s in seeds]) for g in GROUPS]
        print("| samples | " + " | ".join(f"{size:.0f}" for size in sizes) + " |")
        for config in (PRIORITY, "random"):
            accepted = [
                np.mean([s[config]["accepted at last visit"][g] for s in seeds]) for g in GROUPS
            ]
            score = [np.mean([s[config]["mean score"][g] for s in seeds]) for g in GROUPS]
            print(f"| {config}: mean loss | " + " | ".join(f"{v:.2f}" for v in score) + " |")
            print(
                f"| {config}: label accepted at the last visit | "
                + " | ".join(f"{v:.0%}" for v in accepted)
                + " |"
            )
        print("\n| ranking | AUROC | " + " | ".join(seeds[0][PRIORITY]["misordered"]) + " |")
        print("|---|---|" + "---|" * len(seeds[0][PRIORITY]["misordered"]))
        for config in (PRIORITY, "random"):
            shares = seeds[0][config]["misordered"]
            means = [np.mean([s[config]["misordered"][pair] for s in seeds]) for pair in shares]
            auroc = np.mean([s[config]["auroc"] for s in seeds])
            print(f"| {config} | {auroc:.4f} | " + " | ".join(f"{v:.5f}" for v in means) + " |")
    print(
        "\nEach share: the pairs (one clean, one flipped sample, from the named groups of the"
        " priority run) that the ranking orders the wrong way, out of all clean x flipped pairs;"
        " the four add up to 1 - AUROC."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    args = parser.parse_args()
    shard = parse_shard(args.shard)
    cache = ResultCache("evictions", shard)
    cleanlab_cache = ResultCache("cleanlab", shard)
    found: dict[tuple[str, float], list[dict[str, Any]]] = {}
    cleanlab: dict[tuple[str, float], list[float]] = {}
    for kind, noise in CELLS:
        seeds = []
        for seed in range(args.seeds):
            keys = seed_keys(noise, kind, seed, args.epochs)
            result = cache.get(
                f"against random|{keys[PRIORITY].name()}",
                lambda keys=keys: compare_seed(keys),
            )
            if result is not None:
                seeds.append(result)
        found[(kind, noise)] = seeds
        cleanlab[(kind, noise)] = cleanlab_aurocs(
            cleanlab_cache, noise, NOISE_KINDS[kind], args.seeds, args.epochs
        )
    if shard is None:
        report(found, cleanlab)


if __name__ == "__main__":
    main()
