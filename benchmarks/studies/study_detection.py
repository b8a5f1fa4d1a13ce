"""Label-noise detection: the scores one datasetq run records against cleanlab on 5-fold
cross-validated predicted probabilities from the same model.

At each noise level and seed it trains 5 folds (random order, the study's optimiser) and takes
out-of-fold probabilities after 1, 2, 4, ... epochs, so cleanlab is measured at several
training budgets; datasetq's scores come from the MNIST study's runs (trained if missing).
Compute is counted in training sample passes (forward + backward of one sample).
Prints tables and saves docs/study/detection-<model>.png. Needs the ``study`` extra:

    .venv/bin/pip install -e '.[study]'
    .venv/bin/python benchmarks/studies/study_detection.py [--seeds 3 --epochs 10 --model small]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from result_cache import RESULTS, ResultCache
from sklearn.model_selection import StratifiedKFold
from study_common import (
    MODELS,
    TRAINING_FILES,
    RunKey,
    add_study_arguments,
    cached_run,
    code_revision,
    detection_figures,
    machine,
    parse_shard,
    save_figure,
)

from datasetq.training import MNISTSplit, TrainConfig, make_splits, train_mnist

SCORED_CONFIGS = ["random", "greedy", "greedy max_visits=10", "balanced"]
SCORES = ["mean loss", "AUM margin", "latest loss", "visits", "evicted"]


def checkpoints(epochs: int) -> list[int]:
    marks = {1, epochs}
    mark = 2
    while mark < epochs:
        marks.add(mark)
        mark *= 2
    return sorted(marks)


def cross_validated_probabilities(
    noise: float, seed: int, epochs: int, model: str, noise_kind: str = "symmetric"
) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray, int]:
    """Out-of-fold predicted probabilities after each checkpoint epoch, the noisy labels, the
    truth, and the training sample passes of one epoch over all folds."""
    config = TrainConfig(
        epochs=epochs, noise=noise, noise_kind=noise_kind, seed=seed, priority=False
    )
    train_set, _, flipped = make_splits(config)
    labels = train_set.labels.numpy()
    truth = np.zeros(len(labels), dtype=bool)
    truth[flipped] = True
    marks = checkpoints(epochs)
    probabilities = {mark: np.zeros((len(labels), 10)) for mark in marks}
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    passes_per_epoch = 0
    for fold, (fit, held) in enumerate(folds.split(np.zeros(len(labels)), labels)):
        fit_set = MNISTSplit(train_set.source_ids[fit], labels[fit])
        held_set = MNISTSplit(train_set.source_ids[held], labels[held])
        net = MODELS[model]()
        passes_per_epoch += len(fit)

        def on_epoch(
            stats: Any, _: Any, net: Any = net, held: Any = held, held_set: Any = held_set
        ) -> None:
            if stats.epoch + 1 in probabilities:
                net.eval()
                with torch.no_grad():
                    out = net(held_set.images).exp().numpy()
                probabilities[stats.epoch + 1][held] = out

        fold_config = TrainConfig(
            epochs=epochs, train_size=len(fit), seed=seed * 10 + fold, priority=False
        )
        train_mnist(
            fold_config,
            model=net,
            on_epoch=on_epoch,
            splits=(fit_set, held_set, np.zeros(0, dtype=np.int64)),
        )
    return probabilities, labels, truth, passes_per_epoch


def cleanlab_figures(
    probabilities: np.ndarray, labels: np.ndarray, truth: np.ndarray
) -> dict[str, dict[str, float]]:
    issues = find_label_issues(labels, probabilities)
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    disagree = probabilities.argmax(axis=1) != labels
    k = int(truth.sum())
    ranked = np.zeros(len(labels), dtype=bool)
    ranked[np.argsort(quality, kind="stable")[:k]] = True
    return {
        "cleanlab find_label_issues": detection_figures(-quality, truth, issues),
        "cleanlab self-confidence (top k)": detection_figures(-quality, truth, ranked),
        "CV prediction != label": detection_figures(disagree.astype(float), truth, disagree),
    }


def cross_validated(
    cache: ResultCache,
    noise: float,
    seed: int,
    epochs: int,
    model: str,
    noise_kind: str = "symmetric",
) -> dict[str, Any] | None:
    """cleanlab's figures at every checkpoint (cached); None when another shard computes them."""

    def compute() -> dict[str, Any]:
        probabilities, labels, truth, passes = cross_validated_probabilities(
            noise, seed, epochs, model, noise_kind
        )
        print(f"  cross-validated noise={noise} seed={seed}", flush=True)
        return {
            str(mark): {"passes": passes * mark, **cleanlab_figures(probs, labels, truth)}
            for mark, probs in probabilities.items()
        }

    name = (
        f"noise={noise}|kind={noise_kind}|seed={seed}|epochs={epochs}|model={model}"
        f"|code={code_revision(TRAINING_FILES)}|machine={machine()}"
    )
    return cache.get(name, compute)


