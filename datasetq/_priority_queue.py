"""A batched priority queue over NumPy arrays (a small log-structured merge tree).

Entries are ``uint64`` values ``(key << 32) | id``: sorting the packed values orders entries by
key, then by id, so ties are broken deterministically and one array holds both. Smaller keys
come out first. The queue is a few sorted runs ("levels") whose capacity grows geometrically;
pushing a batch sorts it and merges it down the levels, popping takes the smallest entries of
all level heads. Each operation costs a handful of vectorised NumPy calls per batch, never a
Python loop per entry.

The queue stores no validity information: the caller filters popped entries (an entry whose
sample has since been drawn, updated or evicted is stale) and asks again when it needs more.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]

_SIGN = np.uint32(0x80000000)
_LOW31 = np.uint32(0x7FFFFFFF)
_ID_MASK = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
# Level i holds at most _BASE_CAPACITY * _GROWTH**i entries before it is merged into level i + 1.
_BASE_CAPACITY = 16384
_GROWTH = 16


def float_keys(values: npt.NDArray[np.float32], *, descending: bool) -> U32:
    """Maps float32 values to uint32 keys whose unsigned order is the values' order.

    With ``descending=True`` the largest value gets the smallest key (it is popped first).
    NaN must be filtered out by the caller.
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    # Ascending: flip every bit of negatives, only the sign bit of the others. Descending is
    # the complement of that: flip nothing of negatives, every bit but the sign of the others.
    sign_fill = (bits.view(np.int32) >> 31).view(np.uint32)  # all ones for negatives
    if descending:
        return bits ^ (~sign_fill & _LOW31)
    return bits ^ (sign_fill | _SIGN)


def pack(keys: U32, ids: npt.NDArray[np.integer]) -> U64:
    """Packs keys and ids into sortable uint64 entries."""
    return (keys.astype(np.uint64) << _SHIFT) | ids.astype(np.uint64)


def unpack_ids(entries: U64) -> npt.NDArray[np.int64]:
    return (entries & _ID_MASK).astype(np.int64)


def unpack_keys(entries: U64) -> U32:
    return (entries >> _SHIFT).astype(np.uint32)


class PriorityRuns:
    """A min-queue of packed uint64 entries, pushed and popped in batches."""

    def __init__(self) -> None:
        self._levels: list[U64] = []

    def __len__(self) -> int:
        """Entries held, stale ones included."""
        return sum(len(level) for level in self._levels)

    @property
    def nbytes(self) -> int:
        return sum(level.nbytes for level in self._levels)

    def clear(self) -> None:
        self._levels = []

    def build(self, entries: U64) -> None:
        """Replaces the content with ``entries`` (any order) in one sorted run."""
        self._levels = [np.sort(entries)] if len(entries) else []

    def push(self, entries: U64) -> None:
        """Adds a batch of entries; identical entries within the batch are added once."""
        if not len(entries):
            return
        carry = np.sort(entries)
        # A sample updated twice before the next chunk is pushed twice with the same key. Left
        # in, a pop that takes one copy could leave the other behind, outliving its key.
        repeated = carry[1:] == carry[:-1]
        if repeated.any():
            carry = carry[np.concatenate(([True], ~repeated))]
        for depth in range(len(self._levels)):
            level = self._levels[depth]
            if not len(level):
                self._levels[depth] = carry
                return
            merged = _merge(level, carry)
            if len(merged) <= _BASE_CAPACITY * _GROWTH**depth:
                self._levels[depth] = merged
                return
            self._levels[depth] = level[:0]
            carry = merged
        self._levels.append(carry)

    def pop(self, count: int) -> U64:
        """Removes and returns the ``count`` smallest entries (fewer if the queue runs out), sorted.

        Identical entries (a sample pushed twice with the same key) may all be returned, so the
        result can hold slightly more than ``count`` values; callers deduplicate.
        """
        heads = [(depth, level[:count]) for depth, level in enumerate(self._levels) if len(level)]
        if not heads:
            return np.empty(0, dtype=np.uint64)
        if len(heads) == 1:
            depth, head = heads[0]
            self._levels[depth] = self._levels[depth][len(head) :]
            return head
        # Any level holding `count` entries bounds the answer: nothing above its count-th
        # entry can be among the smallest `count`. Trimming heads to it keeps the selection small.
        full = [head[count - 1] for _, head in heads if len(head) == count]
        if full:
            bound = min(full)
            heads = [(d, h[: np.searchsorted(h, bound, side="right")]) for d, h in heads]
        candidates = np.concatenate([head for _, head in heads])
        if len(candidates) > count:
            cutoff = np.partition(candidates, count - 1)[count - 1]
            for depth, head in heads:
                taken = int(np.searchsorted(head, cutoff, side="right"))
                self._levels[depth] = self._levels[depth][taken:]
            return np.sort(candidates[candidates <= cutoff])
        for depth, head in heads:
            self._levels[depth] = self._levels[depth][len(head) :]
        return np.sort(candidates)

    def entries(self) -> U64:
        """Every entry held (stale ones included), in no particular order."""
        if not self._levels:
            return np.empty(0, dtype=np.uint64)
        return np.concatenate(self._levels)


def _merge(left: U64, right: U64) -> U64:
    """Merges two sorted runs into one."""
    if len(left) < len(right):
        left, right = right, left
    if len(right) * 16 < len(left):
        # A small run into a big one: binary search, then one memmove-speed insert.
        return np.insert(left, np.searchsorted(left, right), right)
    merged = np.concatenate([left, right])
    merged.sort(kind="stable")  # radix sort for integers: linear time
    return merged
