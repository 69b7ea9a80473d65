"""Helpers for server tests: prompt folders for five tasks, and a real server process on loopback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from softprompt.data.tasks import Task
from softprompt.models.base import Base
from softprompt.models.prompt import init_prompt
from softprompt.prompts.record import FolderRecord
from softprompt.prompts.tuned import TunedPrompt

TASKS = {
    "tweets": (Task("Tweet text : {text} Label : ", "label", ["complaint", "no complaint"]), 8),
    "sentiment": (Task("Review: {text} Sentiment:", "label", ["0", "1"], {"0": "negative", "1": "positive"}), 4),
    "topic": (Task("News: {text} Topic:", "label", ["world", "sports", "business"]), 12),
    "pairs": (Task("Q1: {a} Q2: {b} Same?", "label", ["yes", "no"]), 6),
    "bare": (Task("{text}", "label", ["yes", "no"]), 2),  # no template text: an empty input is an empty row
}
ADMIN_TOKEN = "test-admin-token-0123456789"  # conftest's smollm2_server takes it for its admin routes
TEXTS = [
    "@united lost my bag again and nobody answers the phone",
    "what a lovely flight, thank you for the upgrade",
    "the match ended in a draw after extra time",
    "shares fell sharply after the earnings report",
    "I waited two hours at the gate with no information",
    "a gripping, beautifully acted film",
]


def rows_for(name: str, count: int = len(TEXTS)) -> list[dict]:
    if name == "pairs":
        return [{"a": TEXTS[i % len(TEXTS)], "b": TEXTS[(i + 1) % len(TEXTS)]} for i in range(count)]
    return [{"text": TEXTS[i % len(TEXTS)]} for i in range(count)]


def write_prompts(root: Path, base) -> Path:
    """Task folders with prompts of different lengths and label sets (seeded, untrained)."""
    model, tokenizer = base
    for seed, (name, (task, n_tokens)) in enumerate(TASKS.items()):
        prompt = init_prompt(n_tokens, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=seed)
        tuned = TunedPrompt.build(Base(model, tokenizer), prompt, task, record=FolderRecord(init="sampled-vocab"))
        tuned.save_pretrained(root / name)
    return root


def zipped(files: dict[str, bytes]) -> bytes:
    """A zip archive of {path in the archive: bytes}: what `PUT /v1/tasks/NAME` takes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_folder(folder: Path) -> bytes:
    """A prompt folder's files, zipped flat for upload."""
    return zipped({path.name: path.read_bytes() for path in sorted(Path(folder).iterdir()) if path.is_file()})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, method: str = "GET", body=None, headers: dict | None = None, raw: bytes | None = None):
    """(status, parsed JSON or text, headers) of one request; never raises on HTTP errors."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, payload, reply_headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, payload, reply_headers = exc.code, exc.read(), exc.headers
    try:
        return status, json.loads(payload), reply_headers
    except json.JSONDecodeError:
        return status, payload.decode(), reply_headers


@contextlib.contextmanager
def running_server(model: str, prompts: Path, *extra: str, timeout: float = 180, headers: dict | None = None):
    """A `softprompt serve` subprocess on a free loopback port, up once /healthz answers 200 (asked with
    `headers`, e.g. an API key); terminated on exit, also on failure. float32 unless `extra` names a --dtype:
    the tests compare answers with offline predictions of the float32 fixtures."""
    if "--dtype" not in extra:
        extra = ("--dtype", "float32", *extra)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "softprompt",
            "serve",
            "--model",
            model,
            "--prompts",
            str(prompts),
            "--port",
            str(port),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    with serving(proc, url + "/healthz", timeout, lambda: proc.stdout.read().decode()[-2000:], headers):
        yield url


@contextlib.contextmanager
def serving(proc: subprocess.Popen, probe: str, timeout: float, output, headers: dict | None = None, poll=0.2):
    """Wait until `probe` answers 200 (else raise with the server's `output()`), then yield; the process is
    terminated on exit, also on failure."""
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {output()}")
            try:
                if call(probe, headers=headers)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                proc.kill()  # so that `output()` can read to the end
                proc.wait()
                raise RuntimeError(f"server did not start in time: {output()}")
            time.sleep(poll)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
