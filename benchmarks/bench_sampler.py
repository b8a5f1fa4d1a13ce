"""Sampler speed and memory against torch's RandomSampler, measured in one run.

Both samplers are iterated through a BatchSampler of 256; every batch also makes 256 random
losses (a tensor, as a training step would), and the priority sampler receives them through
``update``. Prints seconds per epoch and the ratio priority / random.

Run: .venv/bin/python benchmarks/bench_sampler.py [--sizes 60000 1281167] [--memory 10000000]
     [--breakdown] [--default-only] [--root CHECKOUT]

To compare two revisions of the sampler on one machine, run this script's ``--root`` against
each checkout in turn, several times, each in a process of its own (the speed of a machine
drifts from one process to the next, often more than a change moves it):

    git worktree add /tmp/before HEAD~1
    for i in 1 2 3; do
      .venv/bin/python benchmarks/bench_sampler.py --sizes 60000 --epochs 40 --memory 0 --default-only
      .venv/bin/python benchmarks/bench_sampler.py --sizes 60000 --epochs 40 --memory 0 --default-only --root /tmp/before
    done
"""

from __future__ import annotations

import argparse
import gc
import itertools
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import BatchSampler, RandomSampler

if TYPE_CHECKING:
    from datasetq import HeapqSampler

BATCH = 256


def random_epoch(n: int, generator: torch.Generator) -> float:
    sampler = RandomSampler(range(n), generator=generator)
    start = time.perf_counter()
    for batch in BatchSampler(sampler, BATCH, drop_last=False):
        torch.rand(len(batch))
    return time.perf_counter() - start


def priority_epoch(sampler: HeapqSampler, ids_as_tensor: bool = False) -> float:
    """One epoch; ids reach ``update`` as the list BatchSampler yields, or as the int64 tensor a
    DataLoader's collate would make (built outside the timed part, as collate runs anyway)."""
    batches = BatchSampler(sampler, BATCH, drop_last=False)
    if not ids_as_tensor:
        start = time.perf_counter()
        for batch in batches:
            sampler.update(batch, {"loss": torch.rand(len(batch))})
        return time.perf_counter() - start
    elapsed = 0.0
    iterator = iter(batches)
    while True:
        start = time.perf_counter()
        batch = next(iterator, None)
        elapsed += time.perf_counter() - start
        if batch is None:
            return elapsed
        ids = torch.tensor(batch)
        start = time.perf_counter()
        sampler.update(ids, {"loss": torch.rand(len(batch))})
        elapsed += time.perf_counter() - start


def measure(
    sampler_class: type[HeapqSampler],
    n: int,
    epochs: int,
    ids_as_tensor: bool = False,
    **options: object,
) -> None:
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    sampler = sampler_class(range(n), shuffle=True, seed=0, **options)  # type: ignore[arg-type]
    construct = time.perf_counter() - start
    warmup = priority_epoch(sampler)  # epoch 0: warm-up, every sample once
    random_times, priority_times = [], []
    for _ in range(epochs):
        random_times.append(random_epoch(n, generator))
        priority_times.append(priority_epoch(sampler, ids_as_tensor))
    r, p = statistics.median(random_times), statistics.median(priority_times)
    label = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
    label += ", ids as tensor" if ids_as_tensor else ", ids as list"
    print(
        f"N={n:>9,} [{label:<32}]  construct {construct * 1e3:7.1f} ms | warm-up epoch "
        f"{warmup:6.3f} s | random epoch {r:6.3f} s | priority epoch {p:6.3f} s | "
        f"ratio {p / r:4.2f}x | per draw+update {p / n * 1e9:6.0f} ns"
    )


