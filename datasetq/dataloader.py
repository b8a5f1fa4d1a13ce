"""A ``torch.utils.data.DataLoader`` whose ``update`` forwards feedback to its sampler."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.utils.data

from ._inputs import ArrayLike
from .sampler import HeapqSampler

__all__ = ["DataLoader"]


class DataLoader(torch.utils.data.DataLoader[Any]):
    r"""A DataLoader with ``update(indices, metrics)``, forwarded to its :class:`HeapqSampler`.

    Takes exactly the arguments of ``torch.utils.data.DataLoader``.

    Example::

        >>> loader = DataLoader(dataset, batch_size=64, sampler=HeapqSampler(dataset))
        >>> for index, (data, target) in loader:
        ...     loss = F.nll_loss(model(data), target, reduction="none")
        ...     loader.update(index.tolist(), {"loss": loss.tolist()})
    """

    @property
    def heapq_sampler(self) -> HeapqSampler:
        """The :class:`HeapqSampler` this loader draws from."""
        for candidate in (self.sampler, getattr(self.batch_sampler, "sampler", None)):
            if isinstance(candidate, HeapqSampler):
                return candidate
        raise ValueError("this DataLoader has no HeapqSampler; pass sampler=HeapqSampler(dataset)")

    def update(self, indices: ArrayLike, metrics: Mapping[str, ArrayLike]) -> None:
        """Forwards to :meth:`HeapqSampler.update`."""
        self.heapq_sampler.update(indices, metrics)
