"""Training jobs the integration tests run in their own processes (so a job can be killed, or
launch its DDP ranks): ``python -m tests.integrations.jobs lightning|transformers ...``.

Each job trains a tiny model on the first ``--samples`` embedded MNIST digits and writes, per
rank, every batch's sample ids as JSON lines ``{"epoch": e, "ids": [...]}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datasetq.datasets import EmbeddedMNIST


class Digits(Dataset):
    """``(image, label)`` for the first ``n`` embedded MNIST digits, as tensors."""

    def __init__(self, n: int) -> None:
        mnist = EmbeddedMNIST()
        self.images = mnist.data[:n].float().div(255.0).unsqueeze(1)
        self.targets = mnist.targets[:n].clone()
        self.classes = list(mnist.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.images[index], int(self.targets[index])


def tiny_vit():
    """A one-layer ViT image classifier for 28x28 digits, built from a config (nothing
    downloads)."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=28,
        patch_size=7,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=10,
    )
    return ViTForImageClassification(config)


def draws_log(out: Path, rank: int):
    out.mkdir(parents=True, exist_ok=True)
    return (out / f"draws-rank{rank}.jsonl").open("a")


def lightning_job(args: argparse.Namespace) -> None:
    import lightning.pytorch as pl

    from datasetq.integrations.lightning import DatasetqCallback, sample_outputs

    pl.seed_everything(0, verbose=False)
    callback = DatasetqCallback(
        args.db, run="lightning", seed=0, chunk_size=32, config={"job": "test"}
    )
    out = Path(args.out)

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Flatten(),
                torch.nn.Linear(784, 32),
                torch.nn.ReLU(),
                torch.nn.Linear(32, 10),
            )
            self.log_file = None

        def train_dataloader(self):
            return callback.dataloader(Digits(args.samples), batch_size=32)

        def training_step(self, batch, batch_idx):
            ids, (x, y) = batch
            if self.log_file is None:
                self.log_file = draws_log(out, self.global_rank)
            self.log_file.write(
                json.dumps({"epoch": self.current_epoch, "ids": ids.tolist()}) + "\n"
            )
            self.log_file.flush()
            if args.kill_at is not None and self.current_epoch == args.kill_at and batch_idx == 2:
                time.sleep(1.5)  # the recorder has written the epochs before this one
                os.kill(os.getpid(), signal.SIGKILL)
            logits = self.net(x)
            return sample_outputs(F.cross_entropy(logits, y, reduction="none"), logits, y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    checkpoints = pl.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints", save_last=True, every_n_epochs=1, save_top_k=-1
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        callbacks=[callback, checkpoints],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer.fit(Model(), ckpt_path=args.resume)
    if trainer.global_rank == 0:
        (out / "visits.json").write_text(json.dumps(callback.sampler.visits.tolist()))


def transformers_job(args: argparse.Namespace) -> None:
    from transformers import TrainingArguments, set_seed

    from datasetq.integrations.transformers import ID_KEY, DatasetqTrainer

    set_seed(0)
    out = Path(args.out)
    model = tiny_vit()

    class LoggingTrainer(DatasetqTrainer):
        batches = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                if not hasattr(self, "log_file"):
                    self.log_file = draws_log(out, self.args.process_index)
                epoch = self.sampler.epoch
                self.log_file.write(
                    json.dumps({"epoch": epoch, "ids": inputs[ID_KEY].tolist()}) + "\n"
                )
                self.log_file.flush()
                self.batches += 1
                if args.kill_at is not None and epoch == args.kill_at and self.batches % 16 == 3:
                    time.sleep(1.5)
                    os.kill(os.getpid(), signal.SIGKILL)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    training = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=32,
        learning_rate=1e-3,
        save_strategy="epoch",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = LoggingTrainer(
        model=model,
        args=training,
        train_dataset=Digits(args.samples),
        recorder=args.db,
        run="transformers",
        sampler_options={"seed": 0, "chunk_size": 32},
    )
    trainer.train(resume_from_checkpoint=args.resume)
    if trainer.is_world_process_zero():
        (out / "visits.json").write_text(json.dumps(trainer.sampler.visits.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=["lightning", "transformers"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--kill-at", type=int, default=None, help="SIGKILL itself in this epoch")
    parser.add_argument("--resume", default=None, help="a checkpoint to resume from")
    args = parser.parse_args()
    torch.set_num_threads(1)
    {"lightning": lightning_job, "transformers": transformers_job}[args.framework](args)
    if torch.distributed.is_initialized():
        # Neither framework ends the process group; a gloo group left to interpreter teardown
        # can abort the process (SIGABRT, "terminate called without an active exception").
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
