"""The task-level routes: rows of fields, rendered by the task's template through its Encoder, answered with
what the task answers. `/v1/predict` gives a classification task's labels (and scores) and a text-to-text
task's generated text; `/v1/classify` is its classification answer under the older request shape.

A text task's rows go to the engine as the completions route's jobs do, with the task's stop tokens, so they
decode in the same mixed-task generation pass (batcher.py) and their tokens become text through the task's own
`Encoder.finish`, as offline prediction makes it.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, HTTPException

from ..engine.decoding import until_end
from .batcher import Engine, Job
from .handling import ANSWERS, enqueue, input_ids, task_or_404
from .schemas import (
    NO_SAMPLING,
    ClassifyRequest,
    ClassifyResponse,
    Limits,
    PredictRequest,
    TextOutput,
    TextPrediction,
)
from .store import PromptStore, Served


def task_routes(app: FastAPI, store: PromptStore, engine: Engine, limits: Limits) -> None:
    @app.post("/v1/predict", response_model=ClassifyResponse | TextPrediction, responses={400: {}, **ANSWERS})
    async def predict(body: PredictRequest) -> ClassifyResponse | TextPrediction:
        """Labels for a classification task, generated text for a text-to-text task."""
        name = _task_name(body)
        served = task_or_404(store, name)
        if served.tuned.task.generates:
            return await _generated(name, served, body, engine, limits)
        asked = [field for field, neutral in NO_SAMPLING.items() if getattr(body, field) != neutral]
        if asked:
            raise HTTPException(400, f"{asked[0]}: not used by a classification task (it ranks its labels)")
        return await _classified(name, served, body.rows, "rows", body.return_scores, engine, limits)

    @app.post("/v1/classify", response_model=ClassifyResponse, responses={400: {}, **ANSWERS})
    async def classify(body: ClassifyRequest) -> ClassifyResponse:
        served = task_or_404(store, body.task)
        if served.tuned.task.generates:
            raise HTTPException(422, f"task: {body.task!r} is a text-to-text task (ask /v1/predict)")
        return await _classified(body.task, served, body.inputs, "inputs", body.return_scores, engine, limits)


def _task_name(body: PredictRequest) -> str:
    if (body.task is None) == (body.model is None):
        raise HTTPException(422, "task: give the task's name as `task` or as `model`, once")
    return body.task or body.model


def _rows(served: Served, items: list, where: str, limits: Limits) -> list[list[int]]:
    """The rows' input ids through the task's Encoder, or a 422 naming the row (handling.input_ids)."""
    if len(items) > limits.max_items:
        raise HTTPException(422, f"{where}: {len(items)} items, the limit is {limits.max_items}")
    return [input_ids(served, item, f"{where}.{index}", limits) for index, item in enumerate(items)]


async def _classified(name: str, served: Served, items: list, where: str, return_scores: bool, engine: Engine,
                      limits: Limits) -> ClassifyResponse:  # fmt: skip
    tuned = served.tuned
    scores = await enqueue(engine, Job("classify", tuned, _rows(served, items, where, limits)))
    labels = tuned.task.labels
    return ClassifyResponse(
        task=name,
        labels=[labels[max(range(len(row)), key=row.__getitem__)] for row in scores],
        scores=[dict(zip(labels, row)) for row in scores] if return_scores else None,
        prompt_version=served.version,
    )


async def _generated(name: str, served: Served, body: PredictRequest, engine: Engine, limits: Limits) -> TextPrediction:
    """Each row's answer, decoded up to the task's max_new_tokens (within the server's) and its stop tokens."""
    encoder = served.tuned.encoder
    if body.return_scores:
        raise HTTPException(400, "return_scores: not used by a text-to-text task (its answer is text)")
    limit, whose = min((encoder.max_new_tokens, "the task's"), (limits.max_new_tokens, "the server's"))
    if body.max_new_tokens is not None and body.max_new_tokens > limit:
        raise HTTPException(422, f"max_new_tokens: the limit is {limit} ({whose})")
    rows = _rows(served, body.rows, "rows", limits)
    stop_ids = await asyncio.to_thread(lambda: encoder.stop_ids)  # the first time, a pass over the vocabulary
    params = {"max_tokens": body.max_new_tokens or limit, "temperature": body.temperature, "top_p": body.top_p,
              "seed": body.seed, "stop_ids": stop_ids}  # fmt: skip
    generated = await enqueue(engine, Job("complete", served.tuned, rows, params))
    # Cut here too: an engine that decodes past a stop token (vLLM's) then answers as ours does.
    tokens = [until_end(row.tokens, None, set(stop_ids)) for row in generated]
    written = sum(map(len, tokens))
    usage = {"prompt_tokens": sum(map(len, rows)), "completion_tokens": written}
    return TextPrediction(
        task=name,
        outputs=[TextOutput(text=encoder.finish(ids)) for ids in tokens],
        prompt_version=served.version,
        usage={**usage, "total_tokens": usage["prompt_tokens"] + written},
    )
