"""The server's Prometheus metrics, in a registry of each app's own (apps in one process do not share counts).

`Metrics` is made before the engine, which is given `observe_batch` when it is built and reports each batch's
size there; what the store and the engine hold now (tasks, queue depth, cache hits) is read when /metrics is
asked for, so nothing is wired into either after it is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .batcher import Engine
from .store import PromptStore, Served


def _cache_hits(served: Served) -> int:
    """Calls a task's prompt answered from its kept keys/values (decoder-only prompts keep them)."""
    cache = getattr(served.tuned.lm, "prompt_cache", None)
    return cache.hits if cache is not None else 0


# name: (help, its value now)
GAUGES: dict[str, tuple[str, Callable[[PromptStore, Engine], float]]] = {
    "softprompt_queue_depth": ("requests waiting", lambda store, engine: engine.depth),
    "softprompt_tasks": ("tasks served", lambda store, engine: len(store.names())),
    "softprompt_tasks_loaded": ("tasks held in memory", lambda store, engine: len(store.loaded())),
    "softprompt_prompt_cache_hits": (
        "prompt KV served from cache",
        lambda store, engine: sum(_cache_hits(served) for served in store.loaded()),
    ),
    "softprompt_prompt_lookups": ("task lookups by requests", lambda store, engine: store.lookups),
    "softprompt_prompt_loads": ("prompts loaded from the folder", lambda store, engine: store.loads),
}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Requests by endpoint and status, their latency, rows per model forward, and the GAUGES."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("softprompt_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("softprompt_request_seconds", "request latency", ["endpoint"],
                                 registry=self.registry, buckets=LATENCY_BUCKETS)  # fmt: skip
        self.batch_rows = Histogram("softprompt_batch_rows", "rows per model forward", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))  # fmt: skip
        self.gauges = {name: Gauge(name, help, registry=self.registry) for name, (help, _) in GAUGES.items()}

    def observe_batch(self, rows: int, jobs: int) -> None:
        """The engine's report of a batch it takes (batcher.OnBatch)."""
        self.batch_rows.observe(rows)

    async def measure(self, request: Request, call_next):
        """HTTP middleware: count the request and time it, by its route (`unmatched` for unknown paths)."""
        start = time.perf_counter()
        response = await call_next(request)
        endpoint = request.scope.get("route").path if request.scope.get("route") else "unmatched"
        self.requests.labels(endpoint, str(response.status_code)).inc()
        self.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    def exposition(self, store: PromptStore, engine: Engine) -> str:
        """Every metric in Prometheus's text format, the gauges read from `store` and `engine` now."""
        for name, (_, value) in GAUGES.items():
            self.gauges[name].set(value(store, engine))
        return generate_latest(self.registry).decode()
