"""The base order a sampler falls back to: a seeded permutation per (epoch, round).

Warm-up epochs, ``steps`` draws and samples that have no loss yet follow it. With
``shuffle=False`` it is ``0, 1, ..., n - 1`` and nothing is stored. With ``shuffle=True`` the
permutation comes from a ``torch.Generator`` seeded from ``(seed, epoch, round)``, so any epoch
can be regenerated after a resume; it is held as int32 (4 bytes per sample) and only while used.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

I64 = npt.NDArray[np.int64]


def derive_seed(seed: int, epoch: int, round_: int) -> int:
    """A generator seed for one permutation; distinct (seed, epoch, round) give distinct seeds."""
    mixed = (
        seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + round_ * 0x94D049BB133111EB
    ) & ((1 << 63) - 1)
    return mixed


class BaseOrder:
    """Windows into the base permutation of an epoch's rounds."""

    def __init__(self, size: int, shuffle: bool, seed: int) -> None:
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self._cache: dict[tuple[int, int], npt.NDArray[np.int32]] = {}

    def window(self, epoch: int, round_: int, start: int, stop: int) -> I64:
        """Positions ``start:stop`` of the permutation of ``(epoch, round_)``."""
        if not self.shuffle:
            return np.arange(start, stop, dtype=np.int64)
        return self._permutation(epoch, round_)[start:stop].astype(np.int64)

    def forget_before(self, epoch: int) -> None:
        """Drops cached permutations of epochs before ``epoch``."""
        self._cache = {k: v for k, v in self._cache.items() if k[0] >= epoch}

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self._cache.values())

    def _permutation(self, epoch: int, round_: int) -> npt.NDArray[np.int32]:
        key = (epoch, round_)
        perm = self._cache.get(key)
        if perm is None:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, round_))
            dtype = torch.int32 if self.size < 2**31 else torch.int64
            perm = torch.randperm(self.size, generator=generator, dtype=dtype).numpy()
            # At most the round-0 permutation (unscored samples) and the current round stay.
            for old in [k for k in self._cache if k[0] == epoch and 0 < k[1] < round_]:
                del self._cache[old]
            self._cache[key] = perm
        return perm
