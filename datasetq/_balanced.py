"""The ``balanced`` sampling policy and the evidence behind evictions, as array operations.

An epoch of the balanced policy visits every live sample once, except a random part of the
easy ones (loss below the live mean), and spends the draws saved on extra visits to hard samples
whose given label the model accepts: priority without feeding the model its likely mislabeled
samples again and again (greedy largest-loss-first does exactly that under label noise). A
sample's *coverage visit* is its first report of an epoch: a loss measured before the epoch
trained on it, once per epoch however often it was drawn, so statistics over coverage visits
are not confounded by how often the sampler chose it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

# Cross-entropy above ln 2 means the given label has probability below one half.
WRONG_LOSS = math.log(2.0)
# Accepted margins are counted in log-spaced bins read off their float32 bits (exponent and the
# top 5 mantissa bits: 32 bins per octave), from 2**-10 to 2**10: a shift instead of a search.
_BIN_SHIFT = 18
_BIN_LOW = int(np.float32(2.0**-10).view(np.int32)) >> _BIN_SHIFT
_BIN_COUNT = (int(np.float32(2.0**10).view(np.int32)) >> _BIN_SHIFT) - _BIN_LOW + 1
_RECORD = np.dtype(
    [("loss_sum", np.float32), ("epochs", np.uint16), ("wrong", np.uint8), ("doubted", np.uint8)]
)
# How much one more rejecting coverage visit in a row multiplies the odds that a label is wrong.
_VISIT_LIKELIHOOD = 2.0
# first_reports scatters instead of sorting once the reports number at least n / this.
_DENSE_REPORTS = 32
_INT32_LIMIT = 2**31 - 1
_UINT8_LIMIT = 2**8 - 1  # the counters saturate here


def _margin_bins(positive: F32) -> I64:
    """The histogram bin of each positive margin (values outside the range go to the ends)."""
    bins = positive.view(np.int32) >> _BIN_SHIFT
    bins -= _BIN_LOW
    return np.clip(bins, 0, _BIN_COUNT - 1, out=bins).astype(np.intp, copy=False)  # type: ignore[no-any-return]


def _bin_centre(position: int) -> float:
    bits = np.int32(((position + _BIN_LOW) << _BIN_SHIFT) | (1 << (_BIN_SHIFT - 1)))
    return float(bits.view(np.float32))


def _log_odds(loss: F32) -> F32:
    """``log(p / (1 - p))`` of the given label, from its cross-entropy ``-log(p)``."""
    clipped = np.maximum(loss, np.float32(1e-12))
    tail = np.negative(clipped)  # in place from here: a reporting epoch makes this array long
    np.expm1(tail, out=tail)
    np.negative(tail, out=tail)
    np.log(tail, out=tail)  # log(1 - p)
    np.negative(clipped, out=clipped)  # log(p)
    clipped -= tail
    return clipped


def plan_epoch(
    live: I64,
    loss: F32,
    suspect: npt.NDArray[np.bool_],
    total: int,
    rng: np.random.Generator,
    prune: float,
    max_extra: int,
    dtype: type[np.signedinteger[Any]] = np.int64,
) -> tuple[npt.NDArray[np.signedinteger[Any]], int]:
    """The ``total`` draws of one balanced epoch, in a random order, and the most times one
    sample may occur among them.

    Args:
        live: ids that may be drawn (not evicted), ascending.
        loss: latest loss of each live id (NaN: none yet); larger is harder.
        suspect: per live id, whether the model rejects its label (now or at its latest
            coverage visit); a suspect keeps its coverage visit but gets no extra draws.
        total: draws in the epoch.
        rng: the epoch's generator (every rank derives the same one).
        prune: probability that an easy sample sits the epoch out.
        max_extra: extra draws one sample may get in an epoch.
        dtype: integer type of the plan (one that holds every id).
    """
    if not len(live):
        return np.empty(0, dtype=dtype), 0
    scored = ~np.isnan(loss)
    if scored.all():
        easy = loss < loss.mean()
    elif scored.any():
        easy = loss < loss[scored].mean()  # NaN compares False: unscored is never easy
    else:
        easy = np.zeros(len(live), dtype=bool)
    staying = rng.random(len(live), dtype=np.float32) >= prune
    staying |= ~easy  # only the easy may sit the epoch out
    kept_count = int(np.count_nonzero(staying))
    # NumPy shuffles 8-byte items faster than 4-byte ones: the plan is shuffled as int64 (it
    # holds the same permutation either way), then cast.
    if kept_count >= total:
        kept = live.compress(staying)
        rng.shuffle(kept)
        return kept[:total].astype(dtype, copy=False), 1
    planned = np.empty(total, dtype=np.int64)  # assembled in place: each part written once
    live.compress(staying, out=planned[:kept_count])
    # Extra draws in proportion to the loss, for scored samples whose label is not doubted
    # (a NaN loss compares False).
    candidates = np.flatnonzero((loss > 0) & ~suspect)
    chosen = _capped_draws_among(total - kept_count, candidates, loss, max_extra, rng)
    filled = kept_count + len(chosen)
    live.take(chosen, out=planned[kept_count:filled], mode="clip")  # valid: unbuffered
    missing = total - filled
    if missing:  # too few hard samples to spend the draws on: the rest uniformly
        # Doubted labels get no extra draws here either, unless every live label is doubted.
        pool = live if suspect.all() else live.compress(~suspect)
        planned[filled:] = rng.choice(pool, missing)
    rng.shuffle(planned)
    return planned.astype(dtype, copy=False), 1 + max_extra + missing


def _capped_draws_among(
    draws: int, candidates: I64, weights: F32, cap: int, rng: np.random.Generator
) -> I64:
    """Positions among ``candidates`` (those of positive weight) drawn in proportion to
    ``weights``, each at most ``cap`` times (fewer draws if the candidates run out).

    Each candidate's expected count is ``min(cap, rate * weight)``, with the one ``rate`` that
    makes them sum to ``draws``; systematic sampling (one uniform offset on the running sum of
    expected counts) rounds each to the integer below or above it and takes exactly ``draws``:
    proportional to the weights as the cap allows, with one random number instead of a random
    key per copy and a selection among them.
    """
    if draws >= len(candidates) * cap:
        return np.repeat(candidates, cap)
    if not draws:
        return candidates[:0]
    running = _capped_shares(weights.take(candidates).astype(np.float64), draws, cap)
    np.cumsum(running, out=running)
    running += rng.random()
    ends = running.astype(np.int64)  # floor: the values are positive
    # Rounding in the running sum must neither add a draw nor take one back.
    np.minimum(ends, draws, out=ends)
    ends[-1] = draws
    counts = np.empty_like(ends)
    counts[0] = ends[0]
    np.subtract(ends[1:], ends[:-1], out=counts[1:])
    return np.repeat(candidates, np.minimum(counts, cap, out=counts))


def _capped_shares(
    weight: npt.NDArray[np.float64], draws: int, cap: int, passes: int = 32
) -> npt.NDArray[np.float64]:
    """``min(cap, rate * weight)`` with the ``rate`` that makes the shares sum to ``draws``
    (requires ``0 < draws < cap * len(weight)`` and positive weights), in a new array.

    The capped set only grows as the rate is solved again without it, so a few passes find it;
    a sort settles the rare distribution that needs many.
    """
    capped = np.zeros(len(weight), dtype=bool)
    capped_count = 0
    for _ in range(passes):
        free = weight[~capped] if capped_count else weight
        rate = (draws - cap * capped_count) / float(free.sum())
        shares = weight * rate
        now_capped = shares >= cap
        now_count = int(np.count_nonzero(now_capped))
        if now_count == capped_count:
            return np.minimum(shares, float(cap), out=shares)
        capped, capped_count = now_capped, now_count
    # Exact: with the k largest weights capped, the rest share what is left.
    descending = np.sort(weight)[::-1]
    rest = np.cumsum(descending[::-1])[::-1]  # rest[k]: sum of all but the k largest
    k = np.arange(len(weight))
    rates = (draws - cap * k) / rest
    fits = descending * rates < cap  # the (k+1)-th largest stays under the cap at rate k
    rate = float(rates[int(np.argmax(fits))])
    shares = weight * rate
    return np.minimum(shares, float(cap), out=shares)


def _count_up(counts: npt.NDArray[np.unsignedinteger[Any]]) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Adds one to each count in place, saturating at its dtype's maximum; returns it."""
    np.minimum(counts, np.iinfo(counts.dtype).max - 1, out=counts)
    counts += 1
    return counts


