"""datasetq in PyTorch Lightning and the Hugging Face Trainer: a recorded run the dashboard
shows, resume after a kill with the same draws, and DDP on two CPU processes (gloo). Each job
(tests/integrations/jobs.py) runs in its own process."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.backend.conftest import make_client, query

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = 512
FRAMEWORKS = ["lightning", "transformers"]


@pytest.fixture(scope="module", params=FRAMEWORKS)
def framework(request):
    name = request.param
    if os.environ.get("DATASETQ_REQUIRE_FRAMEWORKS") == "1":
        __import__(name)  # CI installs the extras: a missing framework fails, never skips
    else:
        pytest.importorskip(name, reason=f"needs the {name} extra (pip install -e '.[{name}]')")
    return name


def run_job(framework: str, *args: str, expect_killed: bool = False, ranks: int = 1) -> None:
    if ranks == 1:
        launch = [sys.executable, "-m", "tests.integrations.jobs", framework]
    elif framework == "lightning":  # Lightning's DDP strategy launches the other rank itself
        launch = [
            sys.executable,
            "-m",
            "tests.integrations.jobs",
            framework,
            "--devices",
            str(ranks),
        ]
    else:
        launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}"]
        launch += [f"--master_port={free_port()}", "-m", "tests.integrations.jobs", framework]
    # A port of its own: the previous job's rendezvous port may not be free again yet.
    environment = {**os.environ, "MASTER_PORT": str(free_port())}
    result = subprocess.run(
        [*launch, *args],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    expected = -9 if expect_killed else 0
    assert result.returncode == expected, what_went_wrong(result.stderr)


def what_went_wrong(stderr: str) -> str:
    """Every rank's errors (a rank's traceback, an abort) and the end of the log: the
    frameworks' progress output would otherwise push the first failure out of view."""
    marked = re.compile(r"Error|Traceback|terminate|Signal|\[rank\d\]")
    errors = [line for line in stderr.splitlines() if marked.search(line)]
    return "\n".join(errors[-80:]) + "\n--- the end of stderr ---\n" + stderr[-2000:]


