"""Text-to-text tasks end to end on a tiny random Llama (models/synthetic.py): the loss on the target's tokens and
EOS, long targets cut, the dev split, dev selection by F1 from decoded text, resume bit for bit, the folder PEFT
reads; evaluation and prediction (the library and the CLI); prompt design, model tuning and a T5 on a text task;
and the shipped SQuAD task on the real default model."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from softprompt.cli import main
from softprompt.data.loading import load_data
from softprompt.data.tasks import Task
from softprompt.engine.seq2seq import PromptedSeq2SeqLM
from softprompt.models import synthetic
from softprompt.models.base import load_base
from softprompt.prompts import checkpoint
from softprompt.prompts.generation import generate_texts
from softprompt.prompts.model_card import CARD
from softprompt.prompts.predictions import write_predictions
from softprompt.prompts.text_evaluate import target_loss
from softprompt.prompts.text_metrics import exact_match, text_metrics, token_f1
from softprompt.prompts.tuned import TunedPrompt
from softprompt.toolbox.prompt_design import run_design
from softprompt.training.train import Trainer, fit
from softprompt.utils.errors import ParameterError

from .resuming import ONE_THREAD
from .texts import MAX_NEW_TOKENS, TEMPLATE, WORDS, qa_rows, text_config, write_jsonl

TEXT_METRICS = ("exact_match", "f1", "rouge1", "rouge2", "rougeL", "bleu")
# The recipe whose dev F1 moves over its 16 steps (0 for the first six, then up and down again on this machine):
# a run that keeps the best F1 has a choice to make.
KEEP_F1 = dict(num_virtual_tokens=8, max_steps=16, eval_every=2, dev_fraction=0.25, keep_best="f1")


@pytest.fixture(scope="module")
def kept_run(llama, llama_dir, tmp_path_factory) -> tuple[TunedPrompt, Path, list[dict]]:
    """(the tuned prompt, its folder, its dev rows) of one KEEP_F1 run on 24 rows, read by the tests below."""
    root = tmp_path_factory.mktemp("text-run")
    config = text_config(llama_dir, write_jsonl(root / "qa.jsonl", qa_rows(24)), root / "run", **KEEP_F1)
    tuned = fit(config, base=llama)
    return tuned, root / "run", load_data(config).dev


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _prompt(folder: Path) -> torch.Tensor:
    return load_file(str(folder / checkpoint.WEIGHTS))["prompt_embeddings"]


def _references(rows: list[dict]) -> list[list[str]]:
    return [json.loads(row["answers"]) for row in rows]


def _nll_by_hand(tuned: TunedPrompt, source: list[int], target: list[int]) -> torch.Tensor:
    """-log p(target | prompt, source), from the plain model's logits with the prompt's embeddings in front."""
    model = tuned.lm.model
    ids = torch.tensor([source + target])
    embeds = torch.cat([tuned.lm.prompt.embedding.detach()[None], model.get_input_embeddings()(ids)], dim=1)
    logits = model(inputs_embeds=embeds).logits[0, -len(target) - 1 : -1].float()
    return -logits.log_softmax(-1).gather(-1, torch.tensor(target)[:, None]).sum()


# --- training ------------------------------------------------------------------------------------------------------


def test_the_loss_is_on_the_targets_tokens_and_eos_and_step_one_logs_its_mean(llama, llama_dir, tmp_path):
    rows = qa_rows(6)
    config = text_config(llama_dir, write_jsonl(tmp_path / "qa.jsonl", rows), tmp_path / "run", batch_size=6,
                         max_steps=1)  # fmt: skip
    trainer = Trainer.build(config, base=llama)
    tokenizer = llama.tokenizer
    for row, (source, target) in zip(rows, trainer.encoded, strict=True):
        assert target == tokenizer(row["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert source == tokenizer(TEMPLATE.format(question=row["question"]))["input_ids"]
    with torch.no_grad():  # what the trainer sums, row by row, against the plain model's NLL of each target
        by_hand = torch.stack([_nll_by_hand(trainer.tuned, source, target) for source, target in trainer.encoded])
        terms = trainer.tuned.lm.target_logprob_sum([s for s, _ in trainer.encoded], [t for _, t in trainer.encoded])
    torch.testing.assert_close(-terms, by_hand, atol=1e-4, rtol=1e-5)
    tokens = sum(len(target) for _, target in trainer.encoded)
    start = trainer.tuned.lm.prompt.embedding.detach().clone()
    trainer.run()
    first = _records(tmp_path / "run")[0]
    assert first["step"] == 1
    assert first["train_loss"] == pytest.approx(float(by_hand.sum()) / tokens, rel=1e-5)
    assert not torch.equal(_prompt(tmp_path / "run"), start)  # and the step moved the prompt


def test_a_long_target_is_cut_at_its_end_to_max_new_tokens_and_the_run_says_how_many(llama, llama_dir, tmp_path,
                                                                                    capsys):  # fmt: skip
    rows = qa_rows(6)
    long = " ".join(WORDS)
    rows[1]["answer"] = rows[4]["answer"] = long
    tuned = fit(text_config(llama_dir, write_jsonl(tmp_path / "qa.jsonl", rows), tmp_path / "run", max_steps=1),
                base=llama)  # fmt: skip
    eos = [llama.tokenizer.eos_token_id]
    ids = llama.tokenizer(long, add_special_tokens=False)["input_ids"]
    short = llama.tokenizer(rows[0]["answer"], add_special_tokens=False)["input_ids"]
    assert len(ids) > MAX_NEW_TOKENS >= len(short)
    assert tuned.encoder.target_ids(rows[1]) == ids[:MAX_NEW_TOKENS] + eos  # the end goes, EOS stays
    assert tuned.encoder.target_ids(rows[0]) == short + eos
    assert tuned.encoder.targets_cut(rows) == 2
    said = capsys.readouterr()
    assert f"2 of 6 training targets cut to their first {MAX_NEW_TOKENS} tokens (--max-new-tokens)" in (
        said.out + said.err
    )


def test_a_text_task_trains_with_the_default_lengths(llama, llama_dir, tmp_path):
    config = text_config(llama_dir, write_jsonl(tmp_path / "qa.jsonl", qa_rows(4)), tmp_path / "run", max_steps=1,
                         max_new_tokens=None)  # fmt: skip
    tuned = fit(config, base=llama)
    assert tuned.encoder.max_new_tokens == 64 and tuned.encoder.input_budget > 0


def test_a_text_tasks_dev_split_is_a_seeded_sample_of_its_rows(tmp_path):
    """No labels to stratify by: every target differs, and still a quarter of the rows (not all) go to dev."""
    rows = qa_rows(40)
    for index, row in enumerate(rows):
        row["answer"] = f"answer {index}"
    train = write_jsonl(tmp_path / "qa.jsonl", rows)

    def split(seed: int, **overrides) -> tuple[list[str], list[str]]:
        data = load_data(text_config(tmp_path / "no-model", train, tmp_path / "run", dev_fraction=0.25, seed=seed,
                                     **overrides))  # fmt: skip
        return [row["id"] for row in data.train], [row["id"] for row in data.dev]

    kept, dev = split(1)
    assert split(1) == (kept, dev)
    assert len(dev) == 10 and sorted(kept + dev, key=int) == [row["id"] for row in rows]
    assert kept == sorted(kept, key=int) and dev == sorted(dev, key=int)  # file order kept on both sides
    assert split(2)[1] != dev
    limited, limited_dev = split(1, train_limit=20)
    assert len(limited) + len(limited_dev) == 20 and len(limited_dev) == 5


def test_keep_best_f1_decodes_the_dev_rows_and_keeps_the_prompt_of_best_f1(kept_run, llama):
    _, folder, dev = kept_run
    records = _records(folder)
    assert [r["step"] for r in records] == list(range(2, 17, 2))
    assert all(set(TEXT_METRICS) - {"rouge1", "rouge2"} <= r.keys() for r in records)
    f1s = [r["f1"] for r in records]
    assert len(set(f1s)) > 1, f1s  # training moved F1, so there is a best to choose
    best = records[f1s.index(max(f1s))]
    meta = json.loads((folder / checkpoint.META).read_text())
    assert meta["step"] == best["step"] and meta["metrics"]["f1"] == best["f1"]
    assert torch.equal(_prompt(folder), _prompt(folder / "best"))
    last = checkpoint.latest_checkpoint(folder / "checkpoints")
    assert last.name == "step-00000016"
    if best["step"] != 16:  # the kept prompt is the best one, not the last
        assert not torch.equal(_prompt(folder), load_file(str(last / checkpoint.STATE_TENSORS))["prompt"])
    # The F1 it chose by is that of the dev rows decoded greedily under the kept prompt.
    loaded = TunedPrompt.from_pretrained(folder, base=llama)
    answers = generate_texts(loaded.lm, loaded.encoder, dev)
    assert text_metrics(answers, _references(dev))["f1"] == pytest.approx(best["f1"])


def test_keep_best_of_the_other_kind_of_task_is_a_one_line_parameter_error(llama, llama_dir, data_dir, tmp_path):
    text = text_config(llama_dir, write_jsonl(tmp_path / "qa.jsonl", qa_rows(8)), tmp_path / "text",
                       dev_fraction=0.25, keep_best="accuracy")  # fmt: skip
    with pytest.raises(ParameterError) as refused:
        fit(text, base=llama)
    assert refused.value.param == "keep_best"
    assert str(refused.value) == ("keep_best: accuracy is not reported for a text-to-text task (choose from loss, "
                                  "exact_match, f1, rougeL, bleu)")  # fmt: skip
    classification = text_config(llama_dir, data_dir / "raft_twitter_complaints/train.csv", tmp_path / "labels",
                                 template="Tweet text : {Tweet text} Label : ", target_field=None,
                                 references_field=None, max_new_tokens=None, label_field="Label", dev_fraction=0.2,
                                 keep_best="f1")  # fmt: skip
    with pytest.raises(ParameterError) as refused:
        fit(classification, base=llama)
    assert str(refused.value) == ("keep_best: f1 is not reported for a classification task (choose from loss, "
                                  "accuracy, macro_f1)")  # fmt: skip
    assert not (tmp_path / "text").exists() and not (tmp_path / "labels").exists()


def test_a_refused_keep_best_leaves_the_run_it_would_overwrite_whole(llama, llama_dir, tmp_path):
    config = text_config(llama_dir, write_jsonl(tmp_path / "qa.jsonl", qa_rows(8)), tmp_path / "run",
                         dev_fraction=0.25, max_steps=2, keep_best="loss")  # fmt: skip
    fit(config, base=llama)
    before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "run").rglob("*"))
    config.keep_best = "accuracy"
    with pytest.raises(ParameterError, match="^keep_best: accuracy is not reported"):
        fit(config, base=llama, overwrite=True)
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "run").rglob("*")) == before


def _train_command(model_dir: Path, train: Path, output: Path) -> list[str]:
    """KEEP_F1's recipe as a command line, over 8 epochs (40 steps), a checkpoint after every step."""
    return [
        sys.executable, "-m", "softprompt", "train", "--model", str(model_dir), "--train", str(train),
        "--template", TEMPLATE, "--target-field", "answer", "--references-field", "answers",
        "--max-new-tokens", str(MAX_NEW_TOKENS), "--dev-fraction", "0.25", "--keep-best", "f1", "--eval-every", "4",
        "--num-virtual-tokens", "8", "--init", "sampled-vocab", "--lr", "0.3", "--epochs", "8", "--batch-size", "4",
        "--save-steps", "1", "--dtype", "float32", "--no-progress", "--output", str(output),
    ]  # fmt: skip


