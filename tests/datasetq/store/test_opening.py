"""Opening a store that cannot be used says why, as a StoreError (or a ValueError naming the
argument), and never with a driver's traceback; the server never creates a database on a typo."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sqlalchemy import text

from datasetq import Recorder, StoreError
from datasetq.store.engine import create_store_engine
from datasetq.store.migrations import create_at_head, current_revision, ensure_schema, upgrade

from ..recording import TinyDataset


def record(url: str, **options: object) -> None:
    with Recorder(url, run="r", dataset=TinyDataset(4), **options):  # type: ignore[arg-type]
        pass


@pytest.mark.parametrize(
    ("make_url", "message"),
    [
        (lambda tmp: f"sqlite:///{tmp}", "is a folder, not a database file"),
        (lambda tmp: f"sqlite:///{tmp / 'missing' / 'x.db'}", "does not exist"),
        (lambda tmp: f"sqlite:///{tmp / 'text.db'}", "is not a SQLite database"),
        (lambda tmp: "mysqlx://localhost/db", "datasetq stores in SQLite"),
        (lambda tmp: "postgresql://postgres@127.0.0.1:1/test", "cannot use the store"),
    ],
    ids=["folder", "missing-parent", "not-a-database", "unsupported-dialect", "unreachable"],
)
def test_a_store_that_cannot_be_opened_says_why(tmp_path, make_url, message):
    (tmp_path / "text.db").write_text("these are notes, not a database")
    with pytest.raises(StoreError, match=message) as raised:
        record(make_url(tmp_path))
    assert raised.value.__cause__ is None  # no driver exception chained for the user to read


def test_a_database_newer_than_the_code_says_to_upgrade_datasetq(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    upgrade(url)
    engine = create_store_engine(url, write=True)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer than this datasetq knows") as raised:
        record(url)
    assert "db upgrade" not in str(raised.value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"tags": {"a", "b"}}, r"config\['tags'\] should be a JSON value .* set"),
        ({"lr": float("nan")}, r"config\['lr'\] should be a finite number"),
        ({"model": object()}, r"config\['model'\] should be a JSON value"),
    ],
)
def test_a_config_json_cannot_hold_is_refused_by_name(tmp_path, config, message):
    with pytest.raises(ValueError, match=message):
        record(f"sqlite:///{tmp_path / 'c.db'}", config=config)


def test_numpy_values_in_a_config_are_stored_as_numbers(tmp_path):
    url = f"sqlite:///{tmp_path / 'np.db'}"
    record(url, config={"lr": np.float32(0.5), "sizes": np.arange(3), "steps": np.int64(7)})
    engine = create_store_engine(url)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT config FROM runs")).scalar_one()
    engine.dispose()
    assert json.loads(stored) == {"lr": 0.5, "sizes": [0, 1, 2], "steps": 7, "record_visits": False}


def test_a_run_name_with_nul_is_refused(tmp_path):
    with pytest.raises(ValueError, match="without NUL"):
        Recorder(f"sqlite:///{tmp_path / 'n.db'}", run="a\x00b", dataset=TinyDataset(2))


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datasetq", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_with_a_mistyped_database_refuses_and_creates_nothing(tmp_path):
    typo = tmp_path / "datasteq.db"
    result = serve("--db", f"sqlite:///{typo}")
    assert result.returncode == 1
    assert "there is no database at" in result.stderr
    assert "Traceback" not in result.stderr
    assert not typo.exists()


def test_serve_on_a_file_that_is_not_a_database_says_so(tmp_path):
    notes = tmp_path / "notes.db"
    notes.write_text("not a database")
    result = serve("--db", f"sqlite:///{notes}")
    assert result.returncode == 1
    assert "is not a SQLite database" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"flush_interval": float("nan")}, "flush_interval should be a positive number"),
        ({"flush_interval": 0}, "flush_interval should be a positive number"),
        ({"state_interval": -1}, "state_interval should be a non-negative number"),
        ({"close_timeout": "soon"}, "close_timeout should be a non-negative number"),
        ({"batch_rows": 2.5}, "batch_rows should be an integer"),
    ],
)
def test_bad_recorder_arguments_name_themselves(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        Recorder(f"sqlite:///{tmp_path / 'a.db'}", run="r", dataset=TinyDataset(2), **options)


def test_labels_without_class_names_are_bounded(tmp_path):
    """A label of 50,000,000 would have the recorder name 50M classes (MemoryError before)."""

    class Unnamed(torch.utils.data.Dataset):  # labels, but no class names
        targets = (0, 3, 50_000_000)

        def __len__(self) -> int:
            return 3

        def __getitem__(self, index: int) -> int:
            return index

    with pytest.raises(ValueError, match="pass class_names="):
        Recorder(f"sqlite:///{tmp_path / 'l.db'}", run="r", dataset=Unnamed())
    named = Recorder(
        f"sqlite:///{tmp_path / 'l.db'}", run="r", dataset=Unnamed(), class_names=["a", "b", "c"]
    )
    assert named.description.class_names == ["a", "b", "c"]


def test_a_schema_another_process_creates_between_two_looks_is_used(store_url, monkeypatch):
    """DDP ranks (or a sweep) start together on a store nobody has created yet: a rank that
    finds no schema, and then the tables another rank committed a moment later, uses them
    instead of refusing half a database."""
    from datasetq.store import migrations

    looks = []

    def another_process_creates_right_after(engine):
        revision = current_revision(engine)
        if not looks:
            other = create_store_engine(store_url, write=True)
            create_at_head(other)
            other.dispose()
        looks.append(revision)
        return revision

    monkeypatch.setattr(migrations, "current_revision", another_process_creates_right_after)
    engine = create_store_engine(store_url, write=True)
    try:
        ensure_schema(engine, store_url, create=True)
        assert looks[0] is None
        assert current_revision(engine) == migrations.SCHEMA_REVISION
    finally:
        engine.dispose()
    record(store_url)  # and it records


def opened_as_unprivileged(url: str) -> str:
    """What opening a Recorder on ``url`` says, in a process that cannot write what its user
    does not own: a forked child that drops root to ``nobody`` (tests often run as root, for
    whom nothing is read-only), or this user itself."""
    # Everything a Recorder imports is imported before the fork (the unprivileged child
    # could not read this interpreter's files); not next to the store, whose folder may be
    # read-only.
    with tempfile.TemporaryDirectory() as warm:
        record(f"sqlite:///{Path(warm) / 'warm.db'}")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        message = "opened"
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
            record(url)
        except StoreError as error:
            message = f"StoreError: {error}"
        except BaseException as error:
            message = f"{type(error).__name__}: {error}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(child, 0)
    return message


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("file", "the file is read-only"),
        ("folder", "is read-only"),
        ("new-file-in-read-only-folder", "no permission to write in"),
    ],
)
def test_a_read_only_store_says_so(case, message):
    # Not under pytest's tmp_path: its parent is private to this user, so the unprivileged
    # one could not even reach the store.
    outer = Path(tempfile.mkdtemp(prefix="datasetq-read-only-"))
    outer.chmod(0o755)
    folder = outer / "stores"
    folder.mkdir()
    store = folder / "store.db"
    if case != "new-file-in-read-only-folder":
        upgrade(f"sqlite:///{store}")
    if case == "file":
        store.chmod(0o444)
    else:
        folder.chmod(0o555)
    try:
        said = opened_as_unprivileged(f"sqlite:///{store}")
    finally:
        folder.chmod(0o755)
        shutil.rmtree(outer)
    assert said.startswith("StoreError: "), said
    assert message in said


def _open_and_write(url: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        engine = create_store_engine(url, write=True)
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
        engine.dispose()
        results.put("ok")
    except Exception as error:  # reported to the test, which shows it
        results.put(f"{type(error).__name__}: {error}")


def test_processes_opening_a_new_sqlite_store_at_once_all_get_in(tmp_path):
    """Every rank of a distributed run opens the same new database at the same moment. Their
    switches to WAL collide, and SQLite reports that as "database is locked" without waiting;
    without retrying, about one open in 40 failed here."""
    context = multiprocessing.get_context("fork")
    outcomes: list[str] = []
    for attempt in range(60):
        url = f"sqlite:///{tmp_path / f'new-{attempt}.db'}"
        barrier, results = context.Barrier(3), context.Queue()
        workers = [
            context.Process(target=_open_and_write, args=(url, barrier, results)) for _ in range(3)
        ]
        for worker in workers:
            worker.start()
        outcomes += [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join()
        with create_store_engine(url).connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 3
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert [o for o in outcomes if o != "ok"] == []
