"""Schema migrations with Alembic: upgrade a database, or refuse one that is behind."""

from __future__ import annotations

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    text,
)

from alembic import command

from ..bundled import migration_scripts
from ..errors import StoreError
from .engine import create_store_engine
from .models import Base

__all__ = ["create_at_head", "current_revision", "ensure_schema", "head_revision", "upgrade"]

ALEMBIC_DIR = migration_scripts()
# The revision the models describe; a test checks it is the migration scripts' head. Known
# here, a Recorder checks a database without loading the scripts.
SCHEMA_REVISION = "0006"
# Alembic's own bookkeeping table, as it creates it (``alembic.runtime.migration``).
_VERSION_TABLE = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)
# Serialises schema creation on PostgreSQL between processes started together.
_CREATE_LOCK = 0x64617461  # "data"


def alembic_config(url: str) -> Config:
    if not (ALEMBIC_DIR / "env.py").is_file():
        raise StoreError(f"the migration scripts are missing: expected {ALEMBIC_DIR}")
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(url: str) -> str:
    """Creates or migrates the database at ``url`` to the newest schema; returns the revision."""
    engine = create_store_engine(url, write=True)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        return head_revision()
    finally:
        engine.dispose()


def create_at_head(engine: Engine) -> bool:
    """Creates the newest schema in an empty database from the models, stamped at the head
    revision (Alembic's recipe for a new database): one transaction, without loading the
    migration scripts, so a Recorder on a fresh file starts in a fraction of the time.
    A test checks that the result equals what the migrations build.

    Returns whether it created the schema: a database that already holds tables (another
    process created them first) is left as it is. Processes started together (one per rank)
    take turns: SQLite's write transaction, or a PostgreSQL advisory lock, makes "is it
    empty?" and "create" one step.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK})
        if inspect(connection).get_table_names():
            return False
        Base.metadata.create_all(connection)
        _VERSION_TABLE.create(connection)
        connection.execute(_VERSION_TABLE.insert().values(version_num=SCHEMA_REVISION))
    return True


def ensure_schema(engine: Engine, url: str, *, create: bool) -> None:
    """Checks that the database is at the newest schema.

    An empty database is created when ``create`` is true. A database at an older revision is
    refused with a message that says what to run.
    """
    head = SCHEMA_REVISION
    current = current_revision(engine)
    if current == head:
        return
    if current is None and create and create_at_head(engine):
        return
    # Read again: another process may have created the schema since the first look.
    current = current_revision(engine)
    if current == head:
        return
    if current is not None and current.isdigit() and int(current) > int(head):
        raise StoreError(
            f"the database {engine.url.render_as_string(hide_password=True)} has schema "
            f"revision {current}, newer than this datasetq knows ({head}): upgrade datasetq "
            "to use it"
        )
    shown = "no datasetq schema" if current is None else f"schema revision {current}"
    raise StoreError(
        f"the database {engine.url.render_as_string(hide_password=True)} has {shown}, "
        f"but this datasetq needs revision {head}: run `datasetq db upgrade --db {url}`"
    )
