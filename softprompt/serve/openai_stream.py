"""How OpenAI's two generation routes turn the batcher's tokens into text: `ChoiceText` assembles a choice in
one way for whole answers and streams (the tokens so far decoded whole, so merged and multi-byte characters
come out right, cut at the first stop string, and released to a stream only as far as no stop string could
still begin), so a streamed completion is the whole one in pieces; `echoed` is an echoed prompt's text and
scores; `stream` writes the server-sent events, in the shape each route's `Shape` gives."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence

from ..engine.prompted import TokenScores
from .batcher import Generated
from .guards import error_body
from .openai_schemas import Logprobs

# A route's chunk choices: (row, released text, its logprobs or None, finish reason or None) -> a choice dict.
Shape = Callable[[int, str, Logprobs | None, str | None], dict]


class ChoiceText:
    """One choice's text and logprobs as its tokens arrive, and what of them a stream may release yet.
    `start` is where its text begins in the choice (after an echoed prompt), for the logprobs' offsets."""

    def __init__(self, tokenizer, stops: list[str], logprobs: bool, start: int = 0) -> None:
        self.tokenizer, self.stops, self.logprobs, self.start = tokenizer, [s for s in stops if s], logprobs, start
        self.tokens: list[int] = []
        self.token_logprobs: list[float] = []
        self.top: list[dict[int, float]] = []
        self.offsets: list[int] = []  # where each token's text starts
        self.text = ""
        self.cut = False  # a stop string ended it
        self.sent = (0, 0)  # characters and tokens released so far

    def add(self, token: int, logprob: float, top: dict[int, float]) -> None:
        if self.cut:
            return
        self.offsets.append(len(self.text.rstrip("\ufffd")))  # where its text starts: after the whole characters
        self.tokens.append(token)
        self.token_logprobs.append(logprob)
        self.top.append(top)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        found = [text.find(stop) for stop in self.stops if stop in text]
        if found:
            text, self.cut = text[: min(found)], True
        self.text = text

    def release(self, final: bool) -> tuple[str, Logprobs | None]:
        """The text not yet released (all of it when `final` or cut; else short of a possible stop string's
        start or an unfinished character), and the logprobs of the tokens that begin in it."""
        end = len(self.text)
        if not (final or self.cut):
            whole = self.text.rstrip("\ufffd")  # an unfinished character first, then a stop string's possible start
            end = len(whole) - max((k for stop in self.stops for k in range(1, min(len(stop), len(whole) + 1))
                                    if whole.endswith(stop[:k])), default=0)  # fmt: skip
        chars, count = self.sent
        tokens = count
        while tokens < len(self.tokens) and (self.offsets[tokens] < end or (final and not self.cut)):
            tokens += 1
        self.sent = (max(end, chars), tokens)
        return self.text[chars:end], self._logprobs(count, tokens) if self.logprobs else None

    def _logprobs(self, start: int, stop: int) -> Logprobs:
        piece = self.tokenizer.decode
        return Logprobs(
            tokens=[piece([t]) for t in self.tokens[start:stop]],
            token_logprobs=self.token_logprobs[start:stop],
            top_logprobs=[{piece([t]): lp for t, lp in top.items()} for top in self.top[start:stop]],
            text_offset=[self.start + offset for offset in self.offsets[start:stop]],
        )

    def finish_reason(self, generated: Generated) -> str:
        return "stop" if self.cut or generated.stopped else "length"


def echoed(tokenizer, ids: Sequence[int], scores: TokenScores | None) -> tuple[str, Logprobs | None]:
    """An echoed prompt: its text (special tokens kept, as they were sent) and, given its scores, its tokens'
    log-probabilities (null for the first, which nothing before it predicts) with their offsets."""
    text = tokenizer.decode(list(ids), skip_special_tokens=False)
    if scores is None:
        return text, None
    piece = tokenizer.decode
    offsets = [len(piece(list(ids[:i]), skip_special_tokens=False).rstrip("\ufffd")) for i in range(len(ids))]
    logprobs = Logprobs(
        tokens=[piece([t], skip_special_tokens=False) for t in ids],
        token_logprobs=[None, *scores.logprobs],
        top_logprobs=[None, *({piece([t]): lp for t, lp in top.items()} for top in scores.top)],
        text_offset=offsets,
    )
    return text, logprobs


def whole(texts: list[ChoiceText], outputs: list[Generated]) -> list[tuple[str, Logprobs | None, str]]:
    """Each choice whole: its text, logprobs and finish reason (decoding every prefix again costs milliseconds
    a token, so callers run this off the event loop)."""
    for text, generated in zip(texts, outputs):
        for token, logprob, top in zip(generated.tokens, generated.logprobs, generated.top):
            text.add(token, logprob, top)
    return [(*text.release(final=True), text.finish_reason(g)) for text, g in zip(texts, outputs)]


def usage(prompt_tokens: int, texts: list[ChoiceText]) -> dict[str, int]:
    """Tokens counted as far as each choice goes (a stop string ends it, though the batch decodes on)."""
    completion = sum(len(text.tokens) for text in texts)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


async def stream(head: dict, shape: Shape, texts: list[ChoiceText], events: asyncio.Queue, outputs: asyncio.Future,
                 prompt_tokens: int | None, opening: list[dict], path: str) -> AsyncIterator[str]:  # fmt: skip
    """Server-sent events: the `opening` choices (an echoed prompt, a chat's role), a chunk per token that
    releases text, each choice's last piece with its finish reason, the usage if `prompt_tokens` is given,
    then `[DONE]`. The worker's token events all reach `events` before `outputs` settles, so draining the
    queue after it has settled loses none."""

    def event(choices: list[dict], **extra) -> str:
        return f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n"

    if opening:
        yield event(opening)
    while True:
        getter = asyncio.ensure_future(events.get())
        await asyncio.wait({getter, outputs}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            break
        row, *token = getter.result()
        texts[row].add(*token)
        text, logprobs = texts[row].release(final=False)
        if text or (logprobs and logprobs.tokens):
            yield event([shape(row, text, logprobs, None)])
    while not events.empty():
        row, *token = events.get_nowait()
        texts[row].add(*token)
    try:
        generated = outputs.result()
    except Exception as exc:  # the batch failed: say so in the stream (an SDK raises it), never end silently
        yield f"data: {json.dumps(error_body(500, f'generation failed ({type(exc).__name__})', path))}\n\n"
        return
    for row, (text, g) in enumerate(zip(texts, generated)):
        yield event([shape(row, *text.release(final=True), text.finish_reason(g))])
    if prompt_tokens is not None:
        yield event([], usage=usage(prompt_tokens, texts))
    yield "data: [DONE]\n\n"
