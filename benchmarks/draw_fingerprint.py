"""A fingerprint of what the sampler draws, evicts and scores, to check that a change meant only
for speed leaves the draws alone.

Runs the sampler of the checkout it is started from for several epochs on random losses (a
third of the samples "mislabeled": high losses and negative margins), with margins and losses
only, at two sizes and several option sets, and prints one hash per run over every epoch's
draws, evicted ids and suspicion scores. Run it in two checkouts and compare:

    git worktree add /tmp/before HEAD~1
    .venv/bin/python benchmarks/draw_fingerprint.py > after.txt
    .venv/bin/python benchmarks/draw_fingerprint.py --root /tmp/before > before.txt
    diff before.txt after.txt   # no output: the same draws, evictions and scores
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

OPTION_SETS: list[dict[str, Any]] = [
    {},
    {"prune": 0.5, "max_extra": 1},
    {"max_extra": 2},
    {"draws_per_sample": 2},  # num_samples = 2 n
]


def fingerprint(n: int, margins: bool, epochs: int, options: dict[str, Any]) -> tuple[str, int]:
    """The hash of one run's draws, evictions and scores, and how many samples it evicted."""
    import torch
    from torch.utils.data import BatchSampler

    from datasetq import HeapqSampler

    rng = np.random.default_rng(0)
    noisy = rng.random(n) < 0.3
    options = dict(options)
    if options.pop("draws_per_sample", 1) == 2:
        options["num_samples"] = 2 * n
    sampler = HeapqSampler(range(n), seed=1, **options)
    digest = hashlib.sha256()
    for epoch in range(epochs):
        drawn = []
        for batch in BatchSampler(sampler, 64, drop_last=False):
            ids = np.asarray(batch)
            typical = np.where(noisy[ids], 2.0, 0.3) * np.exp(-0.2 * epoch)
            loss = (typical * rng.random(len(ids)) * 2).astype(np.float32)
            metrics = {"loss": torch.from_numpy(loss)}
            if margins:
                metrics["margin"] = torch.from_numpy((1.0 - 1.5 * loss).astype(np.float32))
            sampler.update(batch, metrics)
            drawn.append(ids)
        digest.update(np.concatenate(drawn).tobytes())
        digest.update(np.sort(sampler.evicted).tobytes())
        digest.update(np.nan_to_num(sampler.suspicion).tobytes())
    return digest.hexdigest()[:16], len(sampler.evicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="the checkout whose sampler runs (default: this)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 20000])
    parser.add_argument("--epochs", type=int, default=9)
    args = parser.parse_args()
    if args.root is not None:
        sys.path.insert(0, str(args.root.resolve()))
    import datasetq

    print(f"sampler from {Path(datasetq.__file__).parent}", file=sys.stderr)
    for n in args.sizes:
        for margins in (True, False):
            for options in OPTION_SETS:
                digest, evicted = fingerprint(n, margins, args.epochs, options)
                reports = "loss + margin" if margins else "loss only"
                print(f"n={n} {reports} {options or 'defaults'}: {digest} ({evicted} evicted)")


if __name__ == "__main__":
    main()
