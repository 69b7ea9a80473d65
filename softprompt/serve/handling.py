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


def chat_ids(served: Served, messages: list[dict], limits: Limits) -> list[int]:
    """Chat messages' ids: rendered by the base's chat template with the assistant's turn opened (the template
    holds its own special tokens, so none are added), or a 400 where the base has no template and a 422 where
    the messages are not valid Unicode or too long."""
    tokenizer = served.tuned.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise HTTPException(400, "messages: this base model has no chat template")
    texts = [message["content"] for message in messages]

    def encode() -> list[int]:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not 0 < len(ids) <= limits.max_input_tokens:
            raise ParameterError("messages", "empty or longer than {n} tokens", n=limits.max_input_tokens)
        return ids

    return _read(texts, "messages", limits, encode)


def given_ids(served: Served, ids: list[int], where: str, limits: Limits) -> list[int]:
    """A prompt given as token ids (as vLLM and OpenAI take them), or a 422 naming `where`: empty, over the
    token limit, or holding an id the base has no embedding for."""
    vocabulary = served.tuned.lm.model.get_input_embeddings().num_embeddings
    if not 0 < len(ids) <= limits.max_input_tokens:
        raise HTTPException(422, f"{where}: empty or longer than {limits.max_input_tokens} tokens")
    if max(ids) >= vocabulary:
        raise HTTPException(422, f"{where}: token id {max(ids)} is past the vocabulary ({vocabulary} ids)")
    return list(ids)


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
