"""Fine-tuning files and job recipes, before any model: each shape read into the rows a run trains on, each bad
line one error naming it (and nothing kept), and a job request turned into the TrainConfig `softprompt train`
takes."""

from __future__ import annotations

import json

import pytest

from softprompt.prompts.method import PROMPT_TUNING
from softprompt.serve.store import valid_name
from softprompt.serve.tuning_files import CHAT, PROMPT_COMPLETION, ROWS, FileStore
from softprompt.serve.tuning_recipe import JobRequest, job_config, task_name
from softprompt.utils.errors import SoftpromptError

SERVING = {"model": "smollm2-135m", "dtype": "float32", "device": "cpu", "output": "/tmp/run"}


def _jsonl(*rows) -> bytes:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows).encode()


@pytest.fixture()
def files(tmp_path) -> FileStore:
    return FileStore(tmp_path, max_bytes=4096, max_rows=5)


def test_each_shape_is_kept_as_the_rows_a_run_reads(files):
    pc = files.create("pc.jsonl", "fine-tune", _jsonl({"prompt": "2+2=", "completion": "4"}))
    chat = files.create("chat.jsonl", "fine-tune", _jsonl(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}))
    rows = files.create("rows.csv", "fine-tune", b"text,label\nawful,neg\ngreat,pos\n")
    assert (pc.shape, chat.shape, rows.shape) == (PROMPT_COMPLETION, CHAT, ROWS)
    read = [[json.loads(line) for line in files.rows_path(f.id).read_text().splitlines()] for f in (pc, chat, rows)]
    assert read == [[{"prompt": "2+2=", "completion": "4"}], [{"user": "hi", "assistant": "hello"}],
                    [{"text": "awful", "label": "neg"}, {"text": "great", "label": "pos"}]]  # fmt: skip
    assert [f.id for f in files.every()] == [pc.id, chat.id, rows.id]
    assert files.get(rows.id).to_openai()["status"] == "processed"
    assert files.delete(pc.id) and files.get(pc.id) is None and not files.delete(pc.id)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_jsonl({"prompt": "a", "completion": "b"}, '{"prompt": "c", "completion"'), r"bad\.jsonl line 2: not JSON"),
        (_jsonl({"prompt": "a", "completion": "b"}, {"prompt": "c"}), "row 2: expected exactly the fields prompt and"),
        (_jsonl({"text": "a", "label": "x"}, {"text": "b"}), "row 2: field 'label': every row needs the fields"),
        (_jsonl({"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"},
                              {"role": "assistant", "content": "hello"}]}), "row 1: messages: roles"),  # fmt: skip
        (_jsonl({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}),
         r"row 1: messages\[0\]: expected \{role, content\} with content a string"),  # fmt: skip
        (_jsonl(*[{"text": str(i)} for i in range(6)]), "has 6 rows, over this server's limit of 5"),
        (b"x" * 5000, "is 5000 bytes, over this server's limit of 4096"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_problem_and_nothing_is_kept(files, data, message):
    with pytest.raises(SoftpromptError, match=message):
        files.create("bad.jsonl", "fine-tune", data)
    assert files.every() == []
    assert not files.root.exists() or not any(files.root.iterdir())


def test_only_fine_tune_files_are_taken(files):
    with pytest.raises(SoftpromptError, match="purpose: 'batch' is not served here"):
        files.create("a.jsonl", "batch", _jsonl({"prompt": "a", "completion": "b"}))


def test_a_job_request_becomes_the_train_config_its_shape_and_recipe_say(files):
    pc = files.create("pc.jsonl", "fine-tune", _jsonl({"prompt": "2+2=", "completion": "4"}))
    request = JobRequest(model="smollm2-135m", training_file=pc.id, seed=3,
                         method={"type": "supervised", "supervised": {"hyperparameters": {
                             "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}}},
                         softprompt={"num_virtual_tokens": 5, "max_new_tokens": 6})  # fmt: skip
    config = job_config(request, pc, ("train.jsonl", None), SERVING)
    assert (config.template, config.target_field, config.label_field) == ("{prompt}", "completion", None)
    assert (config.epochs, config.seed, config.num_virtual_tokens) == (2, 3, 5)
    assert (config.batch_size, config.grad_accum) == (2, 2)  # micro-batches of 2: a server's short units of work
    assert config.lr == PROMPT_TUNING.lr["adamw"] * 0.5
    assert (config.train, config.output, config.dtype, config.save_steps) == ("train.jsonl", "/tmp/run", "float32", 10)
    assert config.total_steps(10) == 6  # 3 batches of 4, twice
    chat = files.create("chat.jsonl", "fine-tune", _jsonl(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]}))
    classify = JobRequest(model="m", training_file=chat.id, softprompt={"label_field": "assistant"})
    config = job_config(classify, chat, ("chat.jsonl", None), SERVING)
    assert (config.template, config.chat, config.label_field) == ("{user}", True, "assistant")
    assert config.target_field is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"softprompt": {"lr": 0.1}, "hyperparameters": {"learning_rate_multiplier": 2}}, "give it or softprompt.lr"),
        ({"softprompt": {"optimizer": "sgd"}}, "softprompt.optimizer: must be one of adamw, adafactor"),
    ],
)
def test_a_bad_recipe_names_the_field_as_the_request_spells_it(files, fields, message):
    pc = files.create("pc.jsonl", "fine-tune", _jsonl({"prompt": "a", "completion": "b"}))
    with pytest.raises(SoftpromptError, match=message):
        job_config(JobRequest(model="m", training_file=pc.id, **fields), pc, ("t.jsonl", None), SERVING)


def test_rows_need_a_template_and_unknown_recipe_fields_are_refused(files):
    rows = files.create("rows.jsonl", "fine-tune", _jsonl({"text": "a", "label": "x"}))
    with pytest.raises(SoftpromptError, match="softprompt.template: a file of rows needs the template"):
        job_config(JobRequest(model="m", training_file=rows.id, softprompt={"label_field": "label"}), rows,
                   ("t.jsonl", None), SERVING)  # fmt: skip
    with pytest.raises(ValueError, match="extra_forbidden|Extra inputs"):
        JobRequest(model="m", training_file=rows.id, softprompt={"dropout": 0.1})


def test_the_published_name_is_openais_shape_as_a_task_name():
    name = task_name("HuggingFaceTB/SmolLM2-135M-Instruct", "tweets", "ftjob-0123456789abcdef01234567")
    assert name == "ft-SmolLM2-135M-Instruct-tweets-01234567"
    assert valid_name(name) and valid_name(task_name("x" * 80, "y" * 40, "ftjob-abc"))
    assert valid_name(task_name("m", "...", "ftjob-abc")) and valid_name(task_name("m", "a..b", "ftjob-abc"))


def test_hyperparameters_out_of_range_are_refused_and_seed_0_is_kept(files):
    pc = files.create("pc.jsonl", "fine-tune", _jsonl({"prompt": "a", "completion": "b"}))
    for bad in ({"n_epochs": 0}, {"batch_size": -1}, {"learning_rate_multiplier": 0}):
        with pytest.raises(ValueError, match="greater than"):
            JobRequest(model="m", training_file=pc.id, hyperparameters=bad)
    config = job_config(JobRequest(model="m", training_file=pc.id, seed=0), pc, ("t.jsonl", None), SERVING)
    assert config.seed == 0
    with pytest.raises(SoftpromptError, match="softprompt.max_steps: must be 0"):
        job_config(JobRequest(model="m", training_file=pc.id, softprompt={"max_steps": -1}), pc, ("t.jsonl", None),
                   SERVING)  # fmt: skip