def test_a_killed_text_run_resumes_to_the_uninterrupted_prompt_bit_for_bit(llama_dir, tmp_path):
    """As test_train.py's kill test, on a text task choosing by F1: one thread per process (tests/resuming.py)."""
    train = write_jsonl(tmp_path / "qa.jsonl", qa_rows(24))
    straight = subprocess.run(_train_command(llama_dir, train, tmp_path / "straight"), capture_output=True,
                              text=True, timeout=300, env=ONE_THREAD)  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_command(llama_dir, train, killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ONE_THREAD)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((killed / "checkpoints").glob("step-0000000[6-9]")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed; lengthen it"
    assert not (killed / checkpoint.WEIGHTS).exists()
    resumed = subprocess.run([sys.executable, "-m", "softprompt", "train", "--resume", str(killed)],
                             capture_output=True, text=True, timeout=300, env=ONE_THREAD)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.equal(_prompt(killed), _prompt(tmp_path / "straight"))
    assert torch.equal(_prompt(killed / "best"), _prompt(tmp_path / "straight" / "best"))
    assert _records(killed) == _records(tmp_path / "straight")  # every evaluation once, the same figures


def test_a_text_run_writes_checkpoints_a_card_and_a_folder_peft_loads(kept_run, llama_dir):
    tuned, folder, _ = kept_run
    adapter = json.loads((folder / checkpoint.CONFIG).read_text())
    assert adapter["peft_type"] == "PROMPT_TUNING" and adapter["task_type"] == "CAUSAL_LM"
    assert adapter["num_virtual_tokens"] == 8
    assert _prompt(folder).shape == (8, synthetic.CONFIGS["tiny-llama"]["hidden_size"])
    for step in checkpoint.latest_checkpoint(folder / "checkpoints"), folder / "best":
        assert step.is_dir()
    state = checkpoint.latest_checkpoint(folder / "checkpoints")
    assert (state / checkpoint.STATE_JSON).is_file() and "prompt" in load_file(str(state / checkpoint.STATE_TENSORS))
    task = json.loads((folder / checkpoint.META).read_text())["task"]
    assert Task.from_json(task) == tuned.task and task["target_field"] == "answer"
    card = (folder / CARD).read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert "text-generation" in front["tags"] and "exact match" in card
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama_dir), folder)
    assert torch.equal(peft.prompt_encoder["default"].embedding.weight.detach(), _prompt(folder))


