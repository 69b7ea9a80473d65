"""The API's shapes: request and response schemas (pydantic, so FastAPI validates them and /openapi.json
describes them) and the server's limits."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field

from .store import Served

VERSION_HELP = "content hash of the prompt and task that answered (changes with every new upload of the task)"


@dataclass
class Limits:
    """What one request may ask for (the `serve` flags of the same names); past them: 413 or 422."""

    max_items: int = 64
    max_input_tokens: int = 512
    max_new_tokens: int = 256
    max_body_bytes: int = 2**20
    max_upload_bytes: int = 32 * 2**20


class ClassifyRequest(BaseModel):
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


class CompletionRequest(BaseModel):
    model: str = Field(min_length=1, description="the task whose prompt is prepended")
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")


class Choice(BaseModel):
    text: str
    index: int
    finish_reason: str
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[Choice]
    usage: dict[str, int]
    system_fingerprint: str = Field(description="OpenAI's field; here the task's prompt_version: " + VERSION_HELP)


class TaskInfo(BaseModel):
    name: str
    labels: list[str]
    template: str
    num_virtual_tokens: int
    base_model: str
    prompt_version: str = Field(description=VERSION_HELP)

    @classmethod
    def of(cls, name: str, served: Served) -> TaskInfo:
        tuned = served.tuned
        return cls(
            name=name,
            labels=tuned.task.labels,
            template=tuned.task.template,
            num_virtual_tokens=tuned.lm.n_prompt,
            base_model=tuned.lm.base.name_or_path,
            prompt_version=served.version,
        )
