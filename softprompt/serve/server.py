"""`softprompt serve`: load the base once and every prompt folder under --prompts, then run uvicorn."""

from __future__ import annotations

from pathlib import Path

from ..errors import SoftpromptError
from ..models import load_base
from .app import Limits, create_app
from .batcher import Batcher
from .store import PromptStore


def build(
    model: str,
    prompts: str,
    dtype: str = "float32",
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    max_queue: int = 1024,
    batching: bool = True,
    limits: Limits | None = None,
    admin_token_file: str | None = None,
):
    """The ASGI app, ready to serve (the base model and every task loaded)."""
    admin_token = None
    if admin_token_file:
        try:
            admin_token = Path(admin_token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SoftpromptError(f"--admin-token-file {admin_token_file}: {exc}") from None
        if len(admin_token) < 16:
            raise SoftpromptError(f"--admin-token-file {admin_token_file}: use a token of at least 16 characters")
    store = PromptStore(load_base(model, dtype), Path(prompts))
    store.load_all()
    batcher = Batcher(max_batch, max_wait_ms, max_queue, batching)
    return create_app(store, batcher, limits, admin_token)


def serve(host: str, port: int, **kwargs) -> None:
    import uvicorn

    app = build(**kwargs)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=5, limit_concurrency=2048)
