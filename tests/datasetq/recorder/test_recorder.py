"""The recorder against real databases: what training reported is what the store holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from datasetq import HeapqSampler, Recorder, StoreError
from datasetq.store.batches import make_batch
from datasetq.store.engine import create_store_engine
from datasetq.store.ingest import store_batch
from datasetq.store.models import (
    DatasetRecord,
    EvictionRecord,
    RunEpochRecord,
    RunRecord,
    SampleRecord,
    SampleStateRecord,
    VisitRecord,
)
from datasetq.store.runs import effective_status, require_run, run_epochs
from datasetq.store.samples import Filters, sample_page, sample_trajectory

from ..recording import TinyDataset, train_recorded


def read(url, statement):
    engine = create_store_engine(url)
    try:
        with Session(engine) as session:
            return session.execute(statement).all()
    finally:
        engine.dispose()


def test_records_a_run_completely(store_url):
    dataset = TinyDataset(60)
    with Recorder(
        store_url, run="tiny", dataset=dataset, config={"lr": 0.1}, record_visits=True
    ) as recorder:
        sampler, reports = train_recorded(recorder, dataset, epochs=4, max_visits=3)
    assert recorder.report.ok
    assert recorder.report.duplicates == 0
    assert recorder.report.delivered >= 4  # an epoch batch per epoch, at least
    assert 0 < recorder.report.cpu_seconds < 60  # what the background writer cost

    (run,) = read(store_url, select(RunRecord))
    assert (run[0].status, run[0].epochs, run[0].config["lr"]) == ("finished", 4, 0.1)
    (ds,) = read(store_url, select(DatasetRecord))
    assert ds[0].class_names == ["cat", "dog", "bird"]
    labels = read(store_url, select(SampleRecord.original_label).order_by(SampleRecord.sample_id))
    assert [r[0] for r in labels] == dataset.targets

    # Every reported loss is stored once, in order.
    visits = read(
        store_url,
        select(VisitRecord.epoch, VisitRecord.sample_id, VisitRecord.loss).order_by(VisitRecord.id),
    )
    expected = [
        (e, i, loss) for e, ids, losses in reports for i, loss in zip(ids, losses, strict=True)
    ]
    assert [(e, i) for e, i, _ in visits] == [(e, i) for e, i, _ in expected]
    np.testing.assert_allclose([v[2] for v in visits], [x[2] for x in expected], rtol=1e-6)

    # Latest state agrees with the sampler.
    state = read(
        store_url,
        select(
            SampleStateRecord.sample_id,
            SampleStateRecord.visits,
            SampleStateRecord.last_loss,
            SampleStateRecord.evicted_epoch,
            SampleStateRecord.last_pred,
        ).order_by(SampleStateRecord.sample_id),
    )
    assert [r[1] for r in state] == sampler.visits.tolist()
    np.testing.assert_allclose([r[2] for r in state], sampler.loss, rtol=1e-6)
    evicted_ids, evicted_epochs = sampler.evictions
    stored_evictions = {r[0]: r[3] for r in state if r[3] is not None}
    assert stored_evictions == dict(zip(evicted_ids.tolist(), evicted_epochs.tolist(), strict=True))
    assert stored_evictions, "max_visits=3 should evict the always-hard samples"
    assert all(r[4] == 0 for r in state)
    events = read(store_url, select(EvictionRecord.sample_id, EvictionRecord.epoch))
    assert sorted(events) == sorted(stored_evictions.items())

    # Per-epoch rows and summaries.
    epochs = read(store_url, select(RunEpochRecord).order_by(RunEpochRecord.epoch))
    assert [e[0].epoch for e in epochs] == [0, 1, 2, 3]
    assert [e[0].draws for e in epochs] == [60, 60, 60, 60]
    assert epochs[-1][0].evicted_total == len(evicted_ids)


def test_queries_answer_what_the_dashboard_asks(store_url):
    dataset = TinyDataset(60)
    with Recorder(store_url, run="q", dataset=dataset) as recorder:
        sampler, reports = train_recorded(recorder, dataset, epochs=3)
    engine = create_store_engine(store_url)
    try:
        with Session(engine) as session:
            run_id = session.execute(select(RunRecord.id)).scalar_one()
            run = require_run(session, run_id)
            page = sample_page(session, run, "loss", True, 5, None, Filters())
            expected_top = np.argsort(-sampler.loss, kind="stable")[:5]
            assert sorted(r.sample_id for r in page.items) == sorted(expected_top.tolist())
            assert page.total == len(dataset)
            trajectory = sample_trajectory(session.connection(), run_id, 10, epochs=3)
            mine = [
                (e, loss)
                for e, ids, losses in reports
                for i, loss in zip(ids, losses, strict=True)
                if i == 10
            ]
            assert [v[0] for v in trajectory["visits"]] == [e for e, _ in mine]
            per_epoch = {row[0]: row for row in trajectory["epochs"]}
            for epoch in {e for e, _ in mine}:
                values = [loss for e, loss in mine if e == epoch]
                assert per_epoch[epoch][1] == len(values)
                assert per_epoch[epoch][2] == pytest.approx(values[-1], rel=1e-6)
                assert per_epoch[epoch][3] == pytest.approx(np.mean(values), rel=1e-6)
                assert per_epoch[epoch][4] == pytest.approx(max(values), rel=1e-6)
            histogram = run_epochs(session, run_id)[-1].summary["visit_histogram"]
            assert histogram == np.bincount(sampler.visits).tolist()
    finally:
        engine.dispose()


def test_a_batch_sent_twice_is_stored_once(store_url):
    dataset = TinyDataset(30)
    recorder = Recorder(store_url, run="dup", dataset=dataset, record_visits=True).open()
    recorder.close()
    batch = make_batch(
        10_000, "visits", {"epoch": 0}, {"sample_id": np.arange(5), "loss": np.ones(5)}
    )
    engine = create_store_engine(store_url, write=True)
    try:
        with engine.begin() as connection:
            assert store_batch(connection, recorder.run_id, batch) is True
        with engine.begin() as connection:
            assert store_batch(connection, recorder.run_id, batch) is False
        with engine.connect() as connection:
            assert (
                connection.execute(select(func.count()).select_from(VisitRecord)).scalar_one() == 5
            )
    finally:
        engine.dispose()


def test_a_run_can_be_continued(store_url):
    dataset = TinyDataset(30)
    with Recorder(store_url, run="cont", dataset=dataset) as recorder:
        first, _ = train_recorded(recorder, dataset, epochs=2)
    state = first.state_dict()
    with Recorder(store_url, run="cont", dataset=dataset) as recorder:
        sampler = HeapqSampler(dataset, recorder=recorder, seed=0, chunk_size=8)
        sampler.load_state_dict(state)
        for epoch in range(2, 4):
            drawn = list(sampler)
            sampler.update(drawn, {"loss": np.full(len(drawn), float(epoch))})
    runs = read(store_url, select(RunRecord.epochs, RunRecord.status))
    assert runs == [(4, "finished")]
    reports = read(
        store_url, select(SampleStateRecord.visits).order_by(SampleStateRecord.sample_id)
    )
    assert [r[0] for r in reports] == sampler.visits.tolist()
    batches = read(store_url, text("SELECT COUNT(*), COUNT(DISTINCT seq) FROM ingest_batches"))
    assert batches[0][0] == batches[0][1]


def test_several_runs_share_one_dataset(store_url):
    dataset = TinyDataset(30)
    for name in ("a", "b"):
        with Recorder(store_url, run=name, dataset=dataset) as recorder:
            train_recorded(recorder, dataset, epochs=1)
    assert read(store_url, select(func.count()).select_from(DatasetRecord)) == [(1,)]
    assert read(store_url, select(func.count()).select_from(RunRecord)) == [(2,)]


def test_bad_arguments(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(ValueError, match="dataset should be"):
        Recorder(url, run="r")
    with pytest.raises(ValueError, match="run should be a name"):
        Recorder(url, run="", dataset=TinyDataset())
    with pytest.raises(ValueError, match="labels should hold one label per sample"):
        Recorder(url, run="r", dataset=TinyDataset(5), labels=[1, 2])


def test_interrupted_status_comes_from_the_heartbeat():
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    assert effective_status("running", now, now) == "running"
    assert effective_status("running", now - timedelta(minutes=5), now) == "interrupted"
    assert effective_status("finished", now - timedelta(days=1), now) == "finished"


def test_per_visit_losses_across_id_blocks(store_url):
    """Per-visit losses come back per sample, in order, from every block of 4096 ids."""
    dataset = TinyDataset(9000)
    rng = np.random.default_rng(1)
    sent: dict[tuple[int, int], list[float]] = {}
    with Recorder(store_url, run="blocks", dataset=dataset, record_visits=False) as recorder:
        sampler = HeapqSampler(dataset, recorder=recorder, seed=0)
        for epoch in range(2):
            sampler.set_epoch(epoch)
            iterator = iter(sampler)
            next(iterator)  # starts the epoch
            for _ in range(20):
                ids = rng.integers(0, 9000, 500)
                losses = rng.random(500).astype(np.float32)
                sampler.update(ids, {"loss": losses})
                for i, loss in zip(ids.tolist(), losses.tolist(), strict=True):
                    sent.setdefault((epoch, i), []).append(loss)
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as connection:
            run_id = connection.execute(select(RunRecord.id)).scalar_one()
            for sample_id in (0, 4095, 4096, 8191, 8999, int(rng.integers(9000))):
                trajectory = sample_trajectory(connection, run_id, sample_id, epochs=2)
                expected = [[e, v] for e in range(2) for v in sent.get((e, sample_id), [])]
                assert [e for e, _ in trajectory["visits"]] == [e for e, _ in expected]
                np.testing.assert_allclose(
                    [v for _, v in trajectory["visits"]], [v for _, v in expected], rtol=1e-6
                )
                assert [row[1] for row in trajectory["epochs"]] == [
                    len(sent[(e, sample_id)]) for e in range(2) if (e, sample_id) in sent
                ]
    finally:
        engine.dispose()


def test_relabels_reach_the_wrapped_dataset_between_epochs(tmp_path):
    from datasetq.store.ingest import now as stamp
    from datasetq.store.models import LabelChangeRecord

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    dataset = TinyDataset(12)
    with Recorder(url, run="relabel", dataset=dataset) as recorder:
        wrapped = recorder.wrap(dataset)
        sampler = HeapqSampler(wrapped, recorder=recorder, seed=0)
        list(sampler)
        assert wrapped[4] == (4, (wrapped[4][1][0], 1))
        engine = create_store_engine(url, write=True)
        with engine.begin() as connection:
            connection.execute(
                LabelChangeRecord.__table__.insert(),
                [
                    {
                        "dataset_id": recorder.dataset_id,
                        "sample_id": 4,
                        "old_label": 1,
                        "new_label": 2,
                        "reason": None,
                        "author": "me",
                        "created_at": stamp(),
                    }
                ],
            )
        engine.dispose()
        recorder._background_poll()  # what the writer thread does every second
        assert wrapped[4][1][1] == 1  # not before the next epoch
        list(sampler)
        assert wrapped[4][1][1] == 2
        assert wrapped[5][1][1] == dataset.targets[5]


@pytest.mark.parametrize(("state_interval", "states_written"), [(0.0, 3), (3600.0, 1)])
def test_latest_state_is_written_every_state_interval_and_at_close(
    tmp_path, state_interval, states_written
):
    dataset = TinyDataset(30)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    recorder = Recorder(url, run="state", dataset=dataset, state_interval=state_interval).open()
    sent = []
    submit = recorder._writer.submit
    recorder._writer.submit = lambda batch: (sent.append(batch), submit(batch))
    train_recorded(recorder, dataset, epochs=3)
    recorder.close()
    epoch_batches = [b for b in sent if b.kind == "epoch"]
    assert len(epoch_batches) == 3
    with_state = [b for b in epoch_batches if len(b.arrays["state_ids"])]
    assert len(with_state) == states_written
    # Every epoch when the interval is 0; otherwise not before the interval has passed.
    assert (epoch_batches[0] in with_state) == (state_interval == 0)
    assert epoch_batches[-1] in with_state  # close writes the final state
    written = {i for b in with_state for i in b.arrays["state_ids"].tolist()}
    assert written == set(range(30))
    (count,) = read(url, select(func.count()).select_from(SampleStateRecord))
    assert count[0] == 30


def test_registers_every_sample_label_and_source(store_url, tmp_path, monkeypatch):
    """Sample rows carry the dataset's labels and where each sample comes from, also when the
    registration is cut into several statements and names need escaping."""
    from torchvision.datasets import ImageFolder

    from datasetq.store import registration

    monkeypatch.setattr(registration, "JSON_CHUNK", 4)  # 11 samples: three statements
    names = ["a.png", "ä ö.png", 'quote".png', "back\\slash.png", "tab\tname.png", "€.png"]
    for label, folder in enumerate(("cats", "dogs")):
        (tmp_path / "images" / folder).mkdir(parents=True)
        for name in names[: 6 - label]:
            (tmp_path / "images" / folder / name).write_bytes(b"")
    dataset = ImageFolder(str(tmp_path / "images"))
    assert len(dataset) == 11
    Recorder(store_url, run="sources", dataset=dataset).open().close()
    rows = read(
        store_url,
        select(
            SampleRecord.sample_id,
            SampleRecord.original_label,
            SampleRecord.current_label,
            SampleRecord.source,
            SampleRecord.flagged,
        ).order_by(SampleRecord.sample_id),
    )
    root = tmp_path / "images"
    expected = [
        (i, label, label, str(Path(path).relative_to(root)), False)
        for i, (path, label) in enumerate(dataset.samples)
    ]
    assert [tuple(r) for r in rows] == expected


def test_stores_the_suspicion_score_and_the_eviction_evidence(store_url):
    """The store's score is the sampler's: each epoch's first report per sample, averaged;
    samples evicted on evidence carry their score then and the epoch the evidence began."""
    dataset = TinyDataset(60)
    with Recorder(store_url, run="evidence", dataset=dataset, state_interval=0) as recorder:
        # Fixed evidence: the 10% always-hard samples are evicted within 4 epochs.
        sampler, _ = train_recorded(recorder, dataset, epochs=4, evidence=2, evidence_odds=None)
    evicted_ids, scores, since = sampler.eviction_evidence
    assert sorted(evicted_ids.tolist()) == list(range(0, 60, 10))  # the always-hard ones
    rows = read(
        store_url,
        select(
            SampleStateRecord.sample_id,
            SampleStateRecord.score,
            SampleStateRecord.coverage_epochs,
            SampleStateRecord.evidence_score,
            SampleStateRecord.wrong_since,
            SampleStateRecord.evicted_epoch,
        ),
    )
    stored = {r[0]: r[1:] for r in rows}
    suspicion = sampler.suspicion
    for sample_id, (score, covered, evidence, wrong_since, evicted_epoch) in stored.items():
        assert score == pytest.approx(suspicion[sample_id], rel=1e-6)
        assert covered == sampler._coverage.epochs[sample_id]
        if sample_id in evicted_ids:
            position = evicted_ids.tolist().index(sample_id)
            assert evidence == pytest.approx(scores[position], rel=1e-6)
            assert wrong_since == since[position] == 1
            assert evicted_epoch == 2
        else:
            assert (evidence, wrong_since, evicted_epoch) == (None, None, None)


def test_a_second_live_recorder_on_a_run_is_refused_and_a_dead_one_is_taken_over(store_url):
    dataset = TinyDataset(20)
    first = Recorder(store_url, run="one-writer", dataset=dataset).open()
    try:
        with pytest.raises(StoreError, match=r"'one-writer' is being recorded by .+:\d+/"):
            Recorder(store_url, run="one-writer", dataset=dataset).open()
    finally:
        first.close()
    # Closed: the run continues under a new recorder.
    Recorder(store_url, run="one-writer", dataset=dataset).open().close()
    # A writer that died leaves the run "running" with a heartbeat that stopped: taken over.
    dead = Recorder(store_url, run="one-writer", dataset=dataset).open()
    dead.close()
    engine = create_store_engine(store_url, write=True)
    try:
        with engine.begin() as connection:
            connection.execute(
                update(RunRecord).values(
                    status="running",
                    heartbeat_at=datetime.now(UTC) - timedelta(minutes=5),
                    writer=dead.writer,
                )
            )
        taker = Recorder(store_url, run="one-writer", dataset=dataset).open()
        taker.close()
        with engine.connect() as connection:
            writer = connection.execute(select(RunRecord.writer)).scalar_one()
        assert writer == taker.writer != dead.writer
    finally:
        engine.dispose()


def test_a_continued_run_restores_its_sums(store_url):
    """Mean loss and suspicion over both parts of a run continued by a new Recorder."""
    dataset = TinyDataset(30)
    with Recorder(store_url, run="continued", dataset=dataset) as recorder:
        _, reports_1 = train_recorded(recorder, dataset, epochs=2)
    with Recorder(store_url, run="continued", dataset=dataset) as recorder:
        _, reports_2 = train_recorded(recorder, dataset, epochs=2)
    every = [
        loss
        for reports in (reports_1, reports_2)
        for _, ids, losses in reports
        for i, loss in zip(ids, losses, strict=True)
        if i == 7
    ]
    stored = read(
        store_url,
        select(SampleStateRecord.mean_loss, SampleStateRecord.loss_reports).where(
            SampleStateRecord.sample_id == 7
        ),
    )
    mean, count = stored[0]
    assert count == len(every)
    assert mean == pytest.approx(np.mean(every), rel=1e-5)
