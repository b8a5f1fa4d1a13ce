"""The cleaned manifest: decisions win over the sampler, the policy for evicted samples, counts
that match the file, formula escaping, and ManifestDataset on the right (and wrong) base."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from torch.utils.data import Subset
from torchvision import transforms

from datasetq import ManifestDataset
from datasetq.datasets import EmbeddedMNIST
from datasetq.manifest import escape_cell, read_manifest
from datasetq.training import MNISTSplit
from tests.backend.conftest import FLIPPED, N

BASE = "/api/v1/runs/1"


def review(writer, kind, ids, **extra):
    response = writer.post(f"{BASE}/reviews", json={"kind": kind, "sample_ids": ids, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def csv_rows(text: str) -> list[dict[str, str]]:
    first, rest = text.split("\r\n", 1)
    assert first.startswith("# datasetq-manifest {")
    return list(csv.DictReader(io.StringIO(rest)))


def seeded_split() -> MNISTSplit:
    """The dataset the seeded run recorded (its labels with FLIPPED moved by one)."""
    labels = EmbeddedMNIST().targets.numpy()[:N].astype(np.int64)
    labels[FLIPPED] = (labels[FLIPPED] + 1) % 10
    return MNISTSplit(np.arange(N), labels)


def test_reviewer_decisions_win_over_the_sampler(writer):
    """Relabel an evicted sample, keep another, drop a clean one, flag a fourth: the export
    keeps the first two (the first with its new label), leaves out the third, keeps the fourth
    as it was; the other evicted samples follow the policy."""
    relabeled, kept, dropped, flagged = FLIPPED[0], FLIPPED[1], 5, 6
    true_label = int(EmbeddedMNIST().targets[relabeled])
    review(writer, "relabel", [relabeled], label=true_label)
    review(writer, "keep", [kept])
    review(writer, "drop", [dropped], reason="a smudge")
    review(writer, "flag", [flagged], reason="look again")
    for policy, evicted_kept in (("drop", False), ("keep", True), ("mark", True)):
        response = writer.get(f"{BASE}/export?format=csv&evicted={policy}")
        assert response.status_code == 200
        assert "attachment" in response.headers["content-disposition"]
        rows = {int(r["sample_id"]): r for r in csv_rows(response.text)}
        assert len(rows) == N
        assert (rows[relabeled]["label"], rows[relabeled]["keep"]) == (str(true_label), "True")
        assert rows[relabeled]["reason"] == "kept by a reviewer"
        assert rows[relabeled]["reviewed"] == "True"
        assert rows[kept]["keep"] == "True"
        assert (rows[dropped]["keep"], rows[dropped]["reason"]) == (
            "False",
            "dropped by a reviewer",
        )
        assert (rows[flagged]["keep"], rows[flagged]["flagged"]) == ("True", "True")
        others = [rows[i] for i in FLIPPED[2:]]
        assert all(r["keep"] == str(evicted_kept) for r in others)
        assert all(r["reason"] == "evicted by the sampler in epoch 2, not reviewed" for r in others)
        assert all(r["needs_review"] == str(policy == "mark") for r in others)
        assert all(r["reviewed"] == "False" for r in others)
        counts = writer.get(f"{BASE}/export/counts?evicted={policy}").json()
        file_kept = sum(r["keep"] == "True" for r in rows.values())
        assert (counts["kept"], counts["dropped"], counts["total"]) == (file_kept, N - file_kept, N)
        assert counts["dropped_by_reviewer"] == 1
        assert counts["kept_by_reviewer"] == 2
        unreviewed = len(FLIPPED) - 2
        assert counts["dropped_evicted_unreviewed"] == (0 if evicted_kept else unreviewed)
        assert counts["kept_evicted_unreviewed"] == (unreviewed if evicted_kept else 0)
        assert (counts["relabeled"], counts["flagged"]) == (1, 1)


def test_undoing_a_decision_takes_it_out_of_the_export(writer):
    action = review(writer, "drop", [5])
    writer.post(f"{BASE}/reviews/{action['id']}/undo", json={})
    rows = {int(r["sample_id"]): r for r in csv_rows(writer.get(f"{BASE}/export").text)}
    assert (rows[5]["keep"], rows[5]["reviewed"]) == ("True", "False")


def test_formula_cells_are_escaped(writer):
    review(writer, "flag", [4], reason="x")
    for dangerous in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert escape_cell(dangerous) == "'" + dangerous
    assert escape_cell("plain") == "plain"
    assert escape_cell(5) == 5


def test_manifest_round_trips_onto_its_dataset_and_onto_mnist(writer, tmp_path):
    """On the recorded split, and on the embedded MNIST through ``source``: every kept row
    gives the image a direct lookup gives, with the corrected label."""
    review(writer, "relabel", [3], label=9)
    for format in ("csv", "jsonl"):
        path = tmp_path / f"manifest.{format}"
        path.write_text(writer.get(f"{BASE}/export?format={format}").text)
        header, rows = read_manifest(path)
        assert (header["num_samples"], header["evicted"]) == (N, "drop")
        kept = [r for r in rows if r["keep"]]
        assert len(kept) == N - (len(FLIPPED))
        split = seeded_split()
        on_split = ManifestDataset(split, path)
        mnist = EmbeddedMNIST(transform=transforms.ToTensor())  # the base's transform applies
        on_mnist = ManifestDataset(mnist, path)
        assert len(on_split) == len(on_mnist) == len(kept)
        for position, row in enumerate(kept):
            image, label = on_split[position]
            assert torch.equal(image, split[row["sample_id"]][1][0])  # (index, (x, label))
            assert label == row["label"]
            mnist_image, mnist_label = on_mnist[position]
            assert torch.equal(mnist_image, mnist[int(row["source"])][0])
            assert mnist_label == label
        assert on_split[[r["sample_id"] for r in kept].index(3)][1] == 9


def test_a_manifest_on_the_wrong_base_refuses_naming_both(writer, tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text(writer.get(f"{BASE}/export").text)
    split = seeded_split()
    shuffled = MNISTSplit(np.arange(N)[::-1].copy(), split.labels.numpy()[::-1].copy())
    other_labels = MNISTSplit(np.arange(N), (split.labels.numpy() + 3) % 10)
    shorter = Subset(split, range(N - 1))
    for base in (shuffled, other_labels, shorter):
        with pytest.raises(ValueError, match="MNISTSplit-300") as error:
            ManifestDataset(base, path)
        assert "300 samples" in str(error.value)
    far = Subset(EmbeddedMNIST(), range(5000, 10000))  # sources do not reach these digits
    with pytest.raises(ValueError, match="agree on"):
        ManifestDataset(far, path)


def test_jsonl_manifest_has_a_header_line_then_one_line_per_sample(writer):
    review(writer, "drop", [7])
    response = writer.get(f"{BASE}/export?format=jsonl")
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0]["datasetq_manifest"]["dataset"] == "MNISTSplit-300"
    assert len(lines) == N + 1
    assert lines[1 + 7]["keep"] is False


def test_export_errors(writer):
    assert writer.get("/api/v1/runs/77/export").json() == {"detail": "Run 77 not found"}
    assert writer.get(f"{BASE}/export?format=xlsx").status_code == 422
    assert writer.get(f"{BASE}/export?evicted=maybe").status_code == 422
    assert writer.get(f"{BASE}/export/counts?evicted=maybe").status_code == 422
