"""Property tests: HeapqSampler against a one-draw-at-a-time reference model, and its invariants."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from datasetq import AllSamplesEvictedError, HeapqSampler

from .reference import ReferenceSampler


def batched(iterable, size):
    iterator = iter(iterable)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


configs = st.fixed_dictionaries(
    {
        "n": st.integers(1, 40),
        "start_at": st.integers(0, 2),
        "max_visits": st.one_of(st.none(), st.integers(1, 4)),
        "chunk_size": st.sampled_from([1, 2, 3, 8, 64]),
        "extrema": st.sampled_from(["min", "max"]),
        "shuffle": st.booleans(),
        "seed": st.integers(0, 2**31),
        "batch": st.integers(1, 9),
        "epochs": st.integers(1, 4),
        "loss_seed": st.integers(0, 2**31),
        "skip_every": st.sampled_from([0, 0, 3, 5]),  # sometimes a batch gets no update
        "ties": st.booleans(),
        "steps": st.one_of(st.none(), st.integers(1, 4)),
        "size": st.one_of(st.none(), st.integers(1, 30)),
        "reset_every": st.one_of(st.none(), st.integers(1, 60)),
    }
)


def drive(draw_iter_per_epoch, update, cfg):
    """Consumes epochs batch by batch and feeds back losses, as a training loop would."""
    rng = np.random.default_rng(cfg["loss_seed"])
    epochs, error = [], None
    step = 0
    try:
        for _ in range(cfg["epochs"]):
            drawn = []
            iterator = draw_iter_per_epoch()
            while batch := list(itertools.islice(iterator, cfg["batch"])):
                drawn.extend(batch)
                step += 1
                if cfg["skip_every"] and step % cfg["skip_every"] == 0:
                    continue
                if cfg["ties"]:
                    losses = rng.integers(0, 3, len(batch)).astype(float)
                else:
                    losses = rng.random(len(batch)) * 10 - 2
                update(batch, losses)
            epochs.append(drawn)
    except AllSamplesEvictedError:
        error = "all evicted"
    return epochs, error


def run_sampler(cfg):
    sampler = HeapqSampler(
        range(cfg["n"]),
        policy="greedy",
        extrema=cfg["extrema"],
        start_at=cfg["start_at"],
        max_visits=cfg["max_visits"],
        shuffle=cfg["shuffle"],
        seed=cfg["seed"],
        chunk_size=cfg["chunk_size"],
        steps=cfg["steps"],
        size=cfg["size"],
        reset_every=cfg["reset_every"],
    )
    result = drive(lambda: iter(sampler), lambda b, v: sampler.update(b, {"loss": v}), cfg)
    return sampler, result


def run_reference(cfg):
    ref = ReferenceSampler(
        cfg["n"],
        start_at=cfg["start_at"],
        max_visits=cfg["max_visits"],
        chunk_size=cfg["chunk_size"],
        extrema=cfg["extrema"],
        shuffle=cfg["shuffle"],
        seed=cfg["seed"],
        steps=cfg["steps"],
        size=cfg["size"],
        reset_every=cfg["reset_every"],
    )
    result = drive(lambda: itertools.chain.from_iterable(ref.epoch_draws()), ref.update, cfg)
    return ref, result


@given(configs)
def test_draws_match_the_reference_model(cfg):
    sampler, (epochs, error) = run_sampler(cfg)
    ref, (ref_epochs, ref_error) = run_reference(cfg)
    assert epochs == ref_epochs
    assert error == ref_error
    assert sampler.visits.tolist() == ref.visits
    assert sampler.evicted.tolist() == [i for i in range(cfg["n"]) if ref.evicted[i]]


@given(configs)
def test_invariants(cfg):
    cfg = {**cfg, "reset_every": None}  # a reset forgets evictions: the checks below assume none
    sampler, (epochs, error) = run_sampler(cfg)
    n = cfg["n"]
    counts = np.zeros(n, dtype=int)
    evicted_so_far: set[int] = set()
    for number, drawn in enumerate(epochs):
        # len() equals what is yielded, every epoch, also after evictions.
        assert len(drawn) == len(sampler) == n
        if number < cfg["start_at"] and not evicted_so_far:
            # Warm-up epochs are permutations.
            assert sorted(drawn) == list(range(n))
        # An evicted sample is never drawn again.
        assert not evicted_so_far.intersection(drawn)
        per_epoch = np.bincount(drawn, minlength=n)
        if cfg["max_visits"] is not None:
            assert per_epoch.max() <= cfg["max_visits"]
            evicted_so_far |= set(np.flatnonzero(per_epoch >= cfg["max_visits"]).tolist())
        counts += per_epoch
    # Visits equal draws.
    if error is None:
        assert sampler.visits.tolist() == counts.tolist()
    ids, epochs_of = sampler.evictions
    assert sorted(ids.tolist()) == sampler.evicted.tolist()
    assert all(0 <= e < cfg["epochs"] for e in epochs_of.tolist())


def test_priority_order_one_by_one():
    """With chunk_size=1 every draw is the largest loss among samples not awaiting an update."""
    n = 50
    sampler = HeapqSampler(range(n), policy="greedy", chunk_size=1, shuffle=True, seed=3)
    true_loss = np.random.default_rng(0).random(n)
    for i in sampler:  # warm-up
        sampler.update([i], {"loss": [true_loss[i]]})
    drawn = []
    for i in sampler:
        drawn.append(i)
        sampler.update([i], {"loss": [true_loss[i] * 0.5]})  # learned a bit
        true_loss[i] *= 0.5
        if len(drawn) == 10:
            break
    # Each draw was the argmax of the losses the sampler knew at that moment.
    known = np.random.default_rng(0).random(n)
    for i in drawn:
        assert i == int(np.argmax(known))
        known[i] *= 0.5


def test_hard_sample_is_drawn_again_within_the_epoch():
    sampler = HeapqSampler(range(100), policy="greedy", chunk_size=4, seed=0)
    for batch in batched(sampler, 4):
        sampler.update(batch, {"loss": [5.0 if i == 7 else 1.0 - i / 1000 for i in batch]})
    drawn = []
    for batch in batched(sampler, 4):
        drawn.extend(batch)
        losses = [5.0 if i == 7 else 0.1 for i in batch]
        sampler.update(list(batch), {"loss": losses})
    assert drawn.count(7) > 10


def test_extrema_max_prefers_the_smallest_value():
    sampler = HeapqSampler(range(10), policy="greedy", extrema="max", chunk_size=10, seed=0)
    list(sampler)
    sampler.update(list(range(10)), {"loss": [float(10 - i) for i in range(10)]})
    assert list(sampler)[:10] == list(range(9, -1, -1))


def test_numpy_losses_order_as_numbers():
    """The original ranked NumPy losses wrongly; here arrays, lists and tensors agree."""
    import torch

    losses = np.array([0.5, 3.0, 2.0, 10.0, 0.1], dtype=np.float64)
    orders = []
    for values in (losses, losses.tolist(), torch.tensor(losses), losses.astype(np.float16)):
        sampler = HeapqSampler(range(5), policy="greedy", chunk_size=5, seed=0)
        list(sampler)
        sampler.update(np.arange(5), {"loss": values})
        orders.append(list(sampler))
    assert all(order == [3, 1, 2, 0, 4] for order in orders)


def test_every_sample_evicted_raises_a_clear_error():
    sampler = HeapqSampler(range(5), policy="greedy", max_visits=1, seed=0)
    assert sorted(sampler) == list(range(5))
    assert sampler.evicted.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(AllSamplesEvictedError, match="all 5 samples are evicted"):
        list(sampler)


def test_evict_reinstate_and_reset():
    sampler = HeapqSampler(range(6), policy="greedy", seed=0, chunk_size=6)
    list(sampler)
    sampler.update(range(6), {"loss": [1.0, 2, 3, 4, 5, 6]})
    sampler.evict([5, 4])
    assert sampler.evicted.tolist() == [4, 5]
    assert sampler.evictions[1].tolist() == [0, 0]
    epoch = list(sampler)
    assert 4 not in epoch
    assert 5 not in epoch
    assert len(epoch) == 6
    sampler.reinstate([5])
    assert sampler.evicted.tolist() == [4]
    sampler.update(range(6), {"loss": [1.0, 2, 3, 4, 5, 6]})
    assert next(iter(sampler)) == 5
    sampler.reset()
    assert sampler.evicted.tolist() == []
    assert sorted(list(sampler)) == list(range(6))  # all unscored again: base order


def test_steps_one_is_a_plain_shuffled_sampler():
    sampler = HeapqSampler(range(30), policy="greedy", steps=1, shuffle=True, seed=5, chunk_size=7)
    for _ in range(4):
        drawn = []
        for batch in batched(sampler, 5):
            drawn.extend(batch)
            sampler.update(list(batch), {"loss": [float(i) for i in batch]})
        assert sorted(drawn) == list(range(30))


def test_steps_k_interleaves_base_order_draws():
    n, k = 40, 4
    sampler = HeapqSampler(range(n), policy="greedy", steps=k, shuffle=True, seed=2, chunk_size=8)
    for batch in batched(sampler, 8):
        sampler.update(list(batch), {"loss": [float(i) for i in batch]})
    before = n  # draws so far
    drawn = []
    for batch in batched(sampler, 8):
        drawn.extend(batch)
        sampler.update(list(batch), {"loss": [float(i) for i in batch]})
    # Positions whose global draw number is a multiple of k come from the base order: the
    # epoch's permutation, in order, from its start.
    base_positions = [p for p in range(n) if (before + p + 1) % k == 0]
    base_order = sampler._base.window(1, 0, 0, n).tolist()
    assert [drawn[p] for p in base_positions] == base_order[: len(base_positions)]
    # The others follow priority: the first chunk's ranked draws are the largest ids.
    ranked_first_chunk = [drawn[p] for p in range(8) if p not in base_positions]
    assert ranked_first_chunk == sorted(range(n), reverse=True)[: len(ranked_first_chunk)]


def test_size_limits_the_competing_pool():
    sampler = HeapqSampler(range(20), policy="greedy", size=5, seed=0, chunk_size=5)
    list(sampler)
    sampler.update(range(20), {"loss": [float(i) for i in range(20)]})
    drawn = []
    for batch in batched(sampler, 5):
        drawn.extend(batch)
        sampler.update(list(batch), {"loss": [float(i) for i in batch]})
    # Only the 5 best (15..19) compete; they are drawn again and again.
    assert set(drawn) == {15, 16, 17, 18, 19}
    assert len(drawn) == 20


def test_reset_every_forgets_priorities_and_evictions():
    sampler = HeapqSampler(
        range(10), policy="greedy", reset_every=10, max_visits=1, seed=0, chunk_size=5
    )
    for _ in range(3):  # max_visits=1 evicts everything each epoch; the reset revives them
        drawn = list(sampler)
        assert sorted(drawn) == list(range(10))
        assert sampler.evicted.tolist() == []


def test_num_samples_sets_the_epoch_length():
    sampler = HeapqSampler(range(10), policy="greedy", num_samples=25, seed=0, shuffle=True)
    assert len(sampler) == 25
    drawn = list(sampler)
    assert len(drawn) == 25
    assert np.bincount(drawn, minlength=10).min() >= 2


def test_set_epoch_selects_the_permutation():
    c = HeapqSampler(range(50), policy="greedy", shuffle=True, seed=9, start_at=5)
    c.set_epoch(3)
    a2 = HeapqSampler(range(50), policy="greedy", shuffle=True, seed=9, start_at=5)
    for _ in range(3):
        list(a2)
    assert list(c) == list(a2)
    assert c.epoch == 3
