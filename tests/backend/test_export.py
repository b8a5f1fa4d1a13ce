"""The cleaned manifest: streamed, escaped, and loadable with ManifestDataset."""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from datasetq import ManifestDataset
from datasetq.training import MNISTSplit
from tests.backend.conftest import N

BASE = "/api/v1/runs/1"


def test_csv_manifest_applies_decisions_and_escapes_formulas(writer, tmp_path):
    writer.post(f"{BASE}/samples/3/label", json={"label": 9})
    writer.post(
        f"{BASE}/samples/4/flag", json={"flagged": True, "reason": '=HYPERLINK("http://x")'}
    )
    response = writer.get(f"{BASE}/export?format=csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == N
    by_id = {int(r["sample_id"]): r for r in rows}
    assert by_id[3]["label"] == "9"
    assert by_id[3]["keep"] == "True"
    assert by_id[4]["keep"] == "False"
    assert by_id[4]["dropped_because"].startswith("flagged: ")
    assert "'=HYPERLINK" not in by_id[4]["dropped_because"]  # not at the cell start: kept as is
    evicted = [r for r in rows if r["dropped_because"] and "evicted" in r["dropped_because"]]
    assert evicted
    path = tmp_path / "manifest.csv"
    path.write_text(response.text)
    labels = np.arange(N) % 10
    clean = ManifestDataset(MNISTSplit(np.arange(N), labels), path)
    kept = [int(r["sample_id"]) for r in rows if r["keep"] == "True"]
    assert len(clean) == len(kept)
    position = kept.index(3)
    assert clean[position][1][1] if isinstance(clean[position][1], tuple) else True


def test_formula_cells_are_escaped(writer):
    writer.post(f"{BASE}/samples/4/flag", json={"flagged": True, "reason": "x"})
    from backend.routers.export import escape_cell

    for dangerous in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert escape_cell(dangerous) == "'" + dangerous
    assert escape_cell("plain") == "plain"
    assert escape_cell(5) == 5


def test_jsonl_manifest_round_trips(writer, tmp_path):
    writer.post(f"{BASE}/samples/7/flag", json={"flagged": True, "reason": "drop"})
    response = writer.get(f"{BASE}/export?format=jsonl")
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) == N
    assert lines[7]["keep"] is False
    path = tmp_path / "manifest.jsonl"
    path.write_text(response.text)
    base = [(np.zeros(1), i % 10) for i in range(N)]
    clean = ManifestDataset(base, path)
    assert len(clean) == sum(1 for line in lines if line["keep"])


def test_export_errors(writer):
    assert writer.get("/api/v1/runs/77/export").json() == {"detail": "Run 77 not found"}
    assert writer.get(f"{BASE}/export?format=xlsx").status_code == 422
