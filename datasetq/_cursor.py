"""Where a sampler stands in its draws, as one typed structure that checkpoints in full.

Every field is saved by :meth:`EpochCursor.state` and restored by :meth:`EpochCursor.from_state`
(both walk the dataclass fields), so a field added here cannot be left out of a checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

I64 = npt.NDArray[np.int64]

# Fields marked so survive the start of a new epoch; the others start over each epoch.
_CARRIED = {"carried": True}


def _no_chunk() -> I64:
    return np.empty(0, dtype=np.int64)


@dataclass
class EpochCursor:
    """The sampler's position: the epoch, its draws so far, and the cursors into its orders."""

    epoch: int = field(default=-1, metadata=_CARRIED)
    # The epoch set_epoch() asked for, run by the next iteration.
    requested_epoch: int | None = field(default=None, metadata=_CARRIED)
    # Global draws since construction (steps and reset_every count these).
    draws: int = field(default=0, metadata=_CARRIED)
    epoch_drawn: int = 0  # global draws made in this epoch
    yielded_before: int = 0  # this rank's indices in shares fully yielded
    chunk: I64 = field(default_factory=_no_chunk)  # the latest chunk of global draws
    chunk_start: int = 0  # epoch_drawn when that chunk was drawn
    base_round: int = 0  # rounds of the base order started in this epoch
    base_cursor: int = 0  # position in the current round of the base order
    unscored_cursor: int = 0  # position in the base order of the search for unscored samples
    maybe_unscored: bool = True  # whether an unscored sample may still compete

    def next_epoch(self, epoch: int) -> EpochCursor:
        """A cursor at the start of ``epoch``, keeping the fields that span epochs."""
        carried = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata}
        return EpochCursor(**{**carried, "epoch": epoch})

    def state(self) -> dict[str, Any]:
        """Every field, as plain values and tensors (``torch.load(weights_only=True)`` safe)."""
        saved: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            saved[f.name] = (
                torch.from_numpy(value.copy()) if isinstance(value, np.ndarray) else value
            )
        return saved

    @classmethod
    def from_state(cls, saved: Mapping[str, Any]) -> EpochCursor:
        """The cursor :meth:`state` saved; raises ``ValueError`` naming a missing field."""
        values: dict[str, Any] = {}
        defaults = cls()
        for f in dataclasses.fields(cls):
            if f.name not in saved:
                raise ValueError(f"state_dict should hold the sampler's {f.name!r}")
            value, default = saved[f.name], getattr(defaults, f.name)
            if isinstance(default, np.ndarray):
                values[f.name] = np.asarray(value).astype(np.int64)
            elif isinstance(default, bool):
                values[f.name] = bool(value)
            elif value is None:
                values[f.name] = None
            else:
                values[f.name] = int(value)
        return cls(**values)
