"""Writes batches into the store: one transaction each, stored once however often it is sent.

Rows go through the driver's bulk path: ``executemany`` of tuples on SQLite, ``COPY`` on
PostgreSQL (into a temporary staging table when rows must be upserted).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, update
from sqlalchemy.dialects import postgresql, sqlite

from .batches import STATE_COLUMNS, Batch, Column
from .models import VISIT_BLOCK, IngestBatchRecord, RunEpochRecord, RunRecord

__all__ = ["store_batch"]

EPOCH_BLOCK_COLUMNS = ("run_id", "epoch", "block", "visits", "losses")
EPOCH_BLOCK_KEYS = ("run_id", "epoch", "block")
STATE_TABLE_COLUMNS = ("run_id", *(c.store_as for c in STATE_COLUMNS if c.store_as))


def now() -> datetime:
    return datetime.now(UTC)


def store_batch(connection: Connection, run_id: int, batch: Batch) -> bool:
    """Stores ``batch`` inside the caller's transaction; False if it was stored before."""
    if not _claim(connection, run_id, batch):
        return False
    if batch.kind == "visits":
        _store_visits(connection, run_id, batch)
    elif batch.kind == "epoch":
        _store_epoch(connection, run_id, batch)
    elif batch.kind == "evictions":
        _store_evictions(connection, run_id, batch)
    else:
        raise ValueError(f"unknown batch kind {batch.kind!r}")
    return True


def _claim(connection: Connection, run_id: int, batch: Batch) -> bool:
    values = {
        "run_id": run_id,
        "seq": batch.seq,
        "kind": batch.kind,
        "rows": batch.rows,
        "stored_at": now(),
    }
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(IngestBatchRecord)
        .values(values)
        .on_conflict_do_nothing()
        .returning(IngestBatchRecord.seq)
    )
    return connection.execute(statement).first() is not None


def _store_visits(connection: Connection, run_id: int, batch: Batch) -> None:
    ids = batch.arrays["sample_id"]
    count = len(ids)
    epoch = int(batch.meta["epoch"])
    rows = zip(
        [run_id] * count,
        [epoch] * count,
        ids.tolist(),
        batch.arrays["loss"].astype(np.float64).tolist(),
        strict=True,
    )
    bulk_insert(connection, "visits", ("run_id", "epoch", "sample_id", "loss"), rows)


def _epoch_block_rows(
    run_id: int, epoch: int, ids: Any, visits: Any, losses: Any
) -> list[tuple[Any, ...]]:
    """One :class:`~datasetq.store.models.EpochBlockRecord` row per block of ids.

    ``ids`` are sorted and unique, ``visits`` their report counts, and ``losses`` every report
    grouped by id (in that order). A Python step per block, never per sample.
    """
    if not len(ids):
        return []
    blocks = ids // VISIT_BLOCK
    starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    first_visit = np.r_[0, np.cumsum(visits)]
    reports = np.ascontiguousarray(losses, dtype="<f4")
    rows = []
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        block = int(blocks[start])
        positions = ids[start:end] - block * VISIT_BLOCK
        counts = np.zeros(int(positions[-1]) + 1, dtype="<i4")
        counts[positions] = visits[start:end]
        losses_of_block = reports[first_visit[start] : first_visit[end]]
        rows.append((run_id, epoch, block, counts.tobytes(), losses_of_block.tobytes()))
    return rows


def _store_epoch(connection: Connection, run_id: int, batch: Batch) -> None:
    a = batch.arrays
    epoch = int(batch.meta["epoch"])
    rows = _epoch_block_rows(run_id, epoch, a["epoch_ids"], a["epoch_visits"], a["epoch_losses"])
    # An upsert: a run continued without its checkpoint records its epochs again.
    bulk_upsert(connection, "epoch_blocks", EPOCH_BLOCK_COLUMNS, EPOCH_BLOCK_KEYS, rows)
    if len(a["state_ids"]):  # empty in epochs between state writes
        _store_state(connection, run_id, a)
    meta = batch.meta
    epoch_values = {
        "run_id": run_id,
        "epoch": epoch,
        "recorded_at": now(),
        "draws": meta["draws"],
        "evicted_total": meta["evicted_total"],
        "evicted_new": meta["evicted_new"],
        "summary": meta["summary"],
    }
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(RunEpochRecord).values(epoch_values)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["run_id", "epoch"],
            set_={
                k: statement.excluded[k]
                for k in ("recorded_at", "draws", "evicted_total", "evicted_new", "summary")
            },
        )
    )
    connection.execute(
        update(RunRecord)
        .where(RunRecord.id == run_id, RunRecord.epochs < epoch + 1)
        .values(epochs=epoch + 1)
    )


def _store_state(connection: Connection, run_id: int, a: dict[str, Any]) -> None:
    """Upserts the latest state of the samples that changed since the last state write."""
    count = len(a["state_ids"])
    values = [_stored(column, a[column.array]) for column in STATE_COLUMNS]
    rows = zip([run_id] * count, *values, strict=True)
    bulk_upsert(connection, "sample_state", STATE_TABLE_COLUMNS, ("run_id", "sample_id"), rows)


def _stored(column: Column, values: Any) -> list[Any]:
    """A column's values as the store takes them, with its NULL marker as None."""
    if column.null == "nan":
        return _nullable(values)
    if column.null == "negative":
        return _nullable_int(values)
    return values.tolist()  # type: ignore[no-any-return]


def _store_evictions(connection: Connection, run_id: int, batch: Batch) -> None:
    ids = batch.arrays["sample_id"].tolist()
    epoch = int(batch.meta["epoch"])
    reinstated = bool(batch.meta.get("reinstated", False))
    count = len(ids)
    rows = zip([run_id] * count, ids, [epoch] * count, [reinstated] * count, strict=True)
    bulk_insert(connection, "evictions", ("run_id", "sample_id", "epoch", "reinstated"), rows)


def _nullable(values: Any) -> list[float | None]:
    """Floats with NaN as NULL (vectorised: no Python loop per row)."""
    as_float = values.astype(np.float64)
    objects = as_float.astype(object)
    objects[np.isnan(as_float)] = None
    return objects.tolist()  # type: ignore[no-any-return]


def _nullable_int(values: Any) -> list[int | None]:
    """Integers with negative values as NULL."""
    objects = values.astype(np.int64).astype(object)
    objects[values < 0] = None
    return objects.tolist()  # type: ignore[no-any-return]


def bulk_insert(
    connection: Connection, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    if connection.dialect.name == "postgresql":
        _copy(connection, table, columns, rows)
        return
    placeholders = ", ".join("?" for _ in columns)
    rows = list(rows)
    if rows:
        connection.exec_driver_sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows
        )


def bulk_upsert(
    connection: Connection,
    table: str,
    columns: Sequence[str],
    keys: Sequence[str],
    rows: Iterable[tuple[Any, ...]],
) -> None:
    """Inserts rows, replacing the non-key columns of rows whose key exists."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    conflict = f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    if connection.dialect.name == "postgresql":
        staging = f"staging_{table}"
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} "
            f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        _copy(connection, staging, columns, rows)
        names = ", ".join(columns)
        connection.exec_driver_sql(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging} {conflict}"
        )
        return
    rows = list(rows)
    if rows:
        placeholders = ", ".join("?" for _ in columns)
        connection.exec_driver_sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) {conflict}", rows
        )


def _copy(
    connection: Connection, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    raw = connection.connection.driver_connection
    assert raw is not None
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:  # psycopg's C writer; the rows come from zip() over array columns
            copy.write_row(row)
