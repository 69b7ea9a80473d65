"""OpenAI's API over the tasks: `/v1/models` lists them, `/v1/completions` continues text (or token ids) after
a task's prompt, whole or streamed as server-sent events, with per-token logprobs on request, and with `echo`
the prompt's own tokens scored first (lm-evaluation-harness's loglikelihood requests). The chat route is
chat_api.py; the text assembly and the stream both share are openai_stream.py."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse

from ..engine.causal import PromptedCausalLM
from .batcher import Engine, Generated, Job
from .handling import ANSWERS, enqueue, given_ids, task_or_404, token_ids
from .openai_schemas import Choice, CompletionRequest, CompletionResponse, Logprobs, Model, ModelList
from .openai_stream import ChoiceText, echoed, stream, usage, whole
from .schemas import Limits
from .store import PromptStore, Served

PATH = "/v1/completions"


def openai_routes(app: FastAPI, store: PromptStore, engine: Engine, limits: Limits) -> None:
    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        """Every task, as OpenAI lists models (SDKs and chat front-ends discover what to call here)."""
        return ModelList(data=[Model(id=name, created=served.created) for name, served in store.items()])

    @app.get("/v1/models/{name}", response_model=Model, responses={404: {}})
    async def model(name: str) -> Model:
        return Model(id=name, created=task_or_404(store, name).created)

    @app.post(PATH, response_model=CompletionResponse, responses=ANSWERS)
    async def complete(body: CompletionRequest):
        served = task_or_404(store, body.model)
        tuned = served.tuned
        rows = _prompt_rows(served, body, limits)
        scored = enqueue(engine, Job("score", tuned, rows, {"top": body.logprobs})) if _scores(body, tuned) else None
        params = {"max_tokens": body.max_tokens, "temperature": body.temperature, "top_p": body.top_p,
                  "seed": body.seed, "logprobs": body.logprobs}  # fmt: skip
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": body.model, "system_fingerprint": served.version}  # fmt: skip
        prompt_tokens = sum(map(len, rows))
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def on_token(*event) -> None:  # called on the worker thread: the token goes to this loop's queue
            loop.call_soon_threadsafe(events.put_nowait, event)

        if body.max_tokens:  # queued now: a 503 comes before any answer, and the batch takes both jobs at once
            outputs = enqueue(engine, Job("complete", tuned, rows, params, on_token if body.stream else None))
        else:
            outputs = loop.create_future()
            outputs.set_result([Generated() for _ in rows])
        scores = await scored if scored is not None else [None] * len(rows)
        echoes = await asyncio.to_thread(_echoes, tuned.tokenizer, rows, scores, body.echo)
        texts = [ChoiceText(tuned.tokenizer, body.stops(), body.logprobs is not None, len(e[0])) for e in echoes]
        if not body.stream:
            choices = await asyncio.to_thread(whole, texts, await outputs)
            return CompletionResponse(**head, choices=[_choice(i, *_joined(echoes[i], c[:2]), c[2])
                                                       for i, c in enumerate(choices)],
                                      usage=usage(prompt_tokens, texts))  # fmt: skip
        opening = [_choice(i, *echo, None).model_dump() for i, echo in enumerate(echoes)] if body.echo else []
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = stream(head, lambda *c: _choice(*c).model_dump(), texts, events, outputs,
                        prompt_tokens if include_usage else None, opening, PATH)  # fmt: skip
        return StreamingResponse(chunks, media_type="text/event-stream")


def _prompt_rows(served: Served, body: CompletionRequest, limits: Limits) -> list[list[int]]:
    """The prompts' token ids: texts tokenised as the task's Encoder does, or ids as given (one list of ints
    is one prompt); a 422 naming the prompt that is empty, too long or not the model's."""
    prompt = body.prompt
    prompts = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else prompt
    if not prompts or len(prompts) > limits.max_items:
        raise HTTPException(422, f"prompt: give 1 to {limits.max_items} prompts")
    if body.max_tokens > limits.max_new_tokens:
        raise HTTPException(422, f"max_tokens: the limit is {limits.max_new_tokens}")
    if not (body.max_tokens or body.echo):
        raise HTTPException(422, "max_tokens: 0 asks for nothing without echo")
    return [(token_ids if isinstance(p, str) else given_ids)(served, p, f"prompt.{index}", limits)
            for index, p in enumerate(prompts)]  # fmt: skip


def _scores(body: CompletionRequest, tuned) -> bool:
    """Whether the prompt's tokens are to be scored: `echo` with `logprobs`, on a model that predicts its input."""
    if not (body.echo and body.logprobs is not None):
        return False
    if not isinstance(tuned.lm, PromptedCausalLM):
        raise HTTPException(400, "echo: an encoder-decoder task does not score its prompt")
    return True


def _echoes(tokenizer, rows: list[list[int]], scores: list, echo: bool) -> list[tuple[str, Logprobs | None]]:
    """What each choice starts with: its echoed prompt, or nothing."""
    return [echoed(tokenizer, ids, s) if echo else ("", None) for ids, s in zip(rows, scores)]


def _joined(echo: tuple[str, Logprobs | None], rest: tuple[str, Logprobs | None]) -> tuple[str, Logprobs | None]:
    """An echoed prompt, then its continuation: texts and logprobs end to end."""
    (text, first), (more, second) = echo, rest
    if first is None or second is None:
        return text + more, first or second
    parts = {name: getattr(first, name) + getattr(second, name) for name in Logprobs.model_fields}
    return text + more, Logprobs(**parts)


def _choice(index: int, text: str, logprobs: Logprobs | None, reason: str | None) -> Choice:
    return Choice(text=text, index=index, finish_reason=reason, logprobs=logprobs)
