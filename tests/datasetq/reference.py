"""A slow, obviously-correct model of HeapqSampler's semantics, one draw at a time.

It supports what the property tests compare exactly: warm-up, priority with chunked refresh,
waiting samples, fallback to the base order, max_visits, extrema, steps, size and
reset_every (of the greedy policy). One replica.
"""

from __future__ import annotations

import numpy as np

from datasetq._base_order import BaseOrder
from datasetq.errors import AllSamplesEvictedError


class ReferenceSampler:
    def __init__(
        self,
        n,
        *,
        start_at,
        max_visits,
        chunk_size,
        extrema,
        shuffle,
        seed,
        steps=None,
        size=None,
        reset_every=None,
    ):
        self.n = n
        self.steps = steps
        self.size = size
        self.reset_every = reset_every
        self.draws = 0  # global draws since construction
        self.scored = [False] * n  # has a loss that counts (reset forgets it, not the loss)
        self.cold = [False] * n  # pushed out of the pool by size until drawn and updated
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
            if self.epoch >= self.start_at and self.size is not None:
                for i in self._scored_pool()[self.size :]:
                    self.cold[i] = True
            chunk = []
            while count:
                part = count
                if self.reset_every is not None:
                    part = min(part, self.reset_every - self.draws % self.reset_every)
                if self.epoch < self.start_at:
                    chunk += self._base(part)
                else:
                    chunk += self._priority(part)
                self.draws += part
                count -= part
                if self.reset_every is not None and self.draws % self.reset_every == 0:
                    self._reset()
            drawn += len(chunk)
            yield chunk

    def update(self, ids, losses):
        for i, v in zip(ids, losses, strict=True):
            self.loss[i] = float(np.float32(v))
            self.waiting[i] = False
            self.scored[i] = True
            self.cold[i] = False

    def _reset(self):
        """Forgets priorities (not losses), evictions and the size cut; waiting stays."""
        self.scored = [False] * self.n
        self.evicted = [False] * self.n
        self.cold = [False] * self.n

    def _priority(self, count):
        """One part of a chunk: every steps-th global draw from the base order, else ranked."""
        slots = [
            self.steps is not None and position % self.steps == 0
            for position in range(self.draws + 1, self.draws + count + 1)
        ]
        ranked = self._ranked(count - sum(slots))
        for i in ranked:
            self._register(i)
        fallback = self._base(count - len(ranked))
        from_base = iter(fallback[: sum(slots)])
        rest = iter(ranked + fallback[sum(slots) :])
        return [next(from_base) if slot else next(rest) for slot in slots]

    def _competing(self, i):
        return not (self.evicted[i] or self.waiting[i] or self.cold[i])

    def _scored_pool(self):
        """Scored competing samples, best first."""
        sign = -1.0 if self.extrema == "min" else 1.0
        return sorted(
            (i for i in range(self.n) if self._competing(i) and self.scored[i]),
            key=lambda i: (sign * self.loss[i], i),
        )

    def _ranked(self, count):
        order = [int(i) for i in self.base.window(self.epoch, 0, 0, self.n)]
        unscored = [i for i in order if self._competing(i) and not self.scored[i]]
        return (unscored + self._scored_pool())[:count]

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
