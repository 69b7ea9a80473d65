"""OpenAI's API over the tasks: `/v1/models` lists them, `/v1/completions` continues text after a task's prompt,
whole or streamed as server-sent events, with per-token logprobs on request.

A choice's text is assembled by `ChoiceText` in one way for both: the tokens so far decoded whole (so merged
and multi-byte characters come out right), cut at the first stop string, and released to a stream only as far
as no stop string could still begin; so a streamed completion is the non-streamed one in pieces.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse

from .batcher import Engine, Generated, Job
from .guards import error_body
from .handling import ANSWERS, enqueue, task_or_404, token_ids
from .schemas import Choice, CompletionRequest, CompletionResponse, Limits, Logprobs, Model, ModelList
from .store import PromptStore


class ChoiceText:
    """One choice's text and logprobs as its tokens arrive, and what of them a stream may release yet."""

    def __init__(self, tokenizer, stops: list[str], logprobs: bool) -> None:
        self.tokenizer, self.stops, self.logprobs = tokenizer, [s for s in stops if s], logprobs
        self.tokens: list[int] = []
        self.token_logprobs: list[float] = []
        self.top: list[dict[int, float]] = []
        self.offsets: list[int] = []  # where each token's text starts
        self.text = ""
        self.cut = False  # a stop string ended it
        self.sent = (0, 0)  # characters and tokens released so far

    def add(self, token: int, logprob: float, top: dict[int, float]) -> None:
        if self.cut:
            return
        self.offsets.append(len(self.text.rstrip("\ufffd")))  # where its text starts: after the whole characters
        self.tokens.append(token)
        self.token_logprobs.append(logprob)
        self.top.append(top)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        found = [text.find(stop) for stop in self.stops if stop in text]
        if found:
            text, self.cut = text[: min(found)], True
        self.text = text

    def release(self, final: bool) -> tuple[str, Logprobs | None]:
        """The text not yet released (all of it when `final` or cut; else short of a possible stop string's
        start or an unfinished character), and the logprobs of the tokens that begin in it."""
        end = len(self.text)
        if not (final or self.cut):
            whole = self.text.rstrip("\ufffd")  # an unfinished character first, then a stop string's possible start
            end = len(whole) - max((k for stop in self.stops for k in range(1, min(len(stop), len(whole) + 1))
                                    if whole.endswith(stop[:k])), default=0)  # fmt: skip
        chars, count = self.sent
        tokens = count
        while tokens < len(self.tokens) and (self.offsets[tokens] < end or (final and not self.cut)):
            tokens += 1
        self.sent = (max(end, chars), tokens)
        return self.text[chars:end], self._logprobs(count, tokens) if self.logprobs else None

    def _logprobs(self, start: int, stop: int) -> Logprobs:
        piece = self.tokenizer.decode
        return Logprobs(
            tokens=[piece([t]) for t in self.tokens[start:stop]],
            token_logprobs=self.token_logprobs[start:stop],
            top_logprobs=[{piece([t]): lp for t, lp in top.items()} for top in self.top[start:stop]],
            text_offset=self.offsets[start:stop],
        )

    def finish_reason(self, generated: Generated) -> str:
        return "stop" if self.cut or generated.stopped else "length"


