"""Benchmarks run on demand (the GPU one only where a GPU is lent): they must not rot in
between. Here each runs at a tiny size; its timings are not looked at, only that it runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_TINY = ("--device", "cpu", "--samples", "300", "--repeats", "1")


def table_rows(script: str, *args: str, timeout: int = 300) -> list[list[str]]:
    """Runs a benchmark; the cells of each row of the table it prints, header left out."""
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows[1:]]


def test_gpu_benchmark_runs_every_variant_on_the_cpu():
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py", *CPU_TINY],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    names = [row.split("|")[1].strip() for row in rows[1:]]
    assert names == [
        "random order (randperm on the GPU)",
        "HeapqSampler, loss only",
        "HeapqSampler, loss + margin + prediction",
        "HeapqSampler + Recorder (SQLite)",
    ]
    assert all(float(row.split("|")[2]) > 0 for row in rows[1:])


def test_store_benchmark_measures_the_api_store_functions_at_a_small_scale(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_store.py",
            "scale",
            "--samples",
            "3000",
            "--epochs",
            "2",
            "--keep",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for query in ("run summary", "top-60 by suspicion", "evicted, by suspicion", "sample's detail"):
        assert query in result.stdout, result.stdout


INTEGRATIONS_TINY = ("--samples", "256", "--epochs", "1", "--repeats", "1")


def test_integration_benchmark_runs_both_frameworks_at_a_tiny_size():
    rows = table_rows("bench_integrations.py", *INTEGRATIONS_TINY, timeout=600)
    assert [row[0] for row in rows] == ["Lightning", "HF Trainer"]


def test_first_chart_benchmark_measures_both_encodings():
    if (
        shutil.which("/usr/bin/chromium") is None
        and os.environ.get("DATASETQ_REQUIRE_BROWSER") != "1"
    ):
        pytest.skip("needs Debian's chromium")
    rows = table_rows("bench_first_chart.py", "--repeats", "1")
    assert [row[0] for row in rows] == ["gzip (as served)", "uncompressed"]


def test_sampler_benchmark_measures_every_variant_and_the_breakdown():
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_sampler.py",
            *("--sizes", "3000", "--epochs", "1", "--memory", "20000", "--breakdown"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    measured = [line for line in lines if "ratio" in line]
    assert len(measured) == 5  # balanced (lists, tensors), greedy, max_visits, steps
    assert all(float(line.split("ratio")[1].split("x")[0]) > 0 for line in measured)
    breakdowns = [line for line in lines if "breakdown" in line]
    assert [line.split("ids as ")[1].split(":")[0] for line in breakdowns] == ["list", "tensor"]
    for line in breakdowns:
        per_call = float(line.split("update calls")[1].split("(")[1].split(" µs")[0])
        assert per_call > 0
        assert "plan" in line
    assert any(line.startswith("N=20,000: sampler state") for line in lines)


def test_sampler_benchmark_runs_the_checkout_it_is_pointed_at_and_refuses_another(tmp_path):
    def run(root: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "bench_sampler.py"),
                *("--sizes", "2000", "--epochs", "1", "--memory", "0", "--default-only"),
                *("--root", str(root)),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    result = run(ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"sampler from {ROOT / 'datasetq'}"
    assert len([line for line in lines if "ratio" in line]) == 1  # the default policy only
    elsewhere = run(tmp_path)  # holds no datasetq: the import finds the installed one instead
    assert elsewhere.returncode != 0
    assert f"--root {tmp_path}: datasetq was imported from" in elsewhere.stderr


def test_draw_fingerprint_is_the_same_for_the_same_code_and_moves_with_the_options():
    def run() -> list[str]:
        result = subprocess.run(
            [sys.executable, "benchmarks/draw_fingerprint.py", "--sizes", "400", "--epochs", "8"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.splitlines()

    first, second = run(), run()
    assert first == second
    assert len(first) == 8  # 2 report kinds x 4 option sets
    hashes = [line.rsplit(": ", 1)[1].split()[0] for line in first]
    assert len(set(hashes)) == 8  # every option set draws differently
    assert all(int(line.split("(")[-1].split()[0]) > 0 for line in first)  # evictions happen


def test_study_cache_files_keep_only_what_was_computed_into_them(tmp_path, monkeypatch):
    """The report run (no shard) reads every shard's file; a result it computes goes to its own
    file beside what that file held, without copying the shards' results into it."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks" / "studies"))
    import result_cache

    monkeypatch.setattr(result_cache, "RESULTS", tmp_path)
    (tmp_path / "runs-shard0.json").write_text(json.dumps({"a": {"value": 1}}))
    (tmp_path / "runs.json").write_text(json.dumps({"b": {"value": 2}}))
    cache = result_cache.ResultCache("runs")
    assert cache.get("a", lambda: pytest.fail("a is cached")) == {"value": 1}
    assert cache.get("c", lambda: {"value": 3}) == {"value": 3}
    assert json.loads((tmp_path / "runs.json").read_text()) == {
        "b": {"value": 2},
        "c": {"value": 3},
    }
    assert json.loads((tmp_path / "runs-shard0.json").read_text()) == {"a": {"value": 1}}
    # A shard computes every k-th missing result into its own file.
    shard = result_cache.ResultCache("runs", (1, 2))
    assert shard.get("d", lambda: pytest.fail("shard 0 computes d")) is None
    assert shard.get("e", lambda: {"value": 5}) == {"value": 5}
    assert json.loads((tmp_path / "runs-shard1.json").read_text()) == {"e": {"value": 5}}
