"""Recognises an ``update``'s id list as the next run of what this rank just drew.

A training loop that feeds the sampler's batches back (``BatchSampler`` lists, or the original
datasetq's ``index.tolist()``) hands ``update`` a Python list equal to a slice of a drawn share.
Comparing two lists runs in C at about 1 µs for 256 ids, while building and range-checking an
array from the list costs over 10 µs; a matched slice needs neither, as drawn ids are valid.
Anything that does not match takes the general path, so a match is an optimisation only.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


class RecentDraws:
    """The last few shares drawn, and where the next expected update starts in them."""

    def __init__(self, keep: int = 8) -> None:
        self._shares: deque[tuple[list[int], I64]] = deque()
        self._keep = keep
        self._position = 0

    def clear(self) -> None:
        self._shares.clear()
        self._position = 0

    def add(self, share: list[int], ids: I64) -> None:
        self._shares.append((share, ids))
        if len(self._shares) > self._keep:  # updates stopped following draws: start over
            self._shares.popleft()
            self._position = 0

    def match(self, indices: list[int]) -> I64 | None:
        """The drawn ids equal to ``indices`` (consumed), or None when they are not the next run."""
        count = len(indices)
        if not count or not self._shares or type(indices[0]) is not int:
            return None
        share, ids = self._shares[0]
        start, end = self._position, self._position + count
        if end <= len(share):
            if share[start:end] != indices:
                return None
            self._advance(end)
            return ids[start:end]
        if len(self._shares) < 2:
            return None
        head = len(share) - start
        following, following_ids = self._shares[1]
        if count - head > len(following):
            return None
        if share[start:] != indices[:head] or following[: count - head] != indices[head:]:
            return None
        matched = np.concatenate([ids[start:], following_ids[: count - head]])
        self._shares.popleft()
        self._position = 0
        self._advance(count - head)
        return matched

    def _advance(self, end: int) -> None:
        if end == len(self._shares[0][0]):
            self._shares.popleft()
            self._position = 0
        else:
            self._position = end
