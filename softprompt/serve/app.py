"""The HTTP API (FastAPI): classify, OpenAI-style completions, task listing, admin uploads, health, metrics.

`create_app` wires the parts; each group of routes is registered by its own function below, over the store
(tasks and their prompt versions), the batcher (the one thread that runs the model) and the limits.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..utils.errors import SoftpromptError
from .auth import bearer_matches
from .batcher import Batcher, Job
from .guards import BEARER_CHALLENGE, CONSOLE_PATH, OPEN_PATHS, ApiKey, BodyLimit, error
from .handling import ANSWERS, enqueue, task_or_404, token_ids
from .openai_api import openai_routes
from .schemas import NEUTRAL, ClassifyRequest, ClassifyResponse, Limits, TaskInfo
from .store import PromptStore, Served, check_name, unzip_folder

CONSOLE = Path(__file__).parent / "console"


def create_app(
    store: PromptStore,
    batcher: Batcher,
    limits: Limits | None = None,
    admin_token: str | None = None,
    api_key: str | None = None,
    open_health_metrics: bool = False,
    console: bool = True,
) -> FastAPI:
    """The app; `api_key` guards every route but the admin ones (those need `admin_token`), the console's
    static page (it asks for the key and sends it) and, with `open_health_metrics`, /healthz and /metrics."""
    limits = limits or Limits()
    app = FastAPI(
        title="softprompt",
        version="0.1.0",
        description="One frozen model, many soft prompts: classification and completions per task.",
    )
    app.state.store, app.state.batcher = store, batcher
    if api_key is not None:  # added first, so it runs inside `measure`: refused requests are counted too
        open_paths = OPEN_PATHS if open_health_metrics else frozenset()
        app.add_middleware(ApiKey, key=api_key, open_paths=open_paths, admin_exempt=admin_token is not None,
                           console_exempt=console)  # fmt: skip
    registry = _measured(app, store, batcher)
    app.add_middleware(BodyLimit, limits=limits)
    _error_handlers(app)
    _classify_route(app, store, batcher, limits)
    openai_routes(app, store, batcher, limits)
    _info_routes(app, store, batcher, registry)
    _admin_routes(app, store, admin_token)
    if console:
        _console_routes(app)
    return app


def _measured(app: FastAPI, store: PromptStore, batcher: Batcher) -> CollectorRegistry:
    """Prometheus metrics of this app (its own registry, so apps in one process do not share counts)."""
    registry = CollectorRegistry()
    requests = Counter("softprompt_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram(
        "softprompt_request_seconds",
        "request latency",
        ["endpoint"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )
    batch_rows = Histogram(
        "softprompt_batch_rows", "rows per model forward", registry=registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128)
    )
    Gauge("softprompt_queue_depth", "requests waiting", registry=registry).set_function(lambda: batcher.depth)
    Gauge("softprompt_tasks", "tasks served", registry=registry).set_function(lambda: len(store.names()))
    Gauge("softprompt_tasks_loaded", "tasks held in memory", registry=registry).set_function(
        lambda: len(store.loaded())
    )
    cache_hits = Gauge("softprompt_prompt_cache_hits", "prompt KV served from cache", registry=registry)
    cache_hits.set_function(lambda: sum(_cache_hits(served) for served in store.loaded()))
    lookups = Gauge("softprompt_prompt_lookups", "task lookups by requests", registry=registry)
    lookups.set_function(lambda: store.lookups)
    loads = Gauge("softprompt_prompt_loads", "prompts loaded from the folder", registry=registry)
    loads.set_function(lambda: store.loads)
    batcher.on_batch = lambda rows, jobs: batch_rows.observe(rows)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        endpoint = request.scope.get("route").path if request.scope.get("route") else "unmatched"
        requests.labels(endpoint, str(response.status_code)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    return registry


def _cache_hits(served: Served) -> int:
    """Calls a task's prompt answered from its kept keys/values (decoder-only prompts keep them)."""
    cache = getattr(served.tuned.lm, "prompt_cache", None)
    return cache.hits if cache is not None else 0


def _error_handlers(app: FastAPI) -> None:
    """Every error, ours, the router's, the validator's or a bug's, as one line of JSON."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        """422 for a value out of its range; 400 for a field this server does not implement (OpenAI's
        answer to an unknown parameter), so that nothing a client asks for is silently ignored."""
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
        if first.get("type") == "extra_forbidden":
            neutral = f" (only {json.dumps(NEUTRAL[where])} is)" if where in NEUTRAL else ""
            return error(400, f"{where}: not supported by this server{neutral}", path=request.url.path)
        return error(422, f"{where}: {first.get('msg', 'invalid')}".replace("\n", " "), path=request.url.path)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # a bug of ours: still one line of JSON, never a page
        return error(500, f"internal error ({type(exc).__name__})", path=request.url.path)

    @app.exception_handler(StarletteHTTPException)  # ours and the router's (404 for unknown paths)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None), request.url.path)


def _classify_route(app: FastAPI, store: PromptStore, batcher: Batcher, limits: Limits) -> None:
    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ANSWERS)
    async def classify(body: ClassifyRequest) -> ClassifyResponse:
        served = task_or_404(store, body.task)
        tuned = served.tuned
        if len(body.inputs) > limits.max_items:
            raise HTTPException(422, f"inputs: {len(body.inputs)} items, the limit is {limits.max_items}")
        rows = []
        fields = tuned.task.fields
        for index, item in enumerate(body.inputs):
            if isinstance(item, str):
                if len(fields) != 1:
                    raise HTTPException(422, f"inputs.{index}: task {body.task} needs fields {fields}, not a string")
                item = {fields[0]: item}
            missing = [name for name in fields if name not in item]
            if missing:
                raise HTTPException(422, f"inputs.{index}: missing field {missing[0]!r}")
            ids = token_ids(served, tuned.task.render(item), f"inputs.{index}", limits)
            rows.append(tuned.encoder.cut(ids))
        scores = await enqueue(batcher, Job("classify", tuned, rows))
        labels = tuned.task.labels
        return ClassifyResponse(
            task=body.task,
            labels=[labels[max(range(len(row)), key=row.__getitem__)] for row in scores],
            scores=[dict(zip(labels, row)) for row in scores] if body.return_scores else None,
            prompt_version=served.version,
        )


def _info_routes(app: FastAPI, store: PromptStore, batcher: Batcher, registry: CollectorRegistry) -> None:
    @app.get("/v1/tasks", response_model=list[TaskInfo])
    async def tasks() -> list[TaskInfo]:
        return [TaskInfo.of(name, served) for name, served in store.items()]

    @app.get("/healthz")
    async def health() -> dict:
        return {"status": "ok", "tasks": len(store.names()), "queue_depth": batcher.depth, "pid": os.getpid()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)


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
