"""What every request handler does before and after the model: find the task, read its inputs as token ids
within the limits, and queue the job (503 when the queue is full)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import HTTPException

from ..data.tasks import Row
from ..utils.errors import ParameterError
from .batcher import Engine, Job, Overloaded
from .schemas import Limits
from .store import PromptStore, Served

ANSWERS = {404: {}, 413: {}, 422: {}, 503: {}}


def task_or_404(store: PromptStore, name: str) -> Served:
    """The task's prompt and version, looked up once: the request's job runs on exactly this prompt."""
    served = store.get(name)
    if served is None:
        raise HTTPException(404, f"unknown task {name!r}")
    return served


def input_ids(served: Served, item: Row | str, where: str, limits: Limits) -> list[int]:
    """A classify input's ids, made by the task's Encoder as training and evaluation make them (a string is
    a one-field template's row), or a 422 naming `where` (see `_read`)."""
    texts = [item] if isinstance(item, str) else list(item.values())
    encoder = served.tuned.encoder
    return _read(texts, where, limits, lambda: encoder.input_ids(item, max_tokens=limits.max_input_tokens))


def token_ids(served: Served, text: str, where: str, limits: Limits) -> list[int]:
    """A completion prompt's ids, the text tokenised alone, or a 422 naming `where` (see `_read`)."""
    encoder = served.tuned.encoder
    return _read([text], where, limits, lambda: encoder.tokenize(text, max_tokens=limits.max_input_tokens))


def _read(texts: list[str], where: str, limits: Limits, encode: Callable[[], list[int]]) -> list[int]:
    """`encode()`, or a 422 naming `where`: a text not valid Unicode (JSON may carry lone surrogates, which no
    tokenizer reads), a missing field, or an input empty (it would fail the whole batch) or over the token
    limit; text far past the limit is refused before it is tokenised."""
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPException(422, f"{where}: not valid Unicode") from None
    if sum(map(len, texts)) > limits.max_input_tokens * 32:
        raise HTTPException(422, f"{where}: empty or longer than {limits.max_input_tokens} tokens")
    try:
        return encode()
    except ParameterError as exc:  # the Encoder names its parameter (`row: ...`); the client sent `where`
        raise HTTPException(422, exc.spelled(lambda name: where)) from None


def enqueue(engine: Engine, job: Job) -> asyncio.Future:
    """The job queued, or a 503 (with Retry-After) before anything is answered."""
    try:
        return engine.enqueue(job)
    except Overloaded:
        raise HTTPException(503, "server busy, retry shortly", headers={"Retry-After": "1"}) from None
