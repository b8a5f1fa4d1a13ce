"""Shared by the MNIST study and the label-noise detection study: one training run with the
scores a single datasetq run records, measured after every epoch, and a result cache.

A run is keyed by its configuration; its figures are cached in ``docs/study/runs.json`` (and
cleanlab's in ``cleanlab.json``) so the two studies share runs and a rerun only trains what is
missing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from datasetq.models import ExamplesNet, SmallCNN
from datasetq.training import TrainConfig, make_splits, train_mnist

RESULTS = Path(
    os.environ.get("DATASETQ_STUDY_DIR", Path(__file__).resolve().parents[1] / "docs" / "study")
)

# The original study's configurations (random == heap with steps=1 in the original's words).
CONFIGS: dict[str, dict[str, Any] | None] = {
    "random": None,
    "heap steps=1": {"steps": 1},
    "heap": {},
    "heap max_visits=10": {"max_visits": 10},
    "heap max_visits=25": {"max_visits": 25},
    "heap max_visits=50": {"max_visits": 50},
}
MODELS = {"small": SmallCNN, "examples": ExamplesNet}


@dataclass(frozen=True)
class RunKey:
    config: str
    noise: float
    seed: int
    epochs: int
    model: str
    train_size: int = 8000

    def name(self) -> str:
        return (
            f"{self.config}|noise={self.noise}|seed={self.seed}|epochs={self.epochs}"
            f"|model={self.model}|train={self.train_size}"
        )


class ScoreTracker:
    """What a Recorder keeps per sample (visits, last and mean loss, margin, prediction),
    vectorised, so every one-run score can be ranked after each epoch."""

    def __init__(self, n: int) -> None:
        self.visits = np.zeros(n, dtype=np.int64)
        self.loss_sum = np.zeros(n)
        self.last_loss = np.full(n, np.nan)
        self.margin_sum = np.zeros(n)
        self.last_pred = np.full(n, -1, dtype=np.int64)
        self.draws = 0

    def __call__(self, index: torch.Tensor, metrics: dict[str, torch.Tensor]) -> None:
        ids = index.numpy()
        np.add.at(self.visits, ids, 1)
        np.add.at(self.loss_sum, ids, metrics["loss"].numpy())
        np.add.at(self.margin_sum, ids, metrics["margin"].numpy())
        self.last_loss[ids] = metrics["loss"].numpy()
        self.last_pred[ids] = metrics["pred"].numpy().astype(np.int64)
        self.draws += len(ids)

    def scores(self, evicted: np.ndarray) -> dict[str, np.ndarray]:
        """Higher = more likely mislabeled. Unvisited samples rank last."""
        seen = np.maximum(self.visits, 1)
        mean_loss = np.where(self.visits > 0, self.loss_sum / seen, -np.inf)
        flagged = np.zeros(len(self.visits))
        flagged[evicted] = 1.0
        return {
            "latest loss": np.nan_to_num(self.last_loss, nan=-np.inf),
            "mean loss": mean_loss,
            "visits": self.visits.astype(np.float64),
            "evicted": flagged,
            "AUM margin": np.where(self.visits > 0, -self.margin_sum / seen, -np.inf),
        }


def detection_figures(
    score: np.ndarray, truth: np.ndarray, flagged: np.ndarray
) -> dict[str, float]:
    """AUROC of a ranking, and precision / recall / F1 of a flagged set, against the truth."""
    finite = np.where(np.isfinite(score), score, np.nanmin(score[np.isfinite(score)]) - 1.0)
    tp = int((flagged & truth).sum())
    precision = tp / max(int(flagged.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {
        "auroc": float(roc_auc_score(truth, finite)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "flagged": int(flagged.sum()),
    }


def top_k(score: np.ndarray, k: int) -> np.ndarray:
    flagged = np.zeros(len(score), dtype=bool)
    flagged[np.argsort(-score, kind="stable")[:k]] = True
    return flagged


def one_run_detection(
    tracker: ScoreTracker, evicted: np.ndarray, labels: np.ndarray, truth: np.ndarray
) -> dict[str, dict[str, float]]:
    """Every one-run score: AUROC, and P/R/F1 of its natural flagged set (the evicted set;
    predicted != given) or, for a ranking, of its top k with k = the true number flipped."""
    k = int(truth.sum())
    figures = {}
    for name, score in tracker.scores(evicted).items():
        flagged = score > 0 if name == "evicted" else top_k(score, k)
        figures[name] = detection_figures(score, truth, flagged)
    disagree = (tracker.last_pred >= 0) & (tracker.last_pred != labels)
    figures["last prediction != label"] = detection_figures(disagree.astype(float), truth, disagree)
    return figures


def train_run(key: RunKey) -> dict[str, Any]:
    """Trains one configuration and returns its per-epoch figures (and detection figures)."""
    options = CONFIGS[key.config]
    config = TrainConfig(
        epochs=key.epochs,
        train_size=key.train_size,
        noise=key.noise,
        seed=key.seed,
        priority=options is not None,
        sampler_options=dict(options or {}),
    )
    splits = make_splits(config)
    train_set, _, flipped = splits
    truth = np.zeros(len(train_set), dtype=bool)
    truth[flipped] = True
    labels = train_set.labels.numpy()
    tracker = ScoreTracker(len(train_set))
    epochs: list[dict[str, Any]] = []

    def on_epoch(stats: Any, sampler: Any) -> None:
        row = asdict(stats)
        row["cumulative_draws"] = tracker.draws
        if key.noise > 0:
            evicted = sampler.evicted if sampler is not None else np.zeros(0, dtype=np.int64)
            row["detection"] = one_run_detection(tracker, evicted, labels, truth)
        epochs.append(row)

    torch.manual_seed(key.seed)
    start = time.perf_counter()
    train_mnist(
        config,
        model=MODELS[key.model](),
        on_epoch=on_epoch,
        on_batch=tracker,
        splits=splits,
    )
    return {"key": asdict(key), "seconds": time.perf_counter() - start, "epochs": epochs}


class ResultCache:
    """Results by name in ``RESULTS/<stem>.json``, computed once.

    With ``shard=(i, k)`` the process computes only every k-th missing result asked for
    (counting from i) and saves it to a file of its own, so k processes can share the work; the
    report run reads every ``<stem>*.json``.
    """

    def __init__(self, stem: str, shard: tuple[int, int] | None = None) -> None:
        self.results: dict[str, Any] = {}
        for path in sorted(RESULTS.glob(f"{stem}*.json")):
            self.results.update(json.loads(path.read_text()))
        suffix = "" if shard is None else f"-shard{shard[0]}"
        self.path = RESULTS / f"{stem}{suffix}.json"
        self.shard = shard
        self._own: dict[str, Any] = (
            json.loads(self.path.read_text()) if shard is not None and self.path.exists() else {}
        )
        self._asked = 0

    def get(self, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """The cached result, else ``compute()``'s; None when another shard computes it."""
        self._asked += 1
        if name in self.results:
            return dict(self.results[name])
        if self.shard is not None and (self._asked - 1) % self.shard[1] != self.shard[0]:
            return None
        result = compute()
        self.results[name] = result
        self._own[name] = result
        self.path.parent.mkdir(parents=True, exist_ok=True)
        saved = self._own if self.shard is not None else self.results
        self.path.write_text(json.dumps(saved, indent=1, sort_keys=True))
        return result


