"""The dynamic batcher: requests of any tasks that arrive within a short window run as one forward.

Requests wait in a bounded queue; one worker thread owns the model. It takes the first waiting request, then
keeps taking more until `max_batch` rows or `max_wait_ms` have passed, and runs all classification rows in one
mixed-task forward (each row carries its own task's cached prompt keys/values) and the generation rows
(completions, and text-to-text tasks' predictions) in one mixed-task generation pass per sampling setting and
stop tokens. With batching off, each request runs alone. Between batches it runs background work (fine-tuning
jobs); after a second without work it hands the memory its batches freed back to the system."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..data.batch_map import BatchMap
from ..data.batching import pad_left
from ..engine.prompted import TokenScores
from ..prompts.tuned import TunedPrompt
from ..utils.memory import release_free_memory
from .config import ServeConfig

IDLE_RELEASE_S = 1.0  # seconds without work before freed memory goes back to the system
IDLE_GRACE_S = 0.02  # seconds without a request before background work (a fine-tuning job's step) runs


class Overloaded(Exception):
    """The queue is full: the caller should answer 503 with Retry-After."""


# A streaming completion's hook, called on the worker thread as each row gets a token: (row, token id, its
# log-probability, the step's top alternatives {id: log-probability}, empty unless asked for).
OnToken = Callable[[int, int, float, dict[int, float]], None]


@dataclass
class Job:
    """One request: `rows` token-id lists for one task, answered through `future` (a streamed completion's
    `on_token`, given when the job is made, also hears each token as it is made). A "complete" job's `params`:
    max_tokens, temperature, top_p, seed, logprobs, and `stop_ids` (a text task's: its rows end after one)."""

    kind: str  # "classify" (label scores), "score" (the rows' own tokens scored, `top` alternatives each) or
    # "complete" (generated tokens)
    tuned: TunedPrompt
    rows: list[list[int]]
    params: dict = field(default_factory=dict)
    on_token: OnToken | None = None
    future: asyncio.Future | None = None
    loop: asyncio.AbstractEventLoop | None = None
    queued_at: float = field(default_factory=time.perf_counter)


# Told each batch's size as the worker takes it: (rows, jobs); the app's metrics count them.
OnBatch = Callable[[int, int], None]


class Engine(Protocol):
    """What the routes hand their jobs to: the batcher, or vllm_backend.VllmCompletions in front of it."""

    @property
    def depth(self) -> int:
        """Requests waiting or running."""

    def enqueue(self, job: Job) -> asyncio.Future:
        """Queue `job` (Overloaded when full); the future settles after every `on_token` call it made."""

    def close(self) -> None:
        """Stop taking jobs and let the worker end."""


class Background(Protocol):
    """Work the worker thread does between batches (tuning_runner.py's jobs): `work()` does one short unit of it
    (a micro-batch's forward, say), as long as `pending()`."""

    def pending(self) -> bool: ...

    def work(self) -> None: ...


class Batcher:
    """The one worker thread that owns the model, with the queue in front of it (its sizes from `config`).

    With `background` work pending, the worker does a unit of it whenever no request waits, and one after every
    `train_every` batches while requests keep waiting: requests keep priority, and the work still advances."""

    def __init__(self, config: ServeConfig, on_batch: OnBatch | None = None, background: Background | None = None):
        self.max_batch = config.max_batch
        self.max_wait = config.max_wait_ms / 1000
        self.batching = config.batching
        self.train_every = config.train_every
        self.background = background
        self._on_batch = on_batch or (lambda rows, jobs: None)
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=config.max_queue)
        self._thread = threading.Thread(target=self._work, name="softprompt-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def enqueue(self, job: Job) -> asyncio.Future:
        """Queue `job` (Overloaded when the queue is full, before anything is answered); its future settles
        with the result, after every `on_token` call it made has been delivered to the event loop."""
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded from None
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _collect(self, first: Job) -> list[Job]:
        jobs, rows = [first], len(first.rows)
        if not self.batching:
            return jobs
        deadline = time.perf_counter() + self.max_wait
        while rows < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            jobs.append(job)
            rows += len(job.rows)
        return jobs

    def _work(self) -> None:
        worked, served = False, 0  # since memory was last released; batches since background work
        while True:
            background = self._background_pending()
            if background and served >= self.train_every:
                self._background_work()
                worked, served = True, 0
                continue
            # After a batch, background work waits for a pause (clients sending again on each answer leave the queue
            # empty a moment after every batch); then it goes on while no request waits.
            idle = IDLE_RELEASE_S if worked or self.background else None
            wait = (IDLE_GRACE_S if served else 0) if background else idle
            try:
                first = self._queue.get(timeout=wait) if wait != 0 else self._queue.get_nowait()
            except queue.Empty:
                if background:
                    self._background_work()
                    worked, served = True, 0
                    continue
                if worked:
                    release_free_memory()
                worked = False
                continue
            if first is None:
                return
            worked, served = True, served + 1
            jobs = self._collect(first)
            self._on_batch(sum(len(job.rows) for job in jobs), len(jobs))
            with torch.inference_mode():
                for kind, run in (("classify", _classify), ("score", _score), ("complete", _complete)):
                    group = [job for job in jobs if job.kind == kind]
                    if group:
                        self._answer(group, run)

    def _background_pending(self) -> bool:
        try:  # background work that cannot even look (a disk error) never stops the serving
            return self.background is not None and self.background.pending()
        except Exception:
            return False

    def _background_work(self) -> None:
        with contextlib.suppress(Exception):  # it fails its own jobs; what escapes still leaves the worker serving
            self.background.work()

    @staticmethod
    def _answer(jobs: list[Job], run: Callable[[list[Job]], list[list]]) -> None:
        try:
            results = run(jobs)
        except Exception as exc:  # a failed batch fails its requests, never the worker
            for job in jobs:
                _hand_back(job, None, exc)
            return
        for job, result in zip(jobs, results):
            _hand_back(job, result, None)


def _hand_back(job: Job, result, error: Exception | None) -> None:
    """Settle the job's future on its event loop; a loop already closed (shutdown) has no one left to answer."""
    try:
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)
    except RuntimeError:
        pass


