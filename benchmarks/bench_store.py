"""Store benchmarks: ingest against raw sqlite3, dashboard queries at ImageNet scale, and the
cost of recording while training. Each prints its figures; run on demand.

    .venv/bin/python benchmarks/bench_store.py ingest [--rows 1000000]
    .venv/bin/python benchmarks/bench_store.py scale [--samples 1281167 --epochs 30 --keep DIR]
    .venv/bin/python benchmarks/bench_store.py queries [--db sqlite:////tmp/scale/scale.db]
    .venv/bin/python benchmarks/bench_store.py training [--epochs 3 --repeats 7 --pairs 12]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import text
from sqlalchemy.orm import Session

from datasetq import HeapqSampler, Recorder
from datasetq.store.batches import make_batch
from datasetq.store.engine import create_store_engine
from datasetq.store.ingest import now, store_batch
from datasetq.store.migrations import upgrade
from datasetq.store.runs import require_run, review_counts, run_epochs
from datasetq.store.samples import Filters, sample_detail, sample_page


def fresh_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def raw_executemany(path: Path, ids: np.ndarray, losses: np.ndarray) -> float:
    """Rows/s of plain sqlite3 executemany of six-column rows into a bare table."""
    fresh_sqlite(path)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute(
        "CREATE TABLE events (run INTEGER, epoch INTEGER, step INTEGER, sample INTEGER, "
        "loss REAL, visits INTEGER)"
    )
    n = len(ids)
    rows = list(
        zip([1] * n, [0] * n, range(n), ids.tolist(), losses.tolist(), [1] * n, strict=True)
    )
    start = time.perf_counter()
    for k in range(0, n, 50_000):
        connection.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows[k : k + 50_000])
        connection.commit()
    elapsed = time.perf_counter() - start
    connection.close()
    return n / elapsed


class Indexed(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.targets = np.zeros(n, dtype=np.int64)
        self.classes = ["only"]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return index, index


def writer_ingest(path: Path, ids: np.ndarray, losses: np.ndarray, n_samples: int) -> float:
    """Rows/s of the recorder's writer storing visits batches of 50,000 rows."""
    fresh_sqlite(path)
    url = f"sqlite:///{path}"
    with Recorder(url, run="setup", dataset=Indexed(n_samples), record_visits=True):
        pass
    engine = create_store_engine(url, write=True)
    n = len(ids)
    start = time.perf_counter()
    for k in range(0, n, 50_000):
        batch = make_batch(
            10_000 + k,
            "visits",
            {"epoch": 0},
            {"sample_id": ids[k : k + 50_000], "loss": losses[k : k + 50_000]},
        )
        with engine.begin() as connection:
            store_batch(connection, 1, batch)
    rate = n / (time.perf_counter() - start)
    engine.dispose()
    return rate


def recorder_end_to_end(
    path: Path, ids: np.ndarray, losses: np.ndarray, n_samples: int
) -> tuple[float, float]:
    """Seconds per ``update`` on the training thread, and seconds until ``close()`` returns
    (visits stream plus the epoch's per-sample statistics, all delivered)."""
    fresh_sqlite(path)
    dataset = Indexed(n_samples)
    recorder = Recorder(f"sqlite:///{path}", run="e2e", dataset=dataset, record_visits=True)
    recorder.open()
    sampler = HeapqSampler(dataset, recorder=recorder, seed=0)
    recorder.on_epoch_start(sampler, 0)
    calls, start = 0, time.perf_counter()
    for k in range(0, len(ids), 256):
        sampler.update(ids[k : k + 256], {"loss": losses[k : k + 256]})
        calls += 1
    per_update = (time.perf_counter() - start) / calls
    recorder.close()
    return per_update, time.perf_counter() - start


def bench_ingest(rows: int, n_samples: int, repeats: int = 3) -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, n_samples, rows)
    losses = rng.random(rows).astype(np.float32)
    raws, writers = [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):  # interleaved, so machine noise hits both alike
            raws.append(raw_executemany(Path(folder) / "raw.db", ids, losses.astype(np.float64)))
            writers.append(writer_ingest(Path(folder) / "rec.db", ids, losses, n_samples))
        per_update, total = recorder_end_to_end(Path(folder) / "e2e.db", ids, losses, n_samples)
    ratios = [w / r for w, r in zip(writers, raws, strict=True)]
    print(
        f"ingest of {rows:,} loss reports over {n_samples:,} samples (SQLite), {repeats} interleaved runs:"
    )
    print(
        f"  raw sqlite3 executemany, bare 6-column table: {', '.join(f'{r:,.0f}' for r in raws)} rows/s"
    )
    print(
        f"  recorder writer (visits batches):             {', '.join(f'{w:,.0f}' for w in writers)} rows/s"
    )
    print(
        f"  ratio writer / raw: median {statistics.median(ratios):.2f}x (runs: {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    print(
        f"  training thread: one sampler.update of 256 losses, recorder attached: {per_update * 1e6:.0f} us"
    )
    print(f"  until close() returned (stream + statistics of {n_samples:,} samples): {total:.1f} s")