def first_reports(ids: I64, n: int) -> tuple[I64, I64]:
    """The distinct ids (all below ``n``), ascending, and the position of each one's first
    occurrence."""
    count = len(ids)
    if count * _DENSE_REPORTS >= n and count < _INT32_LIMIT:
        # Dense reports: one scatter of positions over all ids costs a pass over ``n`` but no
        # sort (4-byte positions: half the memory to touch).
        earliest = np.full(n, count, dtype=np.int32)
        np.minimum.at(earliest, ids, np.arange(count, dtype=np.int32))
        reported = np.flatnonzero(earliest < count)
        return reported, earliest.take(reported).astype(np.int64)
    shift = max(count - 1, 1).bit_length()
    if shift + max(n - 1, 1).bit_length() > 62:  # the packed pairs below would overflow int64
        unique, first = np.unique(ids, return_index=True)
        return unique, first.astype(np.int64)
    # One sort of (id, position) pairs packed in an int64: faster than a stable argsort.
    packed = ids << shift
    packed |= np.arange(count, dtype=np.int64)
    packed.sort()
    sorted_ids = packed >> shift
    starts = np.empty(count, dtype=bool)
    starts[:1] = True
    np.not_equal(sorted_ids[1:], sorted_ids[:-1], out=starts[1:])
    firsts = packed.take(np.flatnonzero(starts))  # one gather instead of two masked copies
    return firsts >> shift, firsts & ((1 << shift) - 1)


