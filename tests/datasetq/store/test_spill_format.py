"""Spill files: every one says its format, and a file of the previous format replays in full.

``tests/fixtures/spill_format_1`` holds the batches a Recorder of datasetq 0.2.0 spilled for a
3-epoch run of 48 samples while its store was down (visits log, epoch statistics and state,
an eviction), before spill files carried a format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from datasetq import Recorder
from datasetq.recorder.recorder import run_spill_dir
from datasetq.store.batches import (
    BATCH_COLUMNS,
    SPILL_FORMAT,
    SpillFormatError,
    make_batch,
    read_batch,
    write_batch,
)
from datasetq.store.engine import create_store_engine
from datasetq.store.models import (
    EpochBlockRecord,
    EvictionRecord,
    RunEpochRecord,
    SampleStateRecord,
    VisitRecord,
)

FIXTURE = Path(__file__).parents[2] / "fixtures" / "spill_format_1"
LABELS = np.arange(48) % 4


class FixtureDataset(torch.utils.data.Dataset):
    """The dataset the fixture was recorded on."""

    targets: ClassVar[list[int]] = LABELS.tolist()
    classes: ClassVar[list[str]] = ["a", "b", "c", "d"]

    def __len__(self) -> int:
        return 48

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(1), int(LABELS[index])


def fixture_arrays(kind: str) -> list[dict[str, np.ndarray]]:
    """The fixture's arrays, read with NumPy alone (not with the code under test)."""
    found = []
    for path in sorted(FIXTURE.glob(f"*-{kind}.npz")):
        with np.load(path) as data:
            assert "format" not in json.loads(str(data["__header__"]))  # format 1 indeed
            found.append({name: data[name] for name in data.files})
    return found


def test_a_spill_of_the_previous_format_replays_into_a_fresh_database(store_url, tmp_path):
    spill = tmp_path / "spill"
    shutil.copytree(FIXTURE, run_spill_dir(spill, store_url, 1))
    with Recorder(store_url, run="spilled", dataset=FixtureDataset(), spill_dir=spill) as rec:
        pass
    assert rec.report.ok, rec.report
    assert rec.report.delivered == len(list(FIXTURE.glob("*.npz")))
    assert not list(spill.rglob("*.npz")), "every spilled batch was delivered and removed"

    visits = fixture_arrays("visits")
    epochs = fixture_arrays("epoch")
    evictions = fixture_arrays("evictions")
    engine = create_store_engine(store_url)
    try:
        with Session(engine) as session:

            def count(model: type) -> int:
                return int(session.execute(select(func.count()).select_from(model)).scalar_one())

            assert count(VisitRecord) == sum(len(v["sample_id"]) for v in visits)
            assert count(RunEpochRecord) == len(epochs)
            assert count(EpochBlockRecord) == len(epochs)  # 48 samples: one block per epoch
            assert count(EvictionRecord) == sum(len(e["sample_id"]) for e in evictions)
            stored_losses = session.execute(
                select(VisitRecord.loss).order_by(VisitRecord.id)
            ).scalars()
            expected = np.concatenate([v["loss"] for v in visits])
            np.testing.assert_allclose(list(stored_losses), expected, rtol=1e-6)
            # The latest state write of each sample is what the store holds.
            latest: dict[int, tuple[float, float]] = {}
            for epoch in epochs:
                for i, mean, score in zip(
                    epoch["state_ids"], epoch["state_mean"], epoch["state_score"], strict=True
                ):
                    latest[int(i)] = (float(mean), float(score))
            rows = session.execute(
                select(
                    SampleStateRecord.sample_id,
                    SampleStateRecord.mean_loss,
                    SampleStateRecord.score,
                )
            ).all()
            assert {r[0] for r in rows} == set(latest)
            for sample_id, mean, score in rows:
                assert mean == pytest.approx(latest[sample_id][0])
                assert score == pytest.approx(latest[sample_id][1])
    finally:
        engine.dispose()


def test_a_spill_file_without_the_newer_columns_gets_them_filled(tmp_path):
    """Format-1 files written before the suspicion score replay with NULL scores."""
    source = sorted(FIXTURE.glob("*-epoch.npz"))[0]
    with np.load(source) as data:
        arrays = {name: data[name] for name in data.files}
    for name in ("state_score", "state_coverage_epochs", "state_evidence_score"):
        del arrays[name]
    del arrays["state_wrong_since"]
    older = tmp_path / source.name
    np.savez(older, **arrays)
    batch = read_batch(older)
    assert np.isnan(batch.arrays["state_score"]).all()
    assert (batch.arrays["state_wrong_since"] == -1).all()
    assert [c.array for c in BATCH_COLUMNS["epoch"]] == list(batch.arrays)


def test_every_spill_file_says_its_format_and_a_newer_one_is_refused(tmp_path):
    batch = make_batch(3, "evictions", {"epoch": 1}, {"sample_id": [4, 7]})
    path = write_batch(batch, tmp_path)
    with np.load(path) as data:
        assert json.loads(str(data["__header__"]))["format"] == SPILL_FORMAT
    assert read_batch(path).arrays["sample_id"].tolist() == [4, 7]
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    header = json.loads(str(arrays["__header__"]))
    arrays["__header__"] = np.array(json.dumps({**header, "format": SPILL_FORMAT + 1}))
    np.savez(path, **arrays)
    with pytest.raises(SpillFormatError, match="newer"):
        read_batch(path)


def test_a_batch_holds_exactly_its_columns():
    with pytest.raises(ValueError, match=r"missing \['loss'\]"):
        make_batch(0, "visits", {"epoch": 0}, {"sample_id": [1]})
    with pytest.raises(ValueError, match=r"unexpected \['margin'\]"):
        make_batch(0, "visits", {"epoch": 0}, {"sample_id": [1], "loss": [1.0], "margin": [0.0]})
    with pytest.raises(ValueError, match="kind should be one of"):
        make_batch(0, "visit", {}, {})
