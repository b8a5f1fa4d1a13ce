"""Settings from environment variables with the ``DATASETQ_`` prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    # MNIST data always may.
    data_roots: list[Path] = Field(default_factory=list)
    # Whether datasets registered with a render function may be rendered (imports it).
    render_callables: bool = False
    max_body_bytes: int = 64 * 1024
    image_cache_items: int = 4096
    events_poll_seconds: float = 1.0

    def hosts(self) -> list[str]:
        names = {*LOOPBACK_HOSTS, "testserver", self.host, *self.allowed_hosts}
        return sorted(names)


@lru_cache
def get_settings() -> Settings:
    return Settings()
