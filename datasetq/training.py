"""Training the small CNN on the embedded MNIST data: shared by the demo, tests and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, RandomSampler

from .dataloader import DataLoader
from .datasets import EmbeddedMNIST
from .models import SmallCNN
from .sampler import HeapqSampler

__all__ = [
    "EpochStats",
    "MNISTSplit",
    "TrainConfig",
    "flip_labels",
    "margin_and_prediction",
    "pair_flip_labels",
    "train_mnist",
]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass
class TrainConfig:
    """What to train. Defaults: 8k train / 2k test, 3 epochs, priority sampling."""

    epochs: int = 3
    train_size: int = 8000
    batch_size: int = 64
    lr: float = 1.0
    gamma: float = 0.7
    noise: float = 0.0
    noise_kind: str = "symmetric"  # or "pair": class c becomes c + 1
    seed: int = 0
    priority: bool = True
    sampler_options: dict[str, Any] = field(default_factory=dict)
    losses_only: bool = False  # the sampler gets no margin or prediction


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    test_loss: float
    test_accuracy: float
    draws: int
    distinct_visited: int
    evicted: int
    evicted_flipped: int
    seconds: float


class MNISTSplit(Dataset[tuple[int, tuple[torch.Tensor, int]]]):
    """A normalised tensor view of part of the embedded MNIST data, returning ``(index, item)``.

    Index ``i`` is the position within this split; ``source_ids[i]`` is the MNIST index.
    """

    def __init__(self, source_ids: npt.NDArray[np.int64], labels: npt.NDArray[np.int64]) -> None:
        mnist = EmbeddedMNIST()
        images = mnist.data[torch.from_numpy(source_ids)].float().div_(255.0)
        self.images = images.sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.source_ids = source_ids
        self.classes: list[str] = list(mnist.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[int, tuple[torch.Tensor, int]]:
        return index, (self.images[index], int(self.labels[index]))


def flip_labels(
    labels: npt.NDArray[np.int64], fraction: float, num_classes: int, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Symmetric label noise: a seeded ``fraction`` of labels moved to another class.

    Returns the noisy labels and the positions that were flipped.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction should be in [0, 1], but got fraction={fraction}")
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(labels), size=round(fraction * len(labels)), replace=False))
    noisy = labels.copy()
    shift = rng.integers(1, num_classes, size=len(flipped))
    noisy[flipped] = (labels[flipped] + shift) % num_classes
    return noisy, flipped


def pair_flip_labels(
    labels: npt.NDArray[np.int64], fraction: float, num_classes: int, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Pair-flip label noise: a seeded ``fraction`` of labels ``c`` become ``c + 1``.

    Returns the noisy labels and the positions that were flipped.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction should be in [0, 1], but got fraction={fraction}")
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(labels), size=round(fraction * len(labels)), replace=False))
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + 1) % num_classes
    return noisy, flipped


NOISE_MODELS = {"symmetric": flip_labels, "pair": pair_flip_labels}


def make_splits(
    config: TrainConfig,
) -> tuple[MNISTSplit, MNISTSplit, npt.NDArray[np.int64]]:
    """Seeded train/test split of the 10k digits; noise only on the training part."""
    labels = EmbeddedMNIST().targets.numpy().astype(np.int64)
    order = np.random.default_rng(config.seed).permutation(len(labels))
    train_ids, test_ids = order[: config.train_size], order[config.train_size :]
    if config.noise_kind not in NOISE_MODELS:
        raise ValueError(
            f"noise_kind should be one of {sorted(NOISE_MODELS)}, but got {config.noise_kind!r}"
        )
    flip = NOISE_MODELS[config.noise_kind]
    noisy, flipped = flip(labels[train_ids], config.noise, 10, config.seed + 1)
    return MNISTSplit(train_ids, noisy), MNISTSplit(test_ids, labels[test_ids]), flipped


def train_mnist(
    config: TrainConfig,
    *,
    model: nn.Module | None = None,
    on_epoch: Callable[[EpochStats, HeapqSampler | None], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_batch: Callable[[torch.Tensor, dict[str, torch.Tensor]], None] | None = None,
    sampler_factory: Callable[[MNISTSplit], HeapqSampler] | None = None,
    wrap_dataset: Callable[[MNISTSplit], Dataset[Any]] | None = None,
    splits: tuple[MNISTSplit, MNISTSplit, npt.NDArray[np.int64]] | None = None,
) -> list[EpochStats]:
    """Trains the small CNN with (or without) priority sampling; returns per-epoch figures.

    Each step reports ``loss``, ``margin`` and ``pred`` per sample to the sampler (a Recorder
    stores the latest margin and prediction) and to ``on_batch(index, metrics)``.
    """
    torch.manual_seed(config.seed)
    # ``splits``: what make_splits(config) returned, when the caller already has it.
    train_set, test_set, flipped = splits if splits is not None else make_splits(config)
    # The loader may read through a wrapper (a Recorder's live labels); the sampler sees the split.
    served: Dataset[Any] = wrap_dataset(train_set) if wrap_dataset is not None else train_set
    model = model if model is not None else SmallCNN()
    sampler: HeapqSampler | None = None
    if config.priority:
        sampler = (
            sampler_factory(train_set)
            if sampler_factory is not None
            else HeapqSampler(train_set, shuffle=True, seed=config.seed, **config.sampler_options)
        )
        loader = DataLoader(served, batch_size=config.batch_size, sampler=sampler)
    else:
        generator = torch.Generator().manual_seed(config.seed)
        loader = DataLoader(
            served,
            batch_size=config.batch_size,
            sampler=RandomSampler(train_set, generator=generator),
        )
    test_loader = DataLoader(test_set, batch_size=1000)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=config.gamma)
    history = []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        model.train()
        total, draws, visited = 0.0, 0, torch.zeros(len(train_set), dtype=torch.bool)
        for step, (index, (data, target)) in enumerate(loader):
            output = model(data)
            loss = F.nll_loss(output, target, reduction="none")
            optimizer.zero_grad()
            loss.mean().backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            if sampler is not None or on_batch is not None:
                metrics = {"loss": loss.detach(), **margin_and_prediction(output.detach(), target)}
                if sampler is not None:
                    sampler.update(
                        index, {"loss": metrics["loss"]} if config.losses_only else metrics
                    )
                if on_batch is not None:
                    on_batch(index, metrics)
            total += float(loss.detach().sum())
            draws += len(index)
            visited[index] = True
            if on_step is not None:
                on_step(step + 1, len(loader))
        scheduler.step()
        test_loss, accuracy = evaluate(model, test_loader)
        stats = EpochStats(
            epoch=epoch,
            train_loss=total / max(draws, 1),
            test_loss=test_loss,
            test_accuracy=accuracy,
            draws=draws,
            distinct_visited=int(visited.sum()),
            evicted=len(sampler.evicted) if sampler is not None else 0,
            evicted_flipped=(
                int(np.isin(sampler.evicted, flipped).sum()) if sampler is not None else 0
            ),
            seconds=time.perf_counter() - start,
        )
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats, sampler)
    return history


def margin_and_prediction(output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The AUM-style margin (given label's logit minus the largest other) and the prediction.

    ``output`` may be logits or log-probabilities: the margin is the same for both.
    """
    # Five kernels (each launch costs the training thread time on a fast GPU): the largest
    # other logit is the runner-up where the prediction is the given label, else the top one.
    top = output.topk(2, dim=1)
    prediction = top.indices[:, 0]
    given = output.gather(1, target.unsqueeze(1)).squeeze(1)
    best_other = torch.where(prediction == target, top.values[:, 1], top.values[:, 0])
    return {"margin": given - best_other, "pred": prediction.float()}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` over an indexed loader."""
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for _, (data, target) in loader:
        output = model(data)
        loss += float(F.nll_loss(output, target, reduction="sum"))
        correct += int((output.argmax(dim=1) == target).sum())
        count += len(target)
    return loss / count, correct / count
