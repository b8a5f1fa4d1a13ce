"""Which one-run suspicion score ranks mislabeled samples best, in the balanced policy's runs.

The dashboard ranks by the mean of each epoch's first reported loss (a *coverage visit*: one per
sample and epoch, however often it was drawn). This study retrains the sampling study's
``balanced`` and ``balanced losses only`` runs (the same seeds, splits and code) with every
coverage visit kept, scores the samples by each candidate below, and compares each ranking's
AUROC with cleanlab 5-fold's (from the sampling study's cache). Candidates that need the
reported margin are marked; the others read losses only.

    .venv/bin/python benchmarks/studies/study_scores.py --shard 0/2 &   # on 2 cores, then
    .venv/bin/python benchmarks/studies/study_scores.py --shard 1/2; wait
    .venv/bin/python benchmarks/studies/study_scores.py                 # the report
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from result_cache import ResultCache
from sklearn.metrics import roc_auc_score
from study_common import (
    NOISE_KINDS,
    RunKey,
    ScoreTracker,
    add_study_arguments,
    code_revision,
    parse_shard,
    train_config,
    train_run,
)
from study_detection import cleanlab_aurocs

from datasetq.training import make_splits

CELLS = [("sym", 0.2), ("sym", 0.4), ("pair", 0.2), ("pair", 0.4)]
CONFIGS = ["balanced losses only", "balanced"]
WRONG_LOSS = math.log(2.0)


class CoverageTracker(ScoreTracker):
    """A ScoreTracker that also keeps every epoch's coverage-visit loss and margin."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.losses: list[np.ndarray] = []
        self.margins: list[np.ndarray] = []
        self._loss = np.full(n, np.nan)
        self._margin = np.full(n, np.nan)

    def new_epoch(self) -> None:
        self.losses.append(self._loss)
        self.margins.append(self._margin)
        self._loss = np.full(len(self._loss), np.nan)
        self._margin = np.full(len(self._margin), np.nan)
        super().new_epoch()

    def on_coverage(
        self, ids: np.ndarray, positions: np.ndarray, metrics: dict[str, torch.Tensor]
    ) -> None:
        super().on_coverage(ids, positions, metrics)
        self._loss[ids] = metrics["loss"].numpy()[positions]
        self._margin[ids] = metrics["margin"].numpy()[positions]


def mean_over_epochs(values: np.ndarray) -> np.ndarray:
    """Mean over epochs (axis 0), ignoring epochs without a coverage visit."""
    counts = (~np.isnan(values)).sum(axis=0)
    return np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), -np.inf)


def _median(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # samples never visited: all NaN
        median = np.nanmedian(values, axis=0)
    return np.where(np.isnan(median), -np.inf, median)


def _by_epoch(loss: np.ndarray) -> np.ndarray:
    """Mean with weight e on epoch e (1-based): later, better-trained epochs count more."""
    weights = np.arange(1, len(loss) + 1, dtype=float)[:, None] * ~np.isnan(loss)
    total = weights.sum(axis=0)
    return np.where(total > 0, np.nansum(loss * weights, axis=0) / np.maximum(total, 1), -np.inf)


def _log_odds(loss: np.ndarray) -> np.ndarray:
    clipped = np.maximum(loss, 1e-12)
    return -clipped - np.log(-np.expm1(-clipped))


def _epoch_ranks(loss: np.ndarray) -> np.ndarray:
    """Each coverage loss as its percentile among the epoch's coverage losses."""
    ranks = np.full_like(loss, np.nan)
    for epoch, row in enumerate(loss):
        seen = ~np.isnan(row)
        order = np.argsort(np.argsort(row[seen]))
        ranks[epoch][seen] = order / max(int(seen.sum()) - 1, 1)
    return ranks


def _doubt_share(loss: np.ndarray) -> np.ndarray:
    doubted = np.where(np.isnan(loss), np.nan, (loss > WRONG_LOSS).astype(float))
    return mean_over_epochs(doubted) + 1e-3 * mean_over_epochs(loss)  # ties broken by the mean loss


# Higher = more likely mislabeled. Arguments: coverage losses and margins, epochs x samples.
SCORES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "mean loss (the dashboard's)": lambda loss, _: mean_over_epochs(loss),
    "mean loss without the warm-up epoch": lambda loss, _: mean_over_epochs(loss[1:]),
    "mean loss clipped at 2": lambda loss, _: mean_over_epochs(np.minimum(loss, 2.0)),
    "median loss": lambda loss, _: _median(loss),
    "share of visits with loss > ln 2": lambda loss, _: _doubt_share(loss),
    "mean negative log-odds": lambda loss, _: mean_over_epochs(-_log_odds(loss)),
    "mean loss weighted by epoch": lambda loss, _: _by_epoch(loss),
    "mean percentile within the epoch": lambda loss, _: mean_over_epochs(_epoch_ranks(loss)),
    "mean negative margin (needs margins)": lambda _, margin: mean_over_epochs(-margin),
}