def openai_routes(app: FastAPI, store: PromptStore, engine: Engine, limits: Limits) -> None:
    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        """Every task, as OpenAI lists models (SDKs and chat front-ends discover what to call here)."""
        return ModelList(data=[Model(id=name, created=served.created) for name, served in store.items()])

    @app.get("/v1/models/{name}", response_model=Model, responses={404: {}})
    async def model(name: str) -> Model:
        return Model(id=name, created=task_or_404(store, name).created)

    @app.post("/v1/completions", response_model=CompletionResponse, responses=ANSWERS)
    async def complete(body: CompletionRequest):
        served = task_or_404(store, body.model)
        tuned = served.tuned
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or len(prompts) > limits.max_items:
            raise HTTPException(422, f"prompt: give 1 to {limits.max_items} prompts")
        if body.max_tokens > limits.max_new_tokens:
            raise HTTPException(422, f"max_tokens: the limit is {limits.max_new_tokens}")
        rows = [token_ids(served, text, f"prompt.{index}", limits) for index, text in enumerate(prompts)]
        params = {"max_tokens": body.max_tokens, "temperature": body.temperature, "top_p": body.top_p,
                  "seed": body.seed, "logprobs": body.logprobs}  # fmt: skip
        stops = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
        texts = [ChoiceText(tuned.tokenizer, stops, body.logprobs is not None) for _ in rows]
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": body.model, "system_fingerprint": served.version}  # fmt: skip
        usage = {"prompt_tokens": sum(len(r) for r in rows)}
        if not body.stream:
            outputs = await enqueue(engine, Job("complete", tuned, rows, params))
            # Decoding every prefix again costs milliseconds a token: off the event loop.
            choices = await asyncio.to_thread(_whole_choices, texts, outputs)
            return CompletionResponse(**head, choices=choices, usage=_usage(usage, texts))
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def on_token(*event) -> None:  # called on the worker thread: the token goes to this loop's queue
            loop.call_soon_threadsafe(events.put_nowait, event)

        outputs = enqueue(engine, Job("complete", tuned, rows, params, on_token))  # a 503 now, before the stream
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = _chunks(head, texts, events, outputs, usage if include_usage else None)
        return StreamingResponse(chunks, media_type="text/event-stream")


def _choice(index: int, released: tuple[str, Logprobs | None], reason: str | None) -> Choice:
    return Choice(text=released[0], index=index, finish_reason=reason, logprobs=released[1])


def _whole_choices(texts: list[ChoiceText], outputs: list[Generated]) -> list[Choice]:
    for text, generated in zip(texts, outputs):
        for token, logprob, top in zip(generated.tokens, generated.logprobs, generated.top):
            text.add(token, logprob, top)
    return [
        _choice(i, text.release(final=True), text.finish_reason(g)) for i, (text, g) in enumerate(zip(texts, outputs))
    ]


def _usage(usage: dict, texts: list[ChoiceText]) -> dict[str, int]:
    """Tokens counted as far as each choice goes (a stop string ends it, though the batch decodes on)."""
    completion = sum(len(text.tokens) for text in texts)
    return {**usage, "completion_tokens": completion, "total_tokens": usage["prompt_tokens"] + completion}


async def _chunks(head: dict, texts: list[ChoiceText], events: asyncio.Queue, outputs: asyncio.Future,
                  usage: dict | None) -> AsyncIterator[str]:  # fmt: skip
    """Server-sent events: a chunk per token that releases text, each choice's last piece with its finish
    reason, the usage if asked for, then `[DONE]`. The worker's token events all reach `events` before
    `outputs` settles, so draining the queue after it has settled loses none."""

    def event(choices: list[Choice], **extra) -> str:
        chunk = {**head, "choices": [c.model_dump() for c in choices], **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    while True:
        getter = asyncio.ensure_future(events.get())
        await asyncio.wait({getter, outputs}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            break
        row, *token = getter.result()
        texts[row].add(*token)
        released = texts[row].release(final=False)
        if released[0] or (released[1] and released[1].tokens):
            yield event([_choice(row, released, None)])
    while not events.empty():
        row, *token = events.get_nowait()
        texts[row].add(*token)
    try:
        generated = outputs.result()
    except Exception as exc:  # the batch failed: say so in the stream (an SDK raises it), never end silently
        body = error_body(500, f"generation failed ({type(exc).__name__})", "/v1/completions")
        yield f"data: {json.dumps(body)}\n\n"
        return
    for row, (text, g) in enumerate(zip(texts, generated)):
        yield event([_choice(row, text.release(final=True), text.finish_reason(g))])
    if usage is not None:
        yield event([], usage=_usage(usage, texts))
    yield "data: [DONE]\n\n"
