"""The original datasetq MNIST study, on the embedded MNIST digits (8k train / 2k test, seeded).

Random order; heap with steps=1 (must equal random); heap; heap with max_visits 10, 25, 50;
symmetric label noise on the training part only. Prints a table and saves
docs/study/mnist.png; runs are cached in docs/study/runs.json. Needs the ``study`` extra:

    .venv/bin/pip install -e '.[study]'
    .venv/bin/python benchmarks/studies/study_mnist.py [--seeds 3 --epochs 10 --model small]

On k cores, first train in k processes (``--shard 0/2`` and ``--shard 1/2``), then report.

``--model examples`` trains the original's PyTorch-examples CNN (about 10x slower on a CPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from result_cache import RESULTS, ResultCache
from study_common import (
    CONFIGS,
    RunKey,
    add_study_arguments,
    cached_run,
    code_revision,
    mean_sd,
    parse_shard,
    save_figure,
)


def summarise(runs: list[dict[str, Any]]) -> dict[str, str]:
    last = [run["epochs"][-1] for run in runs]
    evicted = [row["evicted"] for row in last]
    flipped = [row["evicted_flipped"] for row in last]
    return {
        "test acc": mean_sd([row["test_accuracy"] for row in last]),
        "best acc": mean_sd([max(e["test_accuracy"] for e in run["epochs"]) for run in runs]),
        "test loss": mean_sd([row["test_loss"] for row in last]),
        "draws": f"{np.mean([sum(e['draws'] for e in run['epochs']) for run in runs]):.0f}",
        "s/run": f"{np.mean([run['seconds'] for run in runs]):.0f}",
        "evicted (flipped)": (
            f"{np.mean(evicted):.0f} ({np.mean(flipped):.0f})" if any(evicted) else "-"
        ),
    }


def print_table(noise: float, table: dict[str, dict[str, str]]) -> None:
    columns = ["test acc", "best acc", "test loss", "draws", "s/run", "evicted (flipped)"]
    print(f"\nlabel noise {noise:.0%} (mean ± sd over seeds, after the last epoch)\n")
    print(f"| {'sampling':<20} | " + " | ".join(columns) + " |")
    print("|" + "---|" * (len(columns) + 1))
    for config, row in table.items():
        print(f"| {config:<20} | " + " | ".join(row[c] for c in columns) + " |")


def print_curves(by_noise: dict[float, dict[str, list[dict[str, Any]]]]) -> None:
    """Mean test accuracy and loss after each epoch, and distinct samples drawn per epoch."""
    print("\nper epoch, mean over seeds: test accuracy / test loss / distinct samples drawn\n")
    epochs = _epochs(by_noise)
    print("| noise | sampling | metric | " + " | ".join(f"e{e + 1}" for e in range(epochs)) + " |")
    print("|---|---|---|" + "---|" * epochs)
    for noise, by_config in by_noise.items():
        for config, runs in by_config.items():
            for metric, digits in (("test_accuracy", 3), ("test_loss", 3), ("distinct_visited", 0)):
                curve = np.mean([[e[metric] for e in run["epochs"]] for run in runs], axis=0)
                cells = " | ".join(f"{v:.{digits}f}" for v in curve)
                print(f"| {noise:.0%} | {config} | {metric.replace('_', ' ')} | {cells} |")


def _epochs(by_noise: dict[float, dict[str, list[dict[str, Any]]]]) -> int:
    runs = next(iter(next(iter(by_noise.values())).values()))
    return len(runs[0]["epochs"])


def plot(by_noise: dict[float, dict[str, list[dict[str, Any]]]], path: Path) -> None:
    figure, axes = plt.subplots(2, len(by_noise), figsize=(5 * len(by_noise), 7), squeeze=False)
    for column, (noise, by_config) in enumerate(by_noise.items()):
        for config, runs in by_config.items():
            for row, metric in enumerate(("test_accuracy", "test_loss")):
                curves = np.array([[e[metric] for e in run["epochs"]] for run in runs])
                epochs = np.arange(1, curves.shape[1] + 1)
                axes[row][column].plot(epochs, curves.mean(axis=0), label=config)
        axes[0][column].set_title(f"label noise {noise:.0%}")
        axes[0][column].set_ylabel("test accuracy")
        axes[1][column].set_ylabel("test loss")
        axes[1][column].set_xlabel("epoch")
    axes[0][0].legend(fontsize=8)
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, noise=[0.0, 0.2, 0.4])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    shard = parse_shard(args.shard)
    cache = ResultCache("runs", shard)
    by_noise: dict[float, dict[str, list[dict[str, Any]]]] = {}
    for noise in args.noise:
        by_noise[noise] = {
            config: [
                cached_run(
                    cache,
                    RunKey(config, noise, seed, args.epochs, args.model, code=code_revision()),
                )
                for seed in range(args.seeds)
            ]
            for config in args.configs
        }
    if shard is not None:
        return
    print(f"\nmodel {args.model}, {args.epochs} epochs, {args.seeds} seeds, 8k train / 2k test")
    for noise, by_config in by_noise.items():
        print_table(noise, {config: summarise(runs) for config, runs in by_config.items()})
    print_curves(by_noise)
    plot(by_noise, RESULTS / f"mnist-{args.model}.png")


if __name__ == "__main__":
    main()
