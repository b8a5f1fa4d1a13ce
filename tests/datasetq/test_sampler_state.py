"""Checkpoints, replicas and rejected updates."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from datasetq import AllSamplesEvictedError, HeapqSampler

from .test_sampler_semantics import batched


def loss_of(i: int, step: int) -> float:
    """A deterministic loss, so an interrupted and an uninterrupted run see the same values."""
    return ((i * 7919 + step * 104729) % 997) / 100.0


def options_strategy():
    return st.fixed_dictionaries(
        {
            "start_at": st.integers(0, 2),
            "max_visits": st.one_of(st.none(), st.integers(2, 5)),
            "steps": st.one_of(st.none(), st.integers(1, 4)),
            "size": st.one_of(st.none(), st.integers(3, 30)),
            "reset_every": st.one_of(st.none(), st.integers(7, 60)),
            "shuffle": st.booleans(),
            "chunk_size": st.sampled_from([1, 3, 8, 64]),
            "extrema": st.sampled_from(["min", "max"]),
            # None: balanced unless steps, size or extrema="max" choose greedy
            "policy": st.sampled_from([None, "greedy"]),
        }
    )


def train(sampler, epochs, batch, *, start_step=0, stop_at=None):
    """Runs epochs of draws + updates. Stops (returning a checkpoint) after `stop_at` steps."""
    drawn, step = [], start_step
    try:
        for _ in range(epochs):
            for ids in batched(sampler, batch):
                drawn.append(ids)
                sampler.update(
                    ids, {"loss": [loss_of(i, step) for i in ids], "margin": [1.0] * len(ids)}
                )
                step += 1
                if stop_at is not None and step == stop_at:
                    return drawn, step, roundtrip(sampler.state_dict())
    except AllSamplesEvictedError:
        drawn.append("all evicted")
    return drawn, step, None


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@given(
    options=options_strategy(),
    n=st.integers(5, 40),
    batch=st.integers(1, 7),
    stop_at=st.integers(1, 30),
    seed=st.integers(0, 1000),
)
def test_resume_equals_uninterrupted(options, n, batch, stop_at, seed):
    epochs = 4
    full = HeapqSampler(range(n), seed=seed, **options)
    expected, _, _ = train(full, epochs, batch)
    total_steps = sum(1 for ids in expected if ids != "all evicted")
    stop_at = min(stop_at, total_steps)

    first = HeapqSampler(range(n), seed=seed, **options)
    before, step, checkpoint = train(first, epochs, batch, stop_at=stop_at)
    steps_per_epoch = [len(list(batched(range(len(first)), batch)))] * epochs
    finished_epochs = 0
    remaining = stop_at
    while finished_epochs < epochs and remaining >= steps_per_epoch[finished_epochs]:
        remaining -= steps_per_epoch[finished_epochs]
        finished_epochs += 1

    resumed = HeapqSampler(range(n), seed=seed + 1, **options)  # seed comes from the checkpoint
    resumed.load_state_dict(checkpoint)
    after, _, _ = train(resumed, epochs - finished_epochs, batch, start_step=step)
    if before and before[-1] == "all evicted":
        after = []
    # A checkpoint taken at an epoch boundary resumes at the next epoch's start.
    assert before + after == expected
    assert resumed.visits.tolist() == full.visits.tolist()
    assert resumed.evicted.tolist() == full.evicted.tolist()
    np.testing.assert_array_equal(resumed.loss, full.loss)
    np.testing.assert_array_equal(resumed.metrics["margin"], full.metrics["margin"])


def test_load_state_dict_validates():
    sampler = HeapqSampler(range(10), seed=0)
    with pytest.raises(ValueError, match="version 1"):
        sampler.load_state_dict({"version": 99})
    other = HeapqSampler(range(11), seed=0).state_dict()
    with pytest.raises(ValueError, match="size_of_data_source=11"):
        sampler.load_state_dict(other)


@given(
    options=options_strategy(),
    n=st.integers(4, 40),
    replicas=st.integers(2, 4),
    batch=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_replicas_yield_disjoint_equal_shares(options, n, replicas, batch, seed):
    """Simulated ranks: each applies the all-gathered update; states stay identical."""
    ranks = [
        HeapqSampler(range(n), seed=seed, num_replicas=replicas, rank=r, **options)
        for r in range(replicas)
    ]
    lengths = {len(s) for s in ranks}
    assert lengths == {-(-n // replicas)}
    step = 0
    for epoch in range(3):
        iterators = [batched(s, batch) for s in ranks]
        per_rank = [[] for _ in ranks]
        while True:
            outcomes = [next_or_error(it) for it in iterators]
            if any(o == "all evicted" for o in outcomes):
                assert all(o == "all evicted" for o in outcomes)  # every rank stops together
                return
            if any(o is None for o in outcomes):
                assert all(o is None for o in outcomes)  # equally long
                break
            for r, b in enumerate(outcomes):
                per_rank[r].extend(b)
            ids = [i for b in outcomes for i in b]
            for s in ranks:
                s.update(ids, {"loss": [loss_of(i, step) for i in ids]})
            step += 1
        assert all(len(d) == len(ranks[0]) for d in per_rank)
        if epoch < options["start_at"] and not ranks[0].evicted.size:
            # Warm-up: ranks partition one permutation (padded like DistributedSampler).
            union = [i for d in per_rank for i in d]
            assert set(union) == set(range(n))
            assert len(union) - len(set(union)) == len(ranks[0]) * replicas - n
        for s in ranks[1:]:
            assert s.visits.tolist() == ranks[0].visits.tolist()
            assert s.evicted.tolist() == ranks[0].evicted.tolist()


def next_or_error(iterator):
    try:
        return next(iterator, None)
    except AllSamplesEvictedError:
        return "all evicted"


BAD_UPDATES = [
    ([0, 1, 99], {"loss": [1.0, 2.0, 3.0]}, r"indices should be in \[0, 10\).*99"),
    ([-1], {"loss": [1.0]}, r"indices should be in \[0, 10\).*-1"),
    ([0, 1], {"loss": [1.0]}, r'metric "loss" should have one value per index \(2\), but got 1'),
    ([0, 1], {"loss": [1.0, float("nan")]}, r'metric "loss" should be finite'),
    ([0, 1], {"loss": [1.0, float("inf")]}, r'metric "loss" should be finite'),
    ([0, 1], {"acc": [1.0, 2.0]}, r'metrics should hold the priority key "loss"'),
    ([0.5], {"loss": [1.0]}, r"indices should be integers"),
    (["a"], {"loss": [1.0]}, r"indices should be integers"),
    ([0], {"loss": ["x"]}, r'metric "loss" should be numeric'),
    ([0], [1.0], r"metrics should be a dict"),
    ([0, 1], {"loss": [1.0, 2.0], "margin": [1.0, float("nan")]}, r'metric "margin"'),
]


@pytest.mark.parametrize(("ids", "metrics", "message"), BAD_UPDATES)
def test_rejected_updates_change_nothing(ids, metrics, message):
    sampler = HeapqSampler(range(10), seed=0, max_visits=3, chunk_size=4)
    iterator = iter(sampler)
    first = list(itertools.islice(iterator, 4))
    sampler.update(first, {"loss": [1.0, 2.0, 3.0, 4.0]})
    before = sampler.state_dict()
    with pytest.raises(ValueError, match=message):
        sampler.update(ids, metrics)
    after = sampler.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        if isinstance(before[key], torch.Tensor):
            assert np.array_equal(before[key].numpy(), after[key].numpy(), equal_nan=True), key
        elif key == "metrics":
            assert before[key].keys() == after[key].keys()
        else:
            assert before[key] == after[key], key
    # And the epoch goes on as if nothing happened.
    assert len(first) + len(list(iterator)) == 10


@pytest.mark.parametrize(
    "kind", ["list", "numpy_int32", "numpy_float_ids", "tensor", "tensor_requires_grad"]
)
def test_update_accepts_lists_arrays_and_tensors(kind):
    ids = [3, 1, 2]
    losses = [0.3, 0.1, 0.2]
    if kind == "list":
        args = (ids, {"loss": losses})
    elif kind == "numpy_int32":
        args = (np.array(ids, dtype=np.int32), {"loss": np.array(losses)})
    elif kind == "numpy_float_ids":
        args = (np.array(ids, dtype=np.float64), {"loss": np.array(losses, dtype=np.float32)})
    elif kind == "tensor":
        args = (torch.tensor(ids), {"loss": torch.tensor(losses)})
    else:
        weights = torch.tensor(losses, requires_grad=True)
        args = (torch.tensor(ids), {"loss": weights * 1.0})
    sampler = HeapqSampler(range(5), seed=0)
    sampler.update(*args)
    np.testing.assert_allclose(sampler.loss[[1, 2, 3]], [0.1, 0.2, 0.3], rtol=1e-6)
    assert np.isnan(sampler.loss[[0, 4]]).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_visits": 0}, r"max_visits should be a positive integer, but got max_visits=0"),
        ({"steps": -1}, r"steps should be a positive integer"),
        ({"size": 1.5}, r"size should be a positive integer"),
        ({"extrema": "median"}, r'extrema should be "min" or "max"'),
        ({"start_at": -1}, r"start_at should be a non-negative integer"),
        ({"rank": 2, "num_replicas": 2}, r"rank should be in \[0, 2\)"),
        ({"chunk_size": 0}, r"chunk_size should be a positive integer"),
        ({"reset_every": True}, r"reset_every should be a positive integer"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HeapqSampler(range(10), **kwargs)


def test_empty_data_source_is_refused():
    with pytest.raises(ValueError, match="data_source should not be empty"):
        HeapqSampler([])


def test_readable_state_is_read_only():
    sampler = HeapqSampler(range(4), seed=0)
    with pytest.raises(ValueError, match="read-only"):
        sampler.visits[0] = 5


def assert_queue_consistent(sampler):
    """Every competing scored sample has an entry with its current key, and unless the sampler
    knows its queue may be stale (then pops re-check keys), every live entry is current."""
    from datasetq._priority_queue import unpack_ids, unpack_keys
    from datasetq.sampler import _SCORED

    assert sampler._queue_built
    entries = sampler._queue.entries()
    ids = unpack_ids(entries)
    live = sampler._state[ids] == _SCORED
    current = sampler._keys(ids) == unpack_keys(entries)
    competing = np.flatnonzero(sampler._state == _SCORED)
    assert set(competing.tolist()) <= set(ids[live & current].tolist())
    if not sampler._stale:
        assert current[live].all()


@given(
    options=options_strategy(),
    n=st.integers(5, 30),
    operations=st.lists(
        st.tuples(
            st.sampled_from(["draw", "update_any", "evict", "reinstate", "epoch"]),
            st.integers(0, 10_000),
        ),
        max_size=40,
    ),
)
def test_queue_entries_never_silently_stale(options, n, operations):
    options = {**options, "policy": "greedy"}  # the balanced policy keeps no queue
    sampler = HeapqSampler(range(n), seed=1, **options)
    rng = np.random.default_rng(0)
    try:
        for _ in range(sampler.start_at):  # warm-up: every sample once, then the queue exists
            for drawn in batched(sampler, 4):
                sampler.update(list(drawn), {"loss": rng.random(len(drawn))})
        iterator = iter(sampler)
        drawn = list(itertools.islice(iterator, 3))
        sampler.update(drawn, {"loss": rng.random(len(drawn))})
        sampler._flush_pending()
        assert_queue_consistent(sampler)
        for operation, value in operations:
            if operation == "draw":
                drawn = list(itertools.islice(iterator, 1 + value % 7))
                if drawn:
                    sampler.update(drawn, {"loss": rng.random(len(drawn))})
            elif operation == "update_any":  # losses for samples that were not just drawn
                ids = rng.integers(0, n, 1 + value % 5)
                sampler.update(ids, {"loss": rng.random(len(ids))})
            elif operation == "evict":
                sampler.evict([value % n])
            elif operation == "reinstate":
                sampler.reinstate([value % n])
            else:
                iterator = iter(sampler)
                next(iterator, None)  # the next epoch begins (and may rebuild its queue)
            sampler._flush_pending()
            assert_queue_consistent(sampler)
    except AllSamplesEvictedError:
        assert len(sampler.evicted) == n


@pytest.mark.parametrize("kind", ["tensor", "array"])
def test_update_keeps_its_values_when_the_caller_reuses_its_buffers(kind):
    sampler = HeapqSampler(range(5), seed=0)
    ids = np.array([1, 2])
    losses = np.array([0.5, 0.25], dtype=np.float32)
    if kind == "tensor":
        ids, losses = torch.from_numpy(ids), torch.from_numpy(losses)
    sampler.update(ids, {"loss": losses, "margin": losses * 2})
    ids[:] = 3  # a training loop refilling preallocated buffers before the next chunk
    losses[:] = 9.0
    np.testing.assert_array_equal(sampler.loss, [np.nan, 0.5, 0.25, np.nan, np.nan])


def test_every_cursor_field_is_in_the_checkpoint():
    """The epoch cursor is one structure: a field added to it reaches state_dict by itself."""
    import dataclasses

    from datasetq._cursor import EpochCursor

    sampler = HeapqSampler(range(50), policy="greedy", seed=0, chunk_size=8)
    train(sampler, 1, 5)
    iterator = iter(sampler)
    list(itertools.islice(iterator, 13))  # mid-epoch, mid-chunk
    state = sampler.state_dict()
    names = {f.name for f in dataclasses.fields(EpochCursor)}
    assert names <= set(state)
    restored = EpochCursor.from_state(state)
    for name in names:
        saved, kept = getattr(restored, name), getattr(sampler._cursor, name)
        if isinstance(kept, np.ndarray):
            np.testing.assert_array_equal(saved, kept)
        else:
            assert saved == kept, name
    del state["base_cursor"]
    with pytest.raises(ValueError, match="base_cursor"):
        HeapqSampler(range(50), policy="greedy", seed=0).load_state_dict(state)
