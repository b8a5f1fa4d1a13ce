"""Updates whose values are CUDA tensors: kept on the GPU until the sampler needs them.

Reading a loss computed on the GPU (``loss.cpu()``, ``loss.tolist()``) blocks the training
thread until the GPU has finished everything queued before it, so the CPU cannot queue the next
step while the GPU runs this one; every CUDA call also costs the training thread time. So
``update`` only snapshots the values on the GPU (one kernel: the metric columns stacked into a
new tensor, which later in-place changes to the caller's tensors cannot reach), and the sampler
fetches all snapshots since its last chunk of draws in one transfer when it draws the next.

The checks that need the values (ids in range, finite metrics) run then; the checks that need
only shapes and names run at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ._inputs import (
    ArrayLike,
    HostUpdate,
    as_array,
    check_metrics,
    check_one_dimensional,
    validate_indices,
    validated_columns,
)

# Tests set this to run the deferred path with CPU tensors, as CI has no GPU.
DEFER_CPU_TENSORS = False


def deferred(values: object) -> bool:
    """True for a tensor that ``update`` snapshots where it is rather than copying to the host."""
    return isinstance(values, torch.Tensor) and (
        values.is_cuda or (DEFER_CPU_TENSORS and values.is_cpu)
    )


class DeviceUpdate:
    """One update's ids and metric columns, with the columns (and maybe the ids) on a GPU."""

    __slots__ = ("count", "ids", "names", "values")

    def __init__(
        self, ids: torch.Tensor | npt.NDArray[Any], names: tuple[str, ...], values: torch.Tensor
    ) -> None:
        self.ids = ids
        self.names = names
        self.values = values  # (len(names), count), on the GPU
        self.count = int(values.shape[1])


def snapshot_device_update(
    indices: ArrayLike, metrics: Mapping[str, ArrayLike], key: str
) -> DeviceUpdate | None:
    """Snapshots an update whose metrics are CUDA tensors; None when they are not.

    Raises:
        ValueError: a missing ``key``, a bad metric name or dtype, or lengths that differ.
    """
    if not isinstance(metrics, Mapping) or not metrics:
        return None  # the host path explains the error
    columns = list(metrics.values())
    if not deferred(columns[0]):
        return None
    device = columns[0].device  # type: ignore[union-attr]
    if any(not isinstance(c, torch.Tensor) or c.device != device for c in columns):
        return None  # metrics spread over devices (rare): converted at once
    check_metrics(metrics, key)
    names = tuple(metrics)
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"metric names should be non-empty strings, but got {name!r}")
    if deferred(indices):
        assert isinstance(indices, torch.Tensor)
        check_one_dimensional(tuple(indices.shape), "indices")
        ids: torch.Tensor | npt.NDArray[Any] = indices.detach().reshape(-1).clone()
    else:
        ids = as_array(indices)
    count = len(ids)
    for name, column in zip(names, columns, strict=True):
        check_one_dimensional(tuple(column.shape), name)  # type: ignore[union-attr]
    flat = [c.detach().reshape(-1) for c in columns]  # type: ignore[union-attr]
    for name, column in zip(names, flat, strict=True):
        if column.shape[0] != count:
            raise ValueError(
                f'metric "{name}" should have one value per index ({count}), '
                f"but got {column.shape[0]}"
            )
        if column.is_complex():
            raise ValueError(f'metric "{name}" should be numeric, but got dtype {column.dtype}')
    return DeviceUpdate(ids, names, torch.stack(flat))


def fetch_device_updates(updates: list[DeviceUpdate], size: int) -> list[HostUpdate | ValueError]:
    """Copies the updates' values to the host in one transfer per kind, and validates them.

    Returns, per update, its host ids and float32 columns, or the ValueError that rejects it.
    """
    values = _fetch_grouped([(u.names, u.values.device, u.values) for u in updates], dim=1)
    device_ids = [(None, u.ids.device, u.ids) for u in updates if isinstance(u.ids, torch.Tensor)]
    fetched_ids = iter(_fetch_grouped(device_ids, dim=0))
    results: list[HostUpdate | ValueError] = []
    for update, block in zip(updates, values, strict=True):
        ids = next(fetched_ids) if isinstance(update.ids, torch.Tensor) else update.ids
        try:
            valid_ids = validate_indices(ids, size)
            columns = dict(zip(update.names, block, strict=True))
            results.append((valid_ids, validated_columns(columns, len(valid_ids))))
        except ValueError as error:
            results.append(error)
    return results


def _fetch_grouped(
    tensors: list[tuple[Any, torch.device, torch.Tensor]], dim: int
) -> list[npt.NDArray[Any]]:
    """Host copies of ``tensors``, fetched with one concatenation and transfer per group."""
    groups: dict[tuple[Any, torch.device], list[int]] = defaultdict(list)
    for position, (group, device, _) in enumerate(tensors):
        groups[(group, device)].append(position)
    host: list[npt.NDArray[Any]] = [np.empty(0)] * len(tensors)
    for positions in groups.values():
        parts = [tensors[p][2] for p in positions]
        merged = torch.cat(parts, dim=dim).cpu().numpy()
        bounds = np.cumsum([part.shape[dim] for part in parts])[:-1]
        for position, piece in zip(positions, np.split(merged, bounds, axis=dim), strict=True):
            host[position] = piece
    return host
