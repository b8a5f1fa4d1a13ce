"""Manifests: the cleaned dataset a run's review exports, written and read back.

A manifest is CSV or JSON lines. Its first line identifies the dataset it was exported from
(``# datasetq-manifest {...}`` in CSV, ``{"datasetq_manifest": {...}}`` in JSON lines): name,
number of samples and a fingerprint of the original labels. Every further line is a sample:
its id, ``source`` (where it comes from in the underlying data), original and final label,
whether to keep it and why, and whether a reviewer decided it.

:class:`ManifestDataset` checks that the dataset it is given is the one the manifest describes
before it pairs a single image with a label.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

__all__ = ["ManifestDataset", "manifest_lines", "read_manifest"]

COLUMNS = [
    "sample_id",
    "source",
    "original_label",
    "label",
    "label_name",
    "keep",
    "reason",
    "reviewed",
    "needs_review",
    "flagged",
    "evicted_epoch",
]
CSV_HEADER_PREFIX = "# datasetq-manifest "
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_INTEGERS = ("sample_id", "original_label", "label", "evicted_epoch")
_BOOLEANS = ("keep", "reviewed", "needs_review", "flagged")
# Share of rows whose recorded label a larger dataset must agree with, read through sources.
SOURCE_AGREEMENT = 0.5


def escape_cell(value: Any) -> Any:
    """Keeps spreadsheets from running a cell as a formula (OWASP CSV injection)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def manifest_lines(
    header: dict[str, Any], rows: Iterable[dict[str, Any]], format: str, chunk: int = 5000
) -> Iterator[str]:
    """The manifest as text, in pieces of about ``chunk`` rows (the API and the CLI share it,
    so both give the same bytes)."""
    if format == "jsonl":
        yield json.dumps({"datasetq_manifest": header}, sort_keys=True) + "\n"
        lines: list[str] = []
        for row in rows:
            lines.append(json.dumps(row))
            if len(lines) == chunk:
                yield "\n".join(lines) + "\n"
                lines = []
        if lines:
            yield "\n".join(lines) + "\n"
        return
    if format != "csv":
        raise ValueError(f'format should be "csv" or "jsonl", but got format={format!r}')
    buffer = io.StringIO()
    buffer.write(CSV_HEADER_PREFIX + json.dumps(header, sort_keys=True) + "\r\n")
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for count, row in enumerate(rows, 1):
        writer.writerow([escape_cell(row[c]) for c in COLUMNS])
        if count % chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def read_manifest(path: str | Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Reads a manifest exported as CSV or JSON lines (by its suffix): its header (None for a
    manifest written before headers existed) and its rows."""
    path = Path(path)
    header: dict[str, Any] | None = None
    if path.suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                value = json.loads(line)
                if "datasetq_manifest" in value:
                    header = value["datasetq_manifest"]
                else:
                    rows.append(value)
        return header, rows
    with path.open(newline="", encoding="utf-8") as f:
        first = f.readline()
        if first.startswith(CSV_HEADER_PREFIX):
            header = json.loads(first[len(CSV_HEADER_PREFIX) :])
        else:
            f.seek(0)
        rows = list(csv.DictReader(f))
    for row in rows:
        for name in _INTEGERS:
            if name in row:
                row[name] = int(row[name]) if row[name] not in ("", None) else None
        for name in _BOOLEANS:
            if name in row:
                row[name] = row[name] == "True"
    return header, rows


class ManifestDataset(Dataset[Any]):
    r"""The samples a manifest keeps, with their final labels, read from the dataset the
    manifest was exported from.

    ``base`` must be that dataset (same length, the same labels in the same order), or, when
    the manifest's ``source`` entries are indices into a larger dataset (a split or a
    ``Subset`` of it), that larger dataset: then the sample of row ``r`` is
    ``base[int(r["source"])]``. Anything else raises ``ValueError`` naming both datasets
    rather than pairing images with the wrong labels. Items are ``(x, label)`` with the
    manifest's label, read through the base (its transforms apply); a base that returns
    ``(index, (x, label))`` (``with_indices``) is read the same way.

    Args:
        base (Dataset): ``base[i]`` returns ``(x, label)``.
        manifest (str, Path, or tuple): an exported manifest (``.csv`` or ``.jsonl``), or
            ``(header, rows)`` as :func:`read_manifest` returns them.

    Example::

        >>> clean = ManifestDataset(EmbeddedMNIST(transform=ToTensor()), "run-1-manifest.csv")
        >>> x, label = clean[0]
    """

    def __init__(
        self, base: Any, manifest: str | Path | tuple[dict[str, Any] | None, list[dict[str, Any]]]
    ) -> None:
        header, rows = manifest if isinstance(manifest, tuple) else read_manifest(manifest)
        positions = _positions(base, header, rows)
        kept = [i for i, row in enumerate(rows) if row["keep"]]
        self.base = base
        self.header = header
        self.indices = [int(positions[i]) for i in kept]
        self.labels = [rows[i]["label"] for i in kept]
        self.sample_ids = [int(rows[i]["sample_id"]) for i in kept]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        position = self.indices[index]
        item = self.base[position]
        if _indexed(item, position):  # a with_indices dataset gives (index, (x, label))
            item = item[1]
        x, label = item
        final = self.labels[index]
        return x, label if final is None else final


def _indexed(item: Any, position: int) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[1], tuple)
        and len(item[1]) == 2
        and isinstance(item[0], int)
        and item[0] == position
    )


def _describe(base: Any) -> tuple[np.ndarray | None, str | None]:
    """The base's labels (None: unknown) and its kind of data, as the recorder reads them."""
    from .recorder.registry import describe_dataset

    description = describe_dataset(base)
    labels = description.labels
    return (
        None if labels is None else np.asarray(labels, dtype=np.int64),
        description.render.kind,
    )