def auroc_unscored_last(truth: np.ndarray, score: np.ndarray) -> float:
    """AUROC with samples that have no score (never had a coverage visit there) ranked last."""
    finite = np.isfinite(score)
    return float(roc_auc_score(truth, np.where(finite, score, score[finite].min() - 1.0)))


def score_run(key: RunKey) -> dict[str, Any]:
    """Trains one run with every coverage visit kept; each candidate score's AUROC."""
    _, _, flipped = make_splits(train_config(key))
    tracker = CoverageTracker(key.train_size)
    result = train_run(key, tracker)
    truth = np.zeros(key.train_size, dtype=bool)
    truth[flipped] = True
    loss, margin = np.stack(tracker.losses), np.stack(tracker.margins)
    recorded = result["epochs"][-1]["detection"]["suspicion"]["auroc"]
    aurocs = {
        name: auroc_unscored_last(truth, score(loss, margin)) for name, score in SCORES.items()
    }
    # The tracker's own suspicion and the first candidate are the same score on the same run.
    assert abs(aurocs["mean loss (the dashboard's)"] - recorded) < 1e-9, (aurocs, recorded)
    return {"auroc": aurocs}


def report(found: dict[tuple[str, float, str], list[dict[str, float]]], cleanlab: Any) -> None:
    print("\nAUROC, 3-seed mean (worst seed minus cleanlab 5-fold on the same seed)\n")
    header = "| score | " + " | ".join(f"{k} {n:.0%} {c}" for k, n, c in found) + " |"
    print(header)
    print("|---" * (len(found) + 1) + "|")
    for name in SCORES:
        cells = []
        for (kind, noise, _), seeds in found.items():
            values = [seed[name] for seed in seeds]
            gap = min(v - c for v, c in zip(values, cleanlab[(kind, noise)], strict=True))
            cells.append(f"{np.mean(values):.4f} ({gap:+.4f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(
        "| cleanlab 5-fold | "
        + " | ".join(f"{np.mean(cleanlab[(k, n)]):.4f}" for k, n, _ in found)
        + " |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser)
    args = parser.parse_args()
    shard = parse_shard(args.shard)
    cache = ResultCache("scores", shard)
    cleanlab_cache = ResultCache("cleanlab", shard)
    code = code_revision()
    study_runs = ResultCache("runs").results  # the sampling study's runs, to check against
    same, compared = 0, 0
    found: dict[tuple[str, float, str], list[dict[str, float]]] = {}
    cleanlab: dict[tuple[str, float], list[float]] = {}
    for kind, noise in CELLS:
        for config in CONFIGS:
            seeds = []
            for seed in range(args.seeds):
                key = RunKey(
                    config, noise, seed, args.epochs, "small", 8000, NOISE_KINDS[kind], code
                )
                result = cache.get(key.name(), lambda key=key: score_run(key))
                if result is not None:
                    seeds.append(result["auroc"])
                    cached = study_runs.get(key.name())
                    if cached is not None:
                        compared += 1
                        auroc = cached["epochs"][-1]["detection"]["suspicion"]["auroc"]
                        same += auroc == result["auroc"]["mean loss (the dashboard's)"]
            found[(kind, noise, config)] = seeds
        cleanlab[(kind, noise)] = cleanlab_aurocs(
            cleanlab_cache, noise, NOISE_KINDS[kind], args.seeds, args.epochs
        )
    if shard is None:
        report(found, cleanlab)
        print(
            f"\n{same} of {compared} runs give the sampling study's cached suspicion AUROC exactly"
            " (the same training, retrained here)"
        )


if __name__ == "__main__":
    main()
