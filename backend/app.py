"""``create_app(settings)``: the FastAPI application. ``datasetq.server.app:app`` builds one from the
environment on first use (nothing reads the environment at import time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from datasetq._resources import dashboard_files
from datasetq.errors import ConflictError, InvalidRequestError, NotFoundError
from datasetq.store.engine import create_store_engine
from datasetq.store.migrations import ensure_schema

from .imaging import ImageRenderer
from .routers import events, export, images, labels, reviews, runs, samples
from .security import GuardMiddleware
from .settings import Settings, get_settings

FRONTEND = dashboard_files()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Builds the app for ``settings``; refuses a database whose schema is behind."""
    settings = settings or get_settings()
    engine = create_store_engine(settings.db)
    try:
        ensure_schema(engine, settings.db, create=False)
    except Exception:
        engine.dispose()
        raise
    write_engine = create_store_engine(settings.db, write=True)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()
        write_engine.dispose()

    app = FastAPI(
        lifespan=lifespan,
        title="datasetq",
        version="0.2.0",
        summary="Find and fix the samples a model keeps failing on.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.write_engine = write_engine
    app.state.renderer = ImageRenderer(settings)

    api = APIRouter(prefix="/api/v1")
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

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}"
            for e in error.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems)})

    _serve_frontend(app)
    app.add_middleware(
        GuardMiddleware, allowed_hosts=settings.hosts(), max_body_bytes=settings.max_body_bytes
    )
    return app


def _answer_with(status: int) -> Any:
    async def handler(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": str(error)})

    return handler


def _serve_frontend(app: FastAPI) -> None:
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_script() -> Response:
        return FileResponse(plotly_js, media_type="text/javascript")

    if (FRONTEND / "index.html").is_file():
        app.mount("/", StaticFiles(directory=FRONTEND, html=True), name="frontend")


def __getattr__(name: str) -> Any:
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
