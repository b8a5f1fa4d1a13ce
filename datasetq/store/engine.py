"""Engines for the store: SQLite tuned for concurrent writers, PostgreSQL as is.

SQLite gets WAL (readers never block the writer), a busy timeout (writers queue instead of
failing), ``BEGIN IMMEDIATE`` for writing engines (a transaction takes the write lock up front,
so two writers never deadlock upgrading read locks), and foreign keys. Connections are never
used across ``fork()``: a child process (a DataLoader worker) drops its inherited pool.
"""

from __future__ import annotations

import os
import sqlite3
import time
import weakref
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

__all__ = ["create_store_engine", "is_sqlite"]

SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_store_engine(
    url: str,
    *,
    write: bool = False,
    lock_timeout: float = SQLITE_BUSY_TIMEOUT_MS / 1000,
    **kwargs: Any,
) -> Engine:
    """Creates an engine for ``url``; ``write=True`` makes SQLite transactions ``IMMEDIATE``.

    ``lock_timeout`` (seconds) bounds how long a statement waits for a lock: SQLite's busy
    timeout, PostgreSQL's ``lock_timeout``.
    """
    if not url:
        raise ValueError("url should be a database URL such as sqlite:///datasetq.db")
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        # Pooled, not a connection per use: when the last connection to a WAL database closes,
        # SQLite checkpoints the log into the file and deletes it; a connection per
        # transaction did that after every batch and heartbeat (2 ms each instead of 0.5).
        kwargs.setdefault("poolclass", QueuePool)
        kwargs.setdefault("pool_size", 2)
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("timeout", lock_timeout)
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(parsed, **kwargs)
        _configure_sqlite(engine, write, int(lock_timeout * 1000))
    else:
        kwargs.setdefault("pool_pre_ping", True)
        if parsed.get_backend_name() == "postgresql":
            connect_args = kwargs.setdefault("connect_args", {})
            connect_args.setdefault("connect_timeout", 5)
            engine = create_engine(parsed, **kwargs)
            _configure_postgresql(engine, int(lock_timeout * 1000))
        else:
            engine = create_engine(parsed, **kwargs)
    _dispose_in_forked_children(engine)
    return engine


def _configure_postgresql(engine: Engine, lock_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {lock_timeout_ms}")
        dbapi_connection.commit()


def _configure_sqlite(engine: Engine, write: bool, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling is off; SQLAlchemy emits BEGIN below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        _use_wal(cursor, busy_timeout_ms / 1000)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _use_wal(cursor: Any, timeout: float) -> None:
    """Switches the database to WAL unless it is already.

    SQLite answers a switch with "database is locked" at once, without its busy handler, when
    another connection switches the same new database at that moment (every rank of a
    distributed run opening one store): retried until ``timeout`` seconds have passed.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.05)


def _dispose_in_forked_children(engine: Engine) -> None:
    reference = weakref.ref(engine)

    def _after_fork() -> None:
        inherited = reference()
        if inherited is not None:
            inherited.dispose(close=False)

    os.register_at_fork(after_in_child=_after_fork)
