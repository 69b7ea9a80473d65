"""`predict --server`: the offline prediction file's records, computed by a `softprompt serve` server.

The task's listing (`/v1/tasks`) says its kind and template, so the rows are checked here as offline (one-line
errors naming the file and row), only the template's fields are sent, and a text task's answers are set beside
their references and scored here, as `predict` does offline.
"""

from __future__ import annotations

from ..data.tasks import Row, Task
from ..utils.errors import SoftpromptError


def predict_remote(
    url: str,
    name: str,
    rows: list[Row],
    source: str,
    batch_size: int,
    api_key_file: str | None = None,
    sampling: dict | None = None,
) -> tuple[list[dict], list[str]]:
    """(predictions, labels) for task `name` on the server at `url`, blocks of `batch_size` rows a request;
    `sampling` (temperature, top_p, seed) is a text task's."""
    from ..serve.auth import read_secret
    from ..serve.client import Client

    client = Client(url, api_key=read_secret("--api-key-file", api_key_file) if api_key_file else None)
    info = next((t for t in client.tasks() if t["name"] == name), None)
    if info is None:
        raise SoftpromptError(f"{url}: no task {name!r}")
    text = info.get("text") if info.get("kind") == "text" else None
    keys = ("target_field", "target_template", "references_field")
    task = Task(info["template"], **{key: text[key] for key in keys} if text else {})
    task.check(rows, source, labelled=False)
    sent = [{field: row[field] for field in task.fields} for row in rows]
    params = (sampling or {}) if text else {"return_scores": True}
    blocks = [sent[start : start + batch_size] for start in range(0, len(sent), batch_size)]
    replies = [client.predict(name, block, **params) for block in blocks]
    if text:
        from ..prompts.text_evaluate import beside_references

        return beside_references(task, rows, [out["text"] for reply in replies for out in reply["outputs"]]), []
    predictions = [
        {"label": label, "scores": scores}
        for reply in replies
        for label, scores in zip(reply["labels"], reply["scores"])
    ]
    return predictions, info["labels"]
