"""The FastAPI application factory; ``app.main:app`` is the instance uvicorn serves."""

from __future__ import annotations

from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.auth import authenticate
from app.api.handlers import NUL_MESSAGE, envelope, install_error_handlers
from app.api.limits import install_request_guards
from app.api.ratelimit import KeyRateLimiter
from app.api.routes import datasets, docs, jobs, ops, report_stats, reports, stream, ui, ui_auth
from app.api.routes import models, predictions
from app.api.routes import decisions, deletion, versions
from app.db import PoolOptions, SessionGate, read_session_factory, session_factory
from app.ops.logs import configure_from_env
from app.ops.metrics import RequestMetrics, make_registry
from app.queue import CeleryEnqueuer
from app.services.jobs import Enqueue
from app.services.uploads import hold_folder, release_folder, remove_stale
from app.settings import Settings, get_settings
from app.storage import ArtifactStore

MULTIPART_SLACK = 64 * 1024  # form fields and boundaries around the file


class UploadLimit:
    """Refuse (413) a request whose declared body is larger than the upload limit, before reading it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check ``Content-Length`` of HTTP requests, pass everything else through."""
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length and length.isdigit() and int(length) > self.max_bytes + MULTIPART_SLACK:
                upload = headers.get(b"content-type", b"").lower().startswith(b"multipart/")
                response = envelope(413, "payload_too_large",
                                    f"the request body is larger than the limit of {self.max_bytes} bytes",
                                    "file" if upload else "body")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RefuseNul:
    """Refuse a request whose path or query holds a NUL character (``%00``): no id, label or filter value can
    hold one (Postgres text cannot), and each such request was a 500 (a ``DataError`` from the query). The path:
    400 ``bad_request`` with ``param="path"``; a query parameter: 422 naming it. Before authentication: the answer
    says nothing about any resource."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check HTTP requests' path and query string, pass everything else through."""
        if scope["type"] == "http":
            response = None
            if "\x00" in scope.get("path", ""):
                response = envelope(400, "bad_request", f"the path {NUL_MESSAGE}", "path")
            elif b"%00" in (query := scope.get("query_string", b"")).lower() or b"\x00" in query:
                name = next((k for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
                             if "\x00" in k or "\x00" in v), "query")
                response = envelope(422, "invalid_request", f"{name} {NUL_MESSAGE}", name.replace("\x00", ""))
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


@asynccontextmanager
async def lifespan(app: FastAPI):
    """At start-up, delete the spooled uploads that dead API processes left under the scratch folder (a
    live process's folder is locked and kept) and claim this process's own; at shutdown, remove it."""
    uploads = app.state.settings.scratch("uploads")
    remove_stale(uploads)
    hold_folder(uploads)
    try:
        yield
    finally:
        release_folder(uploads)


def create_app(settings: Settings | None = None, *, enqueue: Enqueue | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: the environment); ``enqueue`` defaults to Celery."""
    settings = settings or get_settings()
    app = FastAPI(title="CleaR fine-tuning service", version="0.1.0",
                  description="Fine-tune text classifiers on noisily labelled data with CleaR; get an adapter "
                              "and a ranked noise report.",
                  docs_url=None, redoc_url=None,  # /docs comes from routes.docs, with vendored assets
                  lifespan=lifespan)
    app.state.settings = settings
    # no ping per checkout: the hot reads retry once on a dropped connection (app.api.reads), the rest answer 503
    # database_unavailable once after a database restart (the pool then replaces every older connection)
    pool = PoolOptions(settings.db_pool_size, settings.db_max_overflow, settings.db_pool_timeout_s, pre_ping=False)
    app.state.session_factory = session_factory(settings.database_url, pool)
    app.state.read_session_factory = read_session_factory(settings.database_url, pool)  # GET/HEAD requests
    app.state.session_gate = SessionGate(settings.db_pool_size, settings.db_pool_timeout_s)
    app.state.store = ArtifactStore(settings.artifact_url)
    app.state.enqueue = enqueue or CeleryEnqueuer(settings)
    app.state.metrics_registry, latency = make_registry(app.state.session_factory)
    app.state.rate_limiter = KeyRateLimiter(settings.rate_limit, settings.rate_limit_storage_url)
    install_error_handlers(app)
    # Every API route needs a key (the routes also read it for their tenant); ops decides per route
    # (health checks open, /metrics admin); the dashboard sends a signed-out visitor to its login form.
    app.include_router(jobs.reads)  # GET a job, the jobs, a job's events: they authenticate in their one call
    for module in (datasets, jobs, stream, reports, report_stats, predictions, models):
        app.include_router(module.router, dependencies=[Depends(authenticate)])
    for module in (decisions, versions, deletion):  # the review loop: decisions, versions and exports, deletes
        app.include_router(module.router, dependencies=[Depends(authenticate)])
    app.include_router(ops.router)
    app.include_router(ui.router, dependencies=[Depends(ui_auth.ui_principal)])
    ui_auth.install(app)
    app.include_router(docs.router)
    app.mount(ui.STATIC_URL, StaticFiles(directory=ui.STATIC_DIR), name="ui-static")
    install_request_guards(app, settings)  # streaming body cap and Idempotency-Key, inside UploadLimit
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RefuseNul)
    app.add_middleware(RequestMetrics, latency=latency)
    return app


def __getattr__(name: str):
    # ``uvicorn app.main:app`` builds the app from the environment on first access only,
    # so importing this module (tests, tools) reads no settings.
    if name == "app":
        configure_from_env()
        return create_app()
    raise AttributeError(name)