def cleanlab_aurocs(
    cache: ResultCache, noise: float, noise_kind: str, seeds: int, epochs: int
) -> list[float]:
    """cleanlab 5-fold's self-confidence AUROC on seeds ``0 .. seeds - 1`` of a cell, after
    ``epochs`` (cross-validated when missing; seeds another shard computes are left out)."""
    found = [cross_validated(cache, noise, s, epochs, "small", noise_kind) for s in range(seeds)]
    return [
        seed[str(epochs)]["cleanlab self-confidence (top k)"]["auroc"]
        for seed in found
        if seed is not None
    ]


def collect(
    args: argparse.Namespace, noise: float, runs: ResultCache, cleanlab: ResultCache
) -> tuple[list[Any], dict[str, list[Any]]]:
    """cleanlab's figures per seed and the scored runs per configuration (None: other shard)."""
    cross = [
        cross_validated(cleanlab, noise, s, args.epochs, args.model) for s in range(args.seeds)
    ]
    scored = {
        config: [
            cached_run(
                runs, RunKey(config, noise, seed, args.epochs, args.model, code=code_revision())
            )
            for seed in range(args.seeds)
        ]
        for config in SCORED_CONFIGS
    }
    return cross, scored


def fmt(values: list[float], digits: int = 4) -> str:
    array = np.asarray(values, dtype=float)
    spread = array.std(ddof=1) if len(array) > 1 else 0.0
    return f"{array.mean():.{digits}f}±{spread:.{digits}f}"


def prf(rows: list[dict[str, float]]) -> str:
    """Precision / recall / F1 (flagged), means over seeds."""
    mean = {f: float(np.mean([r[f] for r in rows])) for f in ("precision", "recall", "f1")}
    flagged = np.mean([r["flagged"] for r in rows])
    return f"{mean['precision']:.3f} / {mean['recall']:.3f} / {mean['f1']:.3f} ({flagged:.0f})"


