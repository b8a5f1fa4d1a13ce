"""Dependencies: settings, one database session per request, and the write-token check."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


def get_write_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.write_engine) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
WriteSessionDep = Annotated[Session, Depends(get_write_session)]


def require_writer(request: Request) -> str:
    """Authorises a write and returns its author ("local", or the token's name).

    With ``DATASETQ_TOKEN`` set, the request needs ``Authorization: Bearer <token>``,
    compared in constant time.
    """
    settings: Settings = request.app.state.settings
    if settings.token is None:
        return "local"
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), settings.token.encode()
    ):
        raise HTTPException(
            status_code=401,
            detail="This route needs Authorization: Bearer <token> (DATASETQ_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return "token"


AuthorDep = Annotated[str, Depends(require_writer)]


# Ids as path parameters: bounded, so no value can overflow a database integer.
RunId = Annotated[int, Path(ge=0, le=2**62, description="a run's id")]
SampleId = Annotated[
    int, Path(ge=-(2**62), le=2**62, description="a sample's id (its index in the dataset)")
]
