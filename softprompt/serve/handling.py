"""What every request handler does before and after the model: find the task, read its inputs as token ids
within the limits, and queue the job (503 when the queue is full)."""

from __future__ import annotations

import asyncio

from fastapi import HTTPException

from .batcher import Batcher, Job, Overloaded
from .schemas import Limits
from .store import PromptStore, Served

ANSWERS = {404: {}, 413: {}, 422: {}, 503: {}}


def task_or_404(store: PromptStore, name: str) -> Served:
    """The task's prompt and version, looked up once: the request's job runs on exactly this prompt."""
    served = store.get(name)
    if served is None:
        raise HTTPException(404, f"unknown task {name!r}")
    return served


def token_ids(served: Served, text: str, where: str, limits: Limits) -> list[int]:
    """`text`'s token ids, or a 422 naming `where`: not valid Unicode (JSON may carry lone surrogates, which
    no tokenizer reads), empty (it would fail the whole batch) or over the token limit."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPException(422, f"{where}: not valid Unicode") from None
    ids = served.tuned.encoder.tokenize(text) if len(text) <= limits.max_input_tokens * 32 else None
    if not ids or len(ids) > limits.max_input_tokens:
        raise HTTPException(422, f"{where}: empty or longer than {limits.max_input_tokens} tokens")
    return ids


def enqueue(batcher: Batcher, job: Job) -> asyncio.Future:
    """The job queued, or a 503 (with Retry-After) before anything is answered."""
    try:
        return batcher.enqueue(job)
    except Overloaded:
        raise HTTPException(503, "server busy, retry shortly", headers={"Retry-After": "1"}) from None
