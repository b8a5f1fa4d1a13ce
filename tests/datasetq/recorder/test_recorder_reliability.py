"""Reliability of recording with real processes: concurrent writers, kill -9, an unavailable
store, forked DataLoader workers, and dashboard decisions reaching a running job."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from datasetq import DataLoader, HeapqSampler, Recorder
from datasetq.store.engine import create_store_engine
from datasetq.store.ingest import now
from datasetq.store.models import (
    DecisionRecord,
    IngestBatchRecord,
    LabelChangeRecord,
    RunRecord,
    VisitRecord,
)
from datasetq.store.runs import get_run
from datasetq.store.samples import Filters, sample_page
from tests.store_fixtures import postgres_schema_url

from ..recording import TinyDataset, synthetic_loss

ROOT = Path(__file__).resolve().parents[3]
WRITER_SECONDS = float(os.environ.get("DATASETQ_STRESS_SECONDS", "4"))
# How long a writer may take to deliver its backlog at close; the full-length benchmark gives
# more, as 32 writers on a small machine submit faster than one PostgreSQL can take.
CLOSE_TIMEOUT = os.environ.get("DATASETQ_STRESS_CLOSE_TIMEOUT", "120")


def worker(url: str, run: str, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.datasetq.recording_worker",
            "--url",
            url,
            "--run",
            run,
            *options,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def final_result(process: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return next(line for line in reversed(lines) if "submitted" in line)


def count(engine, statement) -> int:
    with engine.connect() as connection:
        return int(connection.execute(statement).scalar_one())


def assert_batches_complete(engine) -> None:
    """Every stored visits batch has all of its rows: no partial batch, nothing twice."""
    with engine.connect() as connection:
        per_run = connection.execute(
            select(IngestBatchRecord.run_id, func.sum(IngestBatchRecord.rows))
            .where(IngestBatchRecord.kind == "visits")
            .group_by(IngestBatchRecord.run_id)
        ).all()
        for run_id, rows in per_run:
            stored = connection.execute(
                select(func.count()).select_from(VisitRecord).where(VisitRecord.run_id == run_id)
            ).scalar_one()
            assert stored == rows, f"run {run_id}: {stored} visit rows for batches of {rows}"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_writers_lose_and_duplicate_nothing(backend, tmp_path):
    default = "8"
    writers = int(os.environ.get(f"DATASETQ_STRESS_WRITERS_{backend.upper()}", default))
    if backend == "sqlite":
        urls = iter_once(f"sqlite:///{tmp_path / 'shared.db'}")
    else:
        urls = postgres_schema_url()
    url = next(urls)
    stop = threading.Event()
    processes: list[subprocess.Popen] = []
    engine = None
    thread = None
    try:
        from datasetq.store.migrations import upgrade

        upgrade(url)
        engine = create_store_engine(url)
        reads = []

        def reader() -> None:  # a dashboard reading while everybody writes
            while not stop.is_set():
                with Session(engine) as session:
                    for run_id in range(1, writers + 1):
                        run = get_run(session, run_id)
                        if run is not None:
                            page = sample_page(session, run, "loss", True, 10, None, Filters())
                            reads.append(len(page.items))
                time.sleep(0.05)

        thread = threading.Thread(target=reader)
        thread.start()
        processes += [
            worker(
                url,
                f"writer-{i}",
                "--seconds",
                str(WRITER_SECONDS),
                "--n",
                "300",
                "--step-sleep",
                "0.002",
                "--close-timeout",
                CLOSE_TIMEOUT,
            )
            for i in range(writers)
        ]
        results = [final_result(p, timeout=300 + float(CLOSE_TIMEOUT)) for p in processes]
        stop.set()
        thread.join()
        assert reads, "the reader should have run"
        for result in results:
            assert result["report_ok"]
            assert result["duplicates"] == 0
        with engine.connect() as connection:
            for i, result in enumerate(results):
                run_id = connection.execute(
                    select(RunRecord.id).where(RunRecord.name == f"writer-{i}")
                ).scalar_one()
                stored = connection.execute(
                    select(func.count())
                    .select_from(VisitRecord)
                    .where(VisitRecord.run_id == run_id)
                ).scalar_one()
                assert stored == result["submitted"]  # 0 lost, 0 duplicated
        assert_batches_complete(engine)
        rows = sum(result["submitted"] for result in results)
        epochs = sum(result["epoch_count"] for result in results)
        drain = max(result["close_seconds"] for result in results)
        print(
            f"\n{backend}: {writers} writers x {WRITER_SECONDS:.0f} s: {rows} rows in {epochs} "
            f"epochs, all stored once; the slowest close (backlog delivery) took {drain:.1f} s; "
            f"{len(reads)} dashboard reads"
        )
    finally:
        stop.set()  # the reader stops before its store goes away
        if thread is not None:
            thread.join()
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
        if engine is not None:
            engine.dispose()
        urls.close()


def iter_once(value):
    yield value


def test_kill_9_leaves_no_partial_batch_and_the_run_goes_on(tmp_path):
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    rng = random.Random(7)
    from datasetq.store.migrations import upgrade

    upgrade(url)
    for _ in range(5):
        process = worker(url, "killed", "--step-sleep", "0.002", "--flush-interval", "0.05")
        # Wait until it records, then kill it at a random moment of its recording.
        assert process.stdout is not None
        process.stdout.readline()  # "recording" marker
        time.sleep(rng.uniform(0.0, 1.5))
        process.send_signal(signal.SIGKILL)
        process.communicate()
    engine = create_store_engine(url)
    assert_batches_complete(engine)
    with engine.connect() as connection:
        status = connection.execute(select(RunRecord.status)).scalar_one()
    assert status == "running"  # shows as interrupted once its heartbeat is old
    # The next process continues the same run and finishes it cleanly.
    result = final_result(worker(url, "killed", "--epochs", "3"))
    assert result["report_ok"]
    assert_batches_complete(engine)
    with engine.connect() as connection:
        assert connection.execute(select(RunRecord.status)).scalar_one() == "finished"
        seqs = connection.execute(select(IngestBatchRecord.seq)).scalars().all()
    assert len(seqs) == len(set(seqs))
    engine.dispose()


def hold_lock(url: str, seconds: float, ready: threading.Event) -> None:
    """Makes the store unavailable to writers: an exclusive lock held for `seconds`."""
    if url.startswith("sqlite"):
        import sqlite3

        path = url.removeprefix("sqlite:///")
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        ready.set()
        time.sleep(seconds)
        connection.execute("COMMIT")
        connection.close()
        return
    engine = create_store_engine(url)
    with engine.begin() as connection:
        connection.execute(text("LOCK TABLE ingest_batches IN ACCESS EXCLUSIVE MODE"))
        ready.set()
        time.sleep(seconds)
    engine.dispose()


def test_store_unavailable_training_finishes_and_everything_arrives(store_url, tmp_path):
    dataset = TinyDataset(400)
    recorder = Recorder(
        store_url,
        run="outage",
        dataset=dataset,
        spill_dir=tmp_path / "spill",  # PostgreSQL's default is the working directory
        record_visits=True,
        flush_interval=0.05,
        lock_timeout=0.2,
        retry_interval=0.2,
    ).open()
    ready = threading.Event()
    blocker = threading.Thread(target=hold_lock, args=(store_url, 3.0, ready))
    blocker.start()
    ready.wait(10)
    writer = recorder._writer
    assert writer is not None
    sampler = HeapqSampler(dataset, recorder=recorder, seed=0, chunk_size=16)
    submitted, started, peak_queue = 0, time.monotonic(), 0
    for epoch in range(12):
        drawn = list(sampler)
        for i in range(0, len(drawn), 20):
            ids = drawn[i : i + 20]
            sampler.update(ids, {"loss": synthetic_loss(ids, epoch)})
            submitted += len(ids)
            peak_queue = max(peak_queue, writer._queue.qsize())
        time.sleep(0.1)
    training_seconds = time.monotonic() - started
    spilled_during_outage = writer.failures
    blocker.join()
    report = recorder.close()
    assert report is not None
    assert report.ok, report
    assert spilled_during_outage > 0, "the outage should have made writes fail and spill"
    assert peak_queue <= 64  # memory stays bounded: the rest waited on disk
    assert training_seconds < 10  # training never waited for the store
    engine = create_store_engine(store_url)
    assert count(engine, select(func.count()).select_from(VisitRecord)) == submitted
    assert_batches_complete(engine)
    engine.dispose()


def test_dataloader_with_forked_workers_while_recording(store_url):
    dataset = TinyDataset(128)
    with Recorder(
        store_url, run="workers", dataset=dataset, flush_interval=0.05, record_visits=True
    ) as recorder:
        sampler = HeapqSampler(dataset, recorder=recorder, seed=0, max_visits=5)
        context = torch.multiprocessing.get_context("fork")
        loader = DataLoader(
            dataset, batch_size=16, sampler=sampler, num_workers=2, multiprocessing_context=context
        )
        for epoch in range(3):
            for index, _ in loader:
                loader.update(
                    index, {"loss": torch.from_numpy(synthetic_loss(index.numpy(), epoch))}
                )
    assert recorder.report.ok
    engine = create_store_engine(store_url)
    assert count(engine, select(func.count()).select_from(VisitRecord)) == 3 * 128
    engine.dispose()


def test_dashboard_decisions_reach_a_running_job(store_url):
    process = worker(
        store_url, "live", "--epochs", "10", "--epoch-sleep", "0.6", "--n", "60", "--log-epochs"
    )
    engine = create_store_engine(store_url, write=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the job recorded an epoch
            try:
                if count(engine, select(func.coalesce(func.max(RunRecord.epochs), 0))) >= 1:
                    break
            except Exception:
                pass
            time.sleep(0.1)
        with engine.begin() as connection:
            dataset_id = connection.execute(
                select(RunRecord.dataset_id).where(RunRecord.name == "live")
            ).scalar_one()
            connection.execute(
                DecisionRecord.__table__.insert(),
                [
                    {
                        "dataset_id": dataset_id,
                        "run_id": None,
                        "sample_id": 7,
                        "action": "evict",
                        "author": "test",
                        "created_at": now(),
                    },
                ],
            )
            connection.execute(
                LabelChangeRecord.__table__.insert(),
                [
                    {
                        "dataset_id": dataset_id,
                        "sample_id": 5,
                        "old_label": 2,
                        "new_label": 0,
                        "reason": "fix",
                        "author": "test",
                        "created_at": now(),
                    },
                ],
            )
        result = final_result(process)
    finally:
        engine.dispose()
    epochs = result["epochs"]
    evicted_from = next(i for i, e in enumerate(epochs) if 7 not in e["drawn"])
    assert all(7 not in e["drawn"] for e in epochs[evicted_from:])
    assert evicted_from < len(epochs) - 1, "the decision should land between epochs, mid-run"
    assert 7 in result["evicted"]
    relabelled_from = next(i for i, e in enumerate(epochs) if e["labels"][5] == 0)
    assert all(e["labels"][5] == 0 for e in epochs[relabelled_from:])
    assert epochs[0]["labels"][5] == 2
