"""The recorder's background writer: delivers batches to the store off the training thread.

Batches arrive on a bounded queue. Each is stored in its own transaction, keyed by
``(run, seq)`` so a retry stores it once. When the store fails (locked past the busy timeout,
unwritable, server down) the batch goes to a spill file, and so does every later batch, in
order, until a retry succeeds; the spill is then replayed oldest first and deleted batch by
batch. The training thread never waits on the store: when the queue is full it spills itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from ..store.batches import Batch, SpillFormatError, read_batch, write_batch
from ..store.ingest import store_batch

__all__ = ["BatchWriter", "DeliveryReport"]

log = logging.getLogger("datasetq.recorder")

WRITER_NICENESS = 10


class DeliveryReport:
    """What ``close()`` could and could not deliver."""

    def __init__(
        self,
        delivered: int,
        duplicates: int,
        pending: list[Path],
        rejected: list[Path],
        cpu_seconds: float = 0.0,
    ) -> None:
        self.delivered = delivered
        self.duplicates = duplicates
        self.pending = pending
        self.rejected = rejected
        self.cpu_seconds = cpu_seconds  # CPU time the background writer thread used

    @property
    def ok(self) -> bool:
        return not self.pending and not self.rejected

    def __repr__(self) -> str:
        return (
            f"DeliveryReport(delivered={self.delivered}, duplicates={self.duplicates}, "
            f"pending={len(self.pending)} batch files, rejected={len(self.rejected)}, "
            f"cpu_seconds={self.cpu_seconds:.3f})"
        )


class BatchWriter:
    """Stores batches for one run on a background thread, spilling to ``spill_dir`` when needed.

    Args:
        engine: a writing engine (``create_store_engine(url, write=True)``).
        run_id: the run the batches belong to.
        spill_dir: folder for batches the store could not take yet.
        queue_size: batches held in memory before the training thread spills.
        on_idle: called on the writer thread about every ``idle_interval`` seconds (heartbeat,
            polling decisions); errors it raises are logged, never propagated.
    """

    def __init__(
        self,
        engine: Engine,
        run_id: int,
        spill_dir: Path,
        *,
        queue_size: int = 64,
        idle_interval: float = 2.0,
        retry_interval: float = 1.0,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.run_id = run_id
        self.spill_dir = spill_dir
        self.idle_interval = idle_interval
        self.retry_interval = retry_interval
        self.on_idle = on_idle
        self.delivered = 0
        self.duplicates = 0
        self.failures = 0
        self.last_error: str | None = None
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=queue_size)
        self._spill_lock = threading.Lock()
        # Batches waiting in the spill folder, counted here so the writer's loop need not list
        # the folder; files a previous process left are counted once, now.
        self._spilled = len(self.pending_files())
        self._store_down_until = 0.0
        self._thread = threading.Thread(target=self._run, name="datasetq-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ training thread
    def submit(self, batch: Batch) -> None:
        """Hands a batch over without ever blocking; spills it when the queue is full."""
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self._spill(batch)

    def close(self, timeout: float) -> DeliveryReport:
        """Delivers what it can within ``timeout`` seconds; the rest stays in the spill folder."""
        deadline = time.monotonic() + timeout
        self._deadline = deadline
        while True:
            try:
                self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            # Out of time: whatever is still queued goes to disk, to be replayed later.
            self._stop_now = True
            self._drain_to_spill()
            self._thread.join(1.0)
        rejected = sorted(self.spill_dir.glob("*.rejected")) if self.spill_dir.is_dir() else []
        return DeliveryReport(
            self.delivered, self.duplicates, self.pending_files(), rejected, self.cpu_seconds
        )

    def pending_files(self) -> list[Path]:
        if not self.spill_dir.is_dir():
            return []
        return sorted(self.spill_dir.glob("*.npz"))

    def _spill(self, batch: Batch) -> None:
        with self._spill_lock:
            write_batch(batch, self.spill_dir)
            self._spilled += 1

    def _unspilled(self) -> None:
        with self._spill_lock:
            self._spilled -= 1

    # ------------------------------------------------------------ writer thread
    _deadline = float("inf")
    _stop_now = False

    cpu_seconds = 0.0

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self.cpu_seconds = time.thread_time()

    def _loop(self) -> None:
        _lower_priority()
        last_idle = 0.0
        while not self._stop_now:
            try:
                batch = self._queue.get(timeout=self.idle_interval / 2)
            except queue.Empty:
                batch = None
                closing = False
            else:
                closing = batch is None
            if batch is not None:
                self._deliver(batch)
            if self._spilled and time.monotonic() >= self._store_down_until:
                self._replay()
            now = time.monotonic()
            # Not when closing: the recorder marks the run's end itself, and no epoch is left
            # to apply decisions to.
            if self.on_idle is not None and not closing and now - last_idle >= self.idle_interval:
                last_idle = now
                try:
                    self.on_idle()
                except Exception as error:  # the store being down must not stop the writer
                    log.debug("datasetq recorder: background poll failed: %s", error)
            if closing:
                self._finish()
                return

    def _finish(self) -> None:
        """On close: retry the spill until it is delivered or the deadline passes."""
        while self._spilled and time.monotonic() < self._deadline and not self._stop_now:
            if not self._replay():
                time.sleep(min(self.retry_interval, max(0.0, self._deadline - time.monotonic())))

    def _deliver(self, batch: Batch) -> None:
        if self._spilled:  # keep order: nothing overtakes the spill
            self._spill(batch)
            return
        outcome = self._store(batch)
        if outcome is False:
            self._spill(batch)
        elif outcome is None:
            path = write_batch(batch, self.spill_dir)
            path.rename(path.with_suffix(".rejected"))

    def _replay(self) -> bool:
        """Delivers spilled batches oldest first; False if the store failed again."""
        for path in self.pending_files():
            try:
                batch = read_batch(path)
            except SpillFormatError as error:
                log.warning(
                    "datasetq recorder: %s; kept as %s (rename it back to .npz to replay)",
                    error,
                    path.with_suffix(".newer").name,
                )
                path.rename(path.with_suffix(".newer"))
                self._unspilled()
                continue
            except (OSError, ValueError, KeyError) as error:
                log.warning(
                    "datasetq recorder: unreadable spill file %s kept aside: %s", path, error
                )
                path.rename(path.with_suffix(".bad"))
                self._unspilled()
                continue
            outcome = self._store(batch)
            if outcome is False:
                return False
            if outcome is None:
                path.rename(path.with_suffix(".rejected"))
            else:
                path.unlink(missing_ok=True)
            self._unspilled()
        return True

    def _store(self, batch: Batch) -> bool | None:
        """True: stored (or stored before). False: the store is unavailable, retry later.
        None: the store rejects this batch's content; retrying cannot help, so it is set aside
        (``*.rejected`` in the spill folder) instead of blocking every batch behind it."""
        try:
            with self.engine.begin() as connection:
                stored = store_batch(connection, self.run_id, batch)
        except Exception as error:
            if not _is_rejection(error):
                return self._unavailable(error)
            self.last_error = f"{type(error).__name__}: {error}"
            log.error("datasetq recorder: batch %s rejected by the store: %s", batch.seq, error)
            return None
        if stored:
            self.delivered += 1
        else:
            self.duplicates += 1
        return True

    def _unavailable(self, error: Exception) -> bool:
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        self._store_down_until = time.monotonic() + self.retry_interval
        log.warning("datasetq recorder: store unavailable, spilling: %s", self.last_error)
        return False

    def _drain_to_spill(self) -> None:
        while True:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                return
            if batch is not None:
                self._spill(batch)


def _lower_priority() -> None:
    """Lets training threads win the CPU over this one (Linux: nice applies per thread)."""
    # Other platforms, or not permitted: the thread runs at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)


_REJECTIONS = {"IntegrityError", "DataError", "ProgrammingError"}


def _is_rejection(error: BaseException) -> bool:
    """True when the database refuses the content (PEP 249 classes), not when it is unreachable.

    Errors from the driver's COPY path arrive unwrapped, so the driver's own classes count too.
    """
    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    return any(cls.__name__ in _REJECTIONS for cls in type(error).__mro__)
