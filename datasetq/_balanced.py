"""The ``balanced`` sampling policy and the evidence behind evictions, as array operations.

An epoch of the balanced policy visits every live sample once, except a random part of the
easy ones (loss below the live mean), and spends the draws saved on extra visits to hard samples
whose given label the model accepts: priority without feeding the model its likely mislabeled
samples again and again (greedy largest-loss-first does exactly that under label noise). A sample's *coverage visit* is its first report of an epoch: a loss measured before the
epoch trained on it, once per epoch however often it was drawn, so statistics over coverage
visits are not confounded by how often the sampler chose it.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

# Cross-entropy above ln 2 means the given label has probability below one half.
WRONG_LOSS = math.log(2.0)
_STREAK_MAX = np.iinfo(np.uint8).max


def plan_epoch(
    live: I64,
    loss: F32,
    suspect: npt.NDArray[np.bool_],
    total: int,
    rng: np.random.Generator,
    prune: float,
    max_extra: int,
) -> I64:
    """The ``total`` draws of one balanced epoch, in a random order.

    Args:
        live: ids that may be drawn (not evicted), ascending.
        loss: latest loss of each live id (NaN: none yet); larger is harder.
        suspect: per live id, whether the model rejects its label (now or at its latest
            coverage visit); a suspect keeps its coverage visit but gets no extra draws.
        total: draws in the epoch.
        rng: the epoch's generator (every rank derives the same one).
        prune: probability that an easy sample sits the epoch out.
        max_extra: extra draws one sample may get in an epoch.
    """
    if not len(live):
        return np.empty(0, dtype=np.int64)
    scored = ~np.isnan(loss)
    easy = np.zeros(len(live), dtype=bool)
    if scored.any():
        easy[scored] = loss[scored] < loss[scored].mean()
    pruned = easy & (rng.random(len(live)) < prune)
    kept = live[~pruned]
    if len(kept) >= total:
        return rng.permutation(kept)[:total]
    weights = np.where(scored & ~suspect, np.nan_to_num(loss, nan=0.0), 0.0).astype(np.float64)
    counts = _capped_multinomial(total - len(kept), weights, max_extra, rng)
    extras = np.repeat(live, counts)
    missing = total - len(kept) - len(extras)
    if missing:  # too few hard samples to spend the draws on: the rest uniformly
        extras = np.concatenate([extras, rng.choice(live, missing)])
    return rng.permutation(np.concatenate([kept, extras]))


def _capped_multinomial(
    draws: int, weights: npt.NDArray[np.float64], cap: int, rng: np.random.Generator
) -> I64:
    """Draws per entry in proportion to ``weights``, at most ``cap`` each (fewer if it runs out)."""
    counts = np.zeros(len(weights), dtype=np.int64)
    remaining = draws
    while remaining > 0:
        open_ = (counts < cap) & (weights > 0)
        if not open_.any():
            break
        p = np.where(open_, weights, 0.0)
        added = np.minimum(rng.multinomial(remaining, p / p.sum()), cap - counts)
        counts += added
        remaining -= int(added.sum())
    return counts


class CoverageEvidence:
    """Per-sample statistics of coverage visits, and when they say "probably mislabeled".

    A coverage visit is *wrong* when the model prefers another class: the reported margin (given
    label's logit minus the largest other) is negative, or, for a loop that reports losses only,
    the loss is above ln 2 (the given label has probability below one half). A sample is
    suspicious after ``streak`` wrong coverage visits in a row.

    Args:
        n: number of samples.
        streak: wrong coverage visits in a row that make a sample a candidate for eviction;
            ``None`` never proposes one (the statistics are still kept).
    """

    def __init__(self, n: int, streak: int | None) -> None:
        self.streak = streak
        self.seen = np.zeros(n, dtype=bool)  # had its coverage visit in the current epoch
        self.loss_sum = np.zeros(n, dtype=np.float64)
        self.epochs = np.zeros(n, dtype=np.int32)  # coverage visits counted
        self.wrong = np.zeros(n, dtype=np.uint8)  # wrong coverage visits in a row
        self.since = np.full(n, -1, dtype=np.int32)  # epoch of the first of them

    @property
    def score(self) -> npt.NDArray[np.float64]:
        """Mean loss over coverage visits (NaN: none yet); higher is more suspicious."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.epochs > 0, self.loss_sum / self.epochs, np.nan)

    def new_epoch(self) -> None:
        self.seen[:] = False

    def observe(self, ids: I64, loss: F32, margin: F32 | None, epoch: int, judged: bool) -> I64:
        """Takes one epoch's reports in arrival order; returns the ids that became suspicious.

        ``judged``: whether this epoch's coverage visits count as evidence (warm-up epochs,
        whose early losses come from an untrained model, do not).
        """
        unique, first = np.unique(ids, return_index=True)
        fresh = ~self.seen[unique]
        unique, first = unique[fresh], first[fresh]
        if not len(unique):
            return unique
        self.seen[unique] = True
        coverage_loss = loss[first]
        self.loss_sum[unique] += coverage_loss
        self.epochs[unique] += 1
        if not judged:
            return unique[:0]
        wrong = coverage_loss > WRONG_LOSS
        if margin is not None:
            given = margin[first]
            known = ~np.isnan(given)
            wrong[known] = given[known] < 0
        before = self.wrong[unique]
        self.wrong[unique] = np.where(wrong, np.minimum(before, _STREAK_MAX - 1) + 1, 0)
        started = wrong & (before == 0)
        self.since[unique[started]] = epoch
        self.since[unique[~wrong]] = -1
        if self.streak is None:
            return unique[:0]
        return unique[self.wrong[unique] >= self.streak]

    def state(self) -> dict[str, npt.NDArray[np.generic]]:
        return {
            "coverage_seen": self.seen,
            "coverage_loss_sum": self.loss_sum,
            "coverage_epochs": self.epochs,
            "wrong_streak": self.wrong,
            "wrong_since": self.since,
        }

    def load(self, arrays: dict[str, npt.NDArray[np.generic]]) -> None:
        self.seen = arrays["coverage_seen"].astype(bool)
        self.loss_sum = arrays["coverage_loss_sum"].astype(np.float64)
        self.epochs = arrays["coverage_epochs"].astype(np.int32)
        self.wrong = arrays["wrong_streak"].astype(np.uint8)
        self.since = arrays["wrong_since"].astype(np.int32)
