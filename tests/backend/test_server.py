"""The background server that the demo, the browser tests and the benchmarks share."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from datasetq.cli import _start_server
from datasetq.server.server import BackgroundServer
from datasetq.server.settings import Settings
from datasetq.store.migrations import upgrade


@contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port another socket listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_background_server_serves_and_stops(tmp_path):
    url = f"sqlite:///{tmp_path / 'served.db'}"
    upgrade(url)
    server = BackgroundServer(Settings(db=url), log_level="error")
    assert server.start()
    assert httpx.get(f"{server.base_url}/api/v1/runs", timeout=5).json() == []
    server.stop()
    assert not server.running


def test_demo_server_reports_a_port_in_use(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    upgrade(url)
    with taken_port() as port:
        assert _start_server(url, "127.0.0.1", port) is None
    assert "could not serve" in capsys.readouterr().err


def test_a_demo_on_a_busy_port_leaves_no_run_behind(tmp_path, capsys):
    from datasetq.cli import main

    url = f"sqlite:///{tmp_path / 'busy-demo.db'}"
    upgrade(url)
    with taken_port() as port:
        assert main(["demo", "--epochs", "1", "--db", url, "--port", str(port)]) == 1
    assert "is in use" in capsys.readouterr().err
    assert main(["runs", "--db", url]) == 0
    assert capsys.readouterr().out.startswith("no runs in")


def test_data_roots_from_the_environment_are_a_plain_path_list(monkeypatch, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    monkeypatch.setenv("DATASETQ_DATA_ROOTS", f"{one}:{two}")
    assert Settings().data_roots == [one, two]
    monkeypatch.setenv("DATASETQ_DATA_ROOTS", f'["{one}"]')
    assert Settings().data_roots == [one]
    monkeypatch.setenv("DATASETQ_DATA_ROOTS", "")
    assert Settings().data_roots == []


def test_serve_refuses_a_data_root_that_is_not_a_folder(tmp_path, capsys):
    from datasetq.cli import main

    url = f"sqlite:///{tmp_path / 'roots.db'}"
    upgrade(url)
    assert main(["serve", "--db", url, "--data-root", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
