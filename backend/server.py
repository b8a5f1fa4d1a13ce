"""Serving the app on a background thread: the demo serves while it trains, and tests and
benchmarks drive a real server on loopback."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import uvicorn

from .app import create_app
from .settings import Settings


class BackgroundServer:
    """uvicorn serving ``create_app(settings)`` on a daemon thread.

    Args:
        settings (Settings): the app's settings (database, token, ...).
        host (str): interface to bind. Default: ``"127.0.0.1"``.
        port (int): port to bind; 0 picks a free one. Default: 0.
        log_level (str): uvicorn's log level. Default: ``"warning"``.

    Example::

        >>> server = BackgroundServer(Settings(db="sqlite:///datasetq.db"))
        >>> if server.start():
        ...     print(server.base_url)
        >>> server.stop()
    """

    def __init__(
        self, settings: Settings, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        self.host = host
        self.port = port or _free_port(host)
        config = uvicorn.Config(
            create_app(settings),
            host=host,
            port=self.port,
            log_level=log_level,
            timeout_graceful_shutdown=2,  # open event streams never hold a stop up
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="datasetq-web", daemon=True)

    def _serve(self) -> None:
        # uvicorn exits when it cannot bind; start() reports that as False.
        with contextlib.suppress(SystemExit):
            self._server.run()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 5.0) -> bool:
        """Starts serving; False when the server did not come up (the port in use, say)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        return bool(self._server.started)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Waits until the server stops, or ``timeout`` seconds."""
        self._thread.join(timeout)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
