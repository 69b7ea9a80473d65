"""The HTTP API (FastAPI): classify, OpenAI-style completions, task listing, admin uploads, health, metrics."""

from __future__ import annotations

import hmac
import os
import time
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import SoftpromptError
from .batcher import Batcher, Job, Overloaded
from .store import PromptStore, check_name, unzip_folder


@dataclass
class Limits:
    max_items: int = 64
    max_input_tokens: int = 512
    max_new_tokens: int = 256
    max_body_bytes: int = 2**20
    max_upload_bytes: int = 32 * 2**20


class ClassifyRequest(BaseModel):
    task: str = Field(min_length=1, description="task name (its prompt folder's name)")
    inputs: list[str | dict[str, str]] = Field(
        min_length=1, description="texts (for one-field templates) or {field: value} rows"
    )
    return_scores: bool = Field(False, description="also return each label's log-likelihood")


class ClassifyResponse(BaseModel):
    task: str
    labels: list[str]
    scores: list[dict[str, float]] | None = None


class CompletionRequest(BaseModel):
    model: str = Field(min_length=1, description="the task whose prompt is prepended")
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")


class Choice(BaseModel):
    text: str
    index: int
    finish_reason: str
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[Choice]
    usage: dict[str, int]


class TaskInfo(BaseModel):
    name: str
    labels: list[str]
    template: str
    num_virtual_tokens: int
    base_model: str


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, declared or streamed, before any handler reads them."""

    def __init__(self, app, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["method"] == "PUT"
        limit = self.limits.max_upload_bytes if upload else self.limits.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            if declared.isdigit() and int(declared) <= DRAIN_FACTOR * limit:
                await _drain(receive)  # a client still sending would see a reset connection instead of our 413
            return await _too_large(send, limit)
        seen, answered = 0, False

        async def counted():
            """The app's receive: past the limit, answer 413 ourselves and tell the app the client left."""
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if not answered:
                        answered = True
                        await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message):
            if not answered:  # once we have answered 413, whatever the app says is dropped
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not answered:
                raise


DRAIN_FACTOR = 8  # declared bodies up to this many times the limit are read and dropped before the 413


