"""`update` never reads a GPU tensor's values on the host, checked without a GPU.

On a GPU, any read of a tensor's values on the host (``.item()``, ``.tolist()``, ``.cpu()``,
``bool(t)``, ``np.asarray(t)``, a boolean mask...) waits for the device to finish everything
queued before it. ``torch.cuda.set_sync_debug_mode`` catches that on a GPU
(``test_device_updates.py``); CI has none. Here a CPU tensor that answers ``is_cuda`` with True
takes the very path a CUDA tensor takes through the sampler, and records every such read made
while ``update`` runs. The reads the sampler makes later, when it applies the updates at its
next chunk of draws, are allowed: that is where the one transfer per chunk belongs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler

from datasetq import HeapqSampler, Recorder
from datasetq import sampler as sampler_module
from datasetq._device_updates import snapshot_device_update

from .recording import TinyDataset

# Tensor methods and functions that hand a tensor's values to the host.
HOST_READS = frozenset(
    {
        "item",
        "tolist",
        "numpy",
        "cpu",
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "__array__",
        "__repr__",
        "__format__",
        "nonzero",
        "argwhere",
        "unique",
        "unique_consecutive",
        "masked_select",
        "equal",
        "allclose",
        "bincount",
    }
)


class GpuStandIn(torch.Tensor):
    """A CPU tensor that the sampler takes for a CUDA one; records host reads while armed."""

    armed: ClassVar[bool] = False
    host_reads: ClassVar[list[str]] = []

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True

    @property
    def is_cpu(self) -> bool:  # type: ignore[override]
        return False

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if cls.armed and _reads_host(func, args, kwargs):
            cls.host_reads.append(getattr(func, "__name__", repr(func)))
        return super().__torch_function__(func, types, args, kwargs)


def _reads_host(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    name = getattr(func, "__name__", "")
    if name in HOST_READS:
        return True
    if name == "to":  # .to("cpu"), .to(torch.device("cpu")), .to(other_cpu_tensor)
        targets = [*args[1:], kwargs.get("device")]
        return any(
            str(t).startswith("cpu") or (isinstance(t, torch.Tensor) and type(t) is torch.Tensor)
            for t in targets
        )
    if name == "__getitem__" and len(args) > 1:  # a boolean mask's size needs its values
        index = args[1]
        parts = index if isinstance(index, tuple) else (index,)
        return any(isinstance(p, torch.Tensor) and p.dtype is torch.bool for p in parts)
    return False


def on_gpu(values: Any) -> GpuStandIn:
    return torch.as_tensor(values).as_subclass(GpuStandIn)


# The forms a loop may give its ids in.
IDS_AS = {
    "gpu": on_gpu,
    "list": lambda batch: batch,
    "array": np.asarray,
    "cpu": torch.tensor,
}


@contextmanager
def watching_host_reads() -> Iterator[list[str]]:
    GpuStandIn.host_reads = []
    GpuStandIn.armed = True
    try:
        yield GpuStandIn.host_reads
    finally:
        GpuStandIn.armed = False


def train(sampler: HeapqSampler, epochs: int, ids_as: str, metrics_on_gpu: bool) -> list[str]:
    """Draws and reports ``epochs`` epochs; returns the host reads made inside ``update``."""
    generator = torch.Generator().manual_seed(0)
    reads: list[str] = []
    for _ in range(epochs):
        for batch in BatchSampler(sampler, 16, drop_last=False):
            # bfloat16 values, so that the twin given the same values as lists draws alike
            loss = (torch.rand(len(batch), generator=generator) * 3).to(torch.bfloat16)
            margin = 1.0 - loss.float()
            pred = (loss > 1.5).long()
            ids = IDS_AS[ids_as](batch)
            if metrics_on_gpu:
                metrics: dict[str, Any] = {
                    "loss": on_gpu(loss),
                    "margin": on_gpu(margin),
                    "pred": on_gpu(pred),
                }
            else:
                metrics = {
                    "loss": loss.float().tolist(),
                    "margin": margin.tolist(),
                    "pred": pred.tolist(),
                }
            with watching_host_reads() as found:
                sampler.update(ids, metrics)
            reads += found
    return reads


def test_the_stand_in_takes_the_gpu_path_and_records_reads():
    tensor = on_gpu([1.0, 2.0])
    with watching_host_reads() as found:
        tensor.sum().item()
        tensor.tolist()
        np.asarray(tensor * 2)
        bool(tensor[0] > 0)
        tensor.to("cpu")
        tensor[tensor > 1]
        torch.stack([tensor.clone(), tensor.detach().reshape(-1)])  # stays on the device
    assert found == ["item", "tolist", "__array__", "__bool__", "to", "__getitem__"]
    snapshot = snapshot_device_update(on_gpu([0, 1]), {"loss": tensor}, "loss")
    assert snapshot is not None  # what update does with a CUDA tensor: snapshotted, not read


@pytest.mark.parametrize("policy", ["balanced", "greedy"])
@pytest.mark.parametrize("ids_as", sorted(IDS_AS))
def test_update_reads_no_gpu_values_on_the_host(policy, ids_as, monkeypatch):
    snapshots = []

    def snapshot(*args: Any) -> Any:
        snapshots.append(snapshot_device_update(*args))
        return snapshots[-1]

    monkeypatch.setattr(sampler_module, "snapshot_device_update", snapshot)
    n = 300
    sampler = HeapqSampler(range(n), seed=1, policy=policy, chunk_size=32, shuffle=True)
    twin = HeapqSampler(range(n), seed=1, policy=policy, chunk_size=32, shuffle=True)
    reads = train(sampler, 4, ids_as, metrics_on_gpu=True)
    assert reads == []
    assert len(snapshots) > 4 * n // 16
    assert all(s is not None for s in snapshots)
    train(twin, 4, "list", metrics_on_gpu=False)
    # The deferred values arrive all the same, once the sampler applies them.
    sampler.synchronize()
    np.testing.assert_array_equal(sampler.loss, twin.loss)
    np.testing.assert_array_equal(sampler.visits, twin.visits)
    np.testing.assert_array_equal(sampler.metrics["pred"], twin.metrics["pred"])
    assert np.isfinite(sampler.loss).any()


def test_update_reads_no_gpu_values_with_a_recorder_listening(tmp_path):
    dataset = TinyDataset(200)
    url = f"sqlite:///{tmp_path / 'reads.db'}"
    with Recorder(url, run="reads", dataset=dataset, record_visits=True) as recorder:
        sampler = HeapqSampler(dataset, seed=0, recorder=recorder, chunk_size=24)
        reads = train(sampler, 3, "gpu", metrics_on_gpu=True)
    assert reads == []
    assert np.isfinite(sampler.loss).all()


def test_the_host_path_is_caught_reading(monkeypatch):
    """The check can fail: an update that skipped the snapshot would read the values."""
    monkeypatch.setattr(sampler_module, "snapshot_device_update", lambda *args: None)
    sampler = HeapqSampler(range(50), seed=0)
    reads = train(sampler, 1, "gpu", metrics_on_gpu=True)
    assert {"numpy", "cpu"} & set(reads), reads