def draws(out: Path, rank: int = 0) -> dict[int, list[int]]:
    by_epoch: dict[int, list[int]] = {}
    for line in (out / f"draws-rank{rank}.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_epoch.setdefault(row["epoch"], []).extend(row["ids"])
    return by_epoch


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stored_visits(url: str) -> list[int]:
    visits = [0] * SAMPLES
    for sample_id, count in query(url, "SELECT sample_id, visits FROM sample_state"):
        visits[sample_id] = count
    return visits


@pytest.fixture(scope="module")
def uninterrupted(framework, tmp_path_factory):
    folder = tmp_path_factory.mktemp(framework)
    url = f"sqlite:///{folder / 'whole.db'}"
    run_job(framework, "--db", url, "--out", str(folder / "whole"))
    return framework, url, folder / "whole"


def test_a_run_is_recorded_with_the_samplers_visits(uninterrupted):
    framework, url, out = uninterrupted
    sampler_visits = json.loads((out / "visits.json").read_text())
    assert stored_visits(url) == sampler_visits
    epochs = draws(out)
    assert sorted(epochs) == [0, 1, 2]
    assert sorted(epochs[0]) == list(range(SAMPLES))  # the first epoch covers every sample once
    assert sum(sampler_visits) == sum(len(ids) for ids in epochs.values())
    with make_client(url) as client:
        (run,) = client.get("/api/v1/runs").json()
        assert (run["name"], run["status"], run["epochs"]) == (framework, "finished", 3)
        summary = client.get(f"/api/v1/runs/{run['id']}").json()
        assert [e["draws"] for e in summary["epochs_detail"]] == [len(epochs[e]) for e in range(3)]
        page = client.get(f"/api/v1/runs/{run['id']}/samples?sort=visits&limit=1").json()
        assert page["items"][0]["visits"] == max(sampler_visits)
        assert page["items"][0]["last_pred"] is not None  # margins and predictions recorded


def test_killed_after_epoch_two_and_resumed_it_draws_as_if_never_stopped(uninterrupted, tmp_path):
    framework, url_whole, whole = uninterrupted
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    killed_out = tmp_path / "killed"
    run_job(framework, "--db", url, "--out", str(killed_out), "--kill-at", "2", expect_killed=True)
    if framework == "lightning":
        checkpoint = killed_out / "checkpoints" / "last.ckpt"
    else:  # the Trainer's checkpoint after epoch 2 (16 steps of 32 per epoch)
        checkpoint = killed_out / "checkpoints" / "checkpoint-32"
    assert checkpoint.exists()
    assert query(url, "SELECT epochs FROM runs") == [(2,)]
    run_job(framework, "--db", url, "--out", str(tmp_path / "resumed"), "--resume", str(checkpoint))
    expected, killed, resumed = (
        draws(whole),
        draws(tmp_path / "killed"),
        draws(tmp_path / "resumed"),
    )
    assert killed[0] == expected[0]
    assert killed[1] == expected[1]
    assert sorted(resumed) == [2]
    assert resumed[2] == expected[2]
    # One run, continued: the store holds what the uninterrupted run's store holds.
    assert query(url, "SELECT name, status, epochs FROM runs") == [(framework, "finished", 3)]
    assert stored_visits(url) == stored_visits(url_whole)


def test_ddp_on_two_cpu_processes_shares_the_epoch_and_records_one_run(framework, tmp_path):
    url = f"sqlite:///{tmp_path / 'ddp.db'}"
    out = tmp_path / "ddp"
    run_job(framework, "--db", url, "--out", str(out), ranks=2)
    ranks = [draws(out, 0), draws(out, 1)]
    assert sorted(ranks[0]) == sorted(ranks[1]) == [0, 1, 2]
    # Epoch 0 visits every sample once: the two shares are disjoint and cover the dataset.
    assert not set(ranks[0][0]) & set(ranks[1][0])
    assert sorted(ranks[0][0] + ranks[1][0]) == list(range(SAMPLES))
    for epoch in range(3):
        assert abs(len(ranks[0][epoch]) - len(ranks[1][epoch])) <= 32  # a chunk apart at most
    assert query(url, "SELECT name, status, epochs FROM runs") == [(framework, "finished", 3)]
    # Rank 0 recorded every rank's draws: the store's visits are both shares together.
    combined = [0] * SAMPLES
    for rank in ranks:
        for ids in rank.values():
            for i in ids:
                combined[i] += 1
    assert stored_visits(url) == combined
    assert json.loads((out / "visits.json").read_text()) == combined


@pytest.mark.filterwarnings("ignore")  # Lightning's advice on workers and loggers
def test_dashboard_decisions_reach_a_lightning_job_at_the_next_epoch(tmp_path):
    """Drop one sample and relabel another through the API while epoch 0 trains: from epoch 1
    the dropped one is never drawn and the relabelled one trains with its new label. (The
    recorder looks for decisions about once a second, off the training thread.)"""
    pl = pytest.importorskip("lightning.pytorch")
    import torch
    import torch.nn.functional as F

    from datasetq.integrations.lightning import DatasetqCallback, sample_outputs
    from tests.integrations.jobs import Digits

    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    callback = DatasetqCallback(url, run="decisions", seed=0)
    dataset = Digits(256)
    dropped, relabeled = 5, 7
    new_label = (int(dataset.targets[relabeled]) + 3) % 10
    seen: dict[int, list[tuple[int, int]]] = {}

    class Decide(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if (trainer.current_epoch, batch_idx) != (0, 1):
                return
            with make_client(url) as client:
                for body in (
                    {"kind": "drop", "sample_ids": [dropped]},
                    {"kind": "relabel", "sample_ids": [relabeled], "label": new_label},
                ):
                    assert client.post("/api/v1/runs/1/reviews", json=body).status_code == 200
            time.sleep(2.5)  # the recorder's background poll has seen them before epoch 1

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))

        def train_dataloader(self):
            return callback.dataloader(dataset, batch_size=32)

        def training_step(self, batch, batch_idx):
            ids, (x, y) = batch
            seen.setdefault(self.current_epoch, []).extend(
                zip(ids.tolist(), y.tolist(), strict=True)
            )
            logits = self.net(x)
            return sample_outputs(F.cross_entropy(logits, y, reduction="none"), logits, y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        callbacks=[callback, Decide()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(Model())
    assert any(i == dropped for i, _ in seen[0])
    for epoch in (1, 2):
        assert all(i != dropped for i, _ in seen[epoch])
        labels = {y for i, y in seen[epoch] if i == relabeled}
        assert labels == {new_label}, (epoch, labels)
    assert dropped in callback.sampler.evicted.tolist()
    assert query(url, "SELECT current_label FROM samples WHERE sample_id = :i", i=relabeled) == [
        (new_label,)
    ]
