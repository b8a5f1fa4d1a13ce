"""Settings from environment variables with the ``DATASETQ_`` prefix."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class Settings(BaseSettings):
    """Configuration of the web app.

    Every field reads ``DATASETQ_<NAME>`` (for example ``DATASETQ_DB``, ``DATASETQ_TOKEN``).
    """

    model_config = SettingsConfigDict(env_prefix="DATASETQ_", extra="ignore")

    db: str = "sqlite:///datasetq.db"
    host: str = "127.0.0.1"
    port: int = 8000
    # When set, every write route needs ``Authorization: Bearer <token>``.
    token: str | None = None
    # Extra values accepted in the Host header (loopback names are always accepted).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Folders images may be read from (ImageFolder roots, torchvision roots). The embedded
    # MNIST data always may. From the environment: paths separated by the OS path separator
    # (":" on Linux), or a JSON list.
    data_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Whether datasets registered with a render function may be rendered (imports it).
    render_callables: bool = False
    max_body_bytes: int = 64 * 1024
    image_cache_items: int = 4096
    events_poll_seconds: float = 1.0
    # Open event streams: beyond these a new one is refused (429 per client, 503 in all).
    max_event_streams: int = 64
    max_event_streams_per_client: int = 8
    # Threads that run routes; each engine pools as many connections.
    worker_threads: int = Field(default=16, ge=1, le=256)
    # Requests served at once; the others wait their client's turn (round robin by address).
    concurrent_requests: int = Field(default=4, ge=1, le=256)
    # Requests one client may have waiting; beyond them it is answered 429.
    queued_requests_per_client: int = Field(default=1000, ge=1)
    # Seconds a request waits for a database connection before it is answered 503.
    pool_timeout: float = 10.0

    @field_validator("data_roots", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part.strip()]
        return value

    def hosts(self) -> list[str]:
        names = {*LOOPBACK_HOSTS, "testserver", self.host, *self.allowed_hosts}
        return sorted(names)


@lru_cache
def get_settings() -> Settings:
    return Settings()