def _settle(future: asyncio.Future, result, error: Exception | None) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _classify(jobs: list[Job]) -> list[list[list[float]]]:
    """The classification rows of every task in one mixed-task pass; per row, its task's label scores."""
    batch = BatchMap.of([job.rows for job in jobs], [job.tuned.lm for job in jobs])
    labels = [job.tuned.encoder.label_ids for job in jobs for _ in job.rows]
    scores = jobs[0].tuned.lm.score_rows(batch.items, labels, batch.item_prompts(), batch_size=len(batch.items))
    return batch.split([row.tolist() for row in scores])


def _score(jobs: list[Job]) -> list[list[TokenScores]]:
    """Every task's rows scored token by token in one mixed-task pass (an echoed prompt's logprobs); each job
    keeps its own number of alternatives."""
    batch = BatchMap.of([job.rows for job in jobs], [job.tuned.lm for job in jobs])
    top = max(job.params["top"] for job in jobs)
    scores = jobs[0].tuned.lm.token_logprobs(batch.items, batch.item_prompts(), top=top)
    return [[TokenScores(s.logprobs, [dict(list(t.items())[: job.params["top"]]) for t in s.top]) for s in part]
            for job, part in zip(jobs, batch.split(scores))]  # fmt: skip


@dataclass
class Generated:
    """One row's completion: its tokens (EOS left out), each one's log-probability, each step's top
    alternatives when asked for (`logprobs: k`), and whether it ended at EOS rather than at max_tokens."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[dict[int, float]] = field(default_factory=list)
    stopped: bool = False


class _RowTokens:
    """Collects one request row's tokens as the decoder makes them, up to its own max_tokens and EOS (a batch
    decodes to its longest request), and passes each on to a streaming request."""

    def __init__(self, job: Job, row: int, eos_token_id: int | None) -> None:
        self.job, self.row, self.eos = job, row, eos_token_id
        self.generated = Generated()

    def add(self, token: int, logprobs: torch.Tensor) -> None:
        generated, params = self.generated, self.job.params
        if generated.stopped or len(generated.tokens) >= params["max_tokens"]:
            return
        if token == self.eos:
            generated.stopped = True
            return
        logprob = float(logprobs[token])
        top: dict[int, float] = {}
        if params.get("logprobs"):
            values, ids = logprobs.topk(params["logprobs"])
            top = dict(zip(ids.tolist(), values.tolist()))
        generated.tokens.append(token)
        generated.logprobs.append(logprob)
        generated.top.append(top)
        if self.job.on_token is not None:
            self.job.on_token(self.row, token, logprob, top)


def _complete(jobs: list[Job]) -> list[list[Generated]]:
    """Completions, batched across tasks for each (temperature, top_p, seed, stop tokens) setting: tasks that
    stop alike (a newline, by default) decode together."""
    results: dict[int, list] = {}
    settings: dict[tuple, list[int]] = {}
    for index, job in enumerate(jobs):
        params = job.params
        key = (params["temperature"], params["top_p"], params.get("seed"), tuple(params.get("stop_ids", ())))
        settings.setdefault(key, []).append(index)
    for (temperature, top_p, seed, stop_ids), indices in settings.items():
        group = [jobs[i] for i in indices]
        batch = BatchMap.of([job.rows for job in group], [job.tuned.lm for job in group])
        tokenizer = group[0].tuned.tokenizer
        rows = [_RowTokens(job, row, tokenizer.eos_token_id) for job in group for row in range(len(job.rows))]

        def observe(items: torch.Tensor, ids: torch.Tensor, logprobs: torch.Tensor, rows=rows) -> None:
            for item, token, row_logprobs in zip(items.tolist(), ids.tolist(), logprobs):
                rows[item].add(token, row_logprobs)

        lm = group[0].tuned.lm
        ids, mask = pad_left(batch.items, tokenizer.pad_token_id, device=lm.device)
        # The sampler draws on the model's device, so its generator lives there too.
        generator = torch.Generator(device=lm.device).manual_seed(seed) if seed is not None else None
        lm.generate(
            ids, mask, max(job.params["max_tokens"] for job in group), tokenizer.eos_token_id,
            prompts=batch.item_prompts(), temperature=temperature, top_p=top_p, generator=generator, observe=observe,
            stop_ids=stop_ids,
        )  # fmt: skip
        for i, part in zip(indices, batch.split(rows)):
            results[i] = [row.generated for row in part]
    return [results[i] for i in range(len(jobs))]
