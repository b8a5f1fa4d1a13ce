"""The store-side CLI commands: ``datasetq runs`` and ``datasetq export``."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from .errors import StoreError
from .manifest import manifest_lines
from .store.engine import create_store_engine
from .store.export import manifest_header, manifest_rows
from .store.migrations import ensure_schema
from .store.runs import find_run, list_runs

__all__ = ["export_command", "list_runs_command"]

PROGRESS_EVERY = 100_000  # rows between progress lines on stderr


@contextmanager
def _open(url: str) -> Iterator[Session]:
    """A session on the database at ``url`` (at the current schema), closed with its engine."""
    engine = create_store_engine(url)
    try:
        ensure_schema(engine, url, create=False)
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def list_runs_command(url: str) -> int:
    """Prints a table of the database's runs."""
    try:
        with _open(url) as session:
            runs = list_runs(session)[::-1]  # oldest first, as a log reads
    except StoreError as error:
        print(f"datasetq runs: {error}", file=sys.stderr)
        return 1
    if not runs:
        print(f"no runs in {url}")
        return 0
    width = max(len(r.name) for r in runs)
    print(
        f"{'id':>4}  {'name':<{width}}  {'status':<11}  {'epochs':>6}  {'started (UTC)':<19}  dataset"
    )
    for r in runs:
        started = r.started_at.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{r.id:>4}  {r.name:<{width}}  {r.current_status:<11}  {r.epochs:>6}  {started:<19}  "
            f"{r.dataset.name}"
        )
    return 0


def export_command(url: str, run: str, format: str, evicted: str, output: str) -> int:
    """Writes a run's manifest, byte for byte what the API's export gives for these options."""
    try:
        with _open(url) as session:
            return _export(session, url, run, format, evicted, output)
    except StoreError as error:
        print(f"datasetq export: {error}", file=sys.stderr)
        return 1


def _export(session: Session, url: str, run: str, format: str, evicted: str, output: str) -> int:
    record = find_run(session, run)
    if record is None:
        print(f"datasetq export: no run named or numbered {run!r} in {url}", file=sys.stderr)
        return 1
    dataset = record.dataset
    header = manifest_header(session, record, evicted)
    rows = _counting(manifest_rows(session, record, evicted), dataset.num_samples)
    if output == "-":
        _write(sys.stdout.buffer, manifest_lines(header, rows, format))
    else:
        with open(output, "wb") as file:
            _write(file, manifest_lines(header, rows, format))
        print(
            f"wrote {dataset.num_samples:,} samples of run {record.name!r} to {output}",
            file=sys.stderr,
        )
    return 0


def _write(file: BinaryIO, pieces: Iterable[str]) -> None:
    for piece in pieces:
        file.write(piece.encode("utf-8"))
    file.flush()


def _counting(rows: Iterable[dict[str, Any]], total: int) -> Iterator[dict[str, Any]]:
    """Passes rows through, printing progress to stderr on large runs."""
    for count, row in enumerate(rows, 1):
        if count % PROGRESS_EVERY == 0:
            print(f"  {count:,} of {total:,} samples", file=sys.stderr, flush=True)
        yield row
