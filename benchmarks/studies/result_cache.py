"""The studies' cache: each result by name in a JSON file under ``RESULTS``, computed once, and
shared by processes that split the work (shards)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(
    os.environ.get("DATASETQ_STUDY_DIR", Path(__file__).resolve().parents[2] / "docs" / "study")
)


class ResultCache:
    """Results by name in ``RESULTS/<stem>.json``, computed once.

    With ``shard=(i, k)`` the process computes only every k-th missing result asked for
    (counting from i) and saves it to a file of its own, so k processes can share the work; the
    report run reads every ``<stem>*.json``. Each file keeps only what was computed into it:
    the results read from the other files are not written again.
    """

    def __init__(self, stem: str, shard: tuple[int, int] | None = None) -> None:
        suffix = "" if shard is None else f"-shard{shard[0]}"
        self.path = RESULTS / f"{stem}{suffix}.json"
        self.shard = shard
        self.results: dict[str, Any] = {}
        self._own: dict[str, Any] = {}  # what this process's file holds
        for path in sorted(RESULTS.glob(f"{stem}*.json")):
            held = json.loads(path.read_text())
            self.results.update(held)
            if path == self.path:
                self._own = dict(held)
        self._asked = 0

    def get(self, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """The cached result, else ``compute()``'s; None when another shard computes it."""
        self._asked += 1
        if name in self.results:
            return dict(self.results[name])
        if self.shard is not None and (self._asked - 1) % self.shard[1] != self.shard[0]:
            return None
        result = compute()
        self.results[name] = result
        self._own[name] = result
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self._own, indent=1, sort_keys=True))
        return result
