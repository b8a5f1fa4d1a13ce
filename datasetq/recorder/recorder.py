"""``Recorder``: streams a sampler's losses, visits and evictions into the store."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import threading
import time
import uuid
import warnings
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from .._distributed import default_world
from ..sampler import HeapqSampler, SamplerListener
from ..store.batches import make_batch
from ..store.engine import create_store_engine, is_sqlite
from ..store.migrations import ensure_schema
from ..store.opening import check_sqlite_path, store_errors
from ..store.recording import mark_ended, poll_decisions, restore_run
from ..store.registration import next_seq, register_dataset, register_run
from .aggregate import aggregate_epoch, epoch_summary
from .live_labels import LiveLabels
from .registry import DatasetDescription, describe_dataset
from .writer import BatchWriter, DeliveryReport

__all__ = ["Recorder"]

log = logging.getLogger("datasetq.recorder")

I64 = npt.NDArray[np.int64]
HEARTBEAT_SECONDS = 5.0


class Recorder(SamplerListener):
    r"""Records a training run into a SQLite file or a PostgreSQL database.

    Attach it to a sampler (``HeapqSampler(ds, recorder=rec)``): every update (ids, losses,
    extra metrics), every eviction and every epoch is recorded, off the training thread, in
    batches. Training never waits for the store and never fails because of it: when the store is
    slow or down, batches spill to files next to it and are replayed when it is back.

    Between epochs the recorder applies decisions made in the dashboard to the sampler (evict,
    reinstate) and to :attr:`labels` (relabels), which :meth:`wrap` serves to the training loop.

    Args:
        url (str): database URL. Default: ``"sqlite:///datasetq.db"``.
        run (str): the run's name; recording into an existing run continues it.
        dataset (Dataset): what the run trains on; its labels, classes and how to render its
            samples are registered (see :func:`describe_dataset`).
        dataset_name (str, optional): name to register the dataset under.
        labels, class_names, render: override what is found on ``dataset``.
        config (dict, optional): stored with the run (hyperparameters, ground truth).
        record_visits (bool): also keep the raw log of every reported loss in arrival order
            (the ``visits`` table). The per-visit losses of every epoch are stored either way,
            grouped by sample; the log adds only their order across samples, and costs the
            writer about a third more work. Default: ``False``.
        flush_interval (float): seconds between batches. Default: 1.0.
        state_interval (float): seconds between writes of the latest per-sample state (the
            dashboard's galleries), counted from :meth:`open`; the state is written at the
            first epoch end after each interval, and :meth:`close` writes the final state.
            Each epoch's statistics are written every epoch regardless. Fewer state writes
            leave the CPU to training when epochs are short; 0 writes every epoch.
            Default: 10.
        batch_rows (int): rows that trigger a batch before the interval. Default: 50,000
            (at most 2**20).
        spill_dir (str, optional): where undeliverable batches wait. Default: next to the
            SQLite file, or ``./datasetq-spill`` for other databases.
        close_timeout (float): seconds :meth:`close` waits for delivery. Default: 30.
        lock_timeout (float): seconds a write waits for a database lock before the batch
            spills (SQLite busy timeout, PostgreSQL ``lock_timeout``). Default: 30.
        retry_interval (float): seconds between retries of an unavailable store. Default: 1.

    Example::

        >>> with Recorder("sqlite:///datasetq.db", run="mnist-1", dataset=train_set) as rec:
        ...     sampler = HeapqSampler(train_set, max_visits=10, recorder=rec)
        ...     ...  # train as usual; sampler.update(...) reaches the recorder
    """

    def __init__(
        self,
        url: str = "sqlite:///datasetq.db",
        run: str = "run",
        dataset: Any = None,
        *,
        dataset_name: str | None = None,
        labels: Any = None,
        class_names: list[str] | None = None,
        render: Any = None,
        config: Mapping[str, Any] | None = None,
        record_visits: bool = False,
        flush_interval: float = 1.0,
        state_interval: float = 10.0,
        batch_rows: int = 50_000,
        spill_dir: str | Path | None = None,
        close_timeout: float = 30.0,
        lock_timeout: float = 30.0,
        retry_interval: float = 1.0,
    ) -> None:
        if dataset is None:
            raise ValueError("dataset should be the dataset the run trains on, but got None")
        if not isinstance(run, str) or not run.strip() or len(run) > 200 or "\x00" in run:
            raise ValueError(
                f"run should be a name of 1 to 200 characters without NUL, but got {run!r}"
            )
        if not isinstance(url, str) or not url:
            raise ValueError(
                f"url should be a database URL such as sqlite:///datasetq.db, not {url!r}"
            )
        if (
            isinstance(batch_rows, bool)
            or not isinstance(batch_rows, int)
            or not 0 < batch_rows <= 1 << 20
        ):
            raise ValueError(
                f"batch_rows should be an integer in [1, 2**20], but got {batch_rows!r}"
            )
        for name, value, allow_zero in (
            ("flush_interval", flush_interval, False),
            ("state_interval", state_interval, True),
            ("close_timeout", close_timeout, True),
            ("lock_timeout", lock_timeout, True),
            ("retry_interval", retry_interval, False),
        ):
            _check_seconds(name, value, allow_zero)
        self.url = url
        self.run_name = run
        # Who records: a second live Recorder on this run is refused with this name.
        self.writer = f"{socket.gethostname()}:{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._claims_run = True
        self.description: DatasetDescription = describe_dataset(
            dataset, name=dataset_name, labels=labels, class_names=class_names, render=render
        )
        self.config = json_config(config)
        n = self.description.num_samples
        self.record_visits = record_visits
        self.flush_interval = flush_interval
        self.state_interval = state_interval
        self.batch_rows = batch_rows
        self.close_timeout = close_timeout
        self.lock_timeout = lock_timeout
        self.retry_interval = retry_interval
        self.spill_dir = Path(spill_dir) if spill_dir is not None else _default_spill_dir(url)
        self.labels: I64 = (
            self.description.labels.copy()
            if self.description.labels is not None
            else np.full(n, -1, dtype=np.int64)
        )
        self.run_id: int | None = None
        self.dataset_id: int | None = None
        self.report: DeliveryReport | None = None
        self._engine: Engine | None = None
        self._writer: BatchWriter | None = None
        self._seq = 0
        self._epoch: int | None = None  # the epoch whose reports are being collected
        self._epoch_ids: list[I64] = []
        self._epoch_losses: list[npt.NDArray[np.float32]] = []
        self._visit_ids: list[I64] = []
        self._visit_losses: list[npt.NDArray[np.float32]] = []
        self._visit_rows = 0
        self._last_flush = time.monotonic()
        # Evicted at the last recorded epoch: a reinstated one needs its row rewritten.
        self._evicted_before: I64 = np.empty(0, np.int64)
        self._state_dirty = np.zeros(n, dtype=bool)  # changed since the last state write
        self._last_state_write = math.inf  # set when opened
        self._last_pred: npt.NDArray[np.int64] = np.full(n, -1, dtype=np.int64)
        self._last_margin = np.full(n, np.nan, dtype=np.float64)
        self._loss_sum = np.zeros(n, dtype=np.float64)
        self._loss_reports = np.zeros(n, dtype=np.int64)
        self._loss_max = np.full(n, np.nan, dtype=np.float64)
        self._last_loss = np.full(n, np.nan, dtype=np.float64)
        self._last_epoch = np.full(n, -1, dtype=np.int64)
        # Each epoch's first report per sample (its coverage visit): the suspicion score.
        self._coverage_sum = np.zeros(n, dtype=np.float64)
        self._coverage_epochs = np.zeros(n, dtype=np.int64)
        self._incoming: deque[tuple[str, int, int, int | None]] = deque()
        self._decision_cursor = 0
        self._label_cursor = 0
        self._lock = threading.Lock()
        self._sampler: HeapqSampler | None = None
        self._opened = False

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Recorder:
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(status="failed" if exc_type is not None else "finished")

    def open(self) -> Recorder:
        """Connects, creates or checks the schema, registers the dataset and the run."""
        if self._opened:
            return self
        # Under torch.distributed only rank 0 writes the run; the other ranks read decisions.
        self._claims_run = default_world()[1] == 0
        with store_errors(self.url):
            if is_sqlite(self.url):
                check_sqlite_path(self.url, create=True)
            engine = create_store_engine(self.url, write=True, lock_timeout=self.lock_timeout)
            try:
                ensure_schema(engine, self.url, create=True)
                run_id = self._register(engine)
            except BaseException:
                engine.dispose()
                raise
        self._engine = engine
        run_spill = run_spill_dir(self.spill_dir, self.url, run_id)
        # Batches a previous process left in the spill keep their keys; new ones come after.
        spilled = [int(p.name.split("-")[0]) for p in run_spill.glob("*.npz")]
        self._seq = max([self._seq, *(s + 1 for s in spilled)])
        self._writer = BatchWriter(
            engine,
            run_id,
            run_spill,
            idle_interval=1.0,
            retry_interval=self.retry_interval,
            on_idle=self._background_poll,
        )
        self._last_state_write = time.monotonic()
        self._opened = True
        return self

    def _register(self, engine: Engine) -> int:
        # Recorders started together (one per rank, or a sweep) race to register the same
        # dataset; the loser's insert violates the unique name, and its retry finds the row.
        for _ in range(2):
            try:
                return self._register_once(engine)
            except IntegrityError:
                continue
        return self._register_once(engine)

    def _register_once(self, engine: Engine) -> int:
        with engine.begin() as connection:
            dataset_id = register_dataset(connection, self.description)
            run_id = register_run(
                connection,
                self.run_name,
                dataset_id,
                self.config,
                self.record_visits,
                writer=self.writer if self._claims_run else None,
            )
            self._seq = next_seq(connection, run_id)
            self._restore(connection, run_id, dataset_id)
        self.dataset_id, self.run_id = dataset_id, run_id
        return run_id

    def close(self, status: str = "finished") -> DeliveryReport | None:
        """Flushes what is buffered and waits up to ``close_timeout`` for delivery.

        Returns a report; anything it could not deliver stays in the spill folder and is
        replayed by the next recorder of this run. It warns when something is left.
        """
        if not self._opened or self._writer is None:
            return self.report
        try:
            if self._sampler is not None:
                self._sampler.synchronize()  # updates still on their way from the GPU
        except ValueError as error:
            log.warning("datasetq recorder: an update was dropped: %s", error)
        try:
            self._finalize_epoch(final=True)
            self._flush_visits()
        except Exception as error:  # never let recording crash the end of training
            log.warning("datasetq recorder: could not finish the last epoch: %s", error)
        self._opened = False
        self.report = self._writer.close(self.close_timeout)
        try:
            assert self._engine is not None
            assert self.run_id is not None
            if self._claims_run:
                with self._engine.begin() as connection:
                    mark_ended(connection, self.run_id, status)
        except Exception as error:
            log.warning("datasetq recorder: could not mark the run %s: %s", status, error)
        if not self.report.ok:
            warnings.warn(
                f"datasetq recorder: {len(self.report.pending)} batches could not be delivered "
                f"to {self.url}; they are kept in {self._writer.spill_dir} and will be replayed "
                f"by the next Recorder of run {self.run_name!r}",
                RuntimeWarning,
                stacklevel=2,
            )
        if self._engine is not None:
            self._engine.dispose()
        return self.report

    def wrap(self, dataset: Any) -> LiveLabels:
        """Wraps ``dataset`` so its labels follow relabels made in the dashboard."""
        return LiveLabels(dataset, self.labels)

    # ------------------------------------------------------------------ sampler hooks
    def attach(self, sampler: HeapqSampler) -> None:
        if sampler.rank != 0:
            return  # every rank holds the same all-gathered state; rank 0 records it
        if len(sampler.data_source) != self.description.num_samples:
            raise ValueError(
                f"the sampler draws from {len(sampler.data_source)} samples, but the recorder "
                f"registered {self.description.num_samples}"
            )
        self._sampler = sampler

    def on_epoch_start(self, sampler: HeapqSampler, epoch: int) -> None:
        if sampler is not self._sampler:
            return
        self._guard(self._finalize_epoch)
        self._guard(lambda: self._apply_decisions(sampler))
        self._epoch = epoch

    def on_update(
        self, sampler: HeapqSampler, ids: I64, metrics: Mapping[str, npt.NDArray[np.float32]]
    ) -> None:
        if sampler is not self._sampler or not self._opened:
            return
        losses = metrics[sampler.key]
        if self._epoch is None:
            self._epoch = max(sampler.epoch, 0)
        self._epoch_ids.append(ids)
        self._epoch_losses.append(losses)
        for name, target in (("pred", self._last_pred), ("margin", self._last_margin)):
            values = metrics.get(name)
            if values is not None:
                target[ids] = values
        if self.record_visits:
            self._visit_ids.append(ids)
            self._visit_losses.append(losses)
            self._visit_rows += len(ids)
            if (
                self._visit_rows >= self.batch_rows
                or time.monotonic() - self._last_flush >= self.flush_interval
            ):
                self._guard(self._flush_visits)

    def on_evict(self, sampler: HeapqSampler, ids: I64, epoch: int) -> None:
        """Evictions are recorded with their epoch's statistics."""

    def on_epoch_end(self, sampler: HeapqSampler, epoch: int) -> None:
        """The epoch is recorded when the next starts or at close: late updates still count."""

    # ------------------------------------------------------------------ training-thread work
    def _guard(self, action: Any) -> None:
        try:
            action()
        except Exception as error:
            log.warning("datasetq recorder: recording skipped: %s", error)

    def _next_batch(self, kind: str, meta: dict[str, Any], arrays: dict[str, Any]) -> None:
        assert self._writer is not None
        batch = make_batch(self._seq, kind, meta, arrays)
        self._seq += 1
        self._writer.submit(batch)

    def _flush_visits(self) -> None:
        self._last_flush = time.monotonic()
        if not self._visit_rows or self._epoch is None:
            return
        ids = np.concatenate(self._visit_ids)
        losses = np.concatenate(self._visit_losses)
        self._visit_ids, self._visit_losses, self._visit_rows = [], [], 0
        self._next_batch("visits", {"epoch": self._epoch}, {"sample_id": ids, "loss": losses})

    def _finalize_epoch(self, final: bool = False) -> None:
        """Sends the collected epoch's per-sample statistics and summary as one batch, with
        the latest state of the samples that changed when it is time (or ``final``)."""
        sampler, epoch = self._sampler, self._epoch
        if sampler is None or epoch is None or not self._opened:
            return
        self._flush_visits()
        ids = np.concatenate(self._epoch_ids) if self._epoch_ids else np.empty(0, np.int64)
        losses = (
            np.concatenate(self._epoch_losses).astype(np.float64)
            if self._epoch_losses
            else np.empty(0)
        )
        self._epoch_ids, self._epoch_losses = [], []
        self._epoch = None
        aggregate = aggregate_epoch(ids, losses)
        touched = aggregate.ids
        self._loss_sum[touched] += aggregate.loss_sum
        self._loss_reports[touched] += aggregate.reports
        self._loss_max[touched] = np.fmax(self._loss_max[touched], aggregate.max)
        self._last_loss[touched] = aggregate.last
        self._last_epoch[touched] = epoch
        self._coverage_sum[touched] += aggregate.first
        self._coverage_epochs[touched] += 1
        evicted_ids, evicted_epochs = sampler.evictions
        n = self.description.num_samples
        evicted_epoch = np.full(n, -1, dtype=np.int64)
        evicted_epoch[evicted_ids] = evicted_epochs
        _, evidence_scores, evidence_since = sampler.eviction_evidence
        evidence_score = np.full(n, np.nan)
        evidence_score[evicted_ids] = evidence_scores
        wrong_since = np.full(n, -1, dtype=np.int64)
        wrong_since[evicted_ids] = evidence_since
        new_evictions = evicted_ids[evicted_epochs == epoch]
        # Rows for every sample whose state changed: reported this epoch, or evicted, or freed.
        self._state_dirty[np.concatenate([touched, evicted_ids, self._evicted_before])] = True
        self._evicted_before = evicted_ids
        changed = np.empty(0, dtype=np.int64)
        if final or time.monotonic() - self._last_state_write >= self.state_interval:
            changed = np.flatnonzero(self._state_dirty)
            self._state_dirty[:] = False
            self._last_state_write = time.monotonic()
        visits = sampler.visits
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self._loss_sum[changed] / self._loss_reports[changed]
            score = self._coverage_sum[changed] / self._coverage_epochs[changed]
        summary = epoch_summary(
            sampler.loss,
            visits,
            sampler.epoch_visits,
            aggregate,
            evicted_total=len(evicted_ids),
            evicted_new=len(new_evictions),
        )
        self._next_batch(
            "epoch",
            {
                "epoch": epoch,
                "draws": int(sampler.epoch_visits.sum()),
                "evicted_total": len(evicted_ids),
                "evicted_new": len(new_evictions),
                "summary": summary,
            },
            {
                "epoch_ids": touched,
                "epoch_visits": aggregate.reports,
                "epoch_losses": aggregate.losses.astype(np.float32),
                "state_ids": changed,
                "state_visits": visits[changed].astype(np.int64),
                "state_reports": self._loss_reports[changed],
                "state_last": self._last_loss[changed],
                "state_mean": mean,
                "state_max": self._loss_max[changed],
                "state_last_epoch": self._last_epoch[changed],
                "state_evicted_epoch": evicted_epoch[changed],
                "state_pred": self._last_pred[changed],
                "state_margin": self._last_margin[changed],
                "state_score": score,
                "state_coverage_epochs": self._coverage_epochs[changed],
                "state_evidence_score": evidence_score[changed],
                "state_wrong_since": wrong_since[changed],
            },
        )
        if len(new_evictions):
            self._next_batch("evictions", {"epoch": epoch}, {"sample_id": new_evictions})

    def _apply_decisions(self, sampler: HeapqSampler) -> None:
        """Applies dashboard decisions fetched by the writer thread (no I/O here)."""
        with self._lock:
            incoming = list(self._incoming)
            self._incoming.clear()
        for kind, sample_id, value, _ in incoming:
            if not 0 <= sample_id < self.description.num_samples:
                continue
            if kind == "evict":
                sampler.evict([sample_id])
            elif kind == "reinstate":
                sampler.reinstate([sample_id])
            elif kind == "label":
                self.labels[sample_id] = value

    # ------------------------------------------------------------------ writer-thread work
    def _background_poll(self) -> None:
        """Heartbeat, and fetch decisions made since the last poll (runs on the writer thread)."""
        assert self._engine is not None
        assert self.run_id is not None
        assert self.dataset_id is not None
        with self._engine.begin() as connection:
            found = poll_decisions(
                connection, self.run_id, self.dataset_id, self._decision_cursor, self._label_cursor
            )
        decisions, labels = found.job, found.labels
        with self._lock:
            for decision_id, sample_id, action, run_id in decisions:
                self._decision_cursor = decision_id
                if run_id is None or run_id == self.run_id:
                    self._incoming.append((action, sample_id, 0, run_id))
            for change_id, sample_id, new_label in labels:
                self._label_cursor = change_id
                if new_label is not None:
                    self._incoming.append(("label", sample_id, new_label, None))

    # ------------------------------------------------------------------ resuming
    def _restore(self, connection: Any, run_id: int, dataset_id: int) -> None:
        """Continues a run: per-sample sums, current labels, and cursors past old decisions."""
        restored = restore_run(connection, run_id, dataset_id)
        ids = restored.ids
        self._loss_reports[ids] = restored.loss_reports
        self._loss_sum[ids] = np.nan_to_num(restored.mean_loss) * restored.loss_reports
        self._loss_max[ids] = restored.max_loss
        self._last_loss[ids] = restored.last_loss
        self._last_epoch[ids] = restored.last_epoch
        self._coverage_epochs[ids] = restored.coverage_epochs
        self._coverage_sum[ids] = np.nan_to_num(restored.score) * restored.coverage_epochs
        self.labels[restored.relabeled_ids] = restored.relabeled_to
        if self._seq > 0:
            # A continued run (after a crash, the state written last may be up to
            # state_interval old): its first state write carries every sample, from the
            # sampler, which resumed from its own checkpoint.
            self._state_dirty[:] = True
        self._decision_cursor = restored.last_decision
        self._label_cursor = restored.last_label_change


def _check_seconds(name: str, value: object, allow_zero: bool) -> None:
    """A duration argument: a finite number, positive (or zero where that means "at once")."""
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if (
        number is None
        or not math.isfinite(number)
        or number < 0
        or (number == 0 and not allow_zero)
    ):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} should be a {bound} number of seconds, but got {value!r}")


