"""A prompt's task as an lm-evaluation-harness task over local files, so the harness can score the prompt
(through a server's OpenAI routes, or its own `hf` model with the PEFT folder) on exactly the rows
`softprompt eval` reads.

The rows are written out as JSON lines beside a task YAML (`dataset_path: json`, `data_files`): each row's
input rendered by the task's template, and for classification its label words as the choices, each followed
by the tokenizer's EOS text, since rank classification scores the label and its end (a `multiple_choice` task
with `acc` and `acc_norm`), or its target and references for text to text (a `generate_until` task with the
task's stop strings, `max_new_tokens` and exact match). No harness code is copied: the YAML is the harness's
own task format.

The harness tokenises context and continuation its own way: it moves a context's trailing whitespace into the
continuation and tokenises the two joined, where we tokenise input and label apart (as PEFT's recipe does).
A template that ends in whitespace therefore reaches the model as other ids through the harness; one that
ends without it (`... Label :`), with label words that start with a space (` complaint`), gives the same
ids both ways, as does an input our Encoder does not cut (`max_length` covering the rows). A chat task's
inputs are written inside the model's chat template, as the prompt was trained; the harness's own
`--apply_chat_template` is then not wanted. Their context ends in the template's newline, which the harness
moves into each choice: its loglikelihoods add that token's log-probability, the same for every choice, so
accuracy is the same as ours.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.batching import Encoder
from ..data.tasks import Row, Task
from ..prompts.checkpoint import atomic_write

SPLIT = "test"  # the one split the written task has


def harness_rows(encoder: Encoder, rows: list[Row]) -> list[dict]:
    """The rows as the harness task reads them: the input as `Encoder.text` renders it (in the chat frame for a
    chat task) and what it is scored against."""
    task, eos = encoder.task, encoder.tokenizer.eos_token or ""
    out = []
    for row in rows:
        item: dict = {"input": encoder.text(row)}
        if task.generates:
            item["target"] = task.target(row)
            item["references"] = task.references(row)
        else:
            item["choices"] = [word + eos for word in task.label_words]
            item["label_index"] = task.labels.index(str(row[task.label_field]))
        out.append(item)
    return out


def harness_config(task: Task, name: str, data_file: Path, max_new_tokens: int) -> dict:
    """The task YAML's fields (a mapping; JSON is YAML, so it is written as JSON)."""
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {SPLIT: str(data_file.resolve())}},
        "test_split": SPLIT,
        "doc_to_text": "{{input}}",
    }
    if task.generates:
        config |= {
            "output_type": "generate_until",
            "doc_to_target": "target",
            "generation_kwargs": {"until": task.stop, "max_gen_toks": max_new_tokens, "do_sample": False,
                                  "temperature": 0.0},  # fmt: skip
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        }
    else:
        config |= {
            "output_type": "multiple_choice",
            "doc_to_choice": "choices",
            "doc_to_target": "label_index",
            "target_delimiter": "",
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                            for m in ("acc", "acc_norm")],  # fmt: skip
        }
    return config


def write_harness_task(encoder: Encoder, rows: list[Row], folder: Path, name: str) -> Path:
    """`folder/NAME.yaml` and `folder/NAME.jsonl`: a task `lm_eval --include_path folder --tasks NAME` runs."""
    folder.mkdir(parents=True, exist_ok=True)
    data_file = folder / f"{name}.jsonl"
    lines = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in harness_rows(encoder, rows))
    atomic_write(data_file, lines.encode("utf-8"))
    config = harness_config(encoder.task, name, data_file, encoder.max_new_tokens)
    yaml_file = folder / f"{name}.yaml"
    atomic_write(yaml_file, (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return yaml_file
