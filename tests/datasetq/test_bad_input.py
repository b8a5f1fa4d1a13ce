"""Bad input to the sampler: a ValueError that names the argument, and nothing changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasetq import HeapqSampler


def sampler() -> HeapqSampler:
    return HeapqSampler(range(8), seed=0)


def test_bfloat16_and_float16_losses_are_taken():
    for dtype in (torch.bfloat16, torch.float16):
        s = sampler()
        s.update(torch.tensor([1, 2]), {"loss": torch.tensor([0.5, 0.25], dtype=dtype)})
        np.testing.assert_allclose(s.loss[[1, 2]], [0.5, 0.25])


@pytest.mark.parametrize(
    ("indices", "metrics", "message"),
    [
        ([1, 2], {"loss": [[0.1, 0.2], [0.3]]}, 'metric "loss" should be a flat list of numbers'),
        ([1, 2], {"loss": np.ones((2, 3))}, r'metric "loss" should be 1-D .* shape \(2, 3\)'),
        (np.array([[1, 2]]), {"loss": [0.1, 0.2]}, r"indices should be 1-D .* shape \(1, 2\)"),
        (torch.tensor([[1], [2]]), {"loss": torch.ones(2)}, r"indices should be 1-D"),
        ([1, 2], {"loss": [0.1, 0.2], "": [1.0, 2.0]}, "metric names should be non-empty"),
    ],
    ids=["ragged", "2-d-loss", "2-d-ids", "2-d-id-tensor", "empty-name"],
)
def test_bad_updates_name_the_problem_and_change_nothing(indices, metrics, message):
    s = sampler()
    with pytest.raises(ValueError, match=message):
        s.update(indices, metrics)
    assert np.isnan(s.loss).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shuffle": "yes"}, "shuffle should be True or False"),
        ({"generator": "g"}, "generator should be a torch.Generator"),
        ({"recorder": object()}, "recorder should be a datasetq.Recorder"),
    ],
)
def test_bad_sampler_arguments_name_themselves(options, message):
    with pytest.raises(ValueError, match=message):
        HeapqSampler(range(8), **options)
