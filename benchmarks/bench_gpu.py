"""GPU benchmark: one training epoch of the PyTorch-examples CNN on 60k MNIST-sized samples,
batch 64, data already on the GPU, in random order and with priority sampling (with and without
a Recorder). Prints seconds per epoch and the ratio to the random-order epoch (goal: <= 1.05x).

The 10k embedded digits are tiled to 60k. Every variant runs one untimed epoch to warm up,
then ``--repeats`` timed epochs, interleaved; the median is reported. Under 5 minutes on a GPU.

    .venv/bin/python benchmarks/bench_gpu.py [--device cuda --samples 60000 --repeats 3]
    bash benchmarks/gpu.sh   # this, then the sampler benchmark and the MNIST training
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler

from datasetq import HeapqSampler, Recorder
from datasetq.datasets import EmbeddedMNIST
from datasetq.models import ExamplesNet
from datasetq.training import MNIST_MEAN, MNIST_STD, margin_and_prediction

BATCH = 64
Batch = tuple[list[int] | torch.Tensor, torch.Tensor]  # (ids as drawn, ids on the device)


class Sized:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def gpu_data(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mnist = EmbeddedMNIST()
    repeats = -(-n // len(mnist.targets))
    images = mnist.data.repeat(repeats, 1, 1)[:n].float().div_(255.0)
    images = images.sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)
    return images.to(device), mnist.targets.repeat(repeats)[:n].to(device)


def train_epoch(
    batches: Iterator[Batch],
    images: torch.Tensor,
    labels: torch.Tensor,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: HeapqSampler | None,
    cpu_seconds: dict[str, float],
    with_margins: bool = True,
) -> None:
    """One epoch; adds the training thread's time spent outside the model to ``cpu_seconds``."""
    model.train()
    clock = time.perf_counter
    while True:
        start = clock()
        batch = next(batches, None)
        cpu_seconds["batches"] += clock() - start
        if batch is None:
            return
        drawn, ids = batch
        output = model(images[ids])
        loss = F.nll_loss(output, labels[ids], reduction="none")
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()
        if sampler is not None:
            start = clock()
            metrics = {"loss": loss.detach()}
            if with_margins:
                metrics.update(margin_and_prediction(output.detach(), labels[ids]))
            middle = clock()
            sampler.update(drawn, metrics)
            cpu_seconds["metrics"] += middle - start
            cpu_seconds["update"] += clock() - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: pass --device cpu to try the script on a CPU")
    images, labels = gpu_data(args.samples, device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        run_variants(args, images, labels, Path(folder))


def run_variants(
    args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor, folder: Path
) -> None:
    device, n = images.device, len(labels)
    model = ExamplesNet().to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    heap = HeapqSampler(Sized(n), shuffle=True, seed=0)
    recorder = Recorder(
        f"sqlite:///{folder / 'gpu.db'}", run="gpu", dataset=Sized(n), dataset_name="gpu-bench"
    )
    recorded = HeapqSampler(Sized(n), shuffle=True, seed=0, recorder=recorder)
    generator = torch.Generator(device=device).manual_seed(0)

    def random_batches() -> Iterator[Batch]:
        return (
            (ids, ids) for ids in torch.randperm(n, device=device, generator=generator).split(BATCH)
        )

    def sampler_batches(sampler: HeapqSampler) -> Callable[[], Iterator[Batch]]:
        # As a DataLoader does: the ids stay on the host (update gets them so), the data moves.
        def batches() -> Iterator[Batch]:
            for batch in BatchSampler(sampler, BATCH, drop_last=False):
                yield batch, torch.as_tensor(batch).to(device, non_blocking=True)

        return batches

    plain = HeapqSampler(Sized(n), shuffle=True, seed=0)
    variants: dict[str, tuple[Callable[[], Iterator[Batch]], HeapqSampler | None, bool]] = {
        "random order (randperm on the GPU)": (random_batches, None, False),
        "HeapqSampler, loss only": (sampler_batches(plain), plain, False),
        "HeapqSampler, loss + margin + prediction": (sampler_batches(heap), heap, True),
        "HeapqSampler + Recorder (SQLite)": (sampler_batches(recorded), recorded, True),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, dict[str, float]] = {
        name: dict.fromkeys(("batches", "metrics", "update"), 0.0) for name in variants
    }
    steps = 0
    for repeat in range(args.repeats + 1):  # the first round warms up (warm-up epoch too)
        for name, (batches, sampler, margins) in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = cpu[name] if repeat > 0 else dict.fromkeys(cpu[name], 0.0)
            start = time.perf_counter()
            train_epoch(batches(), images, labels, model, optimizer, sampler, seconds, margins)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if repeat > 0:
                times[name].append(time.perf_counter() - start)
        steps += -(-n // BATCH) if repeat > 0 else 0
    recorder.close()
    base = statistics.median(times["random order (randperm on the GPU)"])
    name_device = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{n} samples, batch {BATCH}, ExamplesNet, data on {name_device}")
    print(
        "| variant | s/epoch (median) | ratio to random | CPU µs/step: batches, metrics, update |"
    )
    print("|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        parts = ", ".join(
            f"{1e6 * cpu[name][k] / steps:.0f}" for k in ("batches", "metrics", "update")
        )
        print(f"| {name} | {median:.2f} | {median / base:.2f}x | {parts} |")
    print("(the sampler's epochs after the first are priority epochs; CPU time is the training")
    print(" thread's, outside the model: drawing a batch and moving its ids, computing the")
    print(" metrics given to update, and update itself)")


if __name__ == "__main__":
    main()
