"""A slow, obviously-correct model of HeapqSampler's semantics, one draw at a time.

It supports what the property tests compare exactly: warm-up, priority with chunked refresh,
waiting samples, fallback to the base order, max_visits, extrema. One replica.
"""

from __future__ import annotations

import numpy as np

from datasetq._base_order import BaseOrder
from datasetq.errors import AllSamplesEvictedError


class ReferenceSampler:
    def __init__(self, n, *, start_at, max_visits, chunk_size, extrema, shuffle, seed):
        self.n = n
        self.start_at = start_at
        self.max_visits = max_visits
        self.chunk_size = chunk_size
        self.extrema = extrema
        self.base = BaseOrder(n, shuffle, seed)
        self.loss = [None] * n
        self.visits = [0] * n
        self.epoch_visits = [0] * n
        self.evicted = [False] * n
        self.waiting = [False] * n
        self.epoch = -1

    def epoch_draws(self):
        """Yields chunks (lists) of one epoch."""
        self.epoch += 1
        self.epoch_visits = [0] * self.n
        self.waiting = [False] * self.n
        self.base_round, self.base_cursor = 0, 0
        drawn = 0
        while drawn < self.n:
            count = min(self.chunk_size, self.n - drawn)
            if self.epoch < self.start_at:
                chunk = self._base(count)
            else:
                ranked = self._ranked(count)
                for i in ranked:
                    self._register(i)
                chunk = ranked + self._base(count - len(ranked))
            drawn += count
            yield chunk

    def update(self, ids, losses):
        for i, v in zip(ids, losses, strict=True):
            self.loss[i] = float(np.float32(v))
            self.waiting[i] = False

    def _ranked(self, count):
        eligible = [i for i in range(self.n) if not self.evicted[i] and not self.waiting[i]]
        order = [int(i) for i in self.base.window(self.epoch, 0, 0, self.n)]
        unscored = [i for i in order if i in set(eligible) and self.loss[i] is None]
        sign = -1.0 if self.extrema == "min" else 1.0
        scored = sorted(
            (i for i in eligible if self.loss[i] is not None),
            key=lambda i: (sign * self.loss[i], i),
        )
        return (unscored + scored)[:count]

    def _base(self, count):
        out = []
        while len(out) < count:
            if all(self.evicted):
                raise AllSamplesEvictedError("all evicted")
            if self.base_cursor >= self.n:
                self.base_round += 1
                self.base_cursor = 0
            i = int(
                self.base.window(
                    self.epoch, self.base_round, self.base_cursor, self.base_cursor + 1
                )[0]
            )
            self.base_cursor += 1
            if not self.evicted[i]:
                self._register(i)
                out.append(i)
        return out

    def _register(self, i):
        self.visits[i] += 1
        self.epoch_visits[i] += 1
        self.waiting[i] = True
        if self.max_visits is not None and self.epoch_visits[i] >= self.max_visits:
            self.evicted[i] = True
