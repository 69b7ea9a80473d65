"""The model card (README.md) of a prompt folder, as PEFT's adapters and the Hugging Face Hub have them.

Written from what the folder holds, so it can be rewritten at any time and never disagrees with it:
softprompt.json (the recipe, the kept prompt's dev metrics, the machine, held-out evaluations that `eval
--record` added), adapter_config.json, metrics.jsonl (the training log) and curves.png. The YAML front matter
is the Hub's (`base_model`, `library_name`, `tags`, `datasets`, `metrics`, `model-index`); scalars are written
as JSON strings, which YAML reads as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.tasks import Task
from ..utils.errors import SoftpromptError
from .checkpoint import CONFIG, atomic_write
from .method import Method
from .record import FolderRecord

CARD = "README.md"
HUB_DATASETS = {  # the shipped tasks' data sets on the Hugging Face Hub
    "raft/twitter_complaints": "ought/raft",
    "glue/sst2": "nyu-mll/glue",
    "superglue/rte": "aps/super_glue",
}
LOG_ROWS = 12  # training-log rows shown (the last ones; metrics.jsonl has them all)


def write_card(folder: str | Path) -> Path:
    """(Re)write `folder`/README.md from the folder's files; returns its path."""
    folder = Path(folder)
    record = FolderRecord.read(folder)
    adapter = json.loads((folder / CONFIG).read_text()) if (folder / CONFIG).is_file() else None
    log = folder / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    text = render(folder.name, record, adapter, records, (folder / "curves.png").is_file())
    atomic_write(folder / CARD, text.encode())
    return folder / CARD


def render(name: str, record: FolderRecord, adapter: dict | None, records: list[dict], curves: bool) -> str:
    config = record.train_config or {}
    task = record.task.to_json() if record.task else {}
    base = record.base_model or config.get("model") or "unknown"
    meta = record.to_json()
    parts = [
        _front_matter(name, record.method, meta, base, task),
        f"# {name}\n",
        f"{record.method.card}, for the task `{task.get('name') or 'custom'}` on `{base}`, made with "
        f"softprompt{_size(adapter)}.\n",
        _task_section(task),
        _results(meta, task),
        _training_log(records, curves),
        _recipe(config),
        _machine(meta),
        _use(name, base, record.method, adapter, task),
    ]
    return "\n".join(part for part in parts if part)


# The figures a card shows, by kind of task: (key in the metrics, model-index type, name as shown).
FIGURES = {
    "classification": [("accuracy", "accuracy", "accuracy"), ("macro_f1", "f1", "macro-F1")],
    "text": [("exact_match", "exact_match", "exact match"), ("f1", "f1", "F1"), ("rougeL", "rouge", "ROUGE-L"),
             ("bleu", "bleu", "BLEU")],
}  # fmt: skip


def _kind(task: dict) -> str:
    return "text" if task and Task.from_json(task).generates else "classification"


def _front_matter(name: str, method: Method, meta: dict, base: str, task: dict) -> str:
    kind = _kind(task)
    pipeline = "text-generation" if kind == "text" else "text-classification"
    lines = ["---", f"base_model: {json.dumps(base)}", "library_name: softprompt", "tags:"]
    lines += [f"- {tag}" for tag in ("peft", method.name, "softprompt", pipeline)]
    task_name = task.get("name") or "custom"
    hub = HUB_DATASETS.get(task_name)
    if hub:
        lines += ["datasets:", f"- {hub}"]
    lines += ["metrics:", *dict.fromkeys(f"- {kind_}" for _, kind_, _ in FIGURES[kind])]
    scored = [("dev", meta["metrics"])] if meta.get("metrics") else []
    scored += list(meta.get("evaluations", {}).items())
    if scored:
        lines += ["model-index:", f"- name: {json.dumps(name)}", "  results:"]
        for split, metrics in scored:
            lines += [
                "  - task:",
                f"      type: {pipeline}",
                "    dataset:",
                f"      name: {json.dumps(f'{task_name} ({split})')}",
                f"      type: {json.dumps(hub or task_name)}",
                "    metrics:",
            ]
            lines += [f"    - {{type: {type_}, name: {shown}, value: {metrics[key]:.4f}}}"
                      for key, type_, shown in FIGURES[kind] if key in metrics]  # fmt: skip
    return "\n".join([*lines, "---", ""])


