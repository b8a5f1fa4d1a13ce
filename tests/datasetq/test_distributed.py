"""Two real processes on the gloo backend: shares are disjoint, states stay identical."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from datasetq import DataLoader, HeapqSampler, with_indices

N, EPOCHS, WORLD = 50, 4, 2


def worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        dataset = with_indices(list(range(N)))
        sampler = HeapqSampler(dataset, shuffle=True, max_visits=3, chunk_size=2)  # world from dist
        loader = DataLoader(dataset, batch_size=4, sampler=sampler)
        epochs = []
        for _ in range(EPOCHS):
            drawn = []
            for index, _ in loader:
                drawn.extend(index.tolist())
                losses = torch.sin(index.double() * 12.9898) * 43758.5453 % 1.0  # per-id constant
                loader.update(index, {"loss": losses + 0.01 * rank})
            epochs.append(drawn)
        result = {
            "epochs": epochs,
            "len": len(sampler),
            "visits": sampler.visits.tolist(),
            "evicted": sampler.evicted.tolist(),
            "loss": sampler.loss.tolist(),
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_ranks(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert ranks[0]["len"] == ranks[1]["len"] == N // WORLD
    for epoch in range(EPOCHS):
        a, b = ranks[0]["epochs"][epoch], ranks[1]["epochs"][epoch]
        assert len(a) == len(b) == N // WORLD
        if epoch == 0:  # warm-up: the two shares partition a permutation
            assert sorted(a + b) == list(range(N))
    # Every rank applied every rank's update: identical state, counting both ranks' draws.
    assert ranks[0]["visits"] == ranks[1]["visits"]
    assert ranks[0]["evicted"] == ranks[1]["evicted"]
    assert ranks[0]["loss"] == ranks[1]["loss"]
    all_draws = [i for r in ranks for e in r["epochs"] for i in e]
    assert np.bincount(all_draws, minlength=N).tolist() == ranks[0]["visits"]
    # The losses seen come from both ranks (rank 1 adds 0.01).
    assert ranks[0]["evicted"], "max_visits=3 should evict the hardest samples"
