"""What stands in front of the handlers: one-line JSON errors, the body-size limit and the API key (ASGI
middleware, so they act before any handler or the router runs)."""

from __future__ import annotations

import json
import re

from fastapi.responses import JSONResponse

from .auth import bearer_matches
from .schemas import FILES_PATH, Limits

ADMIN_METHODS = ("PUT", "DELETE")
BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
# Fine-tuning's writes (upload, delete, create, cancel): their handlers take the admin token or the API key.
TUNING_WRITES = tuple(
    re.compile(route)
    for route in (f"POST {FILES_PATH}", f"DELETE {FILES_PATH}/[^/]+", "POST /v1/fine_tuning/jobs",
                  "POST /v1/fine_tuning/jobs/[^/]+/cancel")
)  # fmt: skip
OPEN_PATHS = frozenset({"/healthz", "/metrics"})
CONSOLE_PATH = "/console"  # the console's static files; its page is at /
DRAIN_FACTOR = 8  # declared bodies up to this many times the limit are read and dropped before the 413


OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/models", FILES_PATH, "/v1/fine_tuning")


def error(status: int, message: str, headers: dict | None = None, path: str = "") -> JSONResponse:
    """An error answer to a request for `path` (see `error_body`)."""
    return JSONResponse(error_body(status, message, path), status_code=status, headers=headers)


def error_body(status: int, message: str, path: str) -> dict:
    """The server's one error shape, `{"error": "<one line>"}`; on OpenAI's routes the same line in OpenAI's
    shape, which its SDKs read and show: `{"error": {"message", "type", "param" (the field named), "code"}}`."""
    if not path.startswith(OPENAI_PATHS):
        return {"error": message}
    where = message.split(":", 1)[0]
    param = where if ":" in message and " " not in where else None
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, declared or streamed, before any handler reads them."""

    def __init__(self, app, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.body_limit(scope["method"], scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            if declared.isdigit() and int(declared) <= DRAIN_FACTOR * limit:
                await _drain(receive)  # a client still sending would see a reset connection instead of our 413
            return await _too_large(send, limit, scope["path"])
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
                        await _too_large(send, limit, scope["path"])
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


class ApiKey:
    """ASGI middleware: with an API key, a request without `Authorization: Bearer <key>` gets 401 before routing.

    Checked ahead of the router, so without the key nothing is served, not even which paths exist (404 or
    405), nor /docs and /openapi.json. Exempt: the console's static page (it asks for the key), `open_paths`
    (/healthz and /metrics with
    --open-health-metrics, for probes and scrapers that hold no secret), and, when the admin token is set, the
    admin routes and fine-tuning's writes, whose handlers check that token (or the key) instead (a request
    carries one bearer only)."""

    def __init__(self, app, key: str, open_paths: frozenset[str], admin_exempt: bool, console_exempt: bool) -> None:
        self.app = app
        self.key = key
        self.open_paths = open_paths
        self.admin_exempt = admin_exempt
        self.console_exempt = console_exempt

    def _exempt(self, scope) -> bool:
        if scope["path"] in self.open_paths:
            return True
        if self.console_exempt and (scope["path"] == "/" or scope["path"].startswith(CONSOLE_PATH + "/")):
            return True  # the console's static page holds no secret; it asks for the key to call the API
        if not self.admin_exempt:
            return False
        method, path = scope["method"], scope["path"]
        tuning = any(route.fullmatch(f"{method} {path}") for route in TUNING_WRITES)  # their handlers check
        return tuning or (method in ADMIN_METHODS and path.startswith("/v1/tasks/"))

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self._exempt(scope):
            if not bearer_matches(dict(scope["headers"]).get(b"authorization"), self.key):
                message = "this server needs 'Authorization: Bearer <API key>'"
                response = error(401, message, BEARER_CHALLENGE, scope["path"])
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


async def _drain(receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _too_large(send, limit: int, path: str) -> None:
    body = json.dumps(error_body(413, f"request body over {limit} bytes", path)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