def cached_run(cache: ResultCache, key: RunKey) -> dict[str, Any] | None:
    """One training run's figures, trained (and announced) when missing."""

    def train() -> dict[str, Any]:
        result = train_run(key)
        last = result["epochs"][-1]
        print(
            f"  trained {key.name()}: acc {last['test_accuracy']:.4f} in {result['seconds']:.0f} s",
            flush=True,
        )
        return result

    return cache.get(key.name(), train)


def add_study_arguments(parser: argparse.ArgumentParser, noise: list[float]) -> None:
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--noise", type=float, nargs="+", default=noise)
    parser.add_argument("--model", choices=sorted(MODELS), default="small")
    parser.add_argument(
        "--shard", help="i/k: compute only this process's share of what is missing, no report"
    )


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/k"`` as ``(i, k)``. A shard runs one thread: k such processes beat one k-thread one."""
    if text is None:
        return None
    index, count = (int(part) for part in text.split("/"))
    if not 0 <= index < count:
        raise ValueError(f"shard should be i/k with 0 <= i < k, but got {text!r}")
    torch.set_num_threads(1)
    return index, count


def save_figure(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"\nsaved {path}")


def mean_sd(values: list[float]) -> str:
    array = np.asarray(values, dtype=float)
    return f"{array.mean():.4f} ± {array.std(ddof=1) if len(array) > 1 else 0.0:.4f}"
