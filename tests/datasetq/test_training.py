"""End-to-end: the original README's example, and a CNN trained with priority sampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import Subset
from torchvision import transforms

from datasetq import DataLoader
from datasetq.cli import main
from datasetq.dataset import decorate_with_indices
from datasetq.datasets import EmbeddedMNIST
from datasetq.models import ExamplesNet
from datasetq.sampler import HeapqSampler
from datasetq.training import TrainConfig, evaluate, flip_labels, make_splits, train_mnist


def collate_as_lists(batch):
    """The original example stacks images itself (``torch.stack(data)``), so it expects lists."""
    indices = torch.tensor([index for index, _ in batch])
    return indices, ([image for _, (image, _) in batch], [label for _, (_, label) in batch])


def test_original_readme_example_trains():
    """The original README's example, verbatim where it can be: EmbeddedMNIST in place of
    datasets.MNIST (no download), ToTensor, and its undefined names filled in."""

    def train_step(model, data, target, device):
        data = torch.stack(data, axis=0).to(device)
        target = torch.LongTensor(target).to(device)

        output = model(data)
        loss = F.nll_loss(output, target, reduction="none")

        return loss

    def train(model, train_loader, batch_size, optimizer, device):
        model.train()
        for batch in train_loader:
            index, (data, target) = batch
            loss = train_step(model, data, target, device)

            optimizer.zero_grad()
            torch.mean(loss).backward()
            optimizer.step()

            train_loader.update(index.tolist(), {"loss": loss.tolist()})

    # Filled in: what the original left undefined (and a collate_fn that gives it lists).
    torch.manual_seed(0)
    device, lr, gamma, epochs, batch_size, Net = "cpu", 1.0, 0.7, 2, 64, ExamplesNet

    # --- Data
    datasets_MNIST = decorate_with_indices(EmbeddedMNIST)
    train_dataset = datasets_MNIST(transform=transforms.ToTensor())
    train_dataset = Subset(train_dataset, range(2000))  # keeps CI short; the API is the same
    sampler = HeapqSampler(train_dataset)
    dataloader = DataLoader(
        train_dataset, batch_size=64, sampler=sampler, collate_fn=collate_as_lists
    )
    train_loader = dataloader

    # --- Model
    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=lr)

    # --- Training
    scheduler = StepLR(optimizer, step_size=1, gamma=gamma)
    for _epoch in range(1, epochs + 1):
        train(model, train_loader, batch_size, optimizer, device)
        scheduler.step()

    # It crashed at the end of its first epoch; here every sample was visited and scored.
    assert sampler.visits.sum() == 2 * len(train_dataset)
    assert not torch.isnan(torch.from_numpy(sampler.loss.copy())).any()
    test = Subset(
        decorate_with_indices(EmbeddedMNIST)(transform=transforms.ToTensor()), range(8000, 9000)
    )
    _, accuracy = evaluate(model, DataLoader(test, batch_size=500))
    assert accuracy > 0.8


def test_small_cnn_with_priority_sampling_reaches_90_percent():
    history = train_mnist(TrainConfig(epochs=3, sampler_options={"max_visits": 10}))
    assert [h.draws for h in history] == [8000, 8000, 8000]
    assert history[-1].test_accuracy >= 0.90
    assert history[0].distinct_visited == 8000  # warm-up visits everything


def test_flip_labels_is_seeded_and_exact():
    labels = make_splits(TrainConfig(noise=0.0))[0].labels.numpy()
    noisy, flipped = flip_labels(labels, 0.2, 10, seed=3)
    again, flipped_again = flip_labels(labels, 0.2, 10, seed=3)
    assert (noisy == again).all()
    assert (flipped == flipped_again).all()
    assert len(flipped) == round(0.2 * len(labels))
    changed = (noisy != labels).nonzero()[0]
    assert changed.tolist() == flipped.tolist()


def test_demo_command_prints_epochs_and_records(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert main(["demo", "--epochs", "1", "--noise", "0.1", "--db", url, "--no-serve"]) == 0
    out = capsys.readouterr().out
    assert "10% labels flipped" in out
    assert f"into {url}" in out
    import sqlite3

    connection = sqlite3.connect(tmp_path / "demo.db")
    assert connection.execute("SELECT status, epochs FROM runs").fetchall() == [("finished", 1)]
    assert connection.execute("SELECT COUNT(*) FROM sample_state").fetchone() == (8000,)
    connection.close()
    lines = [line for line in out.splitlines() if line.strip().startswith("0 ")]
    assert len(lines) == 1


def test_demo_refuses_a_database_that_is_behind_with_a_message(tmp_path, capsys):
    import sqlite3

    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    connection.execute("INSERT INTO alembic_version VALUES ('0001')")
    connection.commit()
    connection.close()
    assert main(["demo", "--epochs", "1", "--db", f"sqlite:///{path}", "--no-serve"]) == 1
    assert "run `datasetq db upgrade --db" in capsys.readouterr().err


def test_margin_and_prediction_match_their_definition():
    from datasetq.training import margin_and_prediction

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 5, generator=generator).round(decimals=1)  # rounding makes ties
    target = torch.randint(0, 5, (200,), generator=generator)
    result = margin_and_prediction(logits, target)
    given = logits[torch.arange(200), target]
    others = logits.clone()
    others[torch.arange(200), target] = float("-inf")
    torch.testing.assert_close(result["margin"], given - others.max(dim=1).values)
    assert (logits[torch.arange(200), result["pred"].long()] == logits.max(dim=1).values).all()
    assert result["pred"].dtype == torch.float32
