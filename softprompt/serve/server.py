"""`softprompt serve`: load the base once and every prompt folder under --prompts, then run uvicorn."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from ..errors import SoftpromptError
from ..hardware import announce_dtype, resolve_dtype
from ..models import load_base
from .app import Limits, create_app
from .auth import read_secret
from .batcher import Batcher
from .store import PromptStore

# Shapes kept by each of oneDNN's and ideep's primitive caches in a server process (both default to 1024).
ONEDNN_CACHE_ENTRIES = "64"


def bound_onednn_caches() -> None:
    """Cap oneDNN's (and PyTorch's ideep) primitive caches, unless the environment already sets them.

    On CPU, bfloat16 multiplies run in oneDNN, which builds and keeps a primitive per input shape. A server
    sees a new shape with almost every batch (rows and tokens per forward vary), so with the default 1024
    entries per cache its memory grew for thousands of requests: +85% RSS over a 2,000-request soak
    (bench/soak.py), still rising at the end. 64 entries hold the shapes of the last few forwards (each
    forward multiplies by about seven weight shapes); a miss only rebuilds a primitive, and batch times in
    the runs that found this did not change. Both caches read these variables on first use, so this must run
    before the model loads."""
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(name, ONEDNN_CACHE_ENTRIES)


def build(
    model: str,
    prompts: str,
    dtype: str = "auto",
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    max_queue: int = 1024,
    batching: bool = True,
    limits: Limits | None = None,
    admin_token_file: str | None = None,
    api_key_file: str | None = None,
    open_health_metrics: bool = False,
    console: bool = True,
) -> FastAPI:
    """The ASGI app, ready to serve (the base model and every task loaded). The secrets are read first, so a
    bad file is reported before the model loads."""
    admin_token = read_secret("--admin-token-file", admin_token_file) if admin_token_file else None
    api_key = read_secret("--api-key-file", api_key_file) if api_key_file else None
    if api_key is not None and api_key == admin_token:
        raise SoftpromptError(f"--api-key-file {api_key_file}: holds the admin token; every client would be an admin")
    bound_onednn_caches()
    store = PromptStore(load_base(model, resolve_dtype(dtype, serving=True)), Path(prompts))
    announce_dtype(dtype, serving=True)  # once loaded: a model that fails to load leaves its one-line error alone
    store.load_all()
    batcher = Batcher(max_batch, max_wait_ms, max_queue, batching)
    return create_app(store, batcher, limits, admin_token, api_key, open_health_metrics, console)


def serve(host: str, port: int, **kwargs) -> None:
    import uvicorn

    app = build(**kwargs)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=5, limit_concurrency=2048)
