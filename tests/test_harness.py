"""lm-evaluation-harness as a real client: prompt folders built here on the real default model, uploaded to the
session's server through the admin route, their tasks written by `softprompt harness`, and scored by the
harness through the server's OpenAI routes (`local-completions`, `local-chat-completions`) and through its
own `hf` model with the folder as a PEFT adapter (the `lm_eval` command line `softprompt harness` prints).
Each way must agree with `softprompt eval` on the same rows: accuracy exactly, and each choice's
loglikelihood with our `score_rows` within 1e-4."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from softprompt.data.tasks import Task, load_named
from softprompt.models.base import Base, resolve
from softprompt.models.prompt import init_prompt
from softprompt.prompts.tuned import TunedPrompt

from .serving import ADMIN_TOKEN, call, zip_folder

ROWS = 40  # the first test rows of each classification task (SQuAD: 4 questions, decoded)
# Templates end without whitespace and label words start with a space: the harness moves a context's trailing
# whitespace into its continuation, so only then does it send the ids our Encoder makes (toolbox/harness.py).
TASKS = {
    "harness-tweets": ("raft/twitter_complaints", Task("Tweet text : {Tweet text} Label :", "Label",
                       ["complaint", "no complaint"], {"complaint": " complaint", "no complaint": " no complaint"},
                       max_length=256)),  # fmt: skip
    "harness-sst2": ("glue/sst2", Task("Sentence : {sentence} Sentiment :", "label", ["0", "1"],
                     {"0": " negative", "1": " positive"}, max_length=256)),  # fmt: skip
    "harness-tweets-chat": ("raft/twitter_complaints", Task("Tweet text : {Tweet text} Label :", "Label",
                            ["complaint", "no complaint"], {"complaint": " complaint", "no complaint": " no complaint"},
                            max_length=256, chat=True)),  # fmt: skip
    "harness-squad": ("squad", load_named("squad", "dev")[0]),
}
CLASSIFY = ["harness-tweets", "harness-sst2", "harness-tweets-chat"]  # the chat task's rows in SmolLM2's template


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "softprompt", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _split(name: str) -> tuple[str, str]:
    return ("dev", "4") if name == "harness-squad" else ("test", str(ROWS))


@pytest.fixture(scope="module")
def harness(tmp_path_factory, smollm2, smollm2_server):
    """{name: (prompt folder, its harness task folder, the printed command lines)}, each folder uploaded to the
    session's server as task NAME (deleted again at the end)."""
    root = tmp_path_factory.mktemp("harness")
    model, tokenizer = smollm2
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/zip"}
    made = {}
    for seed, (name, (shipped, task)) in enumerate(TASKS.items()):
        prompt = init_prompt(8, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=seed)
        folder = root / name
        TunedPrompt.build(Base(model, tokenizer), prompt, task).save_pretrained(folder)
        split, limit = _split(name)
        lines = _cli("harness", str(folder), "--task", shipped, "--split", split, "--limit", limit,
                     "--output", str(root / "tasks"), "--name", name.replace("-", "_")).stdout.splitlines()  # fmt: skip
        status, info, _ = call(smollm2_server + f"/v1/tasks/{name}", "PUT", headers=auth, raw=zip_folder(folder))
        assert status == 200, info
        made[name] = (folder, root / "tasks", lines)
    yield made
    for name in made:
        assert call(smollm2_server + f"/v1/tasks/{name}", "DELETE", headers=auth)[0] == 200


def _evaluate(model: str, args: dict, name: str, tasks, **options) -> tuple[dict, list[dict]]:
    """The harness's results for task NAME and its samples in row order."""
    out = simple_evaluate(model=model, model_args=args, tasks=[name.replace("-", "_")], log_samples=True,
                          task_manager=TaskManager(include_path=str(tasks)), **options)  # fmt: skip
    key = name.replace("-", "_")
    return out["results"][key], sorted(out["samples"][key], key=lambda s: s["doc_id"])


def _ours(name: str, folder, smollm2) -> tuple[float, list[list[float]]]:
    """`softprompt eval`'s accuracy on the rows, and our label scores of each row (score_rows)."""
    shipped, _ = TASKS[name]
    split, limit = _split(name)
    result = json.loads(_cli("eval", str(folder), "--task", shipped, "--split", split, "--limit", limit,
                             "--dtype", "float32", "--no-progress").stdout.splitlines()[-1])  # fmt: skip
    tuned = TunedPrompt.from_pretrained(folder, base=smollm2)
    rows = load_named(shipped, split)[1][: int(limit)]
    ids = [tuned.encoder.input_ids(row) for row in rows]
    scores = tuned.lm.score_rows(ids, [tuned.encoder.label_ids] * len(ids))
    return result["accuracy"], [s.tolist() for s in scores]


