"""A dataset wrapper that serves labels fixed in the dashboard to a running job."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from torch.utils.data import Dataset

__all__ = ["LiveLabels"]


class LiveLabels(Dataset[Any]):
    r"""Replaces each item's label with the current one from a :class:`Recorder`.

    Wraps a dataset returning ``(index, (x, label))`` or ``(x, label)``. The recorder updates
    the labels between epochs, when it applies relabels made in the dashboard.

    .. note::
        DataLoader workers are forked when an epoch's iterator is created, before the sampler
        applies that epoch's decisions; with ``num_workers > 0`` a relabel reaches the batches
        one epoch later than an eviction does.

    Example::

        >>> train_set = recorder.wrap(with_indices(dataset))
    """

    def __init__(self, base: Any, labels: npt.NDArray[np.int64]) -> None:
        if len(base) != len(labels):
            raise ValueError(f"labels should cover the {len(base)} samples, but got {len(labels)}")
        self.base = base
        self.labels = labels  # shared with the recorder, updated in place

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        item = self.base[index]
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], tuple):
            position, (x, _) = item
            return position, (x, int(self.labels[position]))
        x, _ = item
        return x, int(self.labels[index])

    def __getattr__(self, name: str) -> Any:
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)
