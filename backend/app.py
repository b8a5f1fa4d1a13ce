"""``create_app(settings)``: the FastAPI application. ``datasetq.server.app:app`` builds one from the
environment on first use (nothing reads the environment at import time)."""

from __future__ import annotations

import functools
import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from datasetq import __version__
from datasetq.bundled import dashboard_files
from datasetq.errors import ConflictError, InvalidRequestError, NotFoundError
from datasetq.store.engine import create_store_engine, is_sqlite
from datasetq.store.migrations import ensure_schema
from datasetq.store.opening import check_sqlite_path, store_errors

from .admission import FairAdmission
from .imaging import ImageRenderer
from .methods import DocumentedMethods
from .routers import events, export, images, labels, reviews, runs, samples
from .routers.events import StreamCount
from .schemas import Problem
from .security import GuardMiddleware
from .settings import Settings, get_settings

FRONTEND = dashboard_files()


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


# What any route may answer besides its own responses; every error body is a Problem.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _problem("Host header not allowed"),
    401: _problem("A write without the token DATASETQ_TOKEN asks for"),
    403: _problem("A request from another site's page"),
    413: _problem("Body too large"),
    415: _problem("A write that is not application/json"),
    422: _problem("Invalid input; the detail names each problem"),
    429: _problem("Too many requests from this client are waiting; retry after Retry-After"),
    503: _problem("The store is busy or unavailable; retry after Retry-After seconds"),
}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Builds the app for ``settings``; refuses a database whose schema is behind."""
    settings = settings or get_settings()
    # Every worker thread can hold a connection of each engine at once, so no worker ever waits
    # for one: a waiting worker would hold a thread the others need to finish (FastAPI
    # serialises a sync route's response on a worker thread), and a burst larger than the
    # pool deadlocked the server.
    pool: dict[str, Any] = {
        "pool_size": settings.worker_threads,
        "max_overflow": 4,
        "pool_timeout": settings.pool_timeout,
    }
    with store_errors(settings.db):
        if is_sqlite(settings.db):
            check_sqlite_path(settings.db, create=False)  # a typo must not create a file
        engine = create_store_engine(settings.db, **pool)
        try:
            ensure_schema(engine, settings.db, create=False)
        except BaseException:
            engine.dispose()
            raise
    write_engine = create_store_engine(settings.db, write=True, **pool)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        yield
        engine.dispose()
        write_engine.dispose()

    app = FastAPI(
        lifespan=lifespan,
        title="datasetq",
        version=__version__,
        summary="Find and fix the samples a model keeps failing on.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.write_engine = write_engine
    app.state.renderer = ImageRenderer(settings)
    app.state.streams = StreamCount(
        settings.max_event_streams, settings.max_event_streams_per_client
    )

    api = APIRouter(prefix="/api/v1", responses=COMMON_ERRORS)
    for module in (runs, samples, labels, reviews, images, export, events):
        api.include_router(module.router)
    app.include_router(api)

    # The one place the store's errors become HTTP answers.
    for error_class, status in (
        (NotFoundError, 404),
        (ConflictError, 409),
        (InvalidRequestError, 422),
    ):
        app.add_exception_handler(error_class, _answer_with(status))
    # The store is there but cannot answer now (no connection free in time, locked, down).
    app.add_exception_handler(SQLAlchemyTimeoutError, _answer_with(503, "The store is busy: "))
    app.add_exception_handler(OperationalError, _answer_with(503, "The store is unavailable: "))

    methods = DocumentedMethods(app.openapi)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}"
            for e in error.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems)})

    _serve_frontend(app)
    app.add_middleware(GZipMiddleware, minimum_size=1024)  # event streams pass uncompressed
    app.add_middleware(
        FairAdmission,
        concurrent=settings.concurrent_requests,
        queued_per_client=settings.queued_requests_per_client,
    )
    app.add_middleware(
        GuardMiddleware,
        allowed_hosts=settings.hosts(),
        max_body_bytes=settings.max_body_bytes,
        allowed_methods=methods.allowed,
    )
    return app


def _answer_with(status: int, prefix: str = "") -> Any:
    async def handler(_: Request, error: Exception) -> JSONResponse:
        detail = prefix + (str(error).splitlines()[0] if prefix else str(error))
        headers = {"Retry-After": "5"} if status == 503 else None
        return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)

    return handler


def _serve_frontend(app: FastAPI) -> None:
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

    @functools.cache
    def plotly_gzipped() -> bytes:
        return gzip.compress(plotly_js.read_bytes(), compresslevel=6, mtime=0)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_script(request: Request) -> Response:
        # Compressed once, not per request (the middleware would compress it on every load).
        headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(plotly_gzipped(), media_type="text/javascript", headers=headers)
        return FileResponse(plotly_js, media_type="text/javascript", headers=headers)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return FileResponse(FRONTEND / "favicon.svg", media_type="image/svg+xml")

    if (FRONTEND / "index.html").is_file():
        app.mount("/", StaticFiles(directory=FRONTEND, html=True), name="frontend")


def __getattr__(name: str) -> Any:
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
