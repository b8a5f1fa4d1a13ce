"""Helpers for running one sampler per rank under ``torch.distributed``."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def default_world() -> tuple[int, int]:
    """``(num_replicas, rank)`` of the default process group, or ``(1, 0)`` without one."""
    if is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def all_gather_update(
    ids: npt.NDArray[np.int64], columns: dict[str, npt.NDArray[np.float32]]
) -> tuple[npt.NDArray[np.int64], dict[str, npt.NDArray[np.float32]]]:
    """Concatenates every rank's update, in rank order, so each rank applies the same one.

    Two collectives per call: one for the lengths, one for a float64 block of ids and metric
    columns (ids stay exact below 2**53). Every rank must pass the same metric names.
    """
    names = sorted(columns)
    device = _collective_device()
    block = torch.from_numpy(
        np.stack([ids.astype(np.float64), *(columns[n].astype(np.float64) for n in names)])
    ).to(device)
    world = dist.get_world_size()
    length = torch.tensor([block.shape[1]], dtype=torch.int64, device=device)
    lengths = [torch.empty_like(length) for _ in range(world)]
    dist.all_gather(lengths, length)
    sizes = [int(t.item()) for t in lengths]
    longest = max(sizes)
    padded = torch.zeros((block.shape[0], longest), dtype=torch.float64, device=device)
    padded[:, : block.shape[1]] = block
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    merged = torch.cat([g[:, :n] for g, n in zip(gathered, sizes, strict=True)], dim=1)
    host: Any = merged.cpu().numpy()
    return host[0].astype(np.int64), {
        n: host[i + 1].astype(np.float32) for i, n in enumerate(names)
    }


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