def insert_samples(engine, samples: int, rng: np.random.Generator) -> None:
    """The dataset's sample rows (labels of 1000 classes), as a registration would."""
    from datasetq.store.ingest import bulk_insert

    labels = rng.integers(0, 1000, samples).tolist()
    with engine.begin() as connection:
        bulk_insert(
            connection,
            "samples",
            ("dataset_id", "sample_id", "original_label", "current_label", "source", "flagged"),
            zip(
                [1] * samples,
                range(samples),
                labels,
                labels,
                [None] * samples,
                [False] * samples,
                strict=True,
            ),
        )


def bench_scale(samples: int, epochs: int, keep: Path | None) -> None:
    folder = tempfile.mkdtemp() if keep is None else str(keep)
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / "scale.db"
    fresh_sqlite(path)
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = create_store_engine(url, write=True)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO datasets (name, num_samples, class_names, render, fingerprint, created_at)"
                " VALUES ('imagenet-like', :n, '[]', '{\"kind\": \"none\"}', 'x', :t)"
            ),
            {"n": samples, "t": now()},
        )
        connection.execute(
            text(
                "INSERT INTO runs (name, dataset_id, config, status, started_at, heartbeat_at, epochs)"
                " VALUES ('scale', 1, '{}', 'finished', :t, :t, 0)"
            ),
            {"t": now()},
        )
    rng = np.random.default_rng(0)
    ids = np.arange(samples, dtype=np.int64)
    insert_samples(engine, samples, rng)
    visits = np.zeros(samples, dtype=np.int64)
    loss_sum = np.zeros(samples)
    loss_max = np.zeros(samples)
    start = time.perf_counter()
    for epoch in range(epochs):
        loss = rng.gamma(1.0, 1.0 / (epoch + 1), samples)
        visits += 1
        loss_sum += loss
        loss_max = np.maximum(loss_max, loss)
        evicted = np.where(rng.random(samples) < 0.001 * epoch, epoch, -1)
        batch = make_batch(
            epoch,
            "epoch",
            {
                "epoch": epoch,
                "draws": samples,
                "evicted_total": int((evicted >= 0).sum()),
                "evicted_new": 0,
                "summary": {"visit_histogram": np.bincount(visits).tolist()},
            },
            {
                "epoch_ids": ids,
                "epoch_visits": np.ones(samples, np.int64),
                "epoch_losses": loss.astype(np.float32),  # one visit each
                "state_ids": ids,
                "state_visits": visits,
                "state_reports": visits,
                "state_last": loss,
                "state_mean": loss_sum / visits,
                "state_max": loss_max,
                "state_last_epoch": np.full(samples, epoch),
                "state_evicted_epoch": evicted,
                "state_pred": np.full(samples, -1),
                "state_margin": np.full(samples, np.nan),
                "state_score": loss_sum / visits,  # one report per epoch: the coverage mean
                "state_coverage_epochs": visits,
                "state_evidence_score": np.where(evicted >= 0, loss_sum / visits, np.nan),
                "state_wrong_since": np.where(evicted >= 0, max(epoch - 2, 0), -1),
            },
        )
        with engine.begin() as connection:
            store_batch(connection, 1, batch)
        print(
            f"  epoch {epoch + 1}/{epochs} stored ({time.perf_counter() - start:.0f} s)", flush=True
        )
    engine.dispose()
    size_gb = (
        sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal") if os.path.exists(f"{path}{s}"))
        / 1e9
    )
    print(
        f"{samples:,} samples x {epochs} epochs in SQLite: file {size_gb:.2f} GB; "
        f"build {time.perf_counter() - start:.0f} s"
    )
    print("queries right after the build, in the building process:")
    measure_queries(url, samples, epochs, rng)


def bench_queries(url: str) -> None:
    """The scale queries on a database ``scale --keep`` left, in a fresh process."""
    reader = create_store_engine(url)
    with reader.connect() as connection:
        samples, epochs = connection.execute(
            text(
                "SELECT d.num_samples, r.epochs FROM runs r JOIN datasets d ON d.id = r.dataset_id"
            )
        ).one()
    reader.dispose()
    print(f"{samples:,} samples x {epochs} epochs ({url}), in a fresh process:")
    measure_queries(url, samples, epochs, np.random.default_rng(1))