# --- evaluation and prediction ---------------------------------------------------------------------------------------


def test_evaluate_text_scores_what_it_generates_with_the_text_metrics(kept_run):
    tuned, _, dev = kept_run
    result = tuned.evaluate(dev)
    expected = text_metrics(generate_texts(tuned.lm, tuned.encoder, dev), _references(dev))
    assert {key: result[key] for key in TEXT_METRICS} == {key: expected[key] for key in TEXT_METRICS}
    assert result["n"] == len(dev)
    assert result["loss"] == pytest.approx(target_loss(tuned.lm, tuned.encoder, dev))
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert "accuracy" not in result and "f1" not in tuned.evaluate(dev, generate=False)


def test_predict_text_puts_each_prediction_beside_its_references(kept_run):
    tuned, _, dev = kept_run
    answers = generate_texts(tuned.lm, tuned.encoder, dev)
    predictions = tuned.predict(dev)
    for prediction, answer, references in zip(predictions, answers, _references(dev), strict=True):
        assert prediction["prediction"] == answer and prediction["references"] == references
        assert prediction["exact_match"] == exact_match(answer, references)
        assert prediction["f1"] == token_f1(answer, references)
    unlabelled = tuned.predict([{"question": row["question"]} for row in dev])
    assert unlabelled == [{"prediction": answer} for answer in answers]