def json_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's config as JSON values (NumPy scalars and arrays become numbers and lists).

    Raises:
        ValueError: a value JSON cannot hold (a set, an object, NaN or infinity), named by its
            key; both stores would otherwise treat it differently.
    """
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ValueError(f"config should be a dict, but got {type(config).__name__}")

    def plain(value: Any, where: str) -> Any:
        if isinstance(value, np.generic | np.ndarray):
            value = value.tolist()
        if isinstance(value, Mapping):
            return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"config[{where}] should be a finite number, but got {value}")
        if value is None or isinstance(value, str | bool | int | float):
            return value
        raise ValueError(
            f"config[{where}] should be a JSON value (number, string, list, dict), "
            f"but got {type(value).__name__}"
        )

    return {str(k): plain(v, repr(k)) for k, v in config.items()}


def run_spill_dir(spill_dir: Path, url: str, run_id: int) -> Path:
    """Where one run's undelivered batches wait: keyed by database and run, as run ids repeat
    across databases."""
    database_key = hashlib.sha256(
        make_url(url).render_as_string(hide_password=True).encode()
    ).hexdigest()[:12]
    return spill_dir / f"{database_key}-run-{run_id}"


def _default_spill_dir(url: str) -> Path:
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            return Path(database).resolve().parent / (Path(database).name + ".spill")
    return Path.cwd() / "datasetq-spill"