def measure_queries(url: str, samples: int, epochs: int, rng: np.random.Generator) -> None:
    """p50 / p95 of the store functions behind the dashboard's routes, 200 calls each."""
    reader = create_store_engine(url)
    timings: dict[str, list[float]] = {
        "run summary (epochs, counts)": [],
        "top-60 by suspicion": [],
        "evicted, by suspicion": [],
        "one sample's detail": [],
    }
    with Session(reader) as session:
        run = require_run(session, 1)
        for _ in range(200):
            t = time.perf_counter()
            run_epochs(session, 1)
            review_counts(session, run.dataset.id)
            timings["run summary (epochs, counts)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            sample_page(session, run, "score", True, 60, None, Filters())
            timings["top-60 by suspicion"].append(time.perf_counter() - t)
            t = time.perf_counter()
            sample_page(session, run, "score", True, 60, None, Filters(evicted=True))
            timings["evicted, by suspicion"].append(time.perf_counter() - t)
            t = time.perf_counter()
            sample_detail(session, run, int(rng.integers(samples)), "score")
            timings["one sample's detail"].append(time.perf_counter() - t)
    reader.dispose()
    for name, values in timings.items():
        p50, p95 = np.percentile(values, [50, 95]) * 1e3
        print(f"  {name:<30} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms")


def thread_cpu_seconds(thread) -> float:
    """CPU seconds another thread has used so far (Linux, macOS)."""
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


class TimedRecorder(Recorder):
    """A Recorder that adds up the time its sampler hooks take on the training thread."""

    hook_seconds = 0.0

    def on_update(self, sampler, ids, metrics):
        start = time.perf_counter()
        super().on_update(sampler, ids, metrics)
        self.hook_seconds += time.perf_counter() - start

    def on_epoch_start(self, sampler, epoch):
        start = time.perf_counter()
        super().on_epoch_start(sampler, epoch)
        self.hook_seconds += time.perf_counter() - start


def bench_training(epochs: int, repeats: int) -> None:
    """Wall time of training with and without the recorder, interleaved. The whole run counts
    opening a fresh database (schema, dataset registration) and closing (delivery of
    everything); the per-epoch figure is the steady state, from the epochs' own timings."""
    from datasetq.training import TrainConfig, make_splits, train_mnist

    torch.set_num_threads(2)
    config = TrainConfig(epochs=epochs, sampler_options={"max_visits": 10})
    splits = make_splits(config)
    train_mnist(TrainConfig(epochs=1, train_size=1000))  # warm caches and the allocator
    times: dict[str, list[float]] = {"off": [], "on": []}
    epoch_times: dict[str, list[float]] = {"off": [], "on": []}
    opening, closing, hooks, writer = [], [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            for mode in ("off", "on") if repeat % 2 == 0 else ("on", "off"):

                def on_epoch(stats, _sampler, mode=mode):
                    epoch_times[mode].append(stats.seconds)

                if mode == "off":
                    start = time.perf_counter()
                    train_mnist(config, on_epoch=on_epoch, splits=splits)
                    times[mode].append(time.perf_counter() - start)
                    continue
                url = f"sqlite:///{Path(folder) / f'train-{repeat}.db'}"
                holder: dict[str, TimedRecorder] = {}

                def factory(dataset, url=url, holder=holder):
                    begin = time.perf_counter()
                    holder["recorder"] = TimedRecorder(url, run="bench", dataset=dataset).open()
                    opening.append(time.perf_counter() - begin)
                    return HeapqSampler(
                        dataset,
                        shuffle=True,
                        seed=config.seed,
                        max_visits=10,
                        recorder=holder["recorder"],
                    )

                start = time.perf_counter()
                train_mnist(config, sampler_factory=factory, on_epoch=on_epoch, splits=splits)
                begin = time.perf_counter()
                writer.append(thread_cpu_seconds(holder["recorder"]._writer._thread))
                holder["recorder"].close()
                closing.append(time.perf_counter() - begin)
                times[mode].append(time.perf_counter() - start)
                hooks.append(holder["recorder"].hook_seconds)
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    paired = sorted(b / a - 1 for a, b in zip(times["off"], times["on"], strict=True))
    epoch_off, epoch_on = (statistics.median(epoch_times[m]) for m in ("off", "on"))
    print(
        f"small CNN, {epochs} epochs of 8k MNIST on CPU, {repeats} interleaved pairs: recorder "
        f"off {off:.2f} s, on {on:.2f} s (medians); whole-run overhead: median of pairs "
        f"{100 * statistics.median(paired):+.1f}% (interquartile "
        f"{100 * paired[len(paired) // 4]:+.1f}% to {100 * paired[(3 * len(paired)) // 4]:+.1f}%), "
        f"best vs best "
        f"{100 * (min(times['on']) / min(times['off']) - 1):+.1f}%"
    )
    print(
        f"  of which: opening a fresh database {statistics.median(opening):.2f} s, closing "
        f"(delivering the last epoch) {statistics.median(closing):.2f} s; steady-state epoch "
        f"{epoch_off:.3f} s off, {epoch_on:.3f} s on ({100 * (epoch_on / epoch_off - 1):+.1f}%)"
    )
    attributed = [o + h + c + w for o, h, c, w in zip(opening, hooks, closing, writer, strict=True)]
    print(
        f"  attributed to the recorder, per run (medians): training thread "
        f"{1e3 * statistics.median(opening):.0f} ms opening + "
        f"{1e3 * statistics.median(hooks):.0f} ms in sampler hooks + "
        f"{1e3 * statistics.median(closing):.0f} ms closing (waiting for the last batch), "
        f"writer thread {1e3 * statistics.median(writer):.0f} ms CPU before closing; together "
        f"{100 * statistics.median(attributed) / off:.1f}% of a run (the writer's CPU counted in "
        f"full, as if training stood still meanwhile)"
    )
    shown = {mode: ", ".join(f"{t:.2f}" for t in values) for mode, values in times.items()}
    print(f"  all runs (s): off [{shown['off']}], on [{shown['on']}]")


def bench_training_epochs(pairs: int) -> None:
    """Steady-state cost per epoch, paired: one process alternates epochs of two samplers,
    one with a recorder attached (to one open database), one without. Pairing epochs next to
    each other cancels most of this machine's slow drifts, which whole runs cannot."""
    from datasetq.training import TrainConfig, make_splits, train_mnist

    torch.set_num_threads(2)
    config = TrainConfig(epochs=1, sampler_options={"max_visits": 10})
    splits = make_splits(config)
    times: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as folder:
        recorder = Recorder(
            f"sqlite:///{Path(folder) / 'paired.db'}", run="paired", dataset=splits[0]
        )
        recorder.open()
        samplers = {
            "off": HeapqSampler(splits[0], shuffle=True, seed=0, max_visits=10),
            "on": HeapqSampler(splits[0], shuffle=True, seed=0, max_visits=10, recorder=recorder),
        }
        for pair in range(pairs + 1):  # the first pair warms up
            if pair and pair % 8 == 0:  # before max_visits has evicted every sample
                for sampler in samplers.values():
                    sampler.reset()
            for mode in ("off", "on") if pair % 2 == 0 else ("on", "off"):
                start = time.perf_counter()
                train_mnist(config, sampler_factory=lambda _, m=mode: samplers[m], splits=splits)
                if pair:
                    times[mode].append(time.perf_counter() - start)
        recorder.close()
    ratios = sorted(b / a - 1 for a, b in zip(times["off"], times["on"], strict=True))
    print(
        f"paired epochs (train + evaluate, {pairs} pairs): recorder off "
        f"{statistics.median(times['off']):.3f} s, on {statistics.median(times['on']):.3f} s; "
        f"median of pairs {100 * statistics.median(ratios):+.1f}%, interquartile "
        f"{100 * ratios[len(ratios) // 4]:+.1f}% to {100 * ratios[(3 * len(ratios)) // 4]:+.1f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ingest = commands.add_parser("ingest")
    ingest.add_argument("--rows", type=int, default=1_000_000)
    ingest.add_argument("--samples", type=int, default=1_281_167)
    scale = commands.add_parser("scale")
    scale.add_argument("--samples", type=int, default=1_281_167)
    scale.add_argument("--epochs", type=int, default=30)
    scale.add_argument("--keep", type=Path, default=None, help="folder to keep the database in")
    queries = commands.add_parser("queries", help="the scale queries on a kept database")
    queries.add_argument("--db", default="sqlite:////tmp/scale/scale.db")
    training = commands.add_parser("training")
    training.add_argument("--epochs", type=int, default=3)
    training.add_argument("--repeats", type=int, default=7)
    training.add_argument("--pairs", type=int, default=12, help="paired epochs (0: skip)")
    args = parser.parse_args()
    if args.command == "ingest":
        bench_ingest(args.rows, args.samples)
    elif args.command == "scale":
        bench_scale(args.samples, args.epochs, args.keep)
    elif args.command == "queries":
        bench_queries(args.db)
    else:
        if args.repeats:
            bench_training(args.epochs, args.repeats)
        if args.pairs:
            bench_training_epochs(args.pairs)


if __name__ == "__main__":
    main()
