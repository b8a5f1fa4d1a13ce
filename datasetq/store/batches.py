"""Batches of recorded data: what the recorder hands to the writer, and what spills to disk.

A batch is plain NumPy arrays plus a small JSON header, so it crosses threads without copies
and is written to a spill file (``.npz``) and read back unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Batch", "read_batch", "write_batch"]

KINDS = ("visits", "epoch", "evictions")


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


def write_batch(batch: Batch, folder: Path) -> Path:
    """Writes a batch atomically (temporary file, then rename); returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{batch.seq:012d}-{batch.kind}.npz"
    temporary = path.with_suffix(".tmp")
    header = json.dumps({"seq": batch.seq, "kind": batch.kind, "meta": batch.meta})
    with open(temporary, "wb") as f:
        arrays: dict[str, Any] = {"__header__": np.array(header), **batch.arrays}
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    return path


def read_batch(path: Path) -> Batch:
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["__header__"]))
        arrays = {name: data[name] for name in data.files if name != "__header__"}
    return Batch(seq=header["seq"], kind=header["kind"], meta=header["meta"], arrays=arrays)
