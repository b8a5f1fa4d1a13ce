"""Recognises an ``update``'s ids as the next run of what this rank just drew.

A training loop that feeds the sampler's batches back hands ``update`` the ids it drew: a
Python list (``BatchSampler`` lists, or the original datasetq's ``index.tolist()``) or the int64
tensor a ``DataLoader`` collates them into. Comparing a list with a slice of the drawn list, or a
CPU tensor's bytes with the drawn ids' bytes, runs in C in about 1 µs for 256 ids, while building
and range-checking an array costs several times that; a matched run needs neither, as drawn ids
are valid. Anything that does not match takes the general path, so a match is an optimisation
only.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt
import torch

I64 = npt.NDArray[np.int64]
_ID_BYTES = np.dtype(np.int64).itemsize


class _Share:
    """One share of drawn ids, as a list and as an array; its bytes are made on first use."""

    __slots__ = ("_raw", "ids", "listed")

    def __init__(self, listed: list[int], ids: I64) -> None:
        self.listed = listed
        self.ids = ids
        self._raw: bytes | None = None

    def run(self, start: int, end: int, as_bytes: bool) -> list[int] | bytes:
        """Ids ``start:end`` in the form they are compared in."""
        if not as_bytes:
            return self.listed[start:end]
        if self._raw is None:
            self._raw = np.ascontiguousarray(self.ids, dtype=np.int64).tobytes()
        return self._raw[start * _ID_BYTES : end * _ID_BYTES]


def _comparable(indices: object) -> list[int] | bytes | None:
    """``indices`` as a list of ints or the bytes of int64 ids; None for any other form."""
    if type(indices) is list:
        return indices if indices and type(indices[0]) is int else None
    if type(indices) is torch.Tensor:
        if indices.dtype is not torch.int64 or indices.ndim != 1 or not indices.is_cpu:
            return None
        return indices.numpy().tobytes() or None
    if type(indices) is np.ndarray and indices.dtype == np.int64 and indices.ndim == 1:
        return indices.tobytes() or None
    return None


class RecentDraws:
    """The last few shares drawn, and where the next expected update starts in them."""

    def __init__(self, keep: int = 8) -> None:
        self._shares: deque[_Share] = deque()
        self._keep = keep
        self._position = 0

    def clear(self) -> None:
        self._shares.clear()
        self._position = 0

    def add(self, share: list[int], ids: I64) -> None:
        self._shares.append(_Share(share, ids))
        if len(self._shares) > self._keep:  # updates stopped following draws: start over
            self._shares.popleft()
            self._position = 0

    def match(self, indices: object) -> I64 | None:
        """The drawn ids equal to ``indices`` (consumed), or None when they are not the next run.

        ``indices``: a list of ints, or a 1-D int64 CPU tensor or NumPy array.
        """
        given = _comparable(indices)
        if given is None or not self._shares:
            return None
        as_bytes = type(given) is bytes
        width = _ID_BYTES if as_bytes else 1
        count = len(given) // width
        share = self._shares[0]
        start, end = self._position, self._position + count
        if end <= len(share.listed):
            if share.run(start, end, as_bytes) != given:
                return None
            self._advance(end)
            return share.ids[start:end]
        if len(self._shares) < 2:
            return None
        head = len(share.listed) - start
        following = self._shares[1]
        if count - head > len(following.listed):
            return None
        if (
            share.run(start, len(share.listed), as_bytes) != given[: head * width]
            or following.run(0, count - head, as_bytes) != given[head * width :]
        ):
            return None
        matched = np.concatenate([share.ids[start:], following.ids[: count - head]])
        self._shares.popleft()
        self._position = 0
        self._advance(count - head)
        return matched

    def _advance(self, end: int) -> None:
        if end == len(self._shares[0].listed):
            self._shares.popleft()
            self._position = 0
        else:
            self._position = end
