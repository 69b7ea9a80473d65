"""The API's shapes: request and response schemas (pydantic, so FastAPI validates them and /openapi.json
describes them) and the server's limits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .config import ServeConfig
from .store import Served

FILES_PATH = "/v1/files"
FORM_BYTES = 2**16  # a multipart form's own bytes around the file it carries
VERSION_HELP = "content hash of the prompt and task that answered (changes with every new upload of the task)"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (the ServeConfig options of the same names); past them: 413 or 422."""

    max_items: int
    max_input_tokens: int
    max_new_tokens: int
    max_body_bytes: int
    max_upload_bytes: int
    max_file_bytes: int

    @classmethod
    def of(cls, config: ServeConfig) -> Limits:
        return cls(**{field.name: getattr(config, field.name) for field in dataclasses.fields(cls)})

    def body_limit(self, method: str, path: str) -> int:
        """The largest body a request may send: a task upload's, a fine-tuning file's (its form around it), or
        any other request's."""
        if method == "PUT":
            return self.max_upload_bytes
        if method == "POST" and path == FILES_PATH:
            return self.max_file_bytes + FORM_BYTES
        return self.max_body_bytes


class ClassifyRequest(BaseModel):
    """A classification request; any other field is refused with a 400 naming it, never silently ignored."""

    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=1, description="task name (its prompt folder's name)")
    inputs: list[str | dict[str, str]] = Field(
        min_length=1, description="texts (for one-field templates) or {field: value} rows"
    )
    return_scores: bool = Field(False, description="also return each label's log-likelihood")


class ClassifyResponse(BaseModel):
    task: str
    labels: list[str]
    scores: list[dict[str, float]] | None = None
    prompt_version: str = Field(description=VERSION_HELP)


class PredictRequest(BaseModel):
    """A task-level request: rows rendered by the task's template, answered with labels (classification) or
    generated text (text to text). Any other field is refused with a 400 naming it, as is a field the task's
    kind has no use for (sampling for classification, `return_scores` for text)."""

    model_config = ConfigDict(extra="forbid")
    task: str | None = Field(None, min_length=1, description="task name (or give it as `model`)")
    model: str | None = Field(None, min_length=1, description="the task's name, as OpenAI's routes call it")
    rows: list[str | dict[str, str]] = Field(
        min_length=1, description="{field: value} rows of the task's template (a text for a one-field template)"
    )
    max_new_tokens: int | None = Field(None, ge=1, description="text tasks: at most this many tokens (default and "
                                       "limit: the task's, within the server's --max-new-tokens)")  # fmt: skip
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="text tasks: 0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="text tasks: nucleus sampling's top-p")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="text tasks: the sampling seed")
    return_scores: bool = Field(False, description="classification: also return each label's log-likelihood")


# PredictRequest's decoding fields at the values that ask for nothing: a classification task takes only these.
NO_SAMPLING = {"max_new_tokens": None, "temperature": 0.0, "top_p": 1.0, "seed": None}


class TextOutput(BaseModel):
    text: str = Field(description="the decoded answer, cut at the task's first stop string and stripped")


class TextPrediction(BaseModel):
    """A text-to-text task's answer: one output per row, and the tokens read and written."""

    task: str
    outputs: list[TextOutput]
    prompt_version: str = Field(description=VERSION_HELP)
    usage: dict[str, int]


class TextTaskInfo(BaseModel):
    """What a text-to-text task writes and is scored against (a client reads references as offline)."""

    target_field: str | None
    target_template: str | None
    references_field: str | None
    max_new_tokens: int = Field(description="tokens decoded at most")
    stop: list[str] = Field(description="decoding ends at the first of these")


class TaskInfo(BaseModel):
    name: str
    kind: Literal["classification", "text"] = Field(description="what /v1/predict answers: labels, or text")
    labels: list[str]
    template: str
    num_virtual_tokens: int
    base_model: str
    prompt_version: str = Field(description=VERSION_HELP)
    text: TextTaskInfo | None = Field(None, description="text tasks only")

    @classmethod
    def of(cls, name: str, served: Served) -> TaskInfo:
        tuned = served.tuned
        task = tuned.task
        text = TextTaskInfo(target_field=task.target_field, target_template=task.target_template,
                            references_field=task.references_field, max_new_tokens=tuned.encoder.max_new_tokens,
                            stop=task.stop) if task.generates else None  # fmt: skip
        return cls(
            name=name,
            kind="text" if task.generates else "classification",
            labels=task.labels,
            template=task.template,
            num_virtual_tokens=tuned.lm.n_prompt,
            base_model=tuned.lm.model.name_or_path,
            prompt_version=served.version,
            text=text,
        )
