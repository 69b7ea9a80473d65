"""The HTTP API (FastAPI): predict and classify, OpenAI-style completions, task listing, admin uploads, health,
metrics.

`create_app` wires the parts; each group of routes is registered by its own function (below, and in task_api.py
and openai_api.py), over the store (tasks and their prompt versions), the engine (the batcher, the one thread
that runs the model, or vLLM in front of it for completions) and the limits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..utils.errors import SoftpromptError
from .auth import bearer_matches
from .batcher import Engine
from .chat_api import chat_routes
from .config import ServeConfig
from .guards import BEARER_CHALLENGE, CONSOLE_PATH, OPEN_PATHS, ApiKey, BodyLimit, error
from .metrics import Metrics
from .openai_api import openai_routes
from .openai_schemas import NEUTRAL
from .schemas import Limits, TaskInfo
from .store import PromptStore, check_name, unzip_folder
from .task_api import task_routes
from .tuning import Tuner
from .tuning_api import tuning_routes

CONSOLE = Path(__file__).parent / "console"


def create_app(
    store: PromptStore,
    engine: Engine,
    metrics: Metrics,
    config: ServeConfig,
    admin_token: str | None = None,
    api_key: str | None = None,
    tuner: Tuner | None = None,
) -> FastAPI:
    """The app over `engine`, which reports its batches to `metrics`; `api_key` guards every route but the
    admin ones (those need `admin_token`), the console's static page (it asks for the key and sends it) and,
    with `config.open_health_metrics`, /healthz and /metrics. With `tuner`, OpenAI's files and fine-tuning routes,
    whose jobs `tuner` runs on the engine's worker thread."""
    limits = Limits.of(config)
    app = FastAPI(
        title="softprompt",
        version="0.1.0",
        description="One frozen model, many soft prompts: labels, generated text and completions per task.",
    )
    app.state.store = store
    if api_key is not None:  # added first, so it runs inside `measure`: refused requests are counted too
        open_paths = OPEN_PATHS if config.open_health_metrics else frozenset()
        app.add_middleware(ApiKey, key=api_key, open_paths=open_paths, admin_exempt=admin_token is not None,
                           console_exempt=config.console)  # fmt: skip
    app.middleware("http")(metrics.measure)
    app.add_middleware(BodyLimit, limits=limits)
    _error_handlers(app)
    task_routes(app, store, engine, limits)
    openai_routes(app, store, engine, limits)
    chat_routes(app, store, engine, limits)
    _info_routes(app, store, engine, metrics)
    _admin_routes(app, store, admin_token)
    if tuner is not None:
        tuning_routes(app, tuner, admin_token, api_key)
    if config.console:
        _console_routes(app)
    return app


def _error_handlers(app: FastAPI) -> None:
    """Every error, ours, the router's, the validator's or a bug's, as one line of JSON."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        """422 for a value out of its range; 400 for a field this server does not implement (OpenAI's
        answer to an unknown parameter), so that nothing a client asks for is silently ignored."""
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
        if first.get("type") == "extra_forbidden":
            asks_nothing = NEUTRAL.get(request.url.path, {})
            neutral = f" (only {json.dumps(asks_nothing[where])} is)" if where in asks_nothing else ""
            return error(400, f"{where}: not supported by this server{neutral}", path=request.url.path)
        return error(422, f"{where}: {first.get('msg', 'invalid')}".replace("\n", " "), path=request.url.path)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # a bug of ours: still one line of JSON, never a page
        return error(500, f"internal error ({type(exc).__name__})", path=request.url.path)

    @app.exception_handler(StarletteHTTPException)  # ours and the router's (404 for unknown paths)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None), request.url.path)


def _info_routes(app: FastAPI, store: PromptStore, engine: Engine, metrics: Metrics) -> None:
    @app.get("/v1/tasks", response_model=list[TaskInfo])
    async def tasks() -> list[TaskInfo]:
        return [TaskInfo.of(name, served) for name, served in store.items()]

    @app.get("/healthz")
    async def health() -> dict:
        return {"status": "ok", "tasks": len(store.names()), "queue_depth": engine.depth, "pid": os.getpid()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def exposition() -> PlainTextResponse:
        return PlainTextResponse(metrics.exposition(store, engine), media_type=CONTENT_TYPE_LATEST)


def _console_routes(app: FastAPI) -> None:
    """The web console: a static page (HTML, CSS, JS shipped in the package, nothing fetched from elsewhere)
    that calls the public API above."""

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(CONSOLE / "index.html")

    app.mount(CONSOLE_PATH, StaticFiles(directory=CONSOLE), name="console")


def _admin_routes(app: FastAPI, store: PromptStore, admin_token: str | None) -> None:
    def require_admin(authorization: str | None) -> None:
        if admin_token is None:
            raise HTTPException(403, "admin endpoints are off (start the server with --admin-token-file)")
        if not bearer_matches(authorization, admin_token):
            raise HTTPException(401, "admin endpoints need 'Authorization: Bearer <token>'", headers=BEARER_CHALLENGE)

    @app.put("/v1/tasks/{name}", response_model=TaskInfo, responses={401: {}, 403: {}, 413: {}, 422: {}})
    async def upload(name: str, request: Request, authorization: Annotated[str | None, Header()] = None) -> TaskInfo:
        """Install or replace a task: a zipped prompt folder (application/zip) or a multipart form with the
        folder's files (adapter_model.safetensors, adapter_config.json, softprompt.json)."""
        require_admin(authorization)
        try:
            check_name(name)
            kind = request.headers.get("content-type", "")
            if kind.startswith("multipart/form-data"):
                form = await request.form()
                files = {key: await value.read() for key, value in form.multi_items() if hasattr(value, "read")}
            else:
                files = unzip_folder(await request.body())
            served = store.install(name, files)
        except SoftpromptError as exc:
            raise HTTPException(422, str(exc)) from None
        return TaskInfo.of(name, served)

    @app.delete("/v1/tasks/{name}", responses={401: {}, 403: {}, 404: {}})
    async def delete(name: str, authorization: Annotated[str | None, Header()] = None) -> dict:
        require_admin(authorization)
        if not store.remove(name):
            raise HTTPException(404, f"unknown task {name!r}")
        return {"deleted": name}
