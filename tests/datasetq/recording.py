"""Helpers for recorder tests: a tiny labelled dataset and a synthetic training loop."""

from __future__ import annotations

import numpy as np
import torch

from datasetq import HeapqSampler, Recorder


class TinyDataset(torch.utils.data.Dataset):
    classes = ("cat", "dog", "bird")

    def __init__(self, n: int = 60) -> None:
        self.targets = [i % 3 for i in range(n)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return index, (torch.tensor([float(index)]), self.targets[index])


def synthetic_loss(ids, epoch: int) -> np.ndarray:
    """Hard samples (id % 10 == 0) stay hard; others get easier with every epoch."""
    ids = np.asarray(ids)
    base = np.where(ids % 10 == 0, 3.0, 1.0 / (epoch + 1))
    return base + (ids % 7) / 100.0


def train_recorded(recorder: Recorder, dataset, epochs: int, batch: int = 8, **sampler_options):
    """Runs epochs of draws and updates; returns the sampler and every (epoch, ids, losses)."""
    options = {"seed": 0, "chunk_size": 8, **sampler_options}
    sampler = HeapqSampler(dataset, recorder=recorder, **options)
    reports = []
    for epoch in range(epochs):
        drawn = []
        for index in sampler:
            drawn.append(index)
            if len(drawn) == batch:
                losses = synthetic_loss(drawn, epoch)
                sampler.update(drawn, {"loss": losses, "pred": np.zeros(len(drawn))})
                reports.append((epoch, list(drawn), losses.tolist()))
                drawn = []
        if drawn:
            losses = synthetic_loss(drawn, epoch)
            sampler.update(drawn, {"loss": losses, "pred": np.zeros(len(drawn))})
            reports.append((epoch, list(drawn), losses.tolist()))
    return sampler, reports
