"""Updates whose metrics live on a GPU: snapshotted without a device synchronisation, fetched
and checked when the sampler next needs its state.

Every test runs on CUDA where a GPU is present (the GPU benchmark machine), and on the CPU with
the CPU treated as such a device, so CI (no GPU) exercises the same code path.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sqlalchemy import create_engine, func, select
from torch.utils.data import BatchSampler

from datasetq import HeapqSampler, Recorder, SamplerListener, _device_updates
from datasetq.store.models import VisitRecord

from .recording import TinyDataset

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=needs_cuda)])
def device(request, monkeypatch) -> str:
    if request.param == "cpu":
        monkeypatch.setattr(_device_updates, "DEFER_CPU_TENSORS", True)
    return request.param


def on(device: str, values: list[float] | list[int]) -> torch.Tensor:
    return torch.tensor(values).to(device)


def test_update_accepts_device_tensors(device):
    sampler = HeapqSampler(range(5), seed=0)
    sampler.update(on(device, [1, 2]), {"loss": on(device, [0.5, 0.25])})
    np.testing.assert_allclose(sampler.loss[[1, 2]], [0.5, 0.25])
    assert np.isnan(sampler.loss[[0, 3, 4]]).all()


def test_values_are_snapshotted_at_update(device):
    sampler = HeapqSampler(range(5), seed=0)
    losses = on(device, [0.5, 0.25])
    sampler.update([1, 2], {"loss": losses})
    losses.fill_(7.0)  # reusing a buffer after update must not change what was reported
    np.testing.assert_allclose(sampler.loss[[1, 2]], [0.5, 0.25])


@needs_cuda
def test_update_does_not_synchronize_the_device():
    sampler = HeapqSampler(range(100), seed=0)
    ids, losses = on("cuda", list(range(10))), torch.rand(10, device="cuda")
    margins = torch.rand(10, device="cuda")
    sampler.update(ids, {"loss": losses, "margin": margins})
    torch.cuda.synchronize()
    try:
        with warnings.catch_warnings():  # "a prototype feature": it may miss some syncs
            warnings.simplefilter("ignore", UserWarning)
            torch.cuda.set_sync_debug_mode("error")
        for _ in range(5):
            sampler.update(ids, {"loss": losses * 2, "margin": margins})
            sampler.update(list(range(10)), {"loss": losses})
    finally:
        torch.cuda.set_sync_debug_mode("default")
    np.testing.assert_allclose(sampler.loss[:10], losses.cpu().numpy(), rtol=1e-6)


@pytest.mark.parametrize("ids_on_device", [True, False])
def test_training_with_device_tensors_matches_host_lists(device, ids_on_device):
    n, batch = 500, 32
    on_device = HeapqSampler(range(n), seed=3, max_visits=3, shuffle=True)
    on_host = HeapqSampler(range(n), seed=3, max_visits=3, shuffle=True)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        pairs = zip(
            BatchSampler(on_device, batch, False), BatchSampler(on_host, batch, False), strict=True
        )
        for ids_device, ids_host in pairs:
            assert ids_device == ids_host
            losses = torch.rand(len(ids_host), generator=generator)
            ids = on(device, ids_device) if ids_on_device else ids_device
            on_device.update(ids, {"loss": losses.to(device), "pred": (losses > 0.5).to(device)})
            on_host.update(ids_host, {"loss": losses.tolist(), "pred": (losses > 0.5).tolist()})
    np.testing.assert_array_equal(on_device.loss, on_host.loss)
    np.testing.assert_array_equal(on_device.metrics["pred"], on_host.metrics["pred"])
    np.testing.assert_array_equal(on_device.evicted, on_host.evicted)
    np.testing.assert_array_equal(on_device.visits, on_host.visits)


def test_invalid_values_are_rejected_when_applied_and_nothing_else_is_lost(device):
    sampler = HeapqSampler(range(5), seed=0)
    sampler.update([0], {"loss": on(device, [1.0])})
    sampler.update([1], {"loss": on(device, [float("nan")])})
    sampler.update(on(device, [2]), {"loss": on(device, [3.0])})
    with pytest.raises(ValueError, match=r'GPU was dropped: metric "loss" should be finite'):
        sampler.synchronize()
    np.testing.assert_array_equal(sampler.loss[:3], [1.0, np.nan, 3.0])
    sampler.update(on(device, [7]), {"loss": on(device, [1.0])})
    with pytest.raises(ValueError, match=r"indices should be in \[0, 5\).* got 7"):
        list(sampler)  # the next chunk of draws applies it
    sampler.synchronize()  # the bad update is gone
    np.testing.assert_array_equal(sampler.loss[:3], [1.0, np.nan, 3.0])


def test_shape_errors_raise_at_once(device):
    sampler = HeapqSampler(range(5), seed=0)
    with pytest.raises(ValueError, match=r'metric "loss" should have one value per index \(2\)'):
        sampler.update(on(device, [0, 1]), {"loss": on(device, [1.0])})
    with pytest.raises(ValueError, match=r'should hold the priority key "loss"'):
        sampler.update(on(device, [0]), {"margin": on(device, [1.0])})
    sampler.synchronize()
    assert np.isnan(sampler.loss).all()


def test_listener_sees_updates_in_order(device):
    seen: list[tuple[list[int], list[float]]] = []

    class Listener(SamplerListener):
        def on_update(self, sampler, ids, metrics):
            seen.append((ids.tolist(), metrics["loss"].tolist()))

    sampler = HeapqSampler(range(5), seed=0, recorder=Listener())
    sampler.update(on(device, [3]), {"loss": on(device, [0.5])})
    sampler.update([1], {"loss": [0.25]})
    sampler.update(torch.tensor([2, 4]), {"loss": on(device, [0.75, 1.5])})
    assert seen == []  # applied at the next chunk, read or synchronize
    sampler.synchronize()
    assert seen == [([3], [0.5]), ([1], [0.25]), ([2, 4], [0.75, 1.5])]


def test_recorder_stores_device_updates_including_the_last_one(device, tmp_path):
    dataset = TinyDataset(40)
    url = f"sqlite:///{tmp_path / 'device.db'}"
    with Recorder(url, run="device", dataset=dataset, record_visits=True) as recorder:
        sampler = HeapqSampler(dataset, seed=0, recorder=recorder)
        for ids in BatchSampler(sampler, 16, False):
            sampler.update(on(device, ids), {"loss": torch.rand(len(ids)).to(device)})
        sampler.update([5], {"loss": on(device, [9.0])})  # after the epoch: close applies it
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            count = connection.execute(select(func.count()).select_from(VisitRecord)).scalar_one()
            last = connection.execute(
                select(VisitRecord.sample_id, VisitRecord.loss).order_by(VisitRecord.id.desc())
            ).first()
    finally:
        engine.dispose()
    assert count == 41
    assert tuple(last) == (5, 9.0)


def test_a_long_balanced_epoch_applies_pending_updates_between_chunks_not_in_update(
    monkeypatch,
):
    """Updates pile up over a balanced epoch; once many are pending, the next chunk of draws
    applies them. `update` itself never fetches metrics from the device (that would wait for
    the GPU on the training thread)."""
    from datasetq import sampler as sampler_module

    monkeypatch.setattr(_device_updates, "DEFER_CPU_TENSORS", True)
    monkeypatch.setattr(sampler_module, "_PENDING_AT_CHUNK", 60)
    fetch = sampler_module.fetch_device_updates
    inside_update = [False]
    fetched_inside: list[bool] = []

    def recording_fetch(*args, **kwargs):
        fetched_inside.append(inside_update[0])
        return fetch(*args, **kwargs)

    monkeypatch.setattr(sampler_module, "fetch_device_updates", recording_fetch)
    sampler = HeapqSampler(range(200), seed=0, chunk_size=16)
    for _ in range(3):
        for batch in BatchSampler(sampler, 10, drop_last=False):
            inside_update[0] = True
            sampler.update(on("cpu", batch), {"loss": torch.rand(len(batch))})
            inside_update[0] = False
    assert len(fetched_inside) >= 3 * 200 // 76  # every 60-76 pending ids, at a chunk
    assert not any(fetched_inside)
    assert np.isfinite(sampler.loss).all()
