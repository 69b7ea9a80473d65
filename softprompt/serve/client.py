"""A small client for `softprompt serve` (standard library only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from ..utils.errors import SoftpromptError


class Client:
    """`Client("http://127.0.0.1:8000").predict("tweets", [{"text": "..."}])` -> labels (and scores), or for a
    text-to-text task `outputs` of generated text.

    `api_key`: for a server started with --api-key-file; sent as `Authorization: Bearer <key>`."""

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 60.0, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def _call(self, method: str, path: str, body: dict | None = None) -> dict | list:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
                message = message.get("message", exc.reason) if isinstance(message, dict) else message  # OpenAI's
            except (json.JSONDecodeError, AttributeError):
                message = exc.reason
            raise SoftpromptError(f"{self.url}{path}: {exc.code} {message}") from None
        except urllib.error.URLError as exc:
            raise SoftpromptError(f"{self.url}: cannot connect ({exc.reason})") from None

    def tasks(self) -> list[dict]:
        return self._call("GET", "/v1/tasks")

    def predict(self, task: str, rows: list, **params) -> dict:
        """`rows` ({field: value}, or texts for a one-field template) answered as the task answers: `labels`
        (with `return_scores=True`, `scores`), or `outputs` of text (`max_new_tokens`, `temperature`, `top_p`,
        `seed`)."""
        return self._call("POST", "/v1/predict", {"task": task, "rows": rows, **params})

    def classify(self, task: str, inputs: list, return_scores: bool = False) -> dict:
        return self._call("POST", "/v1/classify", {"task": task, "inputs": inputs, "return_scores": return_scores})

    def complete(self, task: str, prompt: str, **params) -> dict:
        return self._call("POST", "/v1/completions", {"model": task, "prompt": prompt, **params})