def breakdown(
    sampler_class: type[HeapqSampler], n: int, epochs: int, ids_as_tensor: bool = False
) -> None:
    """Where a default-policy epoch's time goes: the ``update`` calls, the epoch plan (timed
    apart on the same state) and the rest (drawing chunks, applying updates, the evidence).
    With ``ids_as_tensor`` the ids reach ``update`` as a collated tensor (made outside the
    timed part, so the epoch's total is the sampler's alone)."""
    generator = torch.Generator().manual_seed(0)
    sampler = sampler_class(range(n), shuffle=True, seed=0)
    priority_epoch(sampler)  # warm-up
    totals, updates, randoms, plans, calls = [], [], [], [], 0
    for _ in range(epochs):
        in_update = outside = 0.0
        start = time.perf_counter()
        for batch in BatchSampler(sampler, BATCH, drop_last=False):
            losses = torch.rand(len(batch))
            made = time.perf_counter()
            ids = torch.tensor(batch) if ids_as_tensor else batch
            before = time.perf_counter()
            sampler.update(ids, {"loss": losses})
            in_update += time.perf_counter() - before
            outside += before - made
            calls += 1
        totals.append(time.perf_counter() - start - outside)
        updates.append(in_update)
        randoms.append(random_epoch(n, generator))
        start = time.perf_counter()
        sampler._plan_epoch(sampler.epoch + 1)  # the same work as the next epoch's plan
        plans.append(time.perf_counter() - start)
    total, update, plan = (statistics.median(t) * 1e3 for t in (totals, updates, plans))
    random = statistics.median(randoms) * 1e3
    per_call = sum(updates) / calls * 1e6
    form = "tensor" if ids_as_tensor else "list"
    print(
        f"N={n:>9,} breakdown, ids as {form}: priority epoch {total:.2f} ms = update calls "
        f"{update:.2f} ({per_call:.1f} µs each) + plan {plan:.2f} + the rest "
        f"{total - update - plan:.2f} ms; random epoch {random:.2f} ms (update calls alone are "
        f"{update / random:.2f}x of it)"
    )


def memory(sampler_class: type[HeapqSampler], n: int) -> None:
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(0)
    sampler = sampler_class(range(n), shuffle=True, seed=0, chunk_size=4096)
    warm = sampler.nbytes
    for batch in BatchSampler(sampler, 65536, drop_last=False):  # warm-up epoch
        sampler.update(batch, {"loss": rng.random(len(batch))})
    during_warmup = sampler.nbytes
    batches = BatchSampler(sampler, 65536, drop_last=False)
    for batch in itertools.islice(batches, 20):  # into the first priority epoch (or all of it)
        sampler.update(batch, {"loss": rng.random(len(batch))})
    priority = sampler.nbytes
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"N={n:,}: sampler state {warm / 1e6:.0f} MB new, {during_warmup / 1e6:.0f} MB in warm-up "
        f"(with the epoch's permutation), {priority / 1e6:.0f} MB in a priority epoch; "
        f"peak RSS growth {(peak - rss_before) / 1e3:.0f} MB (includes transient merge buffers)"
    )


def import_sampler_class(root: Path | None) -> type[HeapqSampler]:
    """The ``HeapqSampler`` of the checkout at ``root`` (default: the one this script runs in);
    says which one it imported."""
    if root is not None:
        sys.path.insert(0, str(root.resolve()))
    import datasetq

    where = Path(datasetq.__file__).resolve().parent
    if root is not None and not where.is_relative_to(root.resolve()):
        raise SystemExit(f"--root {root}: datasetq was imported from {where}, not from there")
    print(f"sampler from {where}", flush=True)
    return datasetq.HeapqSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[60_000, 1_281_167])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--memory", type=int, default=10_000_000)
    parser.add_argument(
        "--breakdown", action="store_true", help="also split the default policy's epoch"
    )
    parser.add_argument(
        "--default-only", action="store_true", help="only the default policy, ids as lists"
    )
    parser.add_argument("--root", type=Path, help="the checkout whose sampler runs (default: this)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sampler_class = import_sampler_class(args.root)
    for n in args.sizes:
        measure(sampler_class, n, args.epochs)  # the balanced policy (the default)
        if not args.default_only:
            measure(sampler_class, n, args.epochs, ids_as_tensor=True)
            measure(sampler_class, n, args.epochs, policy="greedy")
            measure(sampler_class, n, args.epochs, policy="greedy", max_visits=10)
            measure(sampler_class, n, args.epochs, steps=4)
        if args.breakdown:
            breakdown(sampler_class, n, args.epochs)
            breakdown(sampler_class, n, args.epochs, ids_as_tensor=True)
    if args.memory:
        memory(sampler_class, args.memory)


if __name__ == "__main__":
    main()
