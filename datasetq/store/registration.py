"""Registering a dataset and a run in the store (the first thing a Recorder does)."""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, insert, select, update

from ..errors import StoreError
from ..render import RenderSpec, render_to_json
from .ingest import bulk_insert, now
from .models import DatasetRecord, IngestBatchRecord, RunRecord
from .runs import INTERRUPTED_AFTER, effective_status, heartbeat_age

__all__ = ["next_seq", "register_dataset", "register_run"]

JSON_CHUNK = 100_000  # samples per statement
SAMPLE_COLUMNS = (
    "dataset_id",
    "sample_id",
    "original_label",
    "current_label",
    "source",
    "flagged",
)


class DatasetDescription(Protocol):
    """What the store registers of a dataset (the recorder's ``DatasetDescription``)."""

    @property
    def name(self) -> str: ...
    @property
    def num_samples(self) -> int: ...
    @property
    def class_names(self) -> list[str]: ...
    @property
    def render(self) -> RenderSpec: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def labels(self) -> npt.NDArray[np.int64] | None: ...
    @property
    def sources(self) -> list[str] | None: ...


def register_dataset(connection: Any, description: DatasetDescription) -> int:
    existing = connection.execute(
        select(DatasetRecord.id, DatasetRecord.fingerprint, DatasetRecord.num_samples).where(
            DatasetRecord.name == description.name
        )
    ).one_or_none()
    if existing is not None:
        if existing.fingerprint != description.fingerprint:
            raise StoreError(
                f"a different dataset is registered as {description.name!r} "
                f"({existing.num_samples} samples); pass dataset_name= to register this one"
            )
        return int(existing.id)
    dataset_id = int(
        connection.execute(
            insert(DatasetRecord)
            .values(
                name=description.name,
                num_samples=description.num_samples,
                class_names=description.class_names,
                render=render_to_json(description.render),
                fingerprint=description.fingerprint,
                created_at=now(),
            )
            .returning(DatasetRecord.id)
        ).scalar_one()
    )
    n = description.num_samples
    labels = description.labels
    label_list: list[Any] = labels.tolist() if labels is not None else [None] * n
    sources: list[Any] = description.sources if description.sources is not None else [None] * n
    if connection.dialect.name == "sqlite":
        # Statements over JSON arrays, which SQLite expands faster than executemany binds
        # rows (a recorder on a fresh database opens sooner); chunked to stay far below
        # SQLite's limit on the length of one value.
        for start in range(0, n, JSON_CHUNK):
            end = min(start + JSON_CHUNK, n)
            pairs = list(zip(label_list[start:end], sources[start:end], strict=True))
            connection.exec_driver_sql(
                f"INSERT INTO samples ({', '.join(SAMPLE_COLUMNS)}) SELECT ?, ? + key, "
                "json_extract(value, '$[0]'), json_extract(value, '$[0]'), "
                "json_extract(value, '$[1]'), 0 FROM json_each(?)",
                (dataset_id, start, json.dumps(pairs)),
            )
    else:
        bulk_insert(
            connection,
            "samples",
            SAMPLE_COLUMNS,
            zip(
                [dataset_id] * n,
                range(n),
                label_list,
                label_list,
                sources,
                [False] * n,
                strict=True,
            ),
        )
    return dataset_id


def register_run(
    connection: Any,
    name: str,
    dataset_id: int,
    config: dict[str, Any],
    record_visits: bool,
    writer: str | None,
) -> int:
    """The run's id, created or continued; ``writer`` (``host:pid/...``) becomes its live
    writer (None: a reader, such as a distributed rank other than 0, claims nothing).

    Raises:
        StoreError: the run records another dataset, or another writer is recording it now
            (its heartbeat is fresh and, on this host, its process exists). A writer on
            another host that stopped without closing is taken over once its heartbeat is
            older than ``INTERRUPTED_AFTER``.
    """
    existing = connection.execute(
        select(
            RunRecord.id,
            RunRecord.dataset_id,
            RunRecord.status,
            RunRecord.heartbeat_at,
            RunRecord.writer,
        ).where(RunRecord.name == name)
    ).one_or_none()
    stamp = now()
    if existing is not None:
        if existing.dataset_id != dataset_id:
            raise StoreError(f"run {name!r} exists and records another dataset; choose a new name")
        if writer is None:
            return int(existing.id)
        live = effective_status(existing.status, existing.heartbeat_at, stamp) == "running"
        if live and existing.writer not in (None, writer) and writer_alive(existing.writer):
            age = heartbeat_age(existing.heartbeat_at, stamp).total_seconds()
            raise StoreError(
                f"run {name!r} is being recorded by {existing.writer} (heartbeat "
                f"{age:.0f} s ago); stop that recorder or "
                f"choose another run name (a recorder that died is taken over "
                f"{INTERRUPTED_AFTER.total_seconds():.0f} s after its last heartbeat)"
            )
        connection.execute(
            update(RunRecord)
            .where(RunRecord.id == existing.id)
            .values(status="running", heartbeat_at=stamp, ended_at=None, writer=writer)
        )
        return int(existing.id)
    connection.execute(
        insert(RunRecord).values(
            name=name,
            dataset_id=dataset_id,
            config={**config, "record_visits": record_visits},
            status="running",
            started_at=stamp,
            heartbeat_at=stamp,
            epochs=0,
            writer=writer,
        )
    )
    return int(connection.execute(select(RunRecord.id).where(RunRecord.name == name)).scalar_one())


def writer_alive(writer: str) -> bool:
    """Whether the writer ``host:pid/...`` may still be recording: on this host, whether that
    process exists; on another, assumed (its heartbeat decides)."""
    host, _, rest = writer.partition(":")
    pid_text = rest.partition("/")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user: it exists
    return True


def next_seq(connection: Any, run_id: int) -> int:
    last = connection.execute(
        select(func.max(IngestBatchRecord.seq)).where(IngestBatchRecord.run_id == run_id)
    ).scalar_one()
    return 0 if last is None else int(last) + 1
