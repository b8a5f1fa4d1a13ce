"""Ids fed back from the sampler's own batches skip conversion (RecentDraws), as lists and as
int64 tensors or arrays; the result must be exactly what the general path gives, whatever the
batch size, lag or interleaving."""

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
def test_drawn_ids_as_lists_or_tensors_give_the_same_state_as_the_general_path(
    n, batch, lag, chunk, max_visits, seed
):
    """Updates arrive `lag` batches after their draw (a prefetching loader); triplet samplers
    get the same ids as lists and as int64 tensors (both matched against the draws) and as int32
    arrays (the general path, which converts and range-checks)."""
    twins = [
        HeapqSampler(range(n), shuffle=True, seed=seed, chunk_size=chunk, max_visits=max_visits)
        for _ in range(3)
    ]
    rng = np.random.default_rng(seed)
    for _ in range(3):
        iterators = [iter(BatchSampler(twin, batch, drop_last=False)) for twin in twins]
        waiting: list[list[int]] = []
        while True:
            try:
                ids = next(iterators[0])
            except (StopIteration, AllSamplesEvictedError) as error:
                for other in iterators[1:]:
                    with pytest.raises(type(error)):
                        next(other)
                if isinstance(error, AllSamplesEvictedError):
                    return
                ids = None
            else:
                assert next(iterators[1]) == ids
                assert next(iterators[2]) == ids
                waiting.append(ids)
            while waiting and (len(waiting) > lag or ids is None):
                done = waiting.pop(0)
                losses = rng.random(len(done)).astype(np.float32)
                twins[0].update(done, {"loss": losses})
                twins[1].update(torch.tensor(done), {"loss": torch.from_numpy(losses)})
                twins[2].update(np.array(done, dtype=np.int32), {"loss": losses})
            if ids is None:
                break
    general = comparable(twins[2].state_dict())
    assert comparable(twins[0].state_dict()) == general
    assert comparable(twins[1].state_dict()) == general


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


def test_tensors_and_arrays_of_drawn_ids_match_across_shares():
    recent = RecentDraws()
    recent.add([5, 6, 7], np.array([5, 6, 7]))
    recent.add([1, 2], np.array([1, 2]))
    assert recent.match(torch.tensor([5, 6])).tolist() == [5, 6]
    assert recent.match(np.array([7, 1])).tolist() == [7, 1]  # across two shares
    assert recent.match(torch.tensor([2])).tolist() == [2]
    assert recent.match(torch.tensor([2])) is None  # consumed


def test_a_tensor_that_is_not_the_next_run_or_not_int64_takes_the_general_path():
    recent = RecentDraws()
    recent.add([5, 6, 7, 8], np.array([5, 6, 7, 8]))
    assert recent.match(torch.tensor([6, 7])) is None
    assert recent.match(torch.tensor([5, 6], dtype=torch.int32)) is None  # other bytes per id
    assert recent.match(torch.tensor([[5, 6]])) is None
    assert recent.match(torch.tensor([], dtype=torch.int64)) is None
    strided = torch.tensor([5, 0, 6, 0])[::2]  # not contiguous: compared by value all the same
    assert recent.match(strided).tolist() == [5, 6]
    assert recent.match(torch.tensor([7, 8])).tolist() == [7, 8]


def test_a_strided_share_of_a_distributed_chunk_matches_its_tensor():
    chunk = np.arange(20, dtype=np.int64)
    share = chunk[1::2]  # rank 1 of 2: a strided view, as the sampler keeps it
    recent = RecentDraws()
    recent.add(share.tolist(), share)
    assert recent.match(torch.tensor([1, 3, 5])).tolist() == [1, 3, 5]
    assert recent.match(torch.tensor([7, 9])).tolist() == [7, 9]


def test_bad_metrics_with_a_tensor_of_drawn_ids_are_still_refused():
    sampler = HeapqSampler(range(10), seed=0, chunk_size=4)
    drawn = torch.tensor(list(sampler))
    with pytest.raises(ValueError, match="finite"):
        sampler.update(drawn[:2], {"loss": torch.tensor([1.0, float("nan")])})
    with pytest.raises(ValueError, match="one value per index"):
        sampler.update(drawn[:2], {"loss": torch.tensor([1.0])})
    assert np.isnan(sampler.loss).all()  # nothing applied
    sampler.update(drawn[:2], {"loss": torch.tensor([1.0, 2.0])})
    assert sampler.loss[drawn[:2].numpy()].tolist() == [1.0, 2.0]
