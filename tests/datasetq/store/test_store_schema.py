"""Migrations: create, agree with the models, refuse a database that is behind."""

from __future__ import annotations

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from alembic import command
from datasetq import Recorder, StoreError
from datasetq.cli import main
from datasetq.store.engine import create_store_engine
from datasetq.store.ingest import now
from datasetq.store.migrations import (
    SCHEMA_REVISION,
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)
from datasetq.store.models import Base
from datasetq.store.samples import sample_trajectory

from ..recording import TinyDataset, train_recorded


def test_upgrade_creates_the_schema_and_matches_the_models(store_url):
    assert upgrade(store_url) == head_revision()
    engine = create_store_engine(store_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        tables = set(inspect(engine).get_table_names())
        assert {"runs", "samples", "sample_state", "epoch_blocks", "label_changes"} <= tables
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


def test_the_models_revision_is_the_migrations_head():
    assert head_revision() == SCHEMA_REVISION


def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    engine = create_store_engine(url, write=True)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(config, revision)
    finally:
        engine.dispose()


def test_0003_converts_per_sample_rows_into_epoch_blocks_and_back(store_url):
    """A database recorded at revision 0002 (a row per sample and epoch, per-visit losses per
    block) answers the same trajectories after the upgrade, and again after a downgrade."""
    _migrate(store_url, "0002")
    rng = np.random.default_rng(3)
    ids = np.sort(rng.choice(9000, 700, replace=False))  # three blocks, gaps between ids
    sent: dict[tuple[int, int], list[float]] = {}
    engine = create_store_engine(store_url, write=True)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO datasets (id, name, num_samples, class_names, render, "
                    "fingerprint, created_at) VALUES (1, 'd', 9000, '[]', '{}', 'x', :t)"
                ),
                {"t": now()},
            )
            connection.execute(
                text(
                    "INSERT INTO runs (id, name, dataset_id, config, status, started_at, "
                    "heartbeat_at, epochs) VALUES (1, 'r', 1, '{}', 'finished', :t, :t, 2)"
                ),
                {"t": now()},
            )
            for epoch in range(2):
                counts = rng.integers(1, 4, len(ids))
                blobs: dict[int, list[float]] = {}
                for sample_id, count in zip(ids.tolist(), counts.tolist(), strict=True):
                    losses = np.float32(rng.random(count)).tolist()
                    sent[(epoch, sample_id)] = losses
                    block = blobs.setdefault(sample_id // 4096, [])
                    repeated = count > 1
                    connection.execute(
                        text("INSERT INTO epoch_samples VALUES (1, :e, :s, :v, :f, :l, :m, :x)"),
                        {
                            "e": epoch,
                            "s": sample_id,
                            "v": count,
                            "f": len(block),
                            "l": losses[-1],
                            "m": float(np.mean(losses)) if repeated else None,
                            "x": max(losses) if repeated else None,
                        },
                    )
                    block.extend(losses)
                for block, losses in blobs.items():
                    connection.execute(
                        text("INSERT INTO visit_blocks VALUES (1, :e, :b, :l)"),
                        {"e": epoch, "b": block, "l": np.asarray(losses, "<f4").tobytes()},
                    )
    finally:
        engine.dispose()

    def check_trajectories() -> None:
        reader = create_store_engine(store_url)
        try:
            with reader.connect() as connection:
                for sample_id in [*ids[[0, 1, 350, -1]].tolist(), int(ids[0]) + 1]:
                    trajectory = sample_trajectory(connection, 1, sample_id, epochs=2)
                    expected = [
                        (e, sent[(e, sample_id)]) for e in range(2) if (e, sample_id) in sent
                    ]
                    assert [row[0] for row in trajectory["epochs"]] == [e for e, _ in expected]
                    for row, (_, losses) in zip(trajectory["epochs"], expected, strict=True):
                        assert row[1] == len(losses)
                        np.testing.assert_allclose(
                            row[2:], [losses[-1], np.mean(losses), max(losses)], rtol=1e-6
                        )
                    np.testing.assert_allclose(
                        [v for _, v in trajectory["visits"]],
                        [v for _, losses in expected for v in losses],
                        rtol=1e-6,
                    )
        finally:
            reader.dispose()

    _migrate(store_url, "head")
    check_trajectories()
    _migrate(store_url, "0002", down=True)
    engine = create_store_engine(store_url)
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            restored = connection.execute(
                text(
                    "SELECT epoch, sample_id, visits, last_loss, mean_loss, max_loss "
                    "FROM epoch_samples ORDER BY epoch, sample_id"
                )
            ).all()
    finally:
        engine.dispose()
    assert {"epoch_samples", "visit_blocks"} <= tables
    assert "epoch_blocks" not in tables
    assert [(e, s) for e, s, *_ in restored] == sorted(sent)
    for epoch, sample_id, count, last, mean, maximum in restored:
        losses = sent[(epoch, sample_id)]
        assert count == len(losses)
        assert last == pytest.approx(losses[-1], rel=1e-6)
        if count == 1:
            assert (mean, maximum) == (None, None)  # equal to the last loss, stored as NULL
        else:
            assert mean == pytest.approx(np.mean(losses), rel=1e-6)
            assert maximum == pytest.approx(max(losses), rel=1e-6)
    _migrate(store_url, "head")
    check_trajectories()


def _scores(url: str) -> dict[int, tuple[float | None, int | None]]:
    engine = create_store_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT sample_id, score, coverage_epochs FROM sample_state WHERE run_id = 1")
            ).all()
    finally:
        engine.dispose()
    return {int(s): (score, covered) for s, score, covered in rows}


def test_0004_scores_runs_recorded_before_it_from_their_epoch_blocks(store_url):
    """The suspicion score is each epoch's first report per sample, averaged over epochs. A run
    recorded at head, downgraded to 0003 (the columns go) and upgraded again gets back the
    scores the recorder wrote, computed by the migration from the stored per-visit losses."""
    dataset = TinyDataset(60)
    with Recorder(store_url, run="r", dataset=dataset, state_interval=0) as recorder:
        _, reports = train_recorded(recorder, dataset, epochs=3, policy="greedy")
    first: dict[int, list[float]] = {}
    seen: set[tuple[int, int]] = set()
    for epoch, ids, losses in reports:
        for sample_id, loss in zip(ids, losses, strict=True):
            if (epoch, sample_id) not in seen:
                seen.add((epoch, sample_id))
                first.setdefault(sample_id, []).append(loss)
    recorded = _scores(store_url)
    assert set(recorded) == set(first)
    for sample_id, losses in first.items():
        score, covered = recorded[sample_id]
        assert covered == len(losses)
        assert score == pytest.approx(np.mean(losses), rel=1e-6)

    _migrate(store_url, "0003", down=True)
    engine = create_store_engine(store_url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("sample_state")}
    finally:
        engine.dispose()
    assert not {"score", "coverage_epochs", "evidence_score", "wrong_since"} & columns
    _migrate(store_url, "head")
    migrated = _scores(store_url)
    assert set(migrated) == set(recorded)
    for sample_id, (score, covered) in recorded.items():
        assert migrated[sample_id][1] == covered
        assert migrated[sample_id][0] == pytest.approx(score, rel=1e-6)
