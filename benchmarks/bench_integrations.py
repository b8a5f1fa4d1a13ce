"""What datasetq costs inside Lightning and the Hugging Face Trainer, over the plain framework.

Trains the tiny models of the integration tests on ``--samples`` embedded MNIST digits for
``--epochs`` epochs, on the CPU, in three ways per framework: the framework's own shuffled
sampler and mean loss; datasetq's sampler fed per-sample losses, margins and predictions; the
same with a Recorder writing to SQLite. Reports seconds per epoch (the best of ``--repeats``
fits) and the overhead over the plain loop.

    .venv/bin/python benchmarks/bench_integrations.py [--samples 4096 --epochs 3 --repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from tests.integrations.jobs import Digits, tiny_vit


def lightning_fit(samples: int, epochs: int, mode: str, folder: Path) -> float:
    import lightning.pytorch as pl

    from datasetq.integrations.lightning import DatasetqCallback, sample_outputs

    pl.seed_everything(0, verbose=False)
    dataset = Digits(samples)
    url = f"sqlite:///{folder / f'lightning-{time.monotonic_ns()}.db'}"
    callback = None
    if mode != "plain":
        callback = DatasetqCallback(url if mode == "recorded" else None, run="bench", seed=0)

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Flatten(),
                torch.nn.Linear(784, 64),
                torch.nn.ReLU(),
                torch.nn.Linear(64, 10),
            )

        def train_dataloader(self):
            if callback is None:
                return DataLoader(dataset, batch_size=64, shuffle=True)
            return callback.dataloader(dataset, batch_size=64)

        def training_step(self, batch, batch_idx):
            if callback is None:
                x, y = batch
                return F.cross_entropy(self.net(x), y)
            _, (x, y) = batch
            logits = self.net(x)
            return sample_outputs(F.cross_entropy(logits, y, reduction="none"), logits, y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        callbacks=[callback] if callback else [],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    start = time.perf_counter()
    trainer.fit(Model())
    return (time.perf_counter() - start) / epochs


def transformers_fit(samples: int, epochs: int, mode: str, folder: Path) -> float:
    from transformers import Trainer, TrainingArguments, set_seed

    from datasetq.integrations.transformers import DatasetqTrainer

    set_seed(0)
    digits = Digits(samples)

    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(digits)

        def __getitem__(self, index: int):
            x, y = digits[index]
            return {"pixel_values": x, "labels": y}

    args = TrainingArguments(
        output_dir=str(folder / f"hf-{time.monotonic_ns()}"),
        num_train_epochs=epochs,
        per_device_train_batch_size=64,
        learning_rate=1e-3,
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    model = tiny_vit()
    if mode == "plain":
        trainer = Trainer(model=model, args=args, train_dataset=Items())
    else:
        url = f"sqlite:///{folder / f'hf-{time.monotonic_ns()}.db'}"
        trainer = DatasetqTrainer(
            model=model,
            args=args,
            train_dataset=digits,
            recorder=url if mode == "recorded" else None,
            run="bench",
            sampler_options={"seed": 0},
        )
    start = time.perf_counter()
    trainer.train()
    return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    print(f"{args.samples} samples, {args.epochs} epochs, batch 64, CPU, 1 thread; s per epoch")
    steps = -(-args.samples // 64)
    print(
        "| framework | plain | datasetq sampler | + Recorder (SQLite) "
        "| overhead, sampler / recorded | per step, sampler / recorded |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, fit in (("Lightning", lightning_fit), ("HF Trainer", transformers_fit)):
            best = {
                mode: min(
                    fit(args.samples, args.epochs, mode, Path(folder)) for _ in range(args.repeats)
                )
                for mode in ("plain", "sampler", "recorded")
            }
            plain = best["plain"]
            print(
                f"| {name} | {plain:.3f} | {best['sampler']:.3f} | {best['recorded']:.3f} | "
                f"{100 * (best['sampler'] / plain - 1):+.1f}% / "
                f"{100 * (best['recorded'] / plain - 1):+.1f}% | "
                f"{1000 * (best['sampler'] - plain) / steps:+.2f} ms / "
                f"{1000 * (best['recorded'] - plain) / steps:+.2f} ms |"
            )


if __name__ == "__main__":
    main()