def test_a_task_without_references_scores_against_its_target_or_target_template():
    row = qa_rows(1)[0]
    assert Task(TEMPLATE, target_field="answer").references(row) == [row["answer"]]
    templated = Task(TEMPLATE, target_template="{answer} (question {id})")
    assert templated.target(row) == templated.references(row)[0] == "number two (question 0)"
    assert templated.scorable(row) and not templated.scorable({"question": "?", "answer": "a"})


def test_the_eval_command_prints_exact_match_and_f1_of_a_text_folder(kept_run, tmp_path, capsys):
    tuned, folder, dev = kept_run
    data = write_jsonl(tmp_path / "dev.jsonl", dev)
    assert main(["eval", str(folder), "--data", str(data), "--dtype", "float32", "--no-progress"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    printed, expected = json.loads(line), tuned.evaluate(dev)
    assert printed["n"] == len(dev) and printed["data"] == str(data)
    for key in ("exact_match", "f1", "rougeL", "bleu"):
        assert printed[key] == pytest.approx(expected[key])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_the_predict_command_writes_predictions_beside_their_references(kept_run, tmp_path, suffix):
    tuned, folder, dev = kept_run
    data, output = write_jsonl(tmp_path / "dev.jsonl", dev), tmp_path / f"predictions{suffix}"
    assert main(["predict", str(folder), "--data", str(data), "--output", str(output), "--dtype", "float32",
                 "--no-progress"]) == 0  # fmt: skip
    expected = tuned.predict(dev)
    if suffix == ".jsonl":
        assert [json.loads(line) for line in output.read_text().splitlines()] == expected
        return
    written = list(csv.DictReader(output.open(newline="", encoding="utf-8")))
    assert list(written[0]) == ["row", "prediction", "references", *TEXT_METRICS]
    for number, (row, wanted) in enumerate(zip(written, expected, strict=True), 1):
        assert row["row"] == str(number) and row["prediction"] == wanted["prediction"]
        assert json.loads(row["references"]) == wanted["references"]
        assert float(row["f1"]) == pytest.approx(wanted["f1"], abs=1e-6)


def test_a_csv_of_labelled_and_unlabelled_rows_keeps_each_rows_scores(kept_run, tmp_path):
    tuned, _, dev = kept_run
    rows = [dev[0], {"question": dev[1]["question"]}, dev[2]]
    for order in (rows, rows[::-1]):
        predictions = tuned.predict(order)
        write_predictions(tmp_path / "mixed.csv", predictions, [])
        written = list(csv.DictReader((tmp_path / "mixed.csv").open(newline="", encoding="utf-8")))
        for row, prediction in zip(written, predictions, strict=True):
            assert row["prediction"] == prediction["prediction"]
            assert row.get("f1", "") == (f"{prediction['f1']:.6f}" if "f1" in prediction else "")


# --- prompt design, model tuning, an encoder-decoder ---------------------------------------------------------------


def test_design_demonstrations_hold_each_examples_input_target_and_eos(llama, llama_dir, tmp_path):
    config = text_config(llama_dir, write_jsonl(tmp_path / "qa.jsonl", qa_rows(12)), tmp_path / "design", shots=3,
                         dev_fraction=0.25)  # fmt: skip
    tuned = run_design(config, base=llama)
    tokenizer, eos = llama.tokenizer, [llama.tokenizer.eos_token_id]
    ids = []
    for example in tuned.record.examples:
        ids += tokenizer(TEMPLATE.format(question=example["question"]))["input_ids"]
        ids += tokenizer(example["answer"], add_special_tokens=False)["input_ids"] + eos
    assert tuned.record.shots == 3 and len(ids) == tuned.lm.n_prompt
    with torch.no_grad():
        expected = llama.model.get_input_embeddings()(torch.tensor(ids))
    assert torch.equal(tuned.lm.prompt.embedding, expected)
    assert {"exact_match", "f1"} <= json.loads((tmp_path / "design" / checkpoint.META).read_text())["metrics"].keys()


def test_model_tuning_on_a_text_task_trains_and_evaluates_with_exact_match_and_f1(llama_dir, tmp_path):
    base = load_base(str(llama_dir), "float32")  # its own copy: model tuning changes it
    before = base.model.get_input_embeddings().weight.detach().clone()
    config = text_config(llama_dir, write_jsonl(tmp_path / "qa.jsonl", qa_rows(12)), tmp_path / "run",
                         method="model-tuning", lr=1e-3, max_steps=2, dev_fraction=0.25, keep_best="f1")  # fmt: skip
    tuned = fit(config, base=base)
    assert not torch.equal(tuned.lm.model.get_input_embeddings().weight, before)
    last = _records(tmp_path / "run")[-1]
    assert {"train_loss", "eval_loss", "exact_match", "f1"} <= last.keys()
    loaded = TunedPrompt.from_pretrained(tmp_path / "run", dtype="float32")
    assert loaded.lm.n_prompt == 0 and loaded.task.generates
    result = loaded.evaluate(load_data(config).dev)
    assert result["f1"] == pytest.approx(last["f1"]) and result["loss"] == pytest.approx(last["eval_loss"], rel=1e-4)


def test_a_text_task_on_a_tiny_t5_trains_and_generates(tmp_path):
    t5_dir = synthetic.save_folder(tmp_path / "tiny-t5", "tiny-t5")
    base = load_base(str(t5_dir), "float32")
    config = text_config(t5_dir, write_jsonl(tmp_path / "qa.jsonl", qa_rows(12)), tmp_path / "run", max_steps=6,
                         eval_every=3, dev_fraction=0.25)  # fmt: skip
    tuned = fit(config, base=base)
    assert isinstance(tuned.lm, PromptedSeq2SeqLM)
    records = _records(tmp_path / "run")
    assert records[-1]["eval_loss"] < records[0]["eval_loss"]
    dev = load_data(config).dev
    row = dev[0]
    ids = tuned.encoder.input_ids(row)
    tokens = tuned.lm.generate(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), MAX_NEW_TOKENS,
                               base.tokenizer.eos_token_id, stop_ids=tuned.encoder.stop_ids)[0]  # fmt: skip
    assert 0 < len(tokens) <= MAX_NEW_TOKENS
    assert tuned.predict([row])[0]["prediction"] == tuned.encoder.finish(tokens)


# --- the shipped SQuAD task on the real default model ----------------------------------------------------------------


@pytest.mark.slow
def test_squad_trains_and_evaluates_with_exact_match_and_f1_real_model(data_dir, tmp_path, capsys):
    run = tmp_path / "squad"
    small = ["--batch-size", "2", "--max-length", "96", "--max-new-tokens", "8", "--num-virtual-tokens", "4"]
    train = ["train", "--task", "squad", "--data-dir", str(data_dir), "--train-limit", "40", "--max-steps", "2",
             "--dev-fraction", "0.25", *small, "--dtype", "float32", "--no-progress", "--output", str(run)]  # fmt: skip
    assert main(train) == 0
    record = json.loads((run / checkpoint.META).read_text())
    assert record["task"]["name"] == "squad" and record["task"]["max_new_tokens"] == 8
    assert [r["step"] for r in _records(run)] == [2]
    capsys.readouterr()
    assert main(["eval", str(run), "--task", "squad", "--data-dir", str(data_dir), "--split", "dev", "--limit", "8",
                 "--dtype", "float32", "--no-progress"]) == 0  # fmt: skip
    (line,) = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert result["n"] == 8 and 0 <= result["exact_match"] <= 1 and 0 <= result["f1"] <= 1
    assert math.isfinite(result["loss"]) and result["method"] == "prompt-tuning"
