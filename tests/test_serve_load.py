"""A bounded load test on loopback: 64 concurrent clients x 50 requests over five tasks, on a tiny model so
it stays quick. Every reply must arrive, once, with the answer for its own input."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from softprompt.prompts.tuned import TunedPrompt

from .serving import TASKS, call, rows_for, running_server, write_prompts

CLIENTS, REQUESTS = 64, 50


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny, tiny_dir):
    prompts = write_prompts(tmp_path_factory.mktemp("prompts"), tiny)
    expected = {}
    for name in TASKS:
        tuned = TunedPrompt.from_pretrained(prompts / name, base=tiny)
        rows = rows_for(name)
        expected[name] = [(row, p["label"], p["scores"]) for row, p in zip(rows, tuned.predict(rows))]
    return prompts, expected


def test_64_clients_50_requests_each_no_errors_nothing_lost(setup, tiny_dir):
    prompts, expected = setup
    names = list(TASKS)
    errors, answered = [], []
    lock = threading.Lock()

    def client(index: int) -> None:
        for number in range(REQUESTS):
            name = names[(index + number) % len(names)]
            row, label, scores = expected[name][(index * 7 + number) % len(expected[name])]
            status, body, _ = call(url + "/v1/classify", "POST", {"task": name, "inputs": [row], "return_scores": True})
            with lock:
                if status != 200:
                    errors.append((status, body))
                elif body["labels"] != [label] or any(abs(body["scores"][0][k] - v) > 1e-3 for k, v in scores.items()):
                    errors.append(("wrong answer", name, row, body))
                else:
                    answered.append((index, number))

    with running_server(str(tiny_dir), prompts, "--max-queue", "4096") as url:
        start = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(client, range(CLIENTS), timeout=600))
        elapsed = time.monotonic() - start
        metrics = call(url + "/metrics")[1]
    assert errors == []
    assert len(answered) == len(set(answered)) == CLIENTS * REQUESTS
    served = sum(
        float(line.split()[-1]) for line in metrics.splitlines()
        if line.startswith('softprompt_requests_total{endpoint="/v1/classify",status="200"}')
    )  # fmt: skip
    assert served == CLIENTS * REQUESTS
    print(f"{CLIENTS * REQUESTS} requests in {elapsed:.1f} s")


def test_slow_and_oversized_clients_do_not_block_others(setup, tiny_dir, tmp_path):
    """A client trickling its body, and one sending 8 MiB, while others get answered promptly."""
    import io
    import socket
    import zipfile

    prompts, expected = setup
    row = expected["tweets"][0][0]
    token = tmp_path / "token"
    token.write_text("a-long-enough-admin-token-for-tests")
    with running_server(str(tiny_dir), prompts, "--admin-token-file", str(token)) as url:
        host, port = url.removeprefix("http://").split(":")
        slow = socket.create_connection((host, int(port)))
        slow.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{"
        )
        big = socket.create_connection((host, int(port)))
        big.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        chunk = b"x" * 65536
        for _ in range(128):  # 8 MiB, streamed with no Content-Length
            try:
                big.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # the server answered 413 and closed the connection
                break
        big.settimeout(10)
        assert b" 413 " in big.recv(4096).split(b"\r\n")[0] + b" "
        latencies = []
        for _ in range(20):
            start = time.monotonic()
            status, _, _ = call(url + "/v1/classify", "POST", {"task": "tweets", "inputs": [row]})
            latencies.append(time.monotonic() - start)
            assert status == 200
            slow.sendall(b" ")  # still trickling
        assert max(latencies) < 5.0
        slow.close()
        big.close()
        bomb = io.BytesIO()
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("adapter_model.safetensors", b"\0" * (70 * 2**20))
        auth = {"Authorization": "Bearer a-long-enough-admin-token-for-tests", "Content-Type": "application/zip"}
        status, reply, _ = call(url + "/v1/tasks/bomb", "PUT", headers=auth, raw=bomb.getvalue())
        assert status == 422 and "unpacks to more than" in reply["error"]
        assert call(url + "/healthz")[0] == 200