def _positions(base: Any, header: dict[str, Any] | None, rows: list[dict[str, Any]]) -> np.ndarray:
    """Where each row's sample is in ``base``, after checking that ``base`` is its dataset."""
    from .store.export import labels_fingerprint

    size = len(base)
    ids = np.asarray([int(r["sample_id"]) for r in rows], dtype=np.int64)
    original = np.asarray(
        [-1 if r.get("original_label") is None else int(r["original_label"]) for r in rows],
        dtype=np.int64,
    )
    labels, base_kind = _describe(base)
    expected = header or {}
    described = (
        f"the manifest's dataset {expected.get('dataset', '(unnamed)')!r} "
        f"({expected.get('num_samples', len(rows))} samples)"
    )
    found = f"the base {type(base).__name__} ({size} samples)"
    if labels is None:
        raise ValueError(
            f"cannot check that {found} is {described}: its labels cannot be read "
            "(give it a `targets` or `labels` attribute)"
        )
    same_size = size == expected.get("num_samples", len(rows)) and (ids < size).all()
    if (
        same_size
        and (labels[ids] == original).all()
        and (header is None or labels_fingerprint(labels) == header["labels_sha256"])
    ):
        return ids
    sources = [r.get("source") for r in rows]
    kind = expected.get("source_kind")
    same_kind = kind is None or base_kind == kind
    if same_kind and all(isinstance(s, str | int) and str(s).isdigit() for s in sources):
        positions = np.asarray([int(s) for s in sources], dtype=np.int64)  # type: ignore[arg-type]
        if len(positions) and (positions < size).all():
            # The recorded labels may differ from the larger dataset's on purpose (the demo
            # flips some); another dataset, or another order, agrees on about 1 in classes.
            agreement = float((labels[positions] == original).mean())
            if agreement >= SOURCE_AGREEMENT:
                return positions
            raise ValueError(
                f"{found} is not the dataset {described} indexes by source: the labels agree "
                f"on {agreement:.0%} of its rows (at least {SOURCE_AGREEMENT:.0%} expected)"
            )
    mismatch = (
        "other labels or another order"
        if size == expected.get("num_samples", len(rows))
        else "a different length, and no sources that index it"
    )
    raise ValueError(f"{found} is not {described}: {mismatch}")
