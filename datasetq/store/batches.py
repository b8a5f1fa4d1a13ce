"""Batches of recorded data: what the recorder hands to the writer, and what spills to disk.

A batch is plain NumPy arrays plus a small JSON header, so it crosses threads without copies
and is written to a spill file (``.npz``) and read back unchanged. Its arrays follow one
column spec per kind (:data:`BATCH_COLUMNS`), shared by the recorder that makes them, the
spill file that keeps them and the ingest that stores them, and every spill file says which
format it was written in (:data:`SPILL_FORMAT`), so a file left by an older datasetq replays.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import StoreError

__all__ = [
    "BATCH_COLUMNS",
    "SPILL_FORMAT",
    "STATE_COLUMNS",
    "Batch",
    "Column",
    "SpillFormatError",
    "make_batch",
    "read_batch",
    "write_batch",
]

# 1: files without a format in their header (datasetq 0.2.0 and earlier); 2: this one.
SPILL_FORMAT = 2


@dataclass(frozen=True)
class Column:
    """One array of a batch.

    Args:
        array: its name in the batch and in a spill file.
        dtype: what it is stored as (the recorder's values are cast to it, losslessly).
        store_as: the ``sample_state`` column it fills (state columns of epoch batches).
        null: which values the store keeps as NULL: ``"nan"`` or ``"negative"``.
        fill: its value in a spill file of an older format that did not carry it; None: every
            format carries it.
    """

    array: str
    dtype: str
    store_as: str | None = None
    null: Literal["nan", "negative"] | None = None
    fill: float | None = None


STATE_COLUMNS: tuple[Column, ...] = (
    Column("state_ids", "int64", "sample_id"),
    Column("state_visits", "int64", "visits"),
    Column("state_reports", "int64", "loss_reports"),
    Column("state_last", "float64", "last_loss", "nan"),
    Column("state_mean", "float64", "mean_loss", "nan"),
    Column("state_max", "float64", "max_loss", "nan"),
    Column("state_last_epoch", "int64", "last_epoch", "negative"),
    Column("state_evicted_epoch", "int64", "evicted_epoch", "negative"),
    Column("state_pred", "int64", "last_pred", "negative"),
    Column("state_margin", "float64", "last_margin", "nan"),
    # Added with the suspicion score: spill files of format 1 written before it lack them.
    Column("state_score", "float64", "score", "nan", fill=math.nan),
    Column("state_coverage_epochs", "int64", "coverage_epochs", "negative", fill=-1),
    Column("state_evidence_score", "float64", "evidence_score", "nan", fill=math.nan),
    Column("state_wrong_since", "int64", "wrong_since", "negative", fill=-1),
)

BATCH_COLUMNS: dict[str, tuple[Column, ...]] = {
    "visits": (Column("sample_id", "int64"), Column("loss", "float32")),
    "epoch": (
        Column("epoch_ids", "int64"),  # every sample reported this epoch, ascending
        Column("epoch_visits", "int64"),  # its reports
        Column("epoch_losses", "float32"),  # every report, grouped by sample
        *STATE_COLUMNS,  # the samples whose state changed since the last state write
    ),
    "evictions": (Column("sample_id", "int64"),),
}


class SpillFormatError(StoreError):
    """A spill file written by a newer datasetq than this one."""


@dataclass
class Batch:
    """One idempotent unit of recorded data: ``(run, seq)`` is its key in the store."""

    seq: int
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        first = next(iter(self.arrays.values()), None)
        return 0 if first is None else len(first)


def make_batch(
    seq: int, kind: str, meta: dict[str, Any], arrays: Mapping[str, npt.ArrayLike]
) -> Batch:
    """A batch of ``kind`` holding exactly its spec's columns, cast to their dtypes.

    Raises:
        ValueError: an unknown kind, or arrays missing from (or not in) the spec.
    """
    spec = BATCH_COLUMNS.get(kind)
    if spec is None:
        raise ValueError(f"kind should be one of {sorted(BATCH_COLUMNS)}, but got {kind!r}")
    names = [c.array for c in spec]
    if set(arrays) != set(names):
        missing, extra = set(names) - set(arrays), set(arrays) - set(names)
        raise ValueError(
            f"a {kind} batch holds {names}; missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    return Batch(
        seq=seq,
        kind=kind,
        meta=meta,
        arrays={c.array: np.asarray(arrays[c.array]).astype(c.dtype, copy=False) for c in spec},
    )


def write_batch(batch: Batch, folder: Path) -> Path:
    """Writes a batch atomically (temporary file, then rename); returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{batch.seq:012d}-{batch.kind}.npz"
    temporary = path.with_suffix(".tmp")
    header = json.dumps(
        {"format": SPILL_FORMAT, "seq": batch.seq, "kind": batch.kind, "meta": batch.meta}
    )
    with open(temporary, "wb") as f:
        arrays: dict[str, Any] = {"__header__": np.array(header), **batch.arrays}
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    return path


def read_batch(path: Path) -> Batch:
    """The batch a spill file holds, in this version's columns, whichever format wrote it.

    Raises:
        SpillFormatError: the file comes from a newer datasetq.
        ValueError: the file is not a spill file, or lacks a column its format must carry.
    """
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["__header__"]))
        stored = {name: data[name] for name in data.files if name != "__header__"}
    version = header.get("format", 1)
    if not isinstance(version, int) or version > SPILL_FORMAT:
        raise SpillFormatError(
            f"{path.name} was written in spill format {version}, newer than this datasetq "
            f"reads ({SPILL_FORMAT}); replay it with a newer datasetq"
        )
    kind = header["kind"]
    spec = BATCH_COLUMNS.get(kind)
    if spec is None:
        raise ValueError(f"{path.name}: unknown batch kind {kind!r}")
    rows = len(next(iter(stored.values()))) if stored else 0
    arrays: dict[str, npt.NDArray[Any]] = {}
    for column in spec:
        values = stored.get(column.array)
        if values is None:
            if column.fill is None or version == SPILL_FORMAT:
                raise ValueError(f"{path.name} lacks the column {column.array!r}")
            # A state write of an epoch batch has as many rows as its state ids.
            count = len(stored["state_ids"]) if column.store_as else rows
            values = np.full(count, column.fill)
        arrays[column.array] = values.astype(column.dtype, copy=False)
    return Batch(seq=header["seq"], kind=kind, meta=header["meta"], arrays=arrays)
