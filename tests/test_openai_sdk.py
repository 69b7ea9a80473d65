"""OpenAI compatibility, with the official `openai` SDK as the client of a real server on loopback (the real
default model, the session's: conftest.py): the model list, streaming, logprobs, and a 400 for every field the
server does not honour."""

from __future__ import annotations

import openai
import pytest
import torch

from softprompt.prompts.tuned import TunedPrompt
from softprompt.serve.openai_stream import ChoiceText

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
        ({"best_of": 3}, "best_of"),
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


def _tuned(prompts, smollm2, name: str) -> TunedPrompt:
    return TunedPrompt.from_pretrained(prompts / name, base=smollm2)


def test_echoed_scores_equal_score_rows(client, prompts, smollm2):
    """`echo` with `logprobs` and `max_tokens: 0`, the prompt given as token ids (a row's ids, then its first
    label's), as lm-evaluation-harness sends it: the prompt's tokens come back, null first, and the label's
    summed log-probabilities equal `score_rows` for that row and label (float32, 1e-4), on two tasks."""
    for name in ("tweets", "sentiment"):
        tuned = _tuned(prompts, smollm2, name)
        row = tuned.encoder.input_ids({"text": "my bag never arrived and no one answers"})
        for label in tuned.encoder.label_ids:
            reply = client.completions.create(model=name, prompt=row + label, echo=True, logprobs=2, max_tokens=0)
            logprobs = reply.choices[0].logprobs
            assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
            assert len(logprobs.tokens) == len(row + label) and reply.choices[0].finish_reason == "length"
            assert all(len(top) == 2 for top in logprobs.top_logprobs[1:])
            offline = tuned.lm.score_rows([row], [[label]])[0][0].item()
            assert sum(logprobs.token_logprobs[len(row) :]) == pytest.approx(offline, abs=1e-4)
            assert reply.choices[0].text == tuned.tokenizer.decode(row + label)
            assert reply.usage.prompt_tokens == len(row + label) and reply.usage.completion_tokens == 0


def test_echo_then_generation_whole_and_streamed(client):
    """`echo` with one generated token (harness's request): the choice is the prompt, then the new token;
    logprobs run on from the prompt's tokens; the offsets index the choice's text; streamed is equal."""
    params = {"model": "tweets", "prompt": PROMPT, "echo": True, "logprobs": 1, "max_tokens": 3, "temperature": 0}
    whole = client.completions.create(**params).choices[0]
    plain = client.completions.create(**{**params, "echo": False}).choices[0]
    assert whole.text == PROMPT + plain.text
    logprobs = whole.logprobs
    assert logprobs.tokens[-len(plain.logprobs.tokens) :] == plain.logprobs.tokens
    assert logprobs.token_logprobs[-len(plain.logprobs.tokens) :] == pytest.approx(plain.logprobs.token_logprobs)
    assert all(whole.text[o:].startswith(t) for o, t in zip(logprobs.text_offset, logprobs.tokens))
    texts, _, reasons, _ = _streamed(client, **params)
    assert texts[0] == whole.text and reasons[0] == whole.finish_reason


def test_token_id_prompts_continue_as_text_does(client, prompts, smollm2):
    tokenizer = _tuned(prompts, smollm2, "tweets").tokenizer
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in (PROMPT, "My flight was")]
    params = {"model": "tweets", "max_tokens": 6, "temperature": 0}
    as_text = client.completions.create(prompt=[PROMPT, "My flight was"], **params)
    as_ids = client.completions.create(prompt=ids, **params)
    one = client.completions.create(prompt=ids[0], **params)
    assert [c.text for c in as_ids.choices] == [c.text for c in as_text.choices]
    assert one.choices[0].text == as_text.choices[0].text


def test_concurrent_echoes_of_several_tasks_batch_to_their_own_scores(client, prompts, smollm2):
    """Echo requests of two tasks at once share the batcher's passes and still score under their own prompts."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(name, text) for name in ("tweets", "topic") for text in (PROMPT, "shares fell after the report")]
    tuned = {name: _tuned(prompts, smollm2, name) for name in ("tweets", "topic")}

    def echo(job):
        ids = tuned[job[0]].tokenizer(job[1], add_special_tokens=False)["input_ids"]
        reply = client.completions.create(model=job[0], prompt=ids, echo=True, logprobs=0, max_tokens=0)
        return ids, reply.choices[0].logprobs.token_logprobs[1:]

    with ThreadPoolExecutor(len(jobs)) as pool:
        for (name, _), (ids, served) in zip(jobs, pool.map(echo, jobs)):
            offline = tuned[name].lm.score_rows([ids[:1]], [[ids[1:]]])[0][0]
            assert sum(served) == pytest.approx(offline.item(), abs=1e-4)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"prompt": [[1, 2], [10**7]]}, "prompt.1"),
        ({"prompt": [[]]}, "prompt.0"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_echo_requests_are_named(client, params, field):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.completions.create(**{"model": "tweets", "prompt": PROMPT, "max_tokens": 2, **params})
    assert f"- {field}: " in caught.value.message and caught.value.param == field
