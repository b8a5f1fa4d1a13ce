"""Shared by the MNIST study and the label-noise detection study: one training run with the
scores a single datasetq run records, measured after every epoch, and a result cache.

A run is keyed by its configuration, by a hash of the code that trains it (the sampler,
its helpers, the training loop and the models: :data:`CODE_FILES`) and by the machine that ran
it (:func:`machine`: the same code trains to other figures on a CPU whose kernels differ); its
figures are cached in ``docs/study/runs*.json`` (and cleanlab's in ``cleanlab*.json``), so the
studies share runs, a rerun only trains what is missing, and a change to that code or a move to
another kind of machine retrains instead of reporting stale or mixed figures.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from result_cache import ResultCache
from sklearn.metrics import roc_auc_score

from datasetq.models import ExamplesNet, SmallCNN
from datasetq.sampler import HeapqSampler
from datasetq.training import TrainConfig, make_splits, train_mnist

# Every study trains on one thread: the figures depend on the thread count (PyTorch splits its
# reductions by it), so a cached run is reproduced only with the count it was trained with, and
# the shards of a study share the machine's cores anyway.
torch.set_num_threads(1)


# Sampler options per configuration (None: random order). "losses only" runs report only the
# loss to the sampler (no margin), as a loop that computes nothing else would.
CONFIGS: dict[str, dict[str, Any] | None] = {
    "random": None,
    "greedy": {"policy": "greedy"},
    "greedy max_visits=10": {"policy": "greedy", "max_visits": 10},
    "balanced": {},
    "balanced losses only": {"losses_only": True},
    "balanced reject_scale=0": {"reject_scale": 0.0},
    "balanced reject_scale=0.5": {"reject_scale": 0.5},
    "balanced doubt_evidence=None": {"doubt_evidence": None},
    "balanced evidence_odds=None": {"evidence_odds": None},
    "balanced prune=0.5 max_extra=1": {"prune": 0.5, "max_extra": 1},
}
MODELS = {"small": SmallCNN, "examples": ExamplesNet}
NOISE_KINDS = {"sym": "symmetric", "pair": "pair"}
_ROOT = Path(__file__).resolve().parents[2]
CODE_FILES = [
    *sorted((_ROOT / "datasetq").glob("_*.py")),
    _ROOT / "datasetq" / "sampler.py",
    _ROOT / "datasetq" / "training.py",
    _ROOT / "datasetq" / "models.py",
    _ROOT / "datasetq" / "dataloader.py",
]


# What a random-order training run (cleanlab's cross-validation) depends on: not the sampler.
TRAINING_FILES = [
    _ROOT / "datasetq" / "training.py",
    _ROOT / "datasetq" / "models.py",
    _ROOT / "datasetq" / "dataloader.py",
]


def code_revision(files: list[Path] | None = None) -> str:
    """A hash of the code a training run depends on: cached runs are keyed by it."""
    digest = hashlib.sha256()
    for path in CODE_FILES if files is None else files:
        digest.update(path.relative_to(_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def run_revision(config: str) -> str:
    """The code revision that keys a configuration's runs: random order never touches the
    sampler, so its runs depend on the training code alone."""
    return code_revision(TRAINING_FILES if CONFIGS[config] is None else None)


# CPU features that decide which floating-point kernels PyTorch and NumPy run.
_KERNEL_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")


@functools.cache
def machine_description() -> str:
    """The processor, its kernel-relevant features and the numeric libraries' versions."""
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name":
                model = value.strip()
            elif name.strip() == "flags":
                flags = set(value.split())
    features = [flag for flag in _KERNEL_FLAGS if flag in flags]
    return (
        f"{model} ({platform.machine()}; {' '.join(features) or 'no vector flags read'}; "
        f"torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}, "
        f"numpy {np.__version__})"
    )


@functools.cache
def machine() -> str:
    """A short hash of :func:`machine_description`: cached runs are keyed by it."""
    return hashlib.sha256(machine_description().encode()).hexdigest()[:8]


