"""`/v1/chat/completions` with the official `openai` SDK as the client of the session's real server (the real
default model, SmolLM2-135M-Instruct, whose converted tokenizer carries its chat template): the reply is the
offline decoding of the rendered messages under the task's prompt, streamed equals whole, logprobs in chat's
shape, and every field the server does not honour is a 400 naming it."""

from __future__ import annotations

import openai
import pytest
import torch

from softprompt.prompts.tuned import TunedPrompt

MESSAGES = [{"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What colour is the sky on a clear day?"}]  # fmt: skip


@pytest.fixture(scope="module")
def client(smollm2_server):
    return openai.OpenAI(base_url=smollm2_server + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_reply_is_the_offline_decoding_of_the_rendered_chat(client, prompts, smollm2):
    """The prompt goes in front of the chat template's own tokens; the reply ends at the end of turn."""
    reply = client.chat.completions.create(model="tweets", messages=MESSAGES, max_tokens=12, temperature=0)
    tuned = TunedPrompt.from_pretrained(prompts / "tweets", base=smollm2)
    tokenizer = tuned.tokenizer
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # the template's first token, after the prompt
    out = tuned.lm.generate(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), 12,
                            tokenizer.eos_token_id)[0]  # fmt: skip
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == tokenizer.decode(out, skip_special_tokens=True)
    assert reply.usage.prompt_tokens == len(ids) and reply.object == "chat.completion"
    assert choice.finish_reason == ("stop" if len(out) < 12 else "length")


def test_streamed_equals_whole(client):
    params = {"model": "sentiment", "messages": MESSAGES, "max_completion_tokens": 16, "temperature": 0,
              "logprobs": True, "top_logprobs": 2}  # fmt: skip
    whole = client.chat.completions.create(**params)
    text, reason, roles, usage, logprobs = "", None, [], None, []
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **params):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            roles += [choice.delta.role] if choice.delta.role else []
            text += choice.delta.content or ""
            reason = choice.finish_reason or reason
            logprobs += choice.logprobs.content if choice.logprobs else []
    assert roles == ["assistant"]
    assert text == whole.choices[0].message.content and reason == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens
    content = whole.choices[0].logprobs.content
    assert [t.token for t in logprobs] == [t.token for t in content]
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob == pytest.approx(t.logprob) for t in content)
    assert all(bytes(t.bytes).decode("utf-8", "replace") == t.token for t in content if t.bytes)


def test_sampling_with_a_seed_repeats(client):
    params = {"model": "tweets", "messages": MESSAGES, "max_tokens": 10, "temperature": 1.0, "top_p": 0.9, "seed": 3}
    first, second = (client.chat.completions.create(**params).choices[0].message.content for _ in range(2))
    assert first == second


@pytest.mark.parametrize(
    "params, field",
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"n": 2}, "n"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"extra_body": {"guided_json": {}}}, "guided_json"),
        ({"messages": [{"role": "user", "content": "hi", "name": "ann"}]}, "messages.0.name"),
    ],
)
def test_unsupported_fields_get_a_400_naming_them(client, params, field):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**{"model": "tweets", "messages": MESSAGES, "max_tokens": 2, **params})
    assert caught.value.param == field and field in caught.value.message


def test_neutral_values_are_accepted_and_limits_named(client):
    reply = client.chat.completions.create(model="tweets", messages=MESSAGES, max_tokens=2, n=1, presence_penalty=0,
                                           response_format={"type": "text"})  # fmt: skip
    assert reply.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens"):
        client.chat.completions.create(model="tweets", messages=MESSAGES, max_tokens=10**6)
    with pytest.raises(openai.UnprocessableEntityError, match="not both"):
        client.chat.completions.create(model="tweets", messages=MESSAGES, max_tokens=2, max_completion_tokens=2)
    with pytest.raises(openai.NotFoundError, match="unknown task"):
        client.chat.completions.create(model="nope", messages=MESSAGES)