class CoverageEvidence:
    """Per-sample statistics of coverage visits, and when they say "probably mislabeled".

    Each coverage visit gives the label a margin: the reported ``margin`` (given label's logit
    minus the largest other), or, for a loop that reports losses only, the log-odds of the
    given label, ``log(p / (1 - p))`` with ``p = exp(-loss)``. Positive: the model accepts the
    label. A visit *rejects* the label when its margin is below ``-scale`` times the median
    margin of the labels the model accepted in the previous epoch: a threshold the data sets,
    as strong a rejection as a typical acceptance, in the model's own units (a confident model
    must reject confidently). A visit *doubts* the label when its margin is below 0 (the model
    finds another class more likely), however slightly. A sample is suspicious after ``streak``
    rejections in a row, or once its doubting visits outnumber its accepting ones by
    ``doubt_lead`` (a tally that an accepting visit lowers by one instead of clearing): a
    label the model keeps finding less likely than another, as under ambiguous (pair-flip)
    noise, where the model learns part of the wrong mapping and never rejects it strongly, and
    where a lucky accepting visit would restart a streak.

    With ``odds``, rare rejections need more evidence. The prior odds that a label is wrong
    are those of the share of labels rejected at the previous epoch's coverage visits (evicted
    samples it did not visit counting as rejected); each rejecting visit in a row is taken to
    double them, and a sample is a candidate once they reach ``odds``: ``streak`` visits while
    a third or more of the labels are rejected (with ``odds=4``), one more each time that share
    roughly halves. The doubt tally needs as many more visits as the share of doubted labels
    asks for in the same way. On clean data a model rejects few labels, and the few hard ones
    it rejects for a while are mostly learned later; under label noise it rejects many.

    Args:
        n: number of samples.
        streak: rejections in a row that make a sample a candidate for eviction; ``None``
            never proposes one (the statistics are still kept).
        scale: the rejection threshold, relative to the typical accepted margin; 0 rejects
            every label the model finds less likely than another.
        doubt_lead: the lead of doubting over accepting visits that makes a sample a
            candidate; ``None``: never.
        odds: the odds that a label is wrong at which its evidence makes it a candidate;
            ``None``: ``streak`` and ``doubt_lead`` alone, whatever the share rejected.
    """

    def __init__(
        self,
        n: int,
        streak: int | None,
        scale: float = 0.0,
        doubt_lead: int | None = None,
        odds: float | None = None,
    ) -> None:
        self.streak = streak
        self.scale = scale
        self.doubt_lead = doubt_lead
        self.odds = odds
        # This epoch's coverage visits, and the rejecting and doubting ones among them (the next
        # epoch's priors); the visits the current priors add to ``streak`` and ``doubt_lead``.
        self.visit_counts = np.zeros(3, dtype=np.int64)
        self.extra = np.zeros(2, dtype=np.int64)
        # Accepted margins of this epoch as a log-spaced histogram (its median is the next
        # epoch's reference): bounded memory, and a checkpoint carries it.
        self.accepted = np.zeros(_BIN_COUNT, dtype=np.int64)
        self.reference = 0.0
        # 13 bytes per sample: ImageNet-sized datasets and larger keep this small.
        self.seen = np.zeros(n, dtype=bool)  # had its coverage visit in the current epoch
        # What every coverage visit reads and writes sits in one 8-byte record per sample: a
        # chunk's visits then touch one cache line per sample instead of one per statistic (and
        # 8 bytes take NumPy's fast path for gathers and scatters).
        self.records = np.zeros(n, dtype=_RECORD)
        self.since = np.full(n, -1, dtype=np.int32)  # epoch the doubt lead began

    @property
    def loss_sum(self) -> F32:
        """Sum of the coverage visits' losses (a view into the records)."""
        return self.records["loss_sum"]  # type: ignore[no-any-return]

    @property
    def epochs(self) -> npt.NDArray[np.uint16]:
        """Coverage visits counted (saturates)."""
        return self.records["epochs"]  # type: ignore[no-any-return]

    @property
    def wrong(self) -> npt.NDArray[np.uint8]:
        """Rejecting coverage visits in a row."""
        return self.records["wrong"]  # type: ignore[no-any-return]

    @property
    def doubted(self) -> npt.NDArray[np.uint8]:
        """Lead of doubting over accepting coverage visits."""
        return self.records["doubted"]  # type: ignore[no-any-return]

    @property
    def nbytes(self) -> int:
        return self.seen.nbytes + self.records.nbytes + self.since.nbytes

    @property
    def score(self) -> npt.NDArray[np.float64]:
        """Mean loss over coverage visits (NaN: none yet); higher is more suspicious."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.epochs > 0, self.loss_sum.astype(np.float64) / self.epochs, np.nan)

    def new_epoch(self, evicted: npt.NDArray[np.bool_] | None = None) -> None:
        """Starts an epoch; ``evicted``: per sample, whether it is evicted (those the ending
        epoch did not visit count as rejected in the next prior)."""
        away = 0 if evicted is None else int(np.count_nonzero(evicted & ~self.seen))
        self.seen[:] = False
        total = int(self.accepted.sum())
        if total:
            position = int(np.searchsorted(np.cumsum(self.accepted), (total + 1) // 2))
            self.reference = _bin_centre(position)
        self.accepted[:] = 0
        visits, rejected, doubted = (int(count) for count in self.visit_counts)
        if visits:
            for rule, against in enumerate((rejected, doubted)):
                self.extra[rule] = self._extra_visits((against + away) / (visits + away))
        self.visit_counts[:] = 0

    def _extra_visits(self, share: float) -> int:
        """Visits beyond the fixed counts that evidence needs when this share of the labels
        is rejected (or doubted)."""
        base = self.streak if self.streak is not None else self.doubt_lead
        if self.odds is None or base is None:
            return 0
        ceiling = _UINT8_LIMIT - max(self.streak or 0, self.doubt_lead or 0)
        if share <= 0.0:
            return ceiling
        if share >= 1.0:
            return 0
        prior_odds = share / (1.0 - share)
        needed = math.ceil(math.log(self.odds / prior_odds) / math.log(_VISIT_LIKELIHOOD))
        return min(max(needed - base, 0), ceiling)

    def observe(self, ids: I64, loss: F32, margin: F32 | None, epoch: int, judged: bool) -> I64:
        """Takes one epoch's reports in arrival order; returns the ids that became suspicious.

        ``judged``: whether this epoch's coverage visits count as evidence (warm-up epochs,
        whose early losses come from an untrained model, do not).
        """
        unique, first = first_reports(ids, len(self.seen))
        fresh = ~self.seen[unique]
        if not fresh.all():
            unique, first = unique[fresh], first[fresh]
        if not len(unique):
            return unique
        self.seen[unique] = True
        coverage_loss = loss[first]
        records = self.records[unique]  # a copy, written back whole below
        records["loss_sum"] += coverage_loss
        _count_up(records["epochs"])
        given = self._margins(coverage_loss, None if margin is None else margin[first])
        self.accepted += np.bincount(_margin_bins(given[given > 0]), minlength=_BIN_COUNT)
        wrong = self._rejects(given)
        doubt = given < 0
        self.visit_counts += (
            len(given),
            int(np.count_nonzero(wrong)),
            int(np.count_nonzero(doubt)),
        )
        found = self._judge(records, unique, wrong, doubt, epoch) if judged else unique[:0]
        self.records[unique] = records
        return found

    def _judge(
        self,
        records: npt.NDArray[np.void],
        ids: I64,
        wrong: npt.NDArray[np.bool_],
        doubt: npt.NDArray[np.bool_],
        epoch: int,
    ) -> I64:
        """Counts the visits' rejections (``wrong``) and doubts into ``records`` (the rows of
        ``ids``); returns the ids that became suspicious."""
        streak = records["wrong"]
        _count_up(streak)
        streak *= wrong  # in a row: a visit that does not reject clears it
        lead = records["doubted"]
        before = lead.copy()
        lowered = np.maximum(before, 1)
        lowered -= 1  # an accepting visit lowers the lead by one
        lead[...] = np.where(doubt, _count_up(before.copy()), lowered)
        # A lead starts at a doubting visit after none (0 -> 1); a lead of 0 has no start, so
        # only a lead that ended at this visit (1 -> 0) has one to clear: one scatter for both.
        changed = np.flatnonzero(before == (~doubt).view(np.uint8))
        if len(changed):
            starts = doubt.astype(np.int32)
            starts *= epoch + 1
            starts -= 1  # the epoch where a lead starts, -1 where one ends
            self.since[ids.take(changed)] = starts.take(changed)
        return ids[self._found(streak, lead)]

    def _rejects(self, given: F32) -> npt.NDArray[np.bool_]:
        """Whether each visit's margin rejects its label."""
        return given < (-self.scale * self.reference if self.scale else 0.0)

    @staticmethod
    def _margins(loss: F32, reported: F32 | None) -> F32:
        """Each visit's margin: the reported one, else the log-odds of the given label."""
        if reported is None:
            return _log_odds(loss)
        missing = np.isnan(reported)
        if not missing.any():
            return reported
        return np.where(missing, _log_odds(loss), reported)

    def _found(
        self, streak: npt.NDArray[np.uint8], doubted: npt.NDArray[np.uint8]
    ) -> npt.NDArray[np.bool_]:
        found = np.zeros(len(streak), dtype=bool)
        if self.streak is not None:
            found |= streak >= self.streak + int(self.extra[0])
        if self.doubt_lead is not None:
            found |= doubted >= self.doubt_lead + int(self.extra[1])
        return found

    def on_evidence(self, ids: I64) -> npt.NDArray[np.bool_]:
        """Whether each sample's coverage visits say "probably mislabeled" now."""
        return self._found(self.wrong[ids], self.doubted[ids])

    def forget(self, ids: I64) -> None:
        """Starts the evidence of ``ids`` again (a person decided about them)."""
        self.wrong[ids] = 0
        self.doubted[ids] = 0
        self.since[ids] = -1

    def state(self) -> dict[str, npt.NDArray[np.generic]]:
        return {
            "accepted_margins": self.accepted,
            "margin_reference": np.array([self.reference]),
            "coverage_seen": self.seen,
            "coverage_loss_sum": self.loss_sum,
            "coverage_epochs": self.epochs,
            "wrong_streak": self.wrong,
            "doubt_tally": self.doubted,
            "wrong_since": self.since,
            "coverage_visit_counts": self.visit_counts,
            "evidence_extra": self.extra,
        }

    def load(self, arrays: Mapping[str, npt.ArrayLike]) -> None:
        """Restores :meth:`state` (a checkpoint's arrays, tensors included)."""
        accepted = np.asarray(arrays["accepted_margins"]).astype(np.int64)
        # Bins of an older layout cannot be read: the reference they gave is kept.
        self.accepted = (
            accepted if accepted.shape == (_BIN_COUNT,) else np.zeros(_BIN_COUNT, np.int64)
        )
        self.reference = float(np.asarray(arrays["margin_reference"])[0])
        self.seen = np.asarray(arrays["coverage_seen"]).astype(bool)
        self.records = np.zeros(len(self.seen), dtype=_RECORD)
        self.records["loss_sum"] = np.asarray(arrays["coverage_loss_sum"])
        self.records["epochs"] = np.asarray(arrays["coverage_epochs"])
        self.records["wrong"] = np.asarray(arrays["wrong_streak"])
        doubted = arrays.get("doubt_tally")  # absent from checkpoints before version 3
        if doubted is not None:
            self.records["doubted"] = np.asarray(doubted)
        self.since = np.asarray(arrays["wrong_since"]).astype(np.int32)
        self.since[self.doubted == 0] = -1  # no lead, no start (older checkpoints: their streak's)
        # Absent from checkpoints before version 4: fixed evidence until the next epoch.
        counts = arrays.get("coverage_visit_counts")
        self.visit_counts = (
            np.zeros(3, np.int64) if counts is None else np.asarray(counts).astype(np.int64)
        )
        extra = arrays.get("evidence_extra")
        self.extra = np.zeros(2, np.int64) if extra is None else np.asarray(extra).astype(np.int64)
