"""Opening a store, with a clear :class:`~datasetq.errors.StoreError` for every way it fails:
a path that cannot hold a database, a file that is not one, a server that does not answer, a
schema from a newer datasetq. Driver and filesystem exceptions never reach the caller."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from ..errors import StoreError

__all__ = ["check_sqlite_path", "store_errors"]

SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite_path(url: str, *, create: bool) -> None:
    """Raises :class:`StoreError` when a SQLite URL's file cannot be used as a store.

    ``create``: whether a missing file may be created (a recorder); otherwise it must exist
    (a server, which would otherwise create an empty database on a typo).
    """
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database).expanduser()
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a database file; name a file in it")
    if not path.exists():
        if not create:
            raise StoreError(
                f"there is no database at {path}; record a run into it first, or create it "
                f"with `datasetq db upgrade --db {url}`"
            )
        if not path.parent.is_dir():
            raise StoreError(f"cannot create {path}: the folder {path.parent} does not exist")
        if not os.access(path.parent, os.W_OK):
            raise StoreError(f"cannot create {path}: no permission to write in {path.parent}")
        return
    with open(path, "rb") as file:
        header = file.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise StoreError(f"{path} is not a SQLite database (it holds other data)")
    if create and not os.access(path, os.W_OK):
        raise StoreError(f"cannot record into {path}: the file is read-only")
    if create and not os.access(path.parent, os.W_OK):
        raise StoreError(
            f"cannot record into {path}: SQLite writes its journal next to the file, and "
            f"{path.parent} is read-only"
        )


@contextmanager
def store_errors(url: str) -> Iterator[None]:
    """Turns the driver's and SQLAlchemy's exceptions into one :class:`StoreError` naming the
    store and the reason (the first line of the driver's message)."""
    shown = _shown(url)
    try:
        yield
    except StoreError:
        raise
    except (NoSuchModuleError, ArgumentError, ModuleNotFoundError) as error:
        raise StoreError(
            f"cannot use the store {shown}: datasetq stores in SQLite (sqlite:///file.db) or "
            f"PostgreSQL (postgresql://...) ({_first_line(error)})"
        ) from None
    except DBAPIError as error:
        raise StoreError(f"cannot use the store {shown}: {_first_line(error.orig)}") from None
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"cannot use the store {shown}: {_first_line(error)}") from None


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
