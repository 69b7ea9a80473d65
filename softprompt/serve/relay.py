"""Carrying an HTTP request from the Ray ingress to a replica's app and its answer back (ray_engine.py).

The ingress does not parse or validate anything of the API: it hands the request's method, path, headers and
body to a replica, which runs them through the same FastAPI app the single-process server runs. Paths,
shapes, errors, authentication and streaming are therefore the same by construction. The replicas' /healthz
and /metrics answers are merged here into one.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

from .schemas import Limits
from .store import valid_name

# The body fields that may name the task, by route.
TASK_FIELDS = {"/v1/classify": ("task",), "/v1/completions": ("model",), "/v1/predict": ("task", "model")}
Head = tuple[int, list[tuple[bytes, bytes]]]  # status and raw headers


@dataclass(frozen=True)
class Forwarded:
    """An HTTP request, as plain data a Ray handle can send to another process."""

    method: str
    path: str
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    @classmethod
    async def of(cls, request: Request, limits: Limits) -> Forwarded:
        """The request, its body read up to `limit` bytes plus one: the replica's body limit then answers
        413 exactly as the single server does, without the ingress holding an unbounded body."""
        limit = limits.body_limit(request.method, request.url.path)  # as BodyLimit
        declared = request.headers.get("content-length", "")
        body = b""
        if not (declared.isdigit() and int(declared) > limit):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    break
        scope = request.scope
        return cls(scope["method"], scope["path"], scope["query_string"], tuple(scope["headers"]), body)

    def task(self) -> str:
        """The task the request is for ('' for none): Ray routes it to a replica that holds that task."""
        if self.method == "GET" and self.path.startswith("/v1/models/"):
            name = self.path.removeprefix("/v1/models/")
        elif self.method == "POST" and self.path in TASK_FIELDS:
            name = next((self._fields[field] for field in TASK_FIELDS[self.path] if field in self._fields), None)
        else:
            return ""
        return name if isinstance(name, str) and valid_name(name) else ""

    def streamed(self) -> bool:
        """Whether the answer comes in pieces (a completion with `stream: true`)."""
        return self.method == "POST" and self.path == "/v1/completions" and self._fields.get("stream") is True

    @functools.cached_property
    def _fields(self) -> dict:
        """The JSON body's fields ({} when it is not a JSON object: the replica answers 422 for that)."""
        try:
            fields = json.loads(self.body)
        except ValueError:
            return {}
        return fields if isinstance(fields, dict) else {}


async def relay(app, request: Forwarded) -> AsyncIterator[Head | bytes]:
    """Run `request` through the ASGI `app` in this process: yields the head first, then the body's chunks
    as the app sends them (a streamed completion arrives token by token)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.query,
        "root_path": "",
        "headers": list(request.headers),
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }
    messages: asyncio.Queue = asyncio.Queue()
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await asyncio.Future()  # the client never leaves on its own; the app ends the response

    async def run() -> None:
        try:
            await app(scope, receive, messages.put)
        finally:
            messages.put_nowait(None)

    task = asyncio.create_task(run())
    try:
        while (message := await messages.get()) is not None:
            if message["type"] == "http.response.start":
                yield message["status"], list(message.get("headers", []))
            elif message.get("body"):
                yield message["body"]
    finally:
        if not task.done():
            task.cancel()
        elif not task.cancelled():
            task.exception()  # the app answered 500 already; its re-raised error is not news


async def collected(app, request: Forwarded) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The whole answer of `relay`: status, headers and body."""
    head, body = None, b""
    async for part in relay(app, request):
        if isinstance(part, tuple):
            head = part
        else:
            body += part
    return head[0], head[1], body


def merged_health(bodies: dict[str, bytes]) -> dict:
    """One /healthz answer for the replicas that answered: each replica's own, and the totals."""
    replicas = {name: json.loads(body) for name, body in sorted(bodies.items())}
    return {
        "status": "ok",
        "tasks": max(health["tasks"] for health in replicas.values()),
        "queue_depth": sum(health["queue_depth"] for health in replicas.values()),
        "replicas": replicas,
    }


def merged_metrics(texts: dict[str, bytes]) -> bytes:
    """The replicas' Prometheus metrics in one exposition, each sample labelled with its `replica`, as Ray
    labels its own per-replica metrics; sums across replicas are a `sum by` away."""
    families = {}
    for replica, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text.decode()):
            samples = [sample._replace(labels={**sample.labels, "replica": replica}) for sample in family.samples]
            if family.name in families:
                families[family.name].samples.extend(samples)
            else:
                family.samples = samples
                families[family.name] = family
    registry = CollectorRegistry()
    registry.register(_Frozen(list(families.values())))
    return generate_latest(registry)


class _Frozen:
    """A collector of already-read metric families (what `merged_metrics` re-exposes)."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return self.families
