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
_EPOCHS_MAX = np.iinfo(np.uint16).max
_MARGIN_EDGES = np.geomspace(1e-3, 1e3, 480)
_MARGIN_CENTRES = np.r_[_MARGIN_EDGES[0], np.sqrt(_MARGIN_EDGES[1:] * _MARGIN_EDGES[:-1]), 1e3]


def _log_odds(loss: F32) -> npt.NDArray[np.float64]:
    """``log(p / (1 - p))`` of the given label, from its cross-entropy ``-log(p)``."""
    loss64 = np.maximum(loss.astype(np.float64), 1e-12)
    return -loss64 - np.log(-np.expm1(-loss64))


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
    """Draws per entry in proportion to ``weights``, at most ``cap`` each (fewer if it runs out).

    Each entry takes part as ``cap`` copies, and ``draws`` copies are taken without replacement
    in proportion to their weight (exponential keys: the ``draws`` smallest ``E / w``), in a
    few array operations however many draws the cap turns away.
    """
    candidates = np.flatnonzero(weights > 0)
    copies = np.repeat(candidates, cap)
    if draws >= len(copies):
        return np.bincount(copies, minlength=len(weights)).astype(np.int64)
    keys = rng.exponential(size=len(copies)) / np.repeat(weights[candidates], cap)
    taken = np.argpartition(keys, draws - 1)[:draws] if draws else copies[:0]
    return np.bincount(copies[taken], minlength=len(weights)).astype(np.int64)


def first_reports(ids: I64) -> tuple[I64, I64]:
    """The distinct ids, ascending, and the position of each one's first occurrence."""
    count = len(ids)
    if count > 2**30:  # the packed pairs below would overflow int64
        unique, first = np.unique(ids, return_index=True)
        return unique, first.astype(np.int64)
    # One sort of (id, position) pairs packed in an int64: faster than a stable argsort.
    packed = ids * count + np.arange(count, dtype=np.int64)
    packed.sort()
    sorted_ids = packed // count
    starts = np.empty(count, dtype=bool)
    starts[:1] = True
    np.not_equal(sorted_ids[1:], sorted_ids[:-1], out=starts[1:])
    return sorted_ids[starts], packed[starts] % count


class CoverageEvidence:
    """Per-sample statistics of coverage visits, and when they say "probably mislabeled".

    Each coverage visit gives the label a margin: the reported ``margin`` (given label's logit
    minus the largest other), or, for a loop that reports losses only, the log-odds of the
    given label, ``log(p / (1 - p))`` with ``p = exp(-loss)``. Positive: the model accepts the
    label. A visit *rejects* the label when its margin is below ``-scale`` times the median
    margin of the labels the model accepted in the previous epoch: a threshold the data sets,
    as strong a rejection as a typical acceptance, in the model's own units (a confident model
    must reject confidently). A sample is suspicious after ``streak`` rejections in a row.

    Args:
        n: number of samples.
        streak: rejections in a row that make a sample a candidate for eviction; ``None``
            never proposes one (the statistics are still kept).
        scale: the rejection threshold, relative to the typical accepted margin; 0 rejects
            every label the model finds less likely than another.
    """

    def __init__(self, n: int, streak: int | None, scale: float = 0.0) -> None:
        self.streak = streak
        self.scale = scale
        # Accepted margins of this epoch as a log-spaced histogram (its median is the next
        # epoch's reference): bounded memory, and a checkpoint carries it.
        self.accepted = np.zeros(len(_MARGIN_EDGES) + 1, dtype=np.int64)
        self.reference = 0.0
        # 12 bytes per sample: ImageNet-sized datasets and larger keep this small.
        self.seen = np.zeros(n, dtype=bool)  # had its coverage visit in the current epoch
        self.loss_sum = np.zeros(n, dtype=np.float32)
        self.epochs = np.zeros(n, dtype=np.uint16)  # coverage visits counted (saturates)
        self.wrong = np.zeros(n, dtype=np.uint8)  # wrong coverage visits in a row
        self.since = np.full(n, -1, dtype=np.int32)  # epoch of the first of them

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes for a in (self.seen, self.loss_sum, self.epochs, self.wrong, self.since)
        )

    @property
    def score(self) -> npt.NDArray[np.float64]:
        """Mean loss over coverage visits (NaN: none yet); higher is more suspicious."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.epochs > 0, self.loss_sum.astype(np.float64) / self.epochs, np.nan)

    def new_epoch(self) -> None:
        self.seen[:] = False
        total = int(self.accepted.sum())
        if total:
            position = int(np.searchsorted(np.cumsum(self.accepted), (total + 1) // 2))
            self.reference = float(_MARGIN_CENTRES[position])
        self.accepted[:] = 0

    def observe(self, ids: I64, loss: F32, margin: F32 | None, epoch: int, judged: bool) -> I64:
        """Takes one epoch's reports in arrival order; returns the ids that became suspicious.

        ``judged``: whether this epoch's coverage visits count as evidence (warm-up epochs,
        whose early losses come from an untrained model, do not).
        """
        unique, first = first_reports(ids)
        fresh = ~self.seen[unique]
        unique, first = unique[fresh], first[fresh]
        if not len(unique):
            return unique
        self.seen[unique] = True
        coverage_loss = loss[first]
        self.loss_sum[unique] += coverage_loss
        self.epochs[unique] = np.minimum(self.epochs[unique], _EPOCHS_MAX - 1) + 1
        given = _log_odds(coverage_loss)
        if margin is not None:
            reported = margin[first].astype(np.float64)
            known = ~np.isnan(reported)
            given[known] = reported[known]
        self.accepted += np.bincount(
            np.searchsorted(_MARGIN_EDGES, given[given > 0]), minlength=len(self.accepted)
        )
        if not judged:
            return unique[:0]
        wrong = given < -self.scale * self.reference if self.scale else given < 0
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
            "accepted_margins": self.accepted,
            "margin_reference": np.array([self.reference]),
            "coverage_seen": self.seen,
            "coverage_loss_sum": self.loss_sum,
            "coverage_epochs": self.epochs,
            "wrong_streak": self.wrong,
            "wrong_since": self.since,
        }

    def load(self, arrays: dict[str, npt.NDArray[np.generic]]) -> None:
        self.accepted = arrays["accepted_margins"].astype(np.int64)
        self.reference = float(arrays["margin_reference"][0])
        self.seen = arrays["coverage_seen"].astype(bool)
        self.loss_sum = arrays["coverage_loss_sum"].astype(np.float32)
        self.epochs = arrays["coverage_epochs"].astype(np.uint16)
        self.wrong = arrays["wrong_streak"].astype(np.uint8)
        self.since = arrays["wrong_since"].astype(np.int32)
