"""Turns what users pass to ``update`` (lists, NumPy arrays, torch tensors on any device) into
validated NumPy arrays, with at most one device-to-host copy per call.

This runs on every training step, so it is written for few calls rather than for elegance.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch

ArrayLike: TypeAlias = torch.Tensor | npt.NDArray[Any] | Sequence[float] | Sequence[int]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
HostUpdate: TypeAlias = tuple[I64, dict[str, F32]]  # validated ids and metric columns


def host_update(
    indices: ArrayLike, metrics: Mapping[str, ArrayLike], size: int, key: str
) -> HostUpdate:
    """Converts and validates one ``update`` call.

    Returns int64 ids in ``[0, size)`` and float32 metric columns of the same length, finite,
    holding ``key``. Raises ``ValueError`` naming the problem otherwise. Tensors on an
    accelerator are concatenated there and copied to the host in one transfer.
    """
    ids = _plain_ids(indices)
    if ids is not None and len(ids) and ids.view(np.uint64).max() < size:
        columns = plain_columns(metrics, key, len(ids))
        if columns is not None:
            return ids, columns
    check_metrics(metrics, key)
    raw_ids, raw_columns = _to_host(indices, metrics)
    assert raw_ids is not None
    ids = validate_indices(raw_ids, size)
    return ids, validated_columns(raw_columns, len(ids))


def host_metrics(metrics: Mapping[str, ArrayLike], count: int, key: str) -> dict[str, F32]:
    """Converts and validates the metrics of an update whose ``count`` ids are known valid."""
    columns = plain_columns(metrics, key, count)
    if columns is not None:
        return columns
    check_metrics(metrics, key)
    _, raw_columns = _to_host(None, metrics)
    return validated_columns(raw_columns, count)


def _plain_ids(indices: object) -> I64 | None:
    """The ids as an array when they come in the most common form (int64, 1-D, on the CPU)."""
    if type(indices) is torch.Tensor:
        if indices.dtype is torch.int64 and indices.ndim == 1 and indices.is_cpu:
            return indices.numpy().copy()  # type: ignore[no-any-return]
    elif type(indices) is np.ndarray and indices.dtype == np.int64 and indices.ndim == 1:
        return indices.copy()
    return None


def plain_columns(metrics: object, key: str, count: int) -> dict[str, F32] | None:
    """Valid columns when every metric comes in the most common form (a 1-D float32 CPU tensor
    or array of ``count`` finite values); None sends the update down the general path.

    Training loops give ``update`` the same few types every step; checking for exactly those
    first costs about a third of the general conversion, which handles (and explains) the rest.
    """
    if type(metrics) is not dict or key not in metrics:
        return None
    columns: dict[str, F32] = {}
    for name, values in metrics.items():
        if type(values) is torch.Tensor:
            if (
                values.dtype is not torch.float32
                or values.ndim != 1
                or values.requires_grad
                or not values.is_cpu
            ):
                return None
            array: F32 = values.numpy().copy()
        elif type(values) is np.ndarray and values.dtype == np.float32 and values.ndim == 1:
            array = values.copy()
        else:
            return None
        # One float64 reduction: NaN and inf propagate, and float32 values cannot overflow it.
        if (
            len(array) != count
            or type(name) is not str
            or not name
            or not math.isfinite(array.sum(dtype=np.float64))
        ):
            return None
        columns[name] = array
    return columns


def check_metrics(metrics: Mapping[str, ArrayLike], key: str) -> None:
    if not isinstance(metrics, Mapping):
        raise ValueError(f"metrics should be a dict of name to values, but got {type(metrics)}")
    if key not in metrics:
        raise ValueError(
            f'metrics should hold the priority key "{key}", but got keys {sorted(map(str, metrics))}'
        )


def validated_columns(raw_columns: dict[str, npt.NDArray[Any]], count: int) -> dict[str, F32]:
    columns: dict[str, F32] = {}
    for name, values in raw_columns.items():
        if values.dtype.kind not in "biuf" or len(values) != count or not isinstance(name, str):
            _raise_bad_column(name, values, count)
        as_float = values.astype(np.float32)  # a copy: callers may reuse their buffer
        # One float64 reduction: NaN and inf propagate, and float32 values cannot overflow it.
        if count and not math.isfinite(as_float.sum(dtype=np.float64)):
            raise ValueError(f'metric "{name}" should be finite, but got NaN or inf')
        columns[name] = as_float
    return columns


def _raise_bad_column(name: object, values: npt.NDArray[Any], count: int) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"metric names should be non-empty strings, but got {name!r}")
    if values.dtype.kind not in "biuf":
        raise ValueError(f'metric "{name}" should be numeric, but got dtype {values.dtype}')
    raise ValueError(
        f'metric "{name}" should have one value per index ({count}), but got {len(values)}'
    )


def host_indices(indices: ArrayLike, size: int) -> I64:
    """Converts and validates sample ids (for ``evict``/``reinstate``)."""
    return validate_indices(as_array(indices), size)


def validate_indices(indices: npt.NDArray[Any], size: int) -> I64:
    """Checks that ``indices`` are integers in ``[0, size)``; returns them as int64."""
    kind = indices.dtype.kind
    if kind == "f":
        as_int = indices.astype(np.int64)
        if not np.array_equal(as_int, indices):
            raise ValueError("indices should be integers, but got non-integral values")
        indices = as_int
    elif kind not in "iu":
        if len(indices):
            raise ValueError(f"indices should be integers, but got dtype {indices.dtype}")
        indices = indices.astype(np.int64)
    ids: I64 = indices.astype(np.int64)  # a copy: callers may reuse their buffer
    # Viewed as unsigned, negative ids become huge: one reduction checks both bounds.
    if len(ids) and ids.view(np.uint64).max() >= size:
        bad = ids[(ids < 0) | (ids >= size)][0]
        raise ValueError(
            f"indices should be in [0, {size}) for a data source of {size} samples, but got {bad}"
        )
    return ids


def _to_host(
    indices: ArrayLike | None, metrics: Mapping[str, ArrayLike]
) -> tuple[npt.NDArray[Any] | None, dict[str, npt.NDArray[Any]]]:
    """Host arrays of the ids (unless None) and every metric, in one device transfer."""
    for name in metrics:
        if not isinstance(name, str) or not name:
            raise ValueError(f"metric names should be non-empty strings, but got {name!r}")
    if len(metrics) == 1 and not (isinstance(indices, torch.Tensor) and not indices.is_cpu):
        ((name, values),) = metrics.items()
        return (None if indices is None else as_array(indices)), {name: as_array(values, name)}
    names = list(metrics)
    columns: list[Any] = [indices, *(metrics[name] for name in names)]
    on_device = [i for i, c in enumerate(columns) if isinstance(c, torch.Tensor) and not c.is_cpu]
    if len(on_device) > 1:
        flat = [columns[i].detach() for i in on_device]
        for i, tensor in zip(on_device, flat, strict=True):
            check_one_dimensional(tuple(tensor.shape), "indices" if i == 0 else names[i - 1])
        flat = [tensor.reshape(-1) for tensor in flat]  # 0-d: one value
        device = flat[0].device
        host = torch.cat([t.to(device=device, dtype=torch.float64) for t in flat]).cpu().numpy()
        bounds = np.cumsum([t.numel() for t in flat])[:-1]
        for i, part in zip(on_device, np.split(host, bounds), strict=True):
            columns[i] = part
    ids = None if indices is None else as_array(columns[0])
    return ids, {name: as_array(c, name) for name, c in zip(names, columns[1:], strict=True)}


def as_array(column: Any, name: str = "indices") -> npt.NDArray[Any]:
    """One column as a 1-D host array; ``ValueError`` naming ``name`` for any other shape."""
    # Ordered by how often each type arrives from a training loop.
    if isinstance(column, torch.Tensor):
        if column.requires_grad:
            column = column.detach()
        if not column.is_cpu:
            column = column.cpu()
        if column.dtype in (torch.bfloat16, torch.float16):
            column = column.float()  # NumPy has no bfloat16; float32 holds both exactly
        return _one_dimensional(column.numpy(), name)
    if isinstance(column, np.ndarray):
        return _one_dimensional(column, name)
    if isinstance(column, list) and column:
        # A list of Python ints or floats (BatchSampler's ids, ``loss.tolist()``): packing it
        # with ``array`` is about 2.5x faster than np.array's element-by-element inference.
        typecode = _ARRAY_TYPECODES.get(type(column[0]))
        if typecode is not None:
            try:
                return np.frombuffer(array(typecode, column), dtype=_ARRAY_DTYPES[typecode])
            except (TypeError, OverflowError):
                pass  # mixed types or huge ints: let NumPy decide (and validation complain)
    try:
        values = np.array(column)
    except ValueError:  # NumPy refuses a ragged list
        raise ValueError(f"{_label(name)} should be a flat list of numbers") from None
    if values.dtype == object:
        raise ValueError(f"{_label(name)} should be a flat list of numbers")
    return _one_dimensional(values, name)


def _one_dimensional(array: npt.NDArray[Any], name: str) -> npt.NDArray[Any]:
    check_one_dimensional(array.shape, name)
    return array.reshape(-1)  # a 0-d value: one sample


def check_one_dimensional(shape: tuple[int, ...], name: str) -> None:
    """Refuses a column that is not one value per sample (a batch of logits, say) instead of
    flattening it into values for the wrong samples."""
    if len(shape) > 1:
        raise ValueError(
            f"{_label(name)} should be 1-D (one value per sample), but got shape "
            f"{shape}; flatten or squeeze it first"
        )


def _label(name: str) -> str:
    return name if name == "indices" else f'metric "{name}"'


_ARRAY_TYPECODES = {int: "q", float: "d"}
_ARRAY_DTYPES = {"q": np.int64, "d": np.float64}
