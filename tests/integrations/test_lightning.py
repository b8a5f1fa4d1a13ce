"""datasetq in PyTorch Lightning: a recorded run the dashboard shows, resume after a kill with
the same draws, and DDP on two CPU processes (gloo). Each job runs in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backend.conftest import make_client, query

pytest.importorskip("lightning", reason="needs the lightning extra (pip install -e '.[lightning]')")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = 512


def run_job(*args: str, expect_killed: bool = False) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.integrations.jobs", "lightning", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if expect_killed:
        assert result.returncode == -9, result.stderr[-3000:]
    else:
        assert result.returncode == 0, result.stderr[-3000:]


def draws(out: Path, rank: int = 0) -> dict[int, list[int]]:
    by_epoch: dict[int, list[int]] = {}
    for line in (out / f"draws-rank{rank}.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_epoch.setdefault(row["epoch"], []).extend(row["ids"])
    return by_epoch


def stored_visits(url: str) -> list[int]:
    visits = [0] * SAMPLES
    for sample_id, count in query(url, "SELECT sample_id, visits FROM sample_state"):
        visits[sample_id] = count
    return visits


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lightning")
    url = f"sqlite:///{folder / 'whole.db'}"
    run_job("--db", url, "--out", str(folder / "whole"))
    return url, folder / "whole"


def test_a_lightning_run_is_recorded_with_the_samplers_visits(uninterrupted):
    url, out = uninterrupted
    sampler_visits = json.loads((out / "visits.json").read_text())
    assert stored_visits(url) == sampler_visits
    epochs = draws(out)
    assert sorted(epochs) == [0, 1, 2]
    assert sorted(epochs[0]) == list(range(SAMPLES))  # the first epoch covers every sample once
    assert sum(sampler_visits) == sum(len(ids) for ids in epochs.values())
    with make_client(url) as client:
        (run,) = client.get("/api/v1/runs").json()
        assert (run["name"], run["status"], run["epochs"]) == ("lightning", "finished", 3)
        summary = client.get(f"/api/v1/runs/{run['id']}").json()
        assert [e["draws"] for e in summary["epochs_detail"]] == [len(epochs[e]) for e in range(3)]
        page = client.get(f"/api/v1/runs/{run['id']}/samples?sort=visits&limit=1").json()
        assert page["items"][0]["visits"] == max(sampler_visits)
        assert page["items"][0]["last_pred"] is not None  # margins and predictions recorded


def test_killed_after_epoch_two_and_resumed_it_draws_as_if_never_stopped(uninterrupted, tmp_path):
    url_whole, whole = uninterrupted
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    run_job("--db", url, "--out", str(tmp_path / "killed"), "--kill-at", "2", expect_killed=True)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    assert query(url, "SELECT epochs FROM runs") == [(2,)]
    run_job("--db", url, "--out", str(tmp_path / "resumed"), "--resume", str(checkpoint))
    expected, killed, resumed = draws(whole), draws(tmp_path / "killed"), draws(tmp_path / "resumed")
    assert killed[0] == expected[0] and killed[1] == expected[1]
    assert sorted(resumed) == [2]
    assert resumed[2] == expected[2]
    # One run, continued: the store holds what the uninterrupted run's store holds.
    assert query(url, "SELECT name, status, epochs FROM runs") == [("lightning", "finished", 3)]
    assert stored_visits(url) == stored_visits(url_whole)


def test_ddp_on_two_cpu_processes_shares_the_epoch_and_records_one_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'ddp.db'}"
    out = tmp_path / "ddp"
    run_job("--db", url, "--out", str(out), "--devices", "2")
    ranks = [draws(out, 0), draws(out, 1)]
    assert sorted(ranks[0]) == sorted(ranks[1]) == [0, 1, 2]
    # Epoch 0 visits every sample once: the two shares are disjoint and cover the dataset.
    assert not set(ranks[0][0]) & set(ranks[1][0])
    assert sorted(ranks[0][0] + ranks[1][0]) == list(range(SAMPLES))
    for epoch in range(3):
        assert abs(len(ranks[0][epoch]) - len(ranks[1][epoch])) <= 32  # a chunk apart at most
    assert query(url, "SELECT name, status, epochs FROM runs") == [("lightning", "finished", 3)]
    # Rank 0 recorded every rank's draws: the store's visits are both shares together.
    combined = [0] * SAMPLES
    for rank in ranks:
        for ids in rank.values():
            for i in ids:
                combined[i] += 1
    assert stored_visits(url) == combined
    assert json.loads((out / "visits.json").read_text()) == combined
