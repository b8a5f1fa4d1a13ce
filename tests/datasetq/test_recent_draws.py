"""Id lists fed back from the sampler's own batches skip conversion (RecentDraws); the result
must be exactly what the general path gives, whatever the batch size, lag or interleaving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import BatchSampler

from datasetq import HeapqSampler
from datasetq._recent_draws import RecentDraws
from datasetq.errors import AllSamplesEvictedError


def comparable(state: dict) -> dict:
    return {
        k: (v.tolist() if isinstance(v, np.ndarray | torch.Tensor) else v) for k, v in state.items()
    }


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    batch=st.integers(1, 70),
    lag=st.integers(0, 5),
    chunk=st.integers(1, 64),
    max_visits=st.none() | st.integers(1, 4),
    seed=st.integers(0, 3),
)
def test_lists_of_drawn_ids_give_the_same_state_as_arrays(n, batch, lag, chunk, max_visits, seed):
    """Updates arrive `lag` batches after their draw (a prefetching loader); twin samplers get
    the same ids as lists (matched against the draws) and as arrays (the general path)."""
    twins = [
        HeapqSampler(range(n), shuffle=True, seed=seed, chunk_size=chunk, max_visits=max_visits)
        for _ in range(2)
    ]
    rng = np.random.default_rng(seed)
    for _ in range(3):
        iterators = [iter(BatchSampler(twin, batch, drop_last=False)) for twin in twins]
        waiting: list[list[int]] = []
        while True:
            try:
                ids = next(iterators[0])
            except (StopIteration, AllSamplesEvictedError) as error:
                with pytest.raises(type(error)):
                    next(iterators[1])
                if isinstance(error, AllSamplesEvictedError):
                    return
                ids = None
            else:
                assert next(iterators[1]) == ids
                waiting.append(ids)
            while waiting and (len(waiting) > lag or ids is None):
                done = waiting.pop(0)
                losses = rng.random(len(done)).astype(np.float32)
                twins[0].update(done, {"loss": losses})
                twins[1].update(np.array(done), {"loss": losses})
            if ids is None:
                break
    assert comparable(twins[0].state_dict()) == comparable(twins[1].state_dict())


def test_updates_lagging_behind_draws_still_match():
    recent = RecentDraws()
    recent.add([5, 6, 7], np.array([5, 6, 7]))
    recent.add([1, 2], np.array([1, 2]))
    recent.add([9], np.array([9]))
    assert recent.match([5, 6]).tolist() == [5, 6]
    assert recent.match([7, 1]).tolist() == [7, 1]  # across two shares
    assert recent.match([2, 9]).tolist() == [2, 9]
    assert recent.match([9]) is None  # consumed: nothing left to match


def test_a_list_that_is_not_the_next_run_takes_the_general_path():
    recent = RecentDraws()
    recent.add([5, 6, 7], np.array([5, 6, 7]))
    assert recent.match([6, 7]) is None
    assert recent.match([True, False]) is None  # bools are not ids, even if equal to 1 and 0
    assert recent.match([5, 6, 7]).tolist() == [5, 6, 7]


def test_bad_lists_are_still_refused_when_they_look_like_draws():
    sampler = HeapqSampler(range(10), seed=0, chunk_size=4)
    drawn = list(sampler)
    with pytest.raises(ValueError, match="indices should be integers"):
        sampler.update([bool(i % 2) for i in drawn[:2]], {"loss": [1.0, 2.0]})
    with pytest.raises(ValueError, match="finite"):
        sampler.update(drawn[:2], {"loss": [1.0, float("nan")]})
    with pytest.raises(ValueError, match="one value per index"):
        sampler.update(drawn[:2], {"loss": [1.0]})
    assert np.isnan(sampler.loss).all()  # nothing applied
