"""``HeapqSampler``: loss-based priority sampling with warm-up, eviction and checkpointing."""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterator, Mapping, Sized
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Sampler

from . import _distributed
from ._balanced import WRONG_LOSS, CoverageEvidence, plan_epoch
from ._base_order import BaseOrder
from ._cursor import EpochCursor
from ._device_updates import DeviceUpdate, deferred, fetch_device_updates, snapshot_device_update
from ._inputs import ArrayLike, HostUpdate, host_indices, host_metrics, host_update
from ._priority_queue import PriorityRuns, float_keys, pack, unpack_ids, unpack_keys
from ._recent_draws import RecentDraws
from .errors import AllSamplesEvictedError

__all__ = ["HeapqSampler", "SamplerListener"]

I64 = npt.NDArray[np.int64]

# Per-sample state flags (one byte per sample).
_EVICTED = np.uint8(1)  # never drawn until reset() or reinstate()
_WAITING = np.uint8(2)  # drawn; competes again once its loss is updated
_COLD = np.uint8(4)  # pushed out of the pool by `size`; competes again once drawn and updated
_SCORED = np.uint8(8)  # has a loss that counts for priority (reset() clears it)
_NOT_IN_POOL = _EVICTED | _WAITING | _COLD
_UINT16_MAX = np.iinfo(np.uint16).max
# Pending update ids that the next chunk of draws applies (bounding their memory) even where it
# need not; more than _PENDING_LIMIT are applied by `update` itself, for loops that update
# without drawing.
_PENDING_AT_CHUNK = 1 << 20
_PENDING_LIMIT = 1 << 24
_UINT8_MAX = np.iinfo(np.uint8).max
_STATE_VERSION = 4
Policy = Literal["balanced", "greedy"]
_EXTRA_DOUBTS = 2


class SamplerListener:
    """Receives what a :class:`HeapqSampler` does (the recorder implements it).

    Every method is called on the training thread and must return quickly.
    """

    def attach(self, sampler: HeapqSampler) -> None:
        """Called once, when a sampler is created with this listener."""

    def on_epoch_start(self, sampler: HeapqSampler, epoch: int) -> None:
        """Called when an epoch starts, before the sampler resets its per-epoch state."""

    def on_update(
        self, sampler: HeapqSampler, ids: I64, metrics: Mapping[str, npt.NDArray[np.float32]]
    ) -> None:
        """Called with each accepted update, in order, when the sampler applies it: at the
        latest when it draws its next chunk, ends an epoch, or is read or synchronized. (With
        a listener attached, the balanced policy applies updates at every chunk, as greedy
        does; without one, at the epoch's end.)"""

    def on_evict(self, sampler: HeapqSampler, ids: I64, epoch: int) -> None:
        """Called when samples are evicted."""

    def on_epoch_end(self, sampler: HeapqSampler, epoch: int) -> None:
        """Called when an epoch has yielded all of its draws."""