def _check_agrees(results: dict, samples: list[dict], accuracy: float, scores: list[list[float]], chat=False) -> None:
    """Accuracy exactly and each choice's score within 1e-4. A chat task's context ends in the template's "\n",
    which the harness moves into every continuation: its scores then add that token's log-probability, the
    same for every choice of a row (so the same accuracy), where ours start after it."""
    assert len(samples) == ROWS
    assert results["acc,none"] == accuracy
    assert 0 <= results["acc_norm,none"] <= 1  # reported (length-normalised by bytes: no figure of ours)
    for sample, ours in zip(samples, scores):
        theirs = [float(resp[0]) for resp in sample["filtered_resps"]]  # a str in files
        newline = theirs[0] - ours[0] if chat else 0.0
        assert newline <= 1e-4 and [t - newline for t in theirs] == pytest.approx(ours, abs=1e-4)


@pytest.mark.parametrize("name", CLASSIFY)
def test_local_completions_accuracy_is_softprompt_evals(harness, smollm2, smollm2_server, name):
    """multiple_choice through the server's echoed prompt logprobs: the same accuracy and per-choice scores."""
    folder, tasks, _ = harness[name]
    args = {"model": name, "base_url": smollm2_server + "/v1/completions", "tokenizer": resolve("smollm2-135m"),
            "tokenizer_backend": "huggingface", "batch_size": 8, "max_retries": 1}  # fmt: skip
    results, samples = _evaluate("local-completions", args, name, tasks)
    accuracy, scores = _ours(name, folder, smollm2)
    _check_agrees(results, samples, accuracy, scores, chat=TASKS[name][1].chat)


def test_the_printed_hf_command_line_scores_as_softprompt_eval(harness, smollm2, tmp_path):
    """The `lm_eval --model hf --model_args pretrained=BASE,peft=FOLDER` line `softprompt harness` prints, run as
    printed: the harness's own model with our folder as its PEFT adapter agrees with `softprompt eval`."""
    name = "harness-tweets"
    folder, _, lines = harness[name]
    command = shlex.split(next(line for line in lines if "--model hf" in line))
    assert command[0] == "lm_eval" and f"peft={folder.resolve()}" in command[command.index("--model_args") + 1]
    lm_eval = [sys.executable, "-m", "lm_eval", *command[1:], "--batch_size", "8", "--log_samples",
               "--output_path", str(tmp_path)]  # fmt: skip
    done = subprocess.run(lm_eval, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())["results"][name.replace("-", "_")]
    lines = next(tmp_path.rglob("samples_*.jsonl")).read_text().splitlines()
    samples = sorted(map(json.loads, lines), key=lambda s: s["doc_id"])
    _check_agrees(results, samples, *_ours(name, folder, smollm2))


def test_generate_until_through_completions_and_chat(harness, smollm2, smollm2_server):
    """A text-to-text task through both generation routes runs and scores; through completions each answer is
    the one `softprompt predict` writes for the row (greedy, the same ids and stop string)."""
    name = "harness-squad"
    folder, tasks, _ = harness[name]
    tokenizer = resolve("smollm2-135m")
    served = {"model": name, "tokenizer": tokenizer, "base_url": smollm2_server + "/v1/completions", "max_retries": 1}
    completions, samples = _evaluate("local-completions", served, name, tasks)
    tuned = TunedPrompt.from_pretrained(folder, base=smollm2)
    offline = [p["prediction"] for p in tuned.predict(load_named("squad", "dev")[1][:4])]
    assert 0 <= completions["exact_match,none"] <= 1
    assert [sample["filtered_resps"][0].strip() for sample in samples] == offline
    chat, chat_samples = _evaluate("local-chat-completions", {"model": name, "tokenizer": tokenizer,
                                   "base_url": smollm2_server + "/v1/chat/completions", "max_retries": 1}, name,
                                   tasks, apply_chat_template=True)  # fmt: skip
    assert 0 <= chat["exact_match,none"] <= 1 and len(chat_samples) == 4
    assert all(isinstance(sample["filtered_resps"][0], str) for sample in chat_samples)
