"""OpenAI compatibility, with the official `openai` SDK as the client of a real server on loopback (the real
default model, the session's: conftest.py): the model list, streaming, logprobs, and a 400 for every field the
server does not honour."""

from __future__ import annotations

import openai
import pytest
import torch

from softprompt.prompts.tuned import TunedPrompt
from softprompt.serve.openai_api import ChoiceText

from .serving import TASKS

PROMPT = "The three primary colours are"


@pytest.fixture(scope="module")
def client(smollm2_server):
    return openai.OpenAI(base_url=smollm2_server + "/v1", api_key="unused", max_retries=0, timeout=120)


def _streamed(client, **params):
    """(text per choice, chunks with text, finish reasons, usage) of a streamed completion."""
    texts, reasons, usage, pieces = {}, {}, None, 0
    for chunk in client.completions.create(stream=True, **params):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            pieces += bool(choice.text)
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    return texts, pieces, reasons, usage


def test_models_list_every_task(client):
    listed = client.models.list()
    assert {m.id for m in listed.data} == set(TASKS)
    assert all(m.object == "model" and m.owned_by == "softprompt" and m.created > 0 for m in listed.data)
    assert client.models.retrieve("tweets").id == "tweets"
    with pytest.raises(openai.NotFoundError, match="unknown task"):
        client.models.retrieve("no-such-task")


@pytest.mark.parametrize("stop", [None, ","])
def test_stream_yields_the_non_streamed_text_in_pieces(client, stop):
    params = {"model": "tweets", "prompt": [PROMPT, "My flight was"], "max_tokens": 12, "temperature": 0,
              "stop": stop}  # fmt: skip
    whole = client.completions.create(**params)
    texts, pieces, reasons, usage = _streamed(client, stream_options={"include_usage": True}, **params)
    assert texts == {c.index: c.text for c in whole.choices}
    assert reasons == {c.index: c.finish_reason for c in whole.choices}
    assert pieces > 2  # token by token, not one piece at the end
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    if stop:
        assert all(stop not in t for t in texts.values())


def test_logprobs_equal_offline_scores(client, prompts, smollm2):
    """Each generated token's log-probability equals the offline score of the continuation up to it (1e-4),
    and the top alternatives hold the chosen (greedy) token as the most likely."""
    reply = client.completions.create(model="sentiment", prompt=PROMPT, max_tokens=8, temperature=0, logprobs=3)
    logprobs = reply.choices[0].logprobs
    tuned = TunedPrompt.from_pretrained(prompts / "sentiment", base=smollm2)
    row = tuned.encoder.tokenize(PROMPT)
    ids = tuned.lm.generate(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long), 8,
                            tuned.tokenizer.eos_token_id)[0]  # fmt: skip
    assert reply.choices[0].text == tuned.tokenizer.decode(ids, skip_special_tokens=True)
    assert logprobs.tokens == [tuned.tokenizer.decode([i]) for i in ids]
    cumulative = tuned.lm.score_rows([row], [[ids[: i + 1] for i in range(len(ids))]])[0]
    offline = torch.diff(cumulative, prepend=torch.zeros(1)).tolist()
    assert logprobs.token_logprobs == pytest.approx(offline, abs=1e-4)
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
        assert len(top) == 3 and max(top.values()) == pytest.approx(logprob, abs=1e-6) and top[token] == logprob
    assert logprobs.text_offset[0] == 0 and logprobs.text_offset == sorted(logprobs.text_offset)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"echo": True}, "echo"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"n": 2}, "n"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"extra_body": {"guided_choice": ["a"]}}, "guided_choice"),
    ],
)
def test_unsupported_fields_get_a_400_naming_them(client, params, field):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tweets", prompt=PROMPT, max_tokens=2, **params)
    assert caught.value.status_code == 400
    assert caught.value.param == field and field in caught.value.message


def test_neutral_values_of_unimplemented_fields_are_accepted(client):
    """What clients such as LangChain send by default asks for nothing and is accepted."""
    reply = client.completions.create(model="tweets", prompt=PROMPT, max_tokens=2, temperature=0, n=1, echo=False,
                                      frequency_penalty=0, presence_penalty=0, best_of=1, logit_bias={})  # fmt: skip
    assert reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    "text, stops, cut",
    [
        ("Hello, wonderful world. Bye ☃ now", ["world."], "Hello, wonderful "),
        ("Hello, wonderful world. Bye ☃ now", ["zzz"], None),
        ("Hello, wonderful world. Bye ☃ now", [], None),
        ("これは日本語のテキストです", ["テキ"], "これは日本語の"),  # a stop of characters split over byte tokens
        ("a 🎉🎉 日本語 b", ["語 b"], "a 🎉🎉 日本"),
    ],
)
def test_streamed_pieces_add_up_to_the_whole_text(smollm2, text, stops, cut):
    """Released token by token, a choice's pieces join to the text given whole, and at every step what was
    released is a prefix of it (a stop string spanning tokens, or a character spanning byte tokens, is never
    half released); each token's logprob is released exactly once, and the tokens' offsets rebuild the text."""
    tokenizer = smollm2[1]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    whole = ChoiceText(tokenizer, stops, True)
    for i, token in enumerate(ids):
        whole.add(token, -float(i), {})
    expected, expected_logprobs = whole.release(final=True)
    assert expected == (cut if cut is not None else tokenizer.decode(ids))
    offsets = expected_logprobs.text_offset
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] < len(expected)
    streamed, joined, released = ChoiceText(tokenizer, stops, True), "", []
    for i, token in enumerate(ids + [None]):
        if token is not None:
            streamed.add(token, -float(i), {})
        text, logprobs = streamed.release(final=token is None)
        joined += text
        released += logprobs.token_logprobs
        assert expected.startswith(joined)
    assert joined == expected
    assert released == expected_logprobs.token_logprobs


@pytest.mark.parametrize("stop", [["a", "b", "c", "d", "e"], ["x" * 300]])
def test_stop_strings_are_bounded(client, stop):
    """At most 4 stop strings of at most 256 characters (each is checked at every token)."""
    with pytest.raises(openai.UnprocessableEntityError, match="stop"):
        client.completions.create(model="tweets", prompt=PROMPT, max_tokens=2, stop=stop)
