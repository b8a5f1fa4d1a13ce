"""``ManifestDataset``: a dataset cleaned by an exported manifest (relabels applied, drops removed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

__all__ = ["ManifestDataset", "read_manifest"]


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Reads a manifest exported as CSV or JSON lines (by its suffix)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["sample_id"] = int(row["sample_id"])
        row["label"] = int(row["label"]) if row["label"] not in ("", None) else None
        row["keep"] = row["keep"] == "True"
    return rows


class ManifestDataset(Dataset[Any]):
    r"""The samples a manifest keeps, with their final labels.

    Args:
        base (Dataset): the original dataset; ``base[i]`` returns ``(x, label)``.
        manifest (str, Path or list): an exported manifest (``.csv`` or ``.jsonl``), or its rows.

    Example::

        >>> clean = ManifestDataset(EmbeddedMNIST(transform=ToTensor()), "run-1-manifest.csv")
        >>> x, label = clean[0]
    """

    def __init__(self, base: Any, manifest: str | Path | list[dict[str, Any]]) -> None:
        rows = manifest if isinstance(manifest, list) else read_manifest(manifest)
        if any(not 0 <= int(r["sample_id"]) < len(base) for r in rows):
            raise ValueError(
                f"manifest names samples outside the base dataset ({len(base)} samples)"
            )
        kept = [r for r in rows if r["keep"]]
        self.base = base
        self.indices = [int(r["sample_id"]) for r in kept]
        self.labels = [r["label"] for r in kept]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        x, label = self.base[self.indices[index]]
        final = self.labels[index]
        return x, label if final is None else final
