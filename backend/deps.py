"""Dependencies: settings, one database session per request, and the write-token check."""

from __future__ import annotations

import functools
import hmac
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.routing import APIRoute
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


# Async, so that closing never waits for a worker thread (it usually has nothing left to do:
# ReleasingRoute closed the session on the route's own thread).
async def get_session(request: Request) -> AsyncIterator[Session]:
    session = Session(request.app.state.engine)
    try:
        yield session
    finally:
        session.close()


async def get_write_session(request: Request) -> AsyncIterator[Session]:
    session = Session(request.app.state.write_engine)
    try:
        yield session
    finally:
        session.close()


class ReleasingRoute(APIRoute):
    """A route whose database session is closed on the route's thread, when it returns.

    FastAPI runs a sync route on a worker thread, then serialises its response on another:
    a session left open until the request ends holds its connection across that second wait,
    and a burst of requests larger than the pool deadlocked the server (every worker waiting
    for a connection, every connection waiting for a worker). Closed here, a connection is
    only ever held by a thread that is running.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        parameters = inspect.signature(endpoint).parameters
        if not inspect.iscoroutinefunction(endpoint) and "session" in parameters:
            endpoint = _closing_session(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _closing_session(route: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(route)
    def closing(*args: Any, **kwargs: Any) -> Any:
        try:
            return route(*args, **kwargs)
        finally:
            kwargs["session"].close()

    return closing


def api_router(prefix: str, tag: str) -> APIRouter:
    """A router of the API: its routes release their database connection when they return."""
    return APIRouter(prefix=prefix, tags=[tag], route_class=ReleasingRoute)


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
