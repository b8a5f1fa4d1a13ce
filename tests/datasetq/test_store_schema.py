"""Migrations: create, agree with the models, refuse a database that is behind."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from datasetq import Recorder, StoreError
from datasetq.cli import main
from datasetq.store.engine import create_store_engine
from datasetq.store.migrations import current_revision, head_revision, upgrade
from datasetq.store.models import Base

from .recording import TinyDataset


def test_upgrade_creates_the_schema_and_matches_the_models(store_url):
    assert upgrade(store_url) == head_revision()
    engine = create_store_engine(store_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        tables = set(inspect(engine).get_table_names())
        assert {"runs", "samples", "sample_state", "epoch_samples", "label_changes"} <= tables
    finally:
        engine.dispose()
    assert upgrade(store_url) == head_revision()  # idempotent


def test_recorder_refuses_a_database_that_is_behind(store_url):
    upgrade(store_url)
    engine = create_store_engine(store_url, write=True)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    with pytest.raises(StoreError, match=r"revision 0000.*run `datasetq db upgrade --db "):
        Recorder(store_url, run="r", dataset=TinyDataset()).open()


def test_recorder_refuses_foreign_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    engine = create_store_engine(url, write=True)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE unrelated (x INTEGER)"))
    engine.dispose()
    with pytest.raises(StoreError, match="no datasetq schema"):
        Recorder(url, run="r", dataset=TinyDataset()).open()


def test_cli_db_upgrade(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["db", "upgrade", "--db", url]) == 0
    assert f"schema at revision {head_revision()}" in capsys.readouterr().out
    bad = f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    assert main(["db", "upgrade", "--db", bad]) == 1
    assert "datasetq db upgrade:" in capsys.readouterr().err


def test_a_recorder_creates_the_same_schema_as_the_migrations(store_url, tmp_path):
    Recorder(store_url, run="fresh", dataset=TinyDataset()).open().close()
    migrated_url = f"sqlite:///{tmp_path / 'migrated.db'}"
    upgrade(migrated_url)
    engines = create_store_engine(store_url), create_store_engine(migrated_url)
    try:
        assert current_revision(engines[0]) == head_revision()
        with engines[0].connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        inspectors = [inspect(engine) for engine in engines]
        tables = [set(i.get_table_names()) for i in inspectors]
        assert tables[0] == tables[1]
        if engines[0].dialect.name == "sqlite":  # same dialect: indexes compare one to one
            for table in tables[0]:
                indexes = [sorted(map(described, i.get_indexes(table))) for i in inspectors]
                assert indexes[0] == indexes[1], table
    finally:
        for engine in engines:
            engine.dispose()


def described(index) -> str:
    """An index as comparable text (its partial-index clause is an object without equality)."""
    options = {k: str(v) for k, v in index.get("dialect_options", {}).items()}
    return str((index["name"], index["column_names"], bool(index["unique"]), options))
