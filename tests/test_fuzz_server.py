"""Schema-driven fuzzing (schemathesis + hypothesis) of a real server on loopback with the tiny model.

Property: no generated request gets a 5xx, and every 4xx body is JSON {"error": "<one line>"}. The admin
endpoints answer 403 here (no token file), which is fine. Requests come from the server's own OpenAPI
schema, in both positive (schema-valid) and negative (schema-violating) modes; a share of the generated
classify/completion bodies get a real task name so requests reach the model, not only the 404 path.
The run is bounded: MAX_REQUESTS generated requests, no shrinking, so a failure costs no extra requests;
every failure is collected and all are reported together.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from softprompt.serve.guards import OPENAI_PATHS

from .serving import TASKS, call, running_server, write_prompts

MAX_REQUESTS = 140
TIME_BUDGET_S = 90
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
SERVED = ["tweets", "sentiment", "topic", "bare", "pairs"]  # one-field tasks first: plain-string inputs fit them
assert sorted(SERVED) == sorted(TASKS)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny, tiny_dir):
    prompts = write_prompts(tmp_path_factory.mktemp("fuzz-prompts"), tiny)
    with running_server(str(tiny_dir), prompts) as url:
        assert url.startswith("http://127.0.0.1:")  # loopback only
        yield url


@pytest.fixture(scope="module")
def schema(server):
    status, document, _ = call(server + "/openapi.json")
    assert status == 200 and isinstance(document, dict), document
    return schemathesis.openapi.from_dict(document, config=schemathesis.Config())


@st.composite
def cases(draw, schema):
    """A generated request; classify/completion bodies get a served task name half the time (and classify
    inputs then get that task's fields half the time)."""
    mode = draw(st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE]))
    case = draw(schema.as_strategy(mode))
    if isinstance(case.body, dict) and draw(st.booleans()):
        for key in ("task", "model"):
            if isinstance(case.body.get(key), str):
                case.body[key] = draw(st.sampled_from(SERVED))
        inputs, task = case.body.get("inputs"), case.body.get("task")
        if isinstance(task, str) and task in TASKS and isinstance(inputs, list) and draw(st.booleans()):
            # Give each input the task's fields, so more requests get past validation into the model.
            fields = TASKS[task][0].fields
            for index, item in enumerate(inputs):
                if isinstance(item, str) and len(fields) > 1:
                    inputs[index] = {name: item for name in fields}
                elif isinstance(item, dict) and all(isinstance(v, str) for v in item.values()):
                    inputs[index] = {**{name: str(len(item)) for name in fields}, **item}
    return case


def problem(case, response) -> str | None:
    """Why this response breaks the property, or None."""
    where = f"{case.method.upper()} {case.formatted_path} body={case.body!r:.300}"
    if response.status_code >= 500:
        return f"{where} -> {response.status_code}: {response.text[:300]!r}"
    if 400 <= response.status_code < 500:
        try:
            body = json.loads(response.content)
        except ValueError:
            return f"{where} -> {response.status_code} with a non-JSON body {response.text[:300]!r}"
        line = body.get("error") if isinstance(body, dict) else None
        if case.operation.path.startswith(OPENAI_PATHS) and isinstance(line, dict):  # OpenAI's shape there
            line = line.get("message")
        if not isinstance(line, str):
            return f"{where} -> {response.status_code} without an 'error' line: {body!r:.300}"
        if not line or any(char in line for char in LINE_BREAKS):
            return f"{where} -> {response.status_code} error is not one line: {line!r:.300}"
    return None


def test_generated_requests_get_no_5xx_and_clean_4xx(server, schema):
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: requests go straight to 127.0.0.1
    sent, statuses, failures = [], Counter(), []
    started = time.monotonic()

    @settings(
        max_examples=MAX_REQUESTS,
        phases=[Phase.generate],  # no replay, no shrinking: exactly one request per example
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases(schema))
    def fuzz(case):
        if len(sent) >= MAX_REQUESTS or time.monotonic() - started > TIME_BUDGET_S:
            return
        response = case.call(base_url=server, session=session, timeout=60)
        endpoint = f"{case.method.upper()} {case.operation.path}"
        sent.append(endpoint)
        statuses[endpoint, response.status_code] += 1
        failure = problem(case, response)
        if failure:
            failures.append(failure)

    fuzz()
    elapsed = time.monotonic() - started
    print(f"\n{len(sent)} generated requests in {elapsed:.1f}s")
    for (endpoint, status), count in sorted(statuses.items()):
        print(f"  {endpoint:28} {status}: {count}")
    assert not failures, "\n".join(failures)
    assert 0 < len(sent) <= MAX_REQUESTS
    assert len(set(sent)) >= 5, f"too few endpoints reached: {sorted(set(sent))}"
    status, body, _ = call(server + "/healthz")
    assert status == 200 and body["status"] == "ok"