def report(
    noise: float, seeds: int, epochs: int, model: str, cleanlab: list[Any], runs: dict[str, Any]
) -> dict[str, Any]:
    print(f"\n## label noise {noise:.0%} ({model} model, mean±sd over {seeds} seeds)")
    print("\ncleanlab on 5-fold out-of-fold probabilities; precision / recall / F1 (flagged)")
    print(
        "| epochs per fold | sample passes | self-confidence AUROC | find_label_issues "
        "| self-confidence top k | CV prediction != label |"
    )
    print("|---|---|---|---|---|---|")
    marks = sorted(cleanlab[0], key=int)
    for mark in marks:
        rows = {m: [c[mark][m] for c in cleanlab] for m in cleanlab[0][mark] if m != "passes"}
        print(
            f"| {mark} | {cleanlab[0][mark]['passes']} "
            f"| {fmt([r['auroc'] for r in rows['cleanlab self-confidence (top k)']])} "
            f"| {prf(rows['cleanlab find_label_issues'])} "
            f"| {prf(rows['cleanlab self-confidence (top k)'])} "
            f"| {prf(rows['CV prediction != label'])} |"
        )
    shown = sorted({0, 1, 3, epochs - 1} & set(range(epochs)))
    passes = {
        config: np.array([[e["cumulative_draws"] for e in run["epochs"]] for run in config_runs])
        for config, config_runs in runs.items()
    }
    first = passes[SCORED_CONFIGS[0]].mean(axis=0)
    print("\none datasetq run: AUROC of each score after epoch e (training sample passes)")
    print(
        "| run | score | "
        + " | ".join(f"e={e + 1} ({first[e]:.0f})" for e in shown)
        + " | top k at the end | its flagged set at the end |"
    )
    print("|---|---|" + "---|" * (len(shown) + 2))
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for config, config_runs in runs.items():
        for method in [*SCORES, "last prediction != label"]:
            auroc = np.array(
                [[e["detection"][method]["auroc"] for e in run["epochs"]] for run in config_runs]
            )
            if np.allclose(auroc, 0.5):
                continue  # no signal in this run (no eviction, or equal visits)
            curves[f"datasetq {config}: {method}"] = (passes[config].mean(axis=0), auroc.mean(0))
            final = [run["epochs"][-1]["detection"][method] for run in config_runs]
            natural = method in ("evicted", "last prediction != label")
            print(
                f"| {config} | {method} | "
                + " | ".join(fmt(list(auroc[:, e])) for e in shown)
                + f" | {'-' if natural else prf(final)} | {prf(final) if natural else '-'} |"
            )
    reference = float(
        np.mean([c[str(epochs)]["cleanlab self-confidence (top k)"]["auroc"] for c in cleanlab])
    )
    reference_passes = cleanlab[0][str(epochs)]["passes"]
    print(
        f"\ncleanlab self-confidence AUROC at 5 folds x {epochs} epochs: {reference:.4f} "
        f"({reference_passes} sample passes). Fewest one-run passes reaching it (mean curve):"
    )
    for name, (run_passes, auroc) in curves.items():
        reached = np.flatnonzero(auroc >= reference)
        if len(reached):
            at = run_passes[reached[0]]
            print(f"  {name}: {at:.0f} passes = 1/{reference_passes / at:.1f} of cleanlab's")
    return {"cleanlab": cleanlab, "curves": curves}


def plot(results: dict[float, dict[str, Any]], path: Path) -> None:
    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for axis, (noise, result) in zip(axes[0], results.items(), strict=True):
        for name, (passes, auroc) in result["curves"].items():
            if name.endswith(("mean loss", "AUM margin")) and "max_visits=25" not in name:
                axis.plot(passes, auroc, marker=".", label=name.replace("datasetq ", ""))
        cleanlab = result["cleanlab"]
        marks = sorted(cleanlab[0], key=int)
        for method in ("cleanlab self-confidence (top k)", "CV prediction != label"):
            axis.plot(
                [cleanlab[0][m]["passes"] for m in marks],
                [np.mean([c[m][method]["auroc"] for c in cleanlab]) for m in marks],
                marker="s",
                linestyle="--",
                label=method.replace(" (top k)", "") + " (5-fold)",
            )
        axis.set_xscale("log")
        axis.set_xlabel("training sample passes")
        axis.set_ylabel("AUROC (flipped vs clean)")
        axis.set_title(f"label noise {noise:.0%}")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, noise=[0.2, 0.4])
    args = parser.parse_args()
    shard = parse_shard(args.shard)
    runs, cleanlab = ResultCache("runs", shard), ResultCache("cleanlab", shard)
    collected = {noise: collect(args, noise, runs, cleanlab) for noise in args.noise}
    if shard is not None:
        return
    results = {
        noise: report(noise, args.seeds, args.epochs, args.model, *figures)
        for noise, figures in collected.items()
    }
    plot(results, RESULTS / f"detection-{args.model}.png")


if __name__ == "__main__":
    main()
