"""OpenAI's `/v1/chat/completions` over the tasks: the messages rendered by the base's chat template with the
assistant's turn opened, the task's soft prompt in front of them, then decoded as completions are (the same
batcher job, text assembly and stream), ending at the template's end of turn; whole, or streamed as
`chat.completion.chunk` deltas."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse

from .batcher import Engine, Job
from .handling import ANSWERS, chat_ids, enqueue, task_or_404
from .openai_schemas import (
    AssistantMessage,
    ChatChoice,
    ChatLogprobs,
    ChatRequest,
    ChatResponse,
    Logprobs,
    TokenLogprob,
    TopLogprob,
)
from .openai_stream import ChoiceText, stream, usage, whole
from .schemas import Limits
from .store import PromptStore

PATH = "/v1/chat/completions"


def chat_routes(app: FastAPI, store: PromptStore, engine: Engine, limits: Limits) -> None:
    @app.post(PATH, response_model=ChatResponse, responses=ANSWERS)
    async def chat(body: ChatRequest):
        served = task_or_404(store, body.model)
        tuned = served.tuned
        if body.limit() > limits.max_new_tokens:
            field = "max_tokens" if body.max_tokens else "max_completion_tokens"
            raise HTTPException(422, f"{field}: the limit is {limits.max_new_tokens}")
        ids = chat_ids(served, [m.model_dump() | {"content": m.text()} for m in body.messages], limits)
        top = (body.top_logprobs or 0) if body.logprobs else None
        params = {"max_tokens": body.limit(), "temperature": body.temperature, "top_p": body.top_p,
                  "seed": body.seed, "logprobs": top, "stop_ids": _end_of_turn(tuned)}  # fmt: skip
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": body.model, "system_fingerprint": served.version}  # fmt: skip
        texts = [ChoiceText(tuned.tokenizer, body.stops(), body.logprobs)]
        if not body.stream:
            outputs = await enqueue(engine, Job("complete", tuned, [ids], params))
            (text, logprobs, reason), = await asyncio.to_thread(whole, texts, outputs)
            choice = ChatChoice(index=0, message=AssistantMessage(content=text), finish_reason=reason,
                                logprobs=_chat_logprobs(logprobs))  # fmt: skip
            return ChatResponse(**head, choices=[choice], usage=usage(len(ids), texts))
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def on_token(*event) -> None:  # called on the worker thread: the token goes to this loop's queue
            loop.call_soon_threadsafe(events.put_nowait, event)

        outputs = enqueue(engine, Job("complete", tuned, [ids], params, on_token))  # a 503 now, before the stream
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        opening = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}]
        chunks = stream({**head, "object": "chat.completion.chunk"}, _delta, texts, events, outputs,
                        len(ids) if include_usage else None, opening, PATH)  # fmt: skip
        return StreamingResponse(chunks, media_type="text/event-stream")


def _end_of_turn(tuned) -> tuple[int, ...]:
    """The tokens a reply ends at: the generation config's EOS ids (a chat model's end of turn is among them,
    e.g. Qwen's `<|im_end|>` beside `<|endoftext|>`), and the tokenizer's EOS."""
    config = getattr(tuned.lm.model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    ids.discard(tuned.tokenizer.eos_token_id)  # the batcher ends every row at the tokenizer's EOS already
    return tuple(sorted(ids))


def _chat_logprobs(logprobs: Logprobs | None) -> ChatLogprobs | None:
    """Completions' logprobs in chat's shape: one entry per token, its alternatives as a list, with bytes."""
    if logprobs is None:
        return None

    def top(token: str, logprob: float) -> TopLogprob:
        return TopLogprob(token=token, logprob=logprob, bytes=list(token.encode("utf-8")))

    return ChatLogprobs(content=[
        TokenLogprob(**top(token, logprob).model_dump(), top_logprobs=[top(t, lp) for t, lp in alternatives.items()])
        for token, logprob, alternatives in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs)
    ])  # fmt: skip


def _delta(index: int, text: str, logprobs: Logprobs | None, reason: str | None) -> dict:
    chosen = _chat_logprobs(logprobs)
    return {"index": index, "delta": {"content": text} if text else {}, "finish_reason": reason,
            "logprobs": chosen.model_dump() if chosen is not None else None}  # fmt: skip
