"""``datasetq export`` gives the API's bytes; ``datasetq runs`` lists; ``--version``."""

from __future__ import annotations

import pytest

from datasetq.cli import main

BASE = "/api/v1/runs/1"


@pytest.mark.parametrize("format", ["csv", "jsonl"])
@pytest.mark.parametrize("evicted", ["drop", "keep", "mark"])
def test_cli_export_is_byte_identical_to_the_api(writer, fresh_url, tmp_path, format, evicted):
    writer.post(f"{BASE}/reviews", json={"kind": "relabel", "sample_ids": [0], "label": 4})
    writer.post(f"{BASE}/reviews", json={"kind": "drop", "sample_ids": [5], "reason": "=cmd"})
    api = writer.get(f"{BASE}/export?format={format}&evicted={evicted}").content
    by_name = tmp_path / f"by-name.{format}"
    name = writer.get(BASE).json()["name"]
    options = ["--db", fresh_url, "--format", format, "--evicted", evicted]
    assert main(["export", *options, "--run", name, "-o", str(by_name)]) == 0
    assert by_name.read_bytes() == api
    by_id = tmp_path / f"by-id.{format}"
    assert main(["export", *options, "--run", "1", "-o", str(by_id)]) == 0
    assert by_id.read_bytes() == api


def test_cli_export_to_stdout_and_errors(fresh_url, capsysbinary):
    assert main(["export", "--db", fresh_url, "--run", "1"]) == 0
    out = capsysbinary.readouterr().out
    assert out.startswith(b"# datasetq-manifest {")
    assert main(["export", "--db", fresh_url, "--run", "nope"]) == 1
    assert b"no run named or numbered 'nope'" in capsysbinary.readouterr().err


def test_cli_runs_and_version(fresh_url, capsys):
    assert main(["runs", "--db", fresh_url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["id", "name", "status", "epochs"]
    assert "seeded <b>run</b>" in table[1]
    assert "finished" in table[1]
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("datasetq ")


@pytest.mark.parametrize("command", [["runs"], ["export", "--run", "1"], ["db", "upgrade"]])
def test_a_db_that_is_not_a_url_is_a_usage_error_naming_the_fix(command, tmp_path, capsys):
    path = tmp_path / "store.db"
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--db", str(path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--db" in error
    assert f"sqlite:///{path.as_posix()}" in error
    assert "Traceback" not in error
    assert not path.exists()
