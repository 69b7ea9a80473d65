"""OpenAI's shapes, as far as this server honours them: completions and chat completions (requests, whole
answers and stream chunks) and the model list. Every request refuses a field it does not know with a 400
naming it; a field OpenAI has and we do not implement is accepted only at the value that asks for nothing."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .schemas import VERSION_HELP

MAX_LOGPROBS = 20
MAX_STOPS = 4  # OpenAI's limit; each stop string is checked against the text at every token
Stop = Annotated[str, Field(max_length=256)]
TokenId = Annotated[int, Field(ge=0)]
# Fields this server does not implement, at the value that asks for nothing (clients such as LangChain send
# them by default), per route: accepted at that value (or null), refused with a 400 naming them otherwise.
NEUTRAL = {
    "/v1/completions": {"n": 1, "best_of": 1, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {},
                        "suffix": ""},
    "/v1/chat/completions": {"n": 1, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {}, "tools": [],
                             "tool_choice": "none", "parallel_tool_calls": False, "functions": [],
                             "response_format": {"type": "text"}},
}  # fmt: skip


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = Field(False, description="a last chunk with the usage and no choices")


class _Request(BaseModel):
    """What both routes take alike. `path` names the route whose NEUTRAL fields are dropped."""

    model_config = ConfigDict(extra="forbid")
    path: ClassVar[str] = ""
    model: str = Field(min_length=1, description="the task whose prompt is prepended")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: Stop | list[Stop] | None = Field(None, max_length=MAX_STOPS, description=f"up to {MAX_STOPS} strings")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool = Field(False, description="server-sent events, one chunk per token, then `data: [DONE]`")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="the caller's id, recorded nowhere")

    @model_validator(mode="before")
    @classmethod
    def _drop_neutral(cls, data: Any) -> Any:
        """Fields we do not implement, given at the value that asks for nothing, change nothing: drop them."""
        neutral = NEUTRAL[cls.path]
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (k in neutral and (v is None or v == neutral[k]))}
        return data

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else (self.stop or [])


class CompletionRequest(_Request):
    """OpenAI's completions request. `prompt` is text or token ids (one prompt, or a list of them); `echo`
    returns the prompt before its continuation, with the prompt tokens' log-probabilities when `logprobs` is
    given (and `max_tokens: 0` returns them alone): what lm-evaluation-harness's loglikelihood requests send."""

    path: ClassVar[str] = "/v1/completions"
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    max_tokens: int = Field(16, ge=0, description="0 only with echo: the prompt's scores alone")
    echo: bool = Field(False, description="the prompt first, then its continuation")
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="per token: its log-probability and "
                                 "the k most likely tokens'")  # fmt: skip


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatRequest(_Request):
    """OpenAI's chat completions request: the messages rendered by the base's chat template (with the
    assistant's turn opened), the task's soft prompt in front of them."""

    path: ClassVar[str] = "/v1/chat/completions"
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="the older name of max_completion_tokens")
    max_completion_tokens: int | None = Field(None, ge=1, description="at most this many tokens (default 16)")
    logprobs: bool = Field(False, description="each generated token's log-probability")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="and its k likeliest alternatives")

    @model_validator(mode="after")
    def _check(self) -> ChatRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 16


class Logprobs(BaseModel):
    """OpenAI's completion logprobs: per token, its text, log-probability (null for an echoed prompt's first),
    the top alternatives and where it starts in the choice's text."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class Choice(BaseModel):
    text: str
    index: int
    finish_reason: str | None
    logprobs: Logprobs | None = None


class CompletionResponse(BaseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[Choice]
    usage: dict[str, int]
    system_fingerprint: str = Field(description="OpenAI's field; here the task's prompt_version: " + VERSION_HELP)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: ChatLogprobs | None = None


class ChatResponse(BaseModel):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: dict[str, int]
    system_fingerprint: str = Field(description="OpenAI's field; here the task's prompt_version: " + VERSION_HELP)


class Model(BaseModel):
    """A task, as OpenAI's model list shows a model (`model` in a completion request names it)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "softprompt"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