def _size(adapter: dict | None) -> str:
    if adapter is None:
        return ""
    tokens, dim = adapter["num_virtual_tokens"], adapter["token_dim"]
    return f": {tokens} virtual tokens x {dim} dimensions ({tokens * dim * 4 / 1024:.0f} KB in float32)"


def _task_section(task: dict) -> str:
    if not task:
        return ""
    return _task_kind_section(task) + (CHAT_NOTE if task.get("chat") else "")


CHAT_NOTE = ("\nTrained with `chat`: each input goes in as a user message through the base model's chat template, "
             "with the assistant's turn opened (the soft prompt before it all), and the answer is the assistant's "
             "reply. softprompt renders it so; with PEFT, apply the tokenizer's chat template "
             "(`add_generation_prompt=True`) to the rendered template before tokenising.\n")


def _task_kind_section(task: dict) -> str:
    if _kind(task) == "text":
        target = f"field `{task['target_field']}`" if task.get("target_field") else f"`{task.get('target_template')}`"
        scored = f"the references in `{task['references_field']}`" if task.get("references_field") else "it"
        return (
            "## Task\n\n"
            f"Template `{task.get('template')}`; the model writes the target ({target}) after the input, scored "
            f"against {scored}: exact match and F1 as SQuAD v1.1 computes them, ROUGE and BLEU, of greedily "
            "decoded text.\n"
        )
    labels = ", ".join(f"`{label}`" for label in task.get("labels", []))
    return (
        "## Task\n\n"
        f"Template `{task.get('template')}`; labels {labels} (field `{task.get('label_field')}`), scored by the "
        "log-likelihood of each label word after the input.\n"
    )


def _results(meta: dict, task: dict) -> str:
    scored = []
    if meta.get("metrics"):
        kept = f"dev, the kept prompt (step {meta['step']})" if meta.get("step") is not None else "dev"
        scored.append((kept, meta["metrics"]))
    scored += [(f"held-out: {source}", metrics) for source, metrics in meta.get("evaluations", {}).items()]
    if not scored:
        return ""
    figures = FIGURES[_kind(task)]
    classifies = _kind(task) == "classification"
    head = [shown for _, _, shown in figures] + ["loss"] + (["majority class (accuracy / macro-F1)"] * classifies)
    lines = ["## Results\n", "| rows | n | " + " | ".join(head) + " |", "|---" * (len(head) + 2) + "|"]
    for split, m in scored:
        cells = [_cell(m.get(key), 3) for key, _, _ in figures] + [_cell(m.get("loss"))]
        if classifies:
            cells.append(f"{m.get('majority_accuracy', 0):.3f} / {m.get('majority_macro_f1', 0):.3f}")
        lines.append(f"| {split} | {m.get('n')} | " + " | ".join(cells) + " |")
    for split, m in scored:
        if "confusion_matrix" in m:
            lines += ["", f"Confusion matrix ({split}; rows gold, columns predicted):", "", _confusion(m)]
    return "\n".join(lines) + "\n"


def _confusion(metrics: dict) -> str:
    confusion, per_label = metrics["confusion_matrix"], metrics.get("per_label", {})
    head = "| gold \\ predicted | " + " | ".join(confusion["columns"]) + " | precision | recall | F1 |"
    lines = [head, "|---" * (len(confusion["columns"]) + 4) + "|"]
    for label, row in zip(confusion["labels"], confusion["counts"]):
        scores = per_label.get(label, {})
        lines.append(f"| {label} | " + " | ".join(map(str, row)) + " | "
                     + " | ".join(f"{scores.get(k, 0):.3f}" for k in ("precision", "recall", "f1")) + " |")  # fmt: skip
    return "\n".join(lines)