async def _drain(receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _too_large(send, limit: int) -> None:
    body = f'{{"error": "request body over {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _valid_unicode(text: str) -> bool:
    """JSON may carry lone surrogates ("\\ud800"), which no tokenizer can read."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(
    store: PromptStore, batcher: Batcher, limits: Limits | None = None, admin_token: str | None = None
) -> FastAPI:
    limits = limits or Limits()
    app = FastAPI(
        title="softprompt",
        version="0.1.0",
        description="One frozen model, many soft prompts: classification and completions per task.",
    )
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
    Gauge("softprompt_tasks", "tasks loaded", registry=registry).set_function(lambda: len(store.items()))
    cache_hits = Gauge("softprompt_prompt_cache_hits", "prompt KV served from cache", registry=registry)
    cache_hits.set_function(lambda: sum(t.lm.kv_hits for _, t in store.items()))
    batcher.on_batch = lambda rows, jobs: batch_rows.observe(rows)
    app.state.store, app.state.batcher = store, batcher

    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        endpoint = request.scope.get("route").path if request.scope.get("route") else "unmatched"
        requests.labels(endpoint, str(response.status_code)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    app.add_middleware(BodyLimit, limits=limits)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
        return _error(422, f"{where}: {first.get('msg', 'invalid')}".replace("\n", " "))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # a bug of ours: still one line of JSON, never a page
        return _error(500, f"internal error ({type(exc).__name__})")

    @app.exception_handler(StarletteHTTPException)  # ours and the router's (404 for unknown paths)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    def task_or_404(name: str):
        tuned = store.get(name)
        if tuned is None:
            raise HTTPException(404, f"unknown task {name!r}")
        return tuned

    async def run(job: Job) -> list:
        try:
            return await batcher.submit(job)
        except Overloaded:
            raise HTTPException(503, "server busy, retry shortly", headers={"Retry-After": "1"}) from None

    @app.post("/v1/classify", response_model=ClassifyResponse, responses={404: {}, 413: {}, 422: {}, 503: {}})
    async def classify(body: ClassifyRequest) -> ClassifyResponse:
        tuned = task_or_404(body.task)
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
            text = tuned.task.render(item)
            if not _valid_unicode(text):
                raise HTTPException(422, f"inputs.{index}: not valid Unicode")
            ids = tuned.encoder.tokenize(text) if len(text) <= limits.max_input_tokens * 32 else None
            if not ids or len(ids) > limits.max_input_tokens:  # an empty row would fail the whole batch
                raise HTTPException(422, f"inputs.{index}: empty or longer than {limits.max_input_tokens} tokens")
            rows.append(tuned.encoder.cut(ids))
        scores = await run(Job("classify", tuned, rows))
        labels = tuned.task.labels
        return ClassifyResponse(
            task=body.task,
            labels=[labels[max(range(len(row)), key=row.__getitem__)] for row in scores],
            scores=[dict(zip(labels, row)) for row in scores] if body.return_scores else None,
        )

    @app.post("/v1/completions", response_model=CompletionResponse, responses={404: {}, 413: {}, 422: {}, 503: {}})
    async def complete(body: CompletionRequest) -> CompletionResponse:
        tuned = task_or_404(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or len(prompts) > limits.max_items:
            raise HTTPException(422, f"prompt: give 1 to {limits.max_items} prompts")
        if body.max_tokens > limits.max_new_tokens:
            raise HTTPException(422, f"max_tokens: the limit is {limits.max_new_tokens}")
        rows = []
        for index, text in enumerate(prompts):
            if not _valid_unicode(text):
                raise HTTPException(422, f"prompt.{index}: not valid Unicode")
            ids = tuned.encoder.tokenize(text) if len(text) <= limits.max_input_tokens * 32 else None
            if not ids or len(ids) > limits.max_input_tokens:
                raise HTTPException(422, f"prompt.{index}: empty or longer than {limits.max_input_tokens} tokens")
            rows.append(ids)
        params = {
            "max_tokens": body.max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "seed": body.seed,
        }
        outputs = await run(Job("complete", tuned, rows, params))
        stops = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
        choices = []
        for index, tokens in enumerate(outputs):
            text = tuned.tokenizer.decode(tokens, skip_special_tokens=True)
            reason = "stop" if len(tokens) < body.max_tokens else "length"
            cut = min((text.find(s) for s in stops if s and s in text), default=-1)
            if cut >= 0:
                text, reason = text[:cut], "stop"
            choices.append(Choice(text=text, index=index, finish_reason=reason))
        prompt_tokens = sum(len(r) for r in rows)
        completion_tokens = sum(len(t) for t in outputs)
        return CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex[:24]}",
            created=int(time.time()),
            model=body.model,
            choices=choices,
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        )

    @app.get("/v1/tasks", response_model=list[TaskInfo])
    async def tasks() -> list[TaskInfo]:
        return [
            TaskInfo(
                name=name,
                labels=t.task.labels,
                template=t.task.template,
                num_virtual_tokens=t.lm.n_prompt,
                base_model=t.lm.base.name_or_path,
            )
            for name, t in store.items()
        ]

    @app.get("/healthz")
    async def health() -> dict:
        return {"status": "ok", "tasks": len(store.items()), "queue_depth": batcher.depth, "pid": os.getpid()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)

    def require_admin(authorization: str | None) -> None:
        if admin_token is None:
            raise HTTPException(403, "admin endpoints are off (start the server with --admin-token-file)")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), admin_token.encode()):
            raise HTTPException(
                401, "admin endpoints need 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"}
            )

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
            tuned = store.install(name, files)
        except SoftpromptError as exc:
            raise HTTPException(422, str(exc)) from None
        return TaskInfo(
            name=name,
            labels=tuned.task.labels,
            template=tuned.task.template,
            num_virtual_tokens=tuned.lm.n_prompt,
            base_model=tuned.lm.base.name_or_path,
        )

    @app.delete("/v1/tasks/{name}", responses={401: {}, 403: {}, 404: {}})
    async def delete(name: str, authorization: Annotated[str | None, Header()] = None) -> dict:
        require_admin(authorization)
        if not store.remove(name):
            raise HTTPException(404, f"unknown task {name!r}")
        return {"deleted": name}

    return app