class HeapqSampler(Sampler[int]):
    r"""Draws the samples a model struggles with more often, and evicts the ones it keeps
    getting wrong.

    The first ``start_at`` epochs visit every sample once (warm-up). Afterwards the ``policy``
    decides:

    - ``"balanced"`` (the default): every epoch visits each live sample once, except a random
      ``prune`` share of the easy ones (latest loss below the mean), and spends the draws saved
      on extra visits (at most ``max_extra`` each) to hard samples, in proportion to their loss,
      leaving out those whose given label the model doubts (now, or on balance at its coverage
      visits): extra visits would teach it a label it finds wrong. A
      sample's *coverage visit* is its first report of an epoch. A sample whose label the model
      rejects at ``evidence`` coverage visits in a row is evicted, with that evidence
      (:attr:`eviction_evidence`). A visit rejects the label when its margin (the reported
      ``"margin"``, else the label's log-odds from the loss) is below ``-reject_scale`` times
      the median margin of the labels the model accepted the epoch before: a threshold the
      data sets, in the model's own units. A sample is also evicted once the coverage visits
      at which the model found its label less likely than another (margin below 0) outnumber
      those at which it did not by ``doubt_evidence``: weaker evidence, so more of it, for
      the ambiguous labels (pair-flip noise) that a model never rejects strongly. When the
      model rejects few labels, both rules need more visits (``evidence_odds``): on clean data
      the few labels a model rejects are mostly hard ones it learns later. Greedy sampling
      trains on the likely mislabeled samples first and collapses under label noise; this
      policy does not.
    - ``"greedy"`` (the original datasetq): each draw takes the sample with the highest
      priority: the largest latest loss with ``extrema="min"``, the smallest with
      ``extrema="max"``; a sample with no loss yet comes first. A drawn sample waits until
      :meth:`update` gives it a new loss, then competes again with it, so a sample that stays
      hard is drawn again within the epoch.

    With either policy, a sample drawn ``max_visits`` times in one epoch is evicted; an evicted
    sample is not drawn again until :meth:`reset` or :meth:`reinstate`. :attr:`suspicion`
    ranks samples by their mean loss over coverage visits, a score that how often the sampler
    drew a sample does not inflate.

    Every epoch yields ``num_samples`` indices (``len(data_source)`` by default), also after
    evictions. When the pool has nothing to offer (every sample drawn and awaiting its update)
    greedy draws fall back to the base order.

    Args:
        data_source (Sized): the dataset; only its length is used.
        extrema (str): ``"min"`` draws the largest priority value first (a min-heap of negated
            losses, as in the original datasetq), ``"max"`` the smallest. Default: ``"min"``.
        size (int, optional): only the ``size`` highest-priority scored samples compete; the
            rest wait until they are drawn from the base order (``steps``) and updated.
            Default: ``None`` (all).
        steps (int, optional): every ``steps``-th draw comes from the base order instead of the
            priority queue; ``steps=1`` is a plain (shuffled) sampler. Default: ``None``.
        start_at (int, optional): number of warm-up epochs. Default: ``None`` (1).
        max_visits (int, optional): draws within one epoch after which a sample is evicted.
            Default: ``None`` (never).
        reset_every (int, optional): forget priorities and evictions every ``reset_every``
            draws. Default: ``None`` (never).
        shuffle (bool): base order is a seeded permutation per epoch instead of
            ``0..n-1``. Default: ``False``.
        generator (torch.Generator, optional): draws the seed when ``seed`` is not given.
        seed (int, optional): base seed; epoch ``e`` uses a permutation derived from
            ``(seed, e)``. Default: drawn from ``generator`` or torch's default generator
            (``0`` when distributed, so every rank agrees).
        num_samples (int, optional): draws per epoch over all ranks. Default: ``len(data_source)``.
        num_replicas (int, optional): number of ranks. Default: the default process group's
            world size, or 1.
        rank (int, optional): this process's rank. Default: from the default process group, or 0.
        chunk_size (int, optional): draws (per rank) served per refresh of the priority order;
            an update reaches the order within this many draws. Default: about
            ``len(data_source) / 16``, between 64 and 65536 (4096 for ``policy="greedy"``,
            whose order is ranked again at every chunk).
        key (str): the metric that sets priority. Default: ``"loss"``.
        recorder (SamplerListener, optional): receives epochs, updates and evictions, for
            example a :class:`datasetq.Recorder`.
        policy (str, optional): ``"balanced"`` or ``"greedy"`` (see above). Default:
            ``"greedy"`` when ``size``, ``steps`` or ``extrema="max"`` is given (options of the
            greedy queue), else ``"balanced"``.
        evidence (int, optional): wrong coverage visits in a row that evict a sample; ``None``
            never evicts on evidence. Default: 3 with the balanced policy, ``None`` with greedy.
        prune (float): balanced policy: share of the easy samples left out of an epoch.
            Default: 0.9.
        max_extra (int): balanced policy: extra draws one sample may get per epoch. Default: 4.
        reject_scale (float): how strongly a coverage visit must reject a label to count as
            evidence, relative to the median margin of accepted labels; 0 counts every label
            the model finds less likely than another. Default: 0.25.
        doubt_evidence (int, optional): balanced policy: by how many coverage visits those
            that find the label less likely than another must outnumber those that do not to
            evict a sample; ``None``: never on doubts alone. Default: ``evidence + 2`` (``None``
            when ``evidence`` is ``None``).
        evidence_odds (float, optional): the odds that a label is wrong at which its evidence
            evicts it. The prior odds come from the share of labels rejected at the previous
            epoch's coverage visits (samples already evicted count as rejected), and each
            rejecting visit in a row is taken to double them: with the default, ``evidence``
            visits suffice while a third or more of the labels are rejected, and one more is
            needed each time that share roughly halves. ``doubt_evidence`` grows in the same
            way with the share of doubted labels. ``None``: ``evidence`` and
            ``doubt_evidence`` alone, whatever the shares. Default: 4.

    .. note::
        A ``DataLoader`` with ``num_workers > 0`` reads the sampler ahead by
        ``prefetch_factor * num_workers`` batches, so an update reaches the priority order that
        many batches (plus at most ``chunk_size`` draws) late.

    .. note::
        Losses are kept as float32; values equal in float32 rank by index. Under
        ``torch.distributed`` every rank runs the same sampler and :meth:`update` all-gathers
        ids and losses, so every rank holds the same state; rank ``r`` yields the epoch's
        draws ``r, r + R, r + 2R, ...``.

    Example::

        >>> dataset = decorate_with_indices(MyDataset)(...)
        >>> sampler = HeapqSampler(dataset, max_visits=10, shuffle=True, seed=0)
        >>> loader = DataLoader(dataset, batch_size=64, sampler=sampler)
        >>> for epoch in range(epochs):
        ...     for index, (data, target) in loader:
        ...         loss = F.cross_entropy(model(data), target, reduction="none")
        ...         loss.mean().backward()
        ...         sampler.update(index, {"loss": loss.detach()})
    """

    _share: list[int]  # this rank's ids of the latest chunk
    _share_iter: Iterator[int] | None  # what is left of them to yield

    def __init__(
        self,
        data_source: Sized,
        extrema: Literal["min", "max"] = "min",
        size: int | None = None,
        steps: int | None = None,
        start_at: int | None = None,
        max_visits: int | None = None,
        reset_every: int | None = None,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        *,
        seed: int | None = None,
        num_samples: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        chunk_size: int | None = None,
        key: str = "loss",
        recorder: SamplerListener | None = None,
        policy: Policy | None = None,
        evidence: int | Literal["default"] | None = "default",
        prune: float = 0.9,
        max_extra: int = 4,
        reject_scale: float = 0.25,
        doubt_evidence: int | Literal["default"] | None = "default",
        evidence_odds: float | None = 4.0,
    ) -> None:
        n = len(data_source)
        if n <= 0:
            raise ValueError(f"data_source should not be empty, but got len(data_source)={n}")
        if n >= 2**32:
            raise ValueError(f"data_source should hold fewer than 2**32 samples, but got {n}")
        if extrema not in ("min", "max"):
            raise ValueError(f'extrema should be "min" or "max", but got extrema={extrema!r}')
        _check_positive("size", size)
        _check_positive("steps", steps)
        _check_positive("max_visits", max_visits, upper=_UINT16_MAX)
        _check_positive("reset_every", reset_every)
        _check_positive("num_samples", num_samples)
        _check_positive("chunk_size", chunk_size)
        if not isinstance(shuffle, bool | np.bool_):
            raise ValueError(f"shuffle should be True or False, but got shuffle={shuffle!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                f"generator should be a torch.Generator, but got {type(generator).__name__}"
            )
        if recorder is not None and not all(
            callable(getattr(recorder, hook, None))
            for hook in ("attach", "on_epoch_start", "on_update", "on_evict", "on_epoch_end")
        ):
            raise ValueError(
                "recorder should be a datasetq.Recorder (or a SamplerListener), "
                f"but got {type(recorder).__name__}"
            )
        if start_at is not None and (not _is_int(start_at) or start_at < 0):
            raise ValueError(
                f"start_at should be a non-negative integer, but got start_at={start_at!r}"
            )
        if not isinstance(key, str) or not key:
            raise ValueError(f"key should be a non-empty string, but got key={key!r}")
        if policy is None:
            greedy = size is not None or steps is not None or extrema == "max"
            policy = "greedy" if greedy else "balanced"
        if policy not in ("balanced", "greedy"):
            raise ValueError(f'policy should be "balanced" or "greedy", but got policy={policy!r}')
        if policy == "balanced" and (size is not None or steps is not None or extrema == "max"):
            raise ValueError(
                'size, steps and extrema="max" are options of policy="greedy"; '
                "the balanced policy treats the key as a loss (larger is harder)"
            )
        if evidence == "default":
            evidence = 3 if policy == "balanced" else None
        _check_positive("evidence", evidence, upper=_UINT8_MAX - 1)
        if doubt_evidence == "default":
            # Doubts are weaker evidence than rejections: more of them in a row.
            doubt_evidence = None if evidence is None else evidence + _EXTRA_DOUBTS
        _check_positive("doubt_evidence", doubt_evidence, upper=_UINT8_MAX - 1)
        if not isinstance(prune, int | float) or not 0.0 <= prune < 1.0:
            raise ValueError(f"prune should be in [0, 1), but got prune={prune!r}")
        _check_positive("max_extra", max_extra)
        if (
            not isinstance(reject_scale, int | float)
            or isinstance(reject_scale, bool)
            or not 0.0 <= reject_scale <= 10.0
        ):
            raise ValueError(
                f"reject_scale should be in [0, 10], but got reject_scale={reject_scale!r}"
            )
        if evidence_odds is not None and (
            not isinstance(evidence_odds, int | float)
            or isinstance(evidence_odds, bool)
            or not 0.0 < evidence_odds < math.inf
        ):
            raise ValueError(
                "evidence_odds should be a positive number or None, "
                f"but got evidence_odds={evidence_odds!r}"
            )
        world, world_rank = _distributed.default_world()
        num_replicas = world if num_replicas is None else num_replicas
        rank = world_rank if rank is None else rank
        _check_positive("num_replicas", num_replicas)
        if not _is_int(rank) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank should be in [0, {num_replicas}), but got rank={rank!r}")
        if seed is None:
            if generator is not None:
                seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
            elif num_replicas > 1:
                seed = 0
            else:
                seed = int(torch.randint(0, 2**62, (1,)).item())
        elif not _is_int(seed):
            raise ValueError(f"seed should be an integer, but got seed={seed!r}")

        self.data_source = data_source
        self.extrema = extrema
        self.size = size
        self.steps = steps
        self.start_at = 1 if start_at is None else start_at
        self.max_visits = max_visits
        self.reset_every = reset_every
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.key = key
        self.policy: Policy = policy
        self.evidence: int | None = evidence  # type: ignore[assignment]
        self.prune = float(prune)
        self.max_extra = max_extra
        self.reject_scale = float(reject_scale)
        self.doubt_evidence: int | None = doubt_evidence  # type: ignore[assignment]
        self.evidence_odds = None if evidence_odds is None else float(evidence_odds)
        self.num_replicas = num_replicas
        self.rank = rank
        self.listener = recorder
        self._n = n
        self._plan_dtype = np.int32 if n < 2**31 else np.int64
        self.num_samples = n if num_samples is None else num_samples
        self._per_rank = math.ceil(self.num_samples / num_replicas)
        self._total = self._per_rank * num_replicas
        if chunk_size is None:
            # A balanced epoch is planned ahead, so its chunks only batch the bookkeeping: larger
            # ones cost less per draw. Greedy re-ranks per chunk, so smaller ones stay fresher.
            chunk_size = min(65536 if self.policy == "balanced" else 4096, max(64, n // 16))
        self.chunk_size = chunk_size

        self._loss = np.full(n, np.nan, dtype=np.float32)
        self._visits = np.zeros(n, dtype=np.int32)
        self._epoch_visits = np.zeros(n, dtype=np.uint16)
        # An upper bound on this epoch's visits of any one sample: while it stays below the
        # uint16 maximum, counting needs no check for overflow.
        self._epoch_visits_bound = 0
        self._state = np.zeros(n, dtype=np.uint8)
        self._metrics: dict[str, npt.NDArray[np.float32]] = {}
        self._evicted_ids: I64 = np.empty(0, dtype=np.int64)
        self._evicted_epochs: I64 = np.empty(0, dtype=np.int64)
        self._evicted_scores = np.empty(0, dtype=np.float64)
        self._evicted_since = np.empty(0, dtype=np.int64)
        self._coverage = self._new_coverage()
        # The balanced epoch's draws (int32 below 2**31 samples: half the memory).
        self._plan: npt.NDArray[np.signedinteger[Any]] = np.empty(0, dtype=self._plan_dtype)
        self._queue = PriorityRuns()
        self._queue_built = False
        # True once the queue may hold an entry whose key is out of date (then pops re-check
        # keys, and the next epoch rebuilds the queue). Training alone never sets it.
        self._stale = False
        # Updates received since the last chunk, applied by _flush_pending().
        self._pending: list[HostUpdate | DeviceUpdate] = []
        self._pending_count = 0
        self._recent = RecentDraws()
        self._base = BaseOrder(n, shuffle, seed)

        self._cursor = EpochCursor()
        self._reset_epoch(-1)
        self._resuming = False  # a checkpoint's epoch continues at the next iteration
        if recorder is not None:
            recorder.attach(self)

    # ------------------------------------------------------------------ reading the state
    def __len__(self) -> int:
        return self._per_rank

    @property
    def epoch(self) -> int:
        """The current (or last) epoch; -1 before the first."""
        return self._cursor.epoch

    @property
    def loss(self) -> npt.NDArray[np.float32]:
        """Latest priority value per sample (NaN: none yet). A read-only view."""
        self._flush_pending()
        return _read_only(self._loss)

    @property
    def visits(self) -> npt.NDArray[np.int32]:
        """Draws per sample since construction. A read-only view."""
        return _read_only(self._visits)

    @property
    def epoch_visits(self) -> npt.NDArray[np.uint16]:
        """Draws per sample in the current epoch. A read-only view."""
        return _read_only(self._epoch_visits)

    @property
    def metrics(self) -> dict[str, npt.NDArray[np.float32]]:
        """Latest value of every metric given to :meth:`update` (NaN: none yet)."""
        self._flush_pending()
        return {name: _read_only(values) for name, values in self._metrics.items()}

    @property
    def evicted(self) -> I64:
        """Ids of the currently evicted samples, ascending."""
        self._flush_pending()
        return np.flatnonzero(self._state & _EVICTED).astype(np.int64)

    @property
    def evictions(self) -> tuple[I64, I64]:
        """``(ids, epochs)``: each currently evicted sample and the epoch it was evicted in."""
        self._flush_pending()
        return self._evicted_ids.copy(), self._evicted_epochs.copy()

    @property
    def suspicion(self) -> npt.NDArray[np.float64]:
        """Mean loss over coverage visits per sample (NaN: none yet); higher is more suspicious.

        A coverage visit is a sample's first report of an epoch, so drawing a sample more
        often does not weigh its losses more; in random order this is the mean loss.
        """
        self._flush_pending()
        return self._coverage.score

    @property
    def eviction_evidence(self) -> tuple[I64, npt.NDArray[np.float64], I64]:
        """``(ids, scores, since)`` of the currently evicted samples, in :attr:`evictions`
        order: the :attr:`suspicion` score when each was evicted, and the epoch since which
        the model has doubted its label (-1: evicted by ``max_visits`` or :meth:`evict`)."""
        self._flush_pending()
        return self._evicted_ids.copy(), self._evicted_scores.copy(), self._evicted_since.copy()

    @property
    def nbytes(self) -> int:
        """Bytes held by the sampler's arrays."""
        arrays: list[npt.NDArray[Any]] = [
            self._loss,
            self._visits,
            self._epoch_visits,
            self._state,
            *self._metrics.values(),
        ]
        extra = self._queue.nbytes + self._base.nbytes + self._coverage.nbytes + self._plan.nbytes
        return sum(a.nbytes for a in arrays) + extra

    def get_history(self) -> dict[str, npt.NDArray[Any]]:
        """Per-sample ``id``, ``loss``, ``visits`` and ``evicted`` (the original API, as arrays)."""
        self._flush_pending()
        return {
            "id": np.arange(self._n, dtype=np.int64),
            "loss": self._loss.copy(),
            "visits": self._visits.copy(),
            "evicted": (self._state & _EVICTED).astype(bool),
        }

    def get_evicted(self) -> list[int]:
        """Evicted ids as a list (the original API)."""
        return self.evicted.tolist()  # type: ignore[no-any-return]

    def get_heap(self) -> I64:
        """Ids that compete now, in the order they would be drawn."""
        self._flush_pending()
        eligible = np.flatnonzero(self._state == _SCORED)
        entries = np.sort(pack(self._keys(eligible), eligible))
        return unpack_ids(entries if self.size is None else entries[: self.size])

    # ------------------------------------------------------------------ control
    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch the next iteration runs (as ``DistributedSampler.set_epoch``)."""
        if not _is_int(epoch) or epoch < 0:
            raise ValueError(f"epoch should be a non-negative integer, but got epoch={epoch!r}")
        self._cursor.requested_epoch = epoch

    def reset(self) -> None:
        """Forgets every priority and eviction: all samples compete again, unscored."""
        self._flush_pending()
        self._state &= _WAITING
        self._evicted_ids = self._evicted_ids[:0]
        self._evicted_epochs = self._evicted_epochs[:0]
        self._evicted_scores = self._evicted_scores[:0]
        self._evicted_since = self._evicted_since[:0]
        self._queue.clear()
        self._stale = False
        self._cursor.unscored_cursor = 0
        self._cursor.maybe_unscored = True

    def evict(self, indices: ArrayLike) -> None:
        """Evicts samples now (for example a decision made in the dashboard)."""
        self._flush_pending()
        ids = np.unique(host_indices(indices, self._n))
        self._mark_evicted(ids[(self._state[ids] & _EVICTED) == 0])

    def reinstate(self, indices: ArrayLike) -> None:
        """Lets evicted samples compete again, with their latest loss if they have one."""
        self._flush_pending()
        ids = np.unique(host_indices(indices, self._n))
        ids = ids[(self._state[ids] & _EVICTED) != 0]
        if not len(ids):
            return
        self._state[ids] &= ~_EVICTED
        self._stale = True  # an entry from before its eviction may be valid again
        keep = ~np.isin(self._evicted_ids, ids)
        self._evicted_ids = self._evicted_ids[keep]
        self._evicted_epochs = self._evicted_epochs[keep]
        self._evicted_scores = self._evicted_scores[keep]
        self._evicted_since = self._evicted_since[keep]
        self._coverage.forget(ids)  # a person decided: its evidence starts again
        self._requeue(ids)

    # ------------------------------------------------------------------ feedback
    def update(self, indices: ArrayLike, metrics: Mapping[str, ArrayLike]) -> None:
        """Records the metrics of drawn samples; ``metrics[key]`` sets their priority.

        Args:
            indices: sample ids, as a list, NumPy array or tensor on any device.
            metrics (dict): metric name to one value per id (same types). Must hold ``key``
                (``"loss"`` by default); other metrics (a logit margin, the predicted class)
                are kept and readable from :attr:`metrics`.

        Raises:
            ValueError: ids out of range, lengths that differ, a missing key, non-finite values.
                The sampler's state is left as it was.

        .. note::
            Metrics given as CUDA tensors stay on the GPU until the sampler applies them, in
            one transfer for all updates since the last: at its next chunk of draws (greedy, or
            with a :class:`SamplerListener`), else at the end of the balanced policy's epoch, or
            at a read. A synchronising copy per step cost the examples CNN about 30% per epoch
            on an H100. Their values are checked then: an out-of-range id or a NaN loss raises
            ``ValueError`` there, and that update is dropped. Call :meth:`synchronize` to apply
            and check at once. Under ``torch.distributed`` updates are all-gathered when given,
            which waits for the GPU.
        """
        distributed = self.num_replicas > 1 and _distributed.is_initialized()
        on_device = type(metrics) is not dict or deferred(metrics.get(self.key))
        if on_device and not distributed:
            snapshot = snapshot_device_update(indices, metrics, self.key)
            if snapshot is not None:
                self._add_pending(snapshot, snapshot.count)
                return
        drawn = self._recent.match(indices)
        if drawn is not None:
            ids, columns = drawn, host_metrics(metrics, len(drawn), self.key)
        else:
            ids, columns = host_update(indices, metrics, self._n, self.key)
        if distributed:
            ids, columns = _distributed.all_gather_update(ids, columns)
        self._add_pending((ids, columns), len(ids))

    def synchronize(self) -> None:
        """Applies every update received so far, waiting for their copies from the GPU.

        The sampler does this itself whenever it needs its state; call it to have an invalid
        update on the GPU rejected now rather than when the sampler next applies updates.

        Raises:
            ValueError: an update's ids were out of range or its metrics not finite. That
                update is dropped; the others are applied.
        """
        self._flush_pending()

    def _add_pending(self, update: HostUpdate | DeviceUpdate, count: int) -> None:
        if not count:
            return
        # Applying waits until the state is needed (see _next_chunk), or a read: batching it
        # costs a few array calls per batch of updates instead of per step.
        self._pending.append(update)
        self._pending_count += count
        if self._pending_count > _PENDING_LIMIT:  # a loop that updates without drawing
            self._flush_pending()

    def _flush_pending(self) -> None:
        """Applies the updates received since the last chunk, in order."""
        if not self._pending:
            return
        pending, self._pending, self._pending_count = self._pending, [], 0
        received, error = _received(pending, self._n)
        if received:
            self._apply(received)
        if error is not None:
            raise error

    def _apply(self, received: list[HostUpdate]) -> None:
        if len(received) == 1:
            ids, columns = received[0]
        else:
            ids = np.concatenate([p[0] for p in received])
            names = {name for p in received for name in p[1]}
            columns = {name: np.concatenate([_column(p, name) for p in received]) for name in names}
        for name, values in columns.items():
            if name == self.key:
                self._loss[ids] = values
                continue
            target = self._metrics.get(name)
            if target is None:
                target = self._metrics[name] = np.full(self._n, np.nan, dtype=np.float32)
            given = ~np.isnan(values)
            target[ids[given]] = values[given]
        previous = self._state[ids]
        self._state[ids] = (previous & ~(_WAITING | _COLD)) | _SCORED
        if self._queue_built:
            if not self._stale and (previous == _SCORED).any():
                self._stale = True  # updated while queued: its old entry is out of date
            competing = ids[(previous & _EVICTED) == 0]
            self._queue.push(pack(self._keys(competing), competing))
        self._observe_coverage(ids, columns)
        if self.listener is not None:
            for update_ids, update_columns in received:
                self.listener.on_update(self, update_ids, update_columns)

    def _new_coverage(self) -> CoverageEvidence:
        return CoverageEvidence(
            self._n, self.evidence, self.reject_scale, self.doubt_evidence, self.evidence_odds
        )

    def _observe_coverage(self, ids: I64, columns: Mapping[str, npt.NDArray[np.float32]]) -> None:
        judged = self._cursor.epoch >= max(self.start_at, 1)
        suspicious = self._coverage.observe(
            ids, columns[self.key], columns.get("margin"), self._cursor.epoch, judged
        )
        if len(suspicious):
            self._mark_evicted(suspicious[(self._state[suspicious] & _EVICTED) == 0])

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[int]:
        # chain() hands out each share's ids from C, so no Python frame runs per id; the
        # generator below runs once per share (a chunk), when chain() needs the next one.
        return itertools.chain.from_iterable(self._shares())

    def _shares(self) -> Iterator[Iterator[int]]:
        if self._resuming:
            self._resuming = False
        else:
            epoch = (
                self._cursor.epoch + 1
                if self._cursor.requested_epoch is None
                else self._cursor.requested_epoch
            )
            self._cursor.requested_epoch = None
            self._begin_epoch(epoch)
        while True:
            if self._share_iter is None:
                if self._cursor.epoch_drawn >= self._total:
                    break
                self._next_chunk()
                continue
            yield self._share_iter  # chain() resumes here once it is exhausted
            self._cursor.yielded_before += len(self._share)
            self._share_iter = None
        self._epoch_done = True
        if self.listener is not None:
            self._flush_pending()
            self.listener.on_epoch_end(self, self._cursor.epoch)

    def _reset_epoch(self, epoch: int) -> None:
        self._cursor = self._cursor.next_epoch(epoch)
        self._epoch_done = False
        self._share = []
        self._share_iter = None
        self._recent.clear()

    def _begin_epoch(self, epoch: int) -> None:
        self._flush_pending()
        if self.listener is not None:
            self.listener.on_epoch_start(self, epoch)
            self._flush_pending()
        self._reset_epoch(epoch)
        self._base.forget_before(epoch)
        self._epoch_visits[:] = 0
        self._epoch_visits_bound = 0
        self._coverage.new_epoch(evicted=(self._state & _EVICTED) != 0)
        waiting = np.flatnonzero(self._state & _WAITING)
        self._state[waiting] &= ~_WAITING
        if self.policy == "balanced":
            planned, most = (
                self._plan_epoch(epoch) if epoch >= self.start_at else (self._plan[:0], 0)
            )
            self._plan = planned.astype(self._plan_dtype, copy=False)
            self._epoch_visits_bound = most  # planned draws count against it here, once
        elif epoch >= self.start_at:
            # Out-of-date entries are skipped when popped; rebuilding to drop them costs a full
            # sort, worth it once they outnumber the samples (steps= makes it stale each chunk).
            if self._queue_built and (not self._stale or len(self._queue) <= self._n):
                self._requeue(waiting[(self._state[waiting] & _EVICTED) == 0])
            else:
                self._build_queue()
        self._cursor.maybe_unscored = bool(np.any((self._state & (_SCORED | _NOT_IN_POOL)) == 0))

    def _plan_epoch(self, epoch: int) -> tuple[npt.NDArray[np.signedinteger[Any]], int]:
        live = np.flatnonzero((self._state & _EVICTED) == 0)
        if not len(live):
            raise AllSamplesEvictedError(
                f"all {self._n} samples are evicted; call reset() or reinstate() to draw again"
            )
        rng = np.random.default_rng([self.seed, epoch, 0xBA1A])
        loss = self._loss[live]
        # No extra draws for a sample whose label the model rejects now or at its last
        # coverage visit: extra visits would teach the model a label it finds wrong.
        margin = self._metrics.get("margin")
        rejected = margin[live] < 0 if margin is not None else loss > WRONG_LOSS
        suspect = (self._coverage.doubted[live] > 0) | rejected
        return plan_epoch(
            live, loss, suspect, self._total, rng, self.prune, self.max_extra, self._plan_dtype
        )

    def _draw_planned(self, start: int, count: int) -> I64:
        """Draws ``start:start + count`` of the balanced epoch's plan; a sample evicted since it
        was planned is replaced by one from the base order."""
        drawn = self._plan[start : start + count].astype(np.int64)
        gone = (self._state[drawn] & _EVICTED) != 0
        if self.max_visits is not None:  # a plan may repeat a sample within one chunk
            gone |= self._epoch_visits[drawn] + _occurrence(drawn) >= self.max_visits
        if gone.any():
            self._register(drawn[~gone], repeated=True)
            drawn[gone] = self._draw_base(int(gone.sum()))
        else:
            self._register(drawn, repeated=True)
        return drawn

    def _next_chunk(self) -> None:
        # The balanced policy plans each epoch ahead, so its chunks need no fresh losses: unless
        # a listener streams them, updates wait for the epoch's end (or a read, or the pending
        # bound), where one pass over them all costs much less than a pass per chunk.
        # Applied here, not in `update`: fetching metrics from a GPU would wait for it there.
        if (
            self.policy != "balanced"
            or self.listener is not None
            or self._pending_count >= _PENDING_AT_CHUNK
        ):
            self._flush_pending()
        # `size` is enforced here only, when a chunk is drawn: updates applied earlier than
        # usual (by a checkpoint or a read) must leave the same pool as updates applied now.
        if self.size is not None and self._queue_built and len(self._queue) > self.size:
            self._enforce_size()
        # Whole chunks (a multiple of num_replicas) keep every rank in step with the others.
        count = min(self.chunk_size * self.num_replicas, self._total - self._cursor.epoch_drawn)
        parts = []
        while count:
            part = count
            if self.reset_every is not None:
                part = min(part, self.reset_every - self._cursor.draws % self.reset_every)
            if self._cursor.epoch < self.start_at:
                parts.append(self._draw_base(part))
            elif self.policy == "balanced":
                start = self._cursor.epoch_drawn + sum(len(drawn) for drawn in parts)
                parts.append(self._draw_planned(start, part))
            else:
                parts.append(self._draw_priority(part))
            self._cursor.draws += part
            count -= part
            if self.reset_every is not None and self._cursor.draws % self.reset_every == 0:
                self.reset()
        chunk = parts[0] if len(parts) == 1 else np.concatenate(parts)
        offset = (self.rank - self._cursor.epoch_drawn) % self.num_replicas
        self._cursor.chunk = chunk
        self._cursor.chunk_start = self._cursor.epoch_drawn
        share_ids = chunk[offset :: self.num_replicas]
        self._share = share_ids.tolist()
        self._share_iter = iter(self._share)
        self._recent.add(self._share, share_ids)
        self._cursor.epoch_drawn += len(chunk)

    def _draw_priority(self, count: int) -> I64:
        if self.steps is None:
            n_base = 0
        else:
            positions = np.arange(self._cursor.draws + 1, self._cursor.draws + count + 1)
            base_slots = positions % self.steps == 0
            n_base = int(base_slots.sum())
        ranked = self._pop_ranked(count - n_base)
        self._register(ranked)
        fallback = self._draw_base(count - len(ranked))
        if n_base == 0:
            return np.concatenate([ranked, fallback])
        chunk = np.empty(count, dtype=np.int64)
        chunk[base_slots] = fallback[:n_base]
        chunk[~base_slots] = np.concatenate([ranked, fallback[n_base:]])
        return chunk

    def _pop_ranked(self, count: int) -> I64:
        """Takes up to ``count`` samples from the pool: unscored ones first, then by priority."""
        parts: list[I64] = []
        if count and self._cursor.maybe_unscored:
            parts.append(self._pop_unscored(count))
            count -= len(parts[0])
        while count > 0:
            entries = self._queue.pop(count)
            if not len(entries):
                break
            ids = unpack_ids(entries)
            valid = self._state[ids] == _SCORED
            if self._stale:
                valid &= self._keys(ids) == unpack_keys(entries)
            valid[1:] &= entries[1:] != entries[:-1]  # the same sample pushed twice
            if len(parts):  # its other copy may come out of an earlier pop of this call
                valid &= ~np.isin(ids, np.concatenate(parts))
            taken = ids[valid]
            if len(taken) > count:  # identical entries made pop return extra ones
                self._queue.push(entries[valid][count:])
                taken = taken[:count]
            parts.append(taken)
            count -= len(taken)
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def _pop_unscored(self, count: int) -> I64:
        """Unscored samples that compete, in base order (they rank before any scored one)."""
        found: list[I64] = []
        while count > 0 and self._cursor.unscored_cursor < self._n:
            stop = min(self._n, self._cursor.unscored_cursor + max(4 * count, 4096))
            window = self._base.window(self._cursor.epoch, 0, self._cursor.unscored_cursor, stop)
            hits = np.flatnonzero((self._state[window] & (_SCORED | _NOT_IN_POOL)) == 0)
            if len(hits) >= count:
                hits = hits[:count]
                self._cursor.unscored_cursor += int(hits[-1]) + 1
            else:
                self._cursor.unscored_cursor = stop
            found.append(window[hits])
            count -= len(hits)
        if self._cursor.unscored_cursor >= self._n:
            self._cursor.maybe_unscored = False
        return np.concatenate(found) if found else np.empty(0, dtype=np.int64)

    def _draw_base(self, count: int) -> I64:
        """Takes ``count`` non-evicted samples in base order, starting new rounds as needed."""
        found: list[I64] = []
        while count > 0:
            if len(self._evicted_ids) >= self._n:
                raise AllSamplesEvictedError(
                    f"all {self._n} samples are evicted; call reset() or reinstate() to draw again"
                )
            if self._cursor.base_cursor >= self._n:
                self._cursor.base_round += 1
                self._cursor.base_cursor = 0
            stop = min(self._n, self._cursor.base_cursor + max(2 * count, 256))
            window = self._base.window(
                self._cursor.epoch, self._cursor.base_round, self._cursor.base_cursor, stop
            )
            hits = np.flatnonzero((self._state[window] & _EVICTED) == 0)
            if len(hits) >= count:
                hits = hits[:count]
                self._cursor.base_cursor += int(hits[-1]) + 1
            else:
                self._cursor.base_cursor = stop
            drawn = window[hits]
            if self._queue_built and not self._stale and (self._state[drawn] == _SCORED).any():
                self._stale = True  # drawn here while queued: its entry outlives its key
            self._register(drawn)
            found.append(drawn)
            count -= len(hits)
        return np.concatenate(found) if found else np.empty(0, dtype=np.int64)

    def _register(self, ids: I64, repeated: bool = False) -> None:
        """Counts draws (an id may occur more than once when ``repeated``); evicts, once each,
        the samples that reach ``max_visits``."""
        if not len(ids):
            return
        # Unbuffered adds count every repeat. They cannot pass the uint16 maximum while the
        # epoch's bound stays below it (a call's ids are distinct unless ``repeated``, and
        # repeated draws come from the plan, whose most repeated sample the bound holds), or
        # when these samples have room for all of these draws.
        np.add.at(self._visits, ids, np.int32(1))
        if not repeated:
            self._epoch_visits_bound += 1
        if (
            self._total < _UINT16_MAX
            or self._epoch_visits_bound < _UINT16_MAX
            or int(self._epoch_visits[ids].max()) < _UINT16_MAX - len(ids)
        ):
            np.add.at(self._epoch_visits, ids, np.uint16(1))
        else:  # saturate instead
            distinct, counts = np.unique(ids, return_counts=True)
            total = self._epoch_visits[distinct].astype(np.int64) + counts
            self._epoch_visits[distinct] = np.minimum(total, _UINT16_MAX).astype(np.uint16)
        self._state[ids] |= _WAITING
        if self.max_visits is not None:
            over = ids[self._epoch_visits[ids] >= self.max_visits]
            if repeated and len(over):
                over = np.unique(over)
            self._mark_evicted(over[(self._state[over] & _EVICTED) == 0])

    def _mark_evicted(self, ids: I64) -> None:
        if not len(ids):
            return
        self._state[ids] |= _EVICTED
        self._evicted_ids = np.concatenate([self._evicted_ids, ids])
        self._evicted_epochs = np.concatenate(
            [self._evicted_epochs, np.full(len(ids), self._cursor.epoch, dtype=np.int64)]
        )
        coverage = self._coverage
        on_evidence = coverage.on_evidence(ids)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = coverage.loss_sum[ids] / coverage.epochs[ids]
        self._evicted_scores = np.concatenate([self._evicted_scores, scores])
        self._evicted_since = np.concatenate(
            [self._evicted_since, np.where(on_evidence, coverage.since[ids], -1).astype(np.int64)]
        )
        if self.listener is not None:
            self.listener.on_evict(self, ids, self._cursor.epoch)

    # ------------------------------------------------------------------ the pool
    def _keys(self, ids: I64) -> npt.NDArray[np.uint32]:
        return float_keys(self._loss[ids], descending=self.extrema == "min")

    def _build_queue(self) -> None:
        eligible = np.flatnonzero(self._state == _SCORED)
        self._queue.build(pack(self._keys(eligible), eligible))
        self._queue_built = True
        self._stale = False

    def _requeue(self, ids: I64) -> None:
        """Puts samples that became eligible again back into the pool."""
        if not len(ids):
            return
        scored = ids[(self._state[ids] & _SCORED) != 0]
        if self._queue_built and len(scored):
            self._queue.push(pack(self._keys(scored), scored))
        if len(scored) < len(ids):
            self._cursor.maybe_unscored = True
            self._cursor.unscored_cursor = 0

    def _enforce_size(self) -> None:
        """Keeps the ``size`` best scored samples in the pool; the others become cold."""
        assert self.size is not None
        entries = np.unique(self._queue.entries())
        ids = unpack_ids(entries)
        valid = (self._state[ids] == _SCORED) & (self._keys(ids) == unpack_keys(entries))
        entries, ids = entries[valid], ids[valid]
        self._state[ids[self.size :]] |= _COLD
        self._queue.build(entries[: self.size])
        self._stale = False

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this sampler is, mid-epoch included.

        Holds plain values and tensors, so it survives ``torch.save`` and
        ``torch.load(weights_only=True)``.
        """
        self._flush_pending()
        consumed = 0
        if self._share_iter is not None:
            consumed = len(self._share) - operator.length_hint(self._share_iter)
        # An epoch whose draws were all yielded is over, even if its iterator was not exhausted.
        yielded = self._cursor.yielded_before + consumed
        in_epoch = self._cursor.epoch >= 0 and not self._epoch_done and yielded < self._per_rank
        return {
            "version": _STATE_VERSION,
            "size_of_data_source": self._n,
            "num_replicas": self.num_replicas,
            "seed": self.seed,
            **self._cursor.state(),
            "in_epoch": in_epoch,
            "chunk_active": self._share_iter is not None,
            "share_consumed": consumed,
            "queue_built": self._queue_built,
            "loss": torch.from_numpy(self._loss.copy()),
            "visits": torch.from_numpy(self._visits.copy()),
            "epoch_visits": torch.from_numpy(self._epoch_visits.astype(np.int32)),
            "state": torch.from_numpy(self._state.copy()),
            "metrics": {k: torch.from_numpy(v.copy()) for k, v in self._metrics.items()},
            "evicted_ids": torch.from_numpy(self._evicted_ids.copy()),
            "evicted_epochs": torch.from_numpy(self._evicted_epochs.copy()),
            "evicted_scores": torch.from_numpy(self._evicted_scores.copy()),
            "evicted_since": torch.from_numpy(self._evicted_since.copy()),
            "plan": torch.from_numpy(self._plan.copy()),
            **{
                name: torch.from_numpy(np.ascontiguousarray(values).copy())
                for name, values in self._coverage.state().items()
            },
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores a :meth:`state_dict`; the next iteration continues the saved epoch."""
        version = state_dict.get("version") if isinstance(state_dict, Mapping) else None
        if version not in range(1, _STATE_VERSION + 1):
            raise ValueError(
                f"state_dict should come from HeapqSampler.state_dict() (version 1 to "
                f"{_STATE_VERSION})"
            )
        for name, expected in (
            ("size_of_data_source", self._n),
            ("num_replicas", self.num_replicas),
        ):
            if state_dict.get(name) != expected:
                raise ValueError(
                    f"state_dict was saved with {name}={state_dict.get(name)}, "
                    f"but this sampler has {name}={expected}"
                )
        cursor = EpochCursor.from_state(state_dict)
        arrays = {
            "loss": (np.float32, self._n),
            "visits": (np.int32, self._n),
            "epoch_visits": (np.int32, self._n),
            "state": (np.uint8, self._n),
        }
        loaded: dict[str, npt.NDArray[Any]] = {}
        for name, (dtype, length) in arrays.items():
            value = np.asarray(state_dict[name]).astype(dtype)
            if value.shape != (length,):
                raise ValueError(f"state_dict[{name!r}] should have shape ({length},)")
            loaded[name] = value
        self.seed = int(state_dict["seed"])
        self._base = BaseOrder(self._n, self.shuffle, self.seed)
        self._loss = loaded["loss"]
        self._visits = loaded["visits"]
        self._epoch_visits = loaded["epoch_visits"].astype(np.uint16)
        self._epoch_visits_bound = _UINT16_MAX  # unknown for the rest of this epoch: check
        self._state = loaded["state"]
        self._metrics = {
            k: np.asarray(v).astype(np.float32) for k, v in state_dict["metrics"].items()
        }
        self._evicted_ids = np.asarray(state_dict["evicted_ids"]).astype(np.int64)
        self._evicted_epochs = np.asarray(state_dict["evicted_epochs"]).astype(np.int64)
        evicted = len(self._evicted_ids)
        if version == 1:  # saved before evidence was kept: none for these evictions
            self._evicted_scores = np.full(evicted, np.nan)
            self._evicted_since = np.full(evicted, -1, dtype=np.int64)
            self._plan = np.empty(0, dtype=self._plan_dtype)
            self._coverage = self._new_coverage()
        else:
            self._evicted_scores = np.asarray(state_dict["evicted_scores"]).astype(np.float64)
            self._evicted_since = np.asarray(state_dict["evicted_since"]).astype(np.int64)
            self._plan = np.asarray(state_dict["plan"]).astype(self._plan_dtype)
            self._coverage.load(state_dict)
        self._pending, self._pending_count = [], 0
        self._reset_epoch(int(state_dict["epoch"]))
        self._cursor = cursor
        self._queue_built = bool(state_dict["queue_built"])
        if self._queue_built:
            self._build_queue()
        else:
            self._queue.clear()
            self._stale = False
        self._resuming = bool(state_dict["in_epoch"])
        self._epoch_done = not self._resuming
        if state_dict["chunk_active"]:
            offset = (self.rank - self._cursor.chunk_start) % self.num_replicas
            self._share = self._cursor.chunk[offset :: self.num_replicas].tolist()
            self._share_iter = iter(self._share[int(state_dict["share_consumed"]) :])
            self._cursor.yielded_before += int(state_dict["share_consumed"])
            self._share = self._share[int(state_dict["share_consumed"]) :]


def _received(
    pending: list[HostUpdate | DeviceUpdate], size: int
) -> tuple[list[HostUpdate], ValueError | None]:
    """The pending updates as host arrays, in order, and the first error of a dropped one."""
    on_device = [update for update in pending if isinstance(update, DeviceUpdate)]
    if not on_device:
        return pending, None  # type: ignore[return-value]
    fetched = iter(fetch_device_updates(on_device, size))
    received: list[HostUpdate] = []
    error: ValueError | None = None
    for update in pending:
        result = next(fetched) if isinstance(update, DeviceUpdate) else update
        if isinstance(result, ValueError):
            error = error or ValueError(f"an update from the GPU was dropped: {result}")
        else:
            received.append(result)
    return received, error


def _column(pending: HostUpdate, name: str) -> npt.NDArray[np.float32]:
    """One pending update's values of a metric, NaN where that update did not give it."""
    values = pending[1].get(name)
    return np.full(len(pending[0]), np.nan, np.float32) if values is None else values


def _occurrence(ids: I64) -> I64:
    """For each position, how often its id occurred at earlier positions."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(ids)]))
    occurrence = np.empty(len(ids), dtype=np.int64)
    occurrence[order] = np.arange(len(ids)) - run_start
    return occurrence


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_positive(name: str, value: object, upper: int | None = None) -> None:
    if value is None:
        return
    if not _is_int(value) or value <= 0:  # type: ignore[operator]
        raise ValueError(f"{name} should be a positive integer, but got {name}={value!r}")
    if upper is not None and value > upper:  # type: ignore[operator]
        raise ValueError(f"{name} should be at most {upper}, but got {name}={value!r}")


def _read_only(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    view = array.view()
    view.flags.writeable = False
    return view