def _training_log(records: list[dict], curves: bool) -> str:
    evaluations = [r for r in records if "eval_loss" in r or "train_loss" in r]
    if not evaluations:
        return ""
    shown = ("step", "epoch", "train_loss", "eval_loss", *(key for kind in FIGURES.values() for key, _, _ in kind))
    keys = [k for k in dict.fromkeys(shown) if k in evaluations[-1]]
    shown = min(LOG_ROWS, len(evaluations))
    lines = ["## Training log\n", f"The last {shown} of {len(evaluations)} evaluations (all in metrics.jsonl):", "",
             "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]  # fmt: skip
    for record in evaluations[-LOG_ROWS:]:
        lines.append("| " + " | ".join(_cell(record.get(k)) for k in keys) + " |")
    if curves:
        lines += ["", "![training curves](curves.png)"]
    return "\n".join(lines) + "\n"


def _cell(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else ("" if value is None else str(value))


def _recipe(config: dict) -> str:
    if not config:
        return ""
    lines = ["## Recipe\n", "Every training option (`softprompt train --config` takes them as TOML):", "",
             "| option | value |", "|---|---|"]  # fmt: skip
    lines += [f"| `{key}` | `{json.dumps(value)}` |" for key, value in sorted(config.items())]
    return "\n".join(lines) + "\n"


def _machine(meta: dict) -> str:
    hardware = meta.get("hardware")
    if not hardware:
        return ""
    seconds = meta.get("train_seconds")
    took = f"Training took {seconds:.0f} s. " if seconds is not None else ""
    gpu = (f"{hardware['gpu']} (compute capability {hardware.get('compute_capability')}, CUDA "
           f"{hardware.get('cuda')}, driver {hardware.get('driver')}), " if hardware.get("gpu") else "")  # fmt: skip
    return (
        "## Machine\n\n"
        f"{took}Base model in `{meta.get('base_dtype')}` on {hardware.get('device')}: {gpu}"
        f"CPU capability {hardware.get('cpu_capability')}, {hardware.get('threads')} threads, "
        f"torch {hardware.get('torch')}.\n"
    )


def _use(name: str, base: str, method: Method, adapter: dict | None, task: dict) -> str:
    row = {field: "..." for field in Task.from_json(task).fields} if task else {"text": "..."}
    lines = ["## Use it\n", "```python", "from softprompt import TunedPrompt", "",
             f'tuned = TunedPrompt.from_pretrained("{name}")', f"tuned.predict([{json.dumps(row)}])",
             "```", "", f"`softprompt eval {name} --data FILE`, `softprompt serve --prompts DIR` (this folder under "
             "DIR is a task)."]  # fmt: skip
    if adapter is not None:
        lines += ["", "With PEFT (the folder is a PEFT prompt-tuning adapter):", "", "```python",
                  "from peft import PeftModel", "from softprompt import load_base", "",
                  f'base, tokenizer = load_base("{adapter.get("base_model_name_or_path") or base}")',
                  "# (or transformers' AutoModelForCausalLM.from_pretrained with a hub id or folder)",
                  f'model = PeftModel.from_pretrained(base, "{name}")', "```"]  # fmt: skip
    elif method.trains_model:
        lines += ["", "With transformers (the folder is a Hugging Face model):", "", "```python",
                  "from transformers import AutoModelForCausalLM", "",
                  f'model = AutoModelForCausalLM.from_pretrained("{name}")', "```"]  # fmt: skip
    return "\n".join(lines) + "\n"


def record_name(data: str | None, task: str | None, split: str, limit: int) -> str:
    """What an `eval --record` files its figures under: the data file as given, else the split (of `task` where
    that is not the prompt's own), never this machine's path to it; with the row limit, since the first 1,000
    rows are not the whole split."""
    name = data or (f"{task} {split} split" if task else f"{split} split")
    return f"{name}, first {limit} rows" if limit else name


def record_evaluation(folder: str | Path, source: str, metrics: dict) -> None:
    """Add held-out metrics (an `eval --record`) to the folder's softprompt.json, under the data's name, and
    rewrite its card; the metadata file is replaced atomically, so the folder stays loadable throughout."""
    folder = Path(folder)
    record = FolderRecord.read(folder)
    record.evaluations[source] = metrics
    try:
        record.write(folder)
        write_card(folder)
    except OSError as exc:
        raise SoftpromptError(f"{folder}: cannot record the evaluation ({exc.strerror or exc})") from None