@dataclass(frozen=True)
class RunKey:
    config: str
    noise: float
    seed: int
    epochs: int
    model: str
    train_size: int = 8000
    noise_kind: str = "symmetric"
    code: str = ""
    machine: str = field(default_factory=machine)

    def name(self) -> str:
        return (
            f"{self.config}|noise={self.noise}|kind={self.noise_kind}|seed={self.seed}"
            f"|epochs={self.epochs}|model={self.model}|train={self.train_size}|code={self.code}"
            f"|machine={self.machine}"
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
        self.coverage_sum = np.zeros(n)  # first loss of each epoch (what the store ranks by)
        self.coverage_epochs = np.zeros(n, dtype=np.int64)
        self.seen = np.zeros(n, dtype=bool)
        self.draws = 0

    def new_epoch(self) -> None:
        self.seen[:] = False

    def __call__(self, index: torch.Tensor, metrics: dict[str, torch.Tensor]) -> None:
        ids = index.numpy()
        np.add.at(self.visits, ids, 1)
        np.add.at(self.loss_sum, ids, metrics["loss"].numpy())
        np.add.at(self.margin_sum, ids, metrics["margin"].numpy())
        self.last_loss[ids] = metrics["loss"].numpy()
        self.last_pred[ids] = metrics["pred"].numpy().astype(np.int64)
        unique, first = np.unique(ids, return_index=True)
        fresh = ~self.seen[unique]
        self.seen[unique[fresh]] = True
        self.on_coverage(unique[fresh], first[fresh], metrics)
        self.draws += len(ids)

    def on_coverage(
        self, ids: np.ndarray, positions: np.ndarray, metrics: dict[str, torch.Tensor]
    ) -> None:
        """Takes each epoch's first report of ``ids``, at ``positions`` in this step's batch."""
        self.coverage_sum[ids] += metrics["loss"].numpy()[positions]
        self.coverage_epochs[ids] += 1

    def scores(self, evicted: np.ndarray) -> dict[str, np.ndarray]:
        """Higher = more likely mislabeled. Unvisited samples rank last."""
        seen = np.maximum(self.visits, 1)
        mean_loss = np.where(self.visits > 0, self.loss_sum / seen, -np.inf)
        flagged = np.zeros(len(self.visits))
        flagged[evicted] = 1.0
        covered = np.maximum(self.coverage_epochs, 1)
        return {
            "suspicion": np.where(self.coverage_epochs > 0, self.coverage_sum / covered, -np.inf),
            "latest loss": np.nan_to_num(self.last_loss, nan=-np.inf),
            "mean loss": mean_loss,
            "visits": self.visits.astype(np.float64),
            "evicted": flagged,
            "AUM margin": np.where(self.visits > 0, -self.margin_sum / seen, -np.inf),
        }


class TimedSampler(HeapqSampler):
    """Wraps a sampler's ``__iter__`` and ``update`` to count the seconds spent in them."""

    def __init__(self, inner: HeapqSampler, seconds: list[float]) -> None:
        self.__dict__.update(inner.__dict__)
        self._seconds = seconds

    def __iter__(self) -> Any:
        start = time.perf_counter()
        iterator = super().__iter__()
        self._seconds[0] += time.perf_counter() - start
        return _TimedIterator(iterator, self._seconds)

    def update(self, indices: Any, metrics: Any) -> None:
        start = time.perf_counter()
        super().update(indices, metrics)
        self._seconds[0] += time.perf_counter() - start


class _TimedIterator:
    def __init__(self, inner: Any, seconds: list[float]) -> None:
        self.inner, self.seconds = inner, seconds

    def __iter__(self) -> _TimedIterator:
        return self

    def __next__(self) -> int:
        start = time.perf_counter()
        try:
            return int(next(self.inner))
        finally:
            self.seconds[0] += time.perf_counter() - start


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


def train_config(key: RunKey) -> TrainConfig:
    """The training set-up of one run: its split, noise, seed and sampler options."""
    options = dict(CONFIGS[key.config] or {})
    losses_only = bool(options.pop("losses_only", False))
    return TrainConfig(
        epochs=key.epochs,
        train_size=key.train_size,
        noise=key.noise,
        noise_kind=key.noise_kind,
        seed=key.seed,
        priority=CONFIGS[key.config] is not None,
        sampler_options=options,
        losses_only=losses_only,
    )


def train_run(key: RunKey, tracker: ScoreTracker | None = None) -> dict[str, Any]:
    """Trains one configuration and returns its per-epoch figures (and detection figures).

    ``tracker`` (optional) receives every step's metrics in place of a new ScoreTracker.
    """
    config = train_config(key)
    options = config.sampler_options
    splits = make_splits(config)
    train_set, _, flipped = splits
    truth = np.zeros(len(train_set), dtype=bool)
    truth[flipped] = True
    labels = train_set.labels.numpy()
    tracker = tracker if tracker is not None else ScoreTracker(len(train_set))
    epochs: list[dict[str, Any]] = []

    def on_epoch(stats: Any, sampler: Any) -> None:
        row = asdict(stats)
        row["cumulative_draws"] = tracker.draws
        row["sampler_seconds"] = sampler_seconds[0]
        evicted = sampler.evicted if sampler is not None else np.zeros(0, dtype=np.int64)
        if key.noise > 0:
            row["detection"] = one_run_detection(tracker, evicted, labels, truth)
        tracker.new_epoch()
        epochs.append(row)

    sampler_seconds = [0.0]

    def timed_sampler(train_set: Any) -> Any:
        return TimedSampler(
            HeapqSampler(train_set, shuffle=True, seed=key.seed, **options), sampler_seconds
        )

    torch.manual_seed(key.seed)
    start = time.perf_counter()
    train_mnist(
        config,
        model=MODELS[key.model](),
        on_epoch=on_epoch,
        on_batch=tracker,
        splits=splits,
        sampler_factory=timed_sampler,
    )
    return {
        "key": asdict(key),
        "machine": machine_description(),
        "seconds": time.perf_counter() - start,
        "epochs": epochs,
    }


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


def add_study_arguments(
    parser: argparse.ArgumentParser, noise: list[float] | None = None, seeds: int = 3
) -> None:
    """``--seeds``, ``--epochs`` and ``--shard``; ``--noise`` and ``--model`` for a study that
    chooses them (``noise`` given: its default levels)."""
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--epochs", type=int, default=10)
    if noise is not None:
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
