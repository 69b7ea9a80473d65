"""The device path gives the CPU's results: every prompted-model path on tiny random-weight Llama, Qwen2 and T5
models (synthetic.py), float32, the same weights on the CPU and on the device.

`make test-gpu` runs it on a GPU machine (no network or data needed). SOFTPROMPT_TEST_DEVICE=cpu runs the same
tests with the CPU as "the device": a CPU-against-CPU run checks only that the test code itself runs.
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import os

import pytest
import torch

from softprompt.data.batching import pad_left
from softprompt.data.loading import load_data
from softprompt.data.tasks import Task
from softprompt.engine.prompted import ScoringMode
from softprompt.models import synthetic
from softprompt.models.base import Base, load_base
from softprompt.models.prompt import SoftPrompt, init_prompt
from softprompt.prompts.tuned import TunedPrompt
from softprompt.serve.batcher import Batcher, Job
from softprompt.serve.config import ServeConfig
from softprompt.training import train
from softprompt.training.train_config import TrainConfig

DEVICE = os.environ.get("SOFTPROMPT_TEST_DEVICE", "cuda")
CUDA = DEVICE.startswith("cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        CUDA and not torch.cuda.is_available(), reason="no CUDA device here: run `make test-gpu` on a GPU machine"
    ),
]
TOLERANCE = 1e-3
TASKS = [
    Task("Tweet text : {text} Label : ", "label", ["complaint", "no complaint"]),
    Task("Review: {text} Sentiment:", "label", ["0", "1"], {"0": "negative", "1": "positive"}),
    Task("News: {text} Topic:", "label", ["world", "sports", "business"]),
]
TEXTS = [
    "@united lost my bag again and nobody answers the phone",
    "what a lovely flight",
    "the match ended in a draw after extra time, and the fans went home in the rain",
    "ok",
    "shares fell sharply after the earnings report",
]
PROMPT_TOKENS = (6, 3, 1)  # three prompts of different lengths, one per task


@pytest.fixture(scope="module", params=synthetic.TINY)
def bases(request, tmp_path_factory):
    """(CPU base, device base): one saved random-weight folder, loaded on each side."""
    folder = synthetic.save_folder(tmp_path_factory.mktemp(request.param), request.param)
    return load_base(str(folder), "float32", device="cpu"), load_base(str(folder), "float32", device=DEVICE)


def _side(base, matrices) -> list[TunedPrompt]:
    """One TunedPrompt per task on `base`, the i-th with prompt matrix i (moved to the base's device)."""
    model, tokenizer = base
    return [TunedPrompt.build(Base(model, tokenizer), SoftPrompt(m), task) for m, task in zip(matrices, TASKS)]


@pytest.fixture(scope="module")
def sides(bases) -> tuple[list[TunedPrompt], list[TunedPrompt]]:
    """The same three prompts on the CPU and on the device."""
    model, tokenizer = bases[0]
    embeddings = model.get_input_embeddings()
    matrices = [init_prompt(n, embeddings, tokenizer, "sampled-vocab", seed=i).embedding.detach()
                for i, n in enumerate(PROMPT_TOKENS)]  # fmt: skip
    cpu, dev = _side(bases[0], matrices), _side(bases[1], matrices)
    assert dev[0].lm.prompt.embedding.device.type == torch.device(DEVICE).type
    return cpu, dev


def _rows(tuned: TunedPrompt) -> list[list[int]]:
    return [tuned.encoder.input_ids({"text": text}) for text in TEXTS]


def _mixed(side: list[TunedPrompt]) -> tuple[list[list[int]], list, list]:
    """Rows of three tasks interleaved: (rows, their prompted models, their labels)."""
    owners = [side[i % len(side)] for i in range(2 * len(TEXTS))]
    rows = [tuned.encoder.input_ids({"text": TEXTS[i % len(TEXTS)]}) for i, tuned in enumerate(owners)]
    return rows, [t.lm for t in owners], [t.encoder.label_ids for t in owners]


def _assert_same_scores(cpu: list[torch.Tensor], dev: list[torch.Tensor]) -> None:
    for a, b in zip(cpu, dev):
        assert b.device.type == torch.device(DEVICE).type
        assert torch.allclose(a, b.cpu(), atol=TOLERANCE), (a, b)
        assert int(a.argmax()) == int(b.argmax())


@pytest.mark.parametrize("mode", list(ScoringMode))
@torch.no_grad()
def test_every_scoring_mode_scores_as_on_the_cpu(sides, mode):
    for cpu, dev in zip(*sides):
        rows, labels = _rows(cpu), [cpu.encoder.label_ids] * len(TEXTS)
        _assert_same_scores(cpu.lm.score_rows(rows, labels, mode=mode), dev.lm.score_rows(rows, labels, mode=mode))


@pytest.mark.parametrize("mode", list(ScoringMode))
@torch.no_grad()
def test_a_mixed_batch_of_three_prompts_scores_as_on_the_cpu(sides, mode):
    (rows, cpu_prompts, labels), (_, dev_prompts, _) = _mixed(sides[0]), _mixed(sides[1])
    cpu = cpu_prompts[0].score_rows(rows, labels, cpu_prompts, batch_size=4, mode=mode)
    _assert_same_scores(cpu, dev_prompts[0].score_rows(rows, labels, dev_prompts, batch_size=4, mode=mode))


def _generate(lm, rows, prompts=None, tokens: int = 8, eos: int | None = None, stop_ids=()) -> list[list[int]]:
    ids, mask = pad_left(rows, 0, device=lm.device)
    return lm.generate(ids, mask, tokens, eos, prompts=prompts, stop_ids=stop_ids)


def test_greedy_generation_is_token_for_token_the_cpus(sides):
    for cpu, dev in zip(*sides):
        rows = _rows(cpu)
        assert _generate(dev.lm, rows[:1]) == _generate(cpu.lm, rows[:1])
        assert _generate(dev.lm, rows) == _generate(cpu.lm, rows)


def test_generation_ended_at_stop_tokens_is_the_cpus(sides):
    """Rows end after a stop token (a text task's, as /v1/predict decodes it) on the device as on the CPU."""
    (rows, cpu_prompts, _), (_, dev_prompts, _) = _mixed(sides[0]), _mixed(sides[1])
    eos = cpu_prompts[0].model.config.eos_token_id
    stops = sorted({row[2] for row in _generate(cpu_prompts[0], rows, cpu_prompts, eos=eos) if len(row) > 2})
    ended = _generate(cpu_prompts[0], rows, cpu_prompts, eos=eos, stop_ids=stops)
    assert _generate(dev_prompts[0], rows, dev_prompts, eos=eos, stop_ids=stops) == ended
    assert any(len(row) < 8 for row in ended)


def test_greedy_generation_under_mixed_prompts_is_token_for_token_the_cpus(sides):
    (rows, cpu_prompts, _), (_, dev_prompts, _) = _mixed(sides[0]), _mixed(sides[1])
    assert _generate(dev_prompts[0], rows, dev_prompts) == _generate(cpu_prompts[0], rows, cpu_prompts)


@pytest.mark.parametrize("mode", [ScoringMode.PACKED, ScoringMode.REFERENCE])
def test_the_prompts_gradient_is_the_cpus(sides, mode):
    grads = []
    for tuned in (sides[0][0], sides[1][0]):
        rows = _rows(tuned)
        targets = [tuned.encoder.label_ids[i % 2] for i in range(len(rows))]
        tuned.lm.prompt.embedding.grad = None
        tuned.lm.target_logprob_sum(rows, targets, mode=mode).sum().backward()
        grads.append(tuned.lm.prompt.embedding.grad.cpu())
        tuned.lm.prompt.embedding.grad = None
    cpu, dev = grads
    assert float(cpu.norm()) > 0
    assert float((dev - cpu).norm() / cpu.norm()) < TOLERANCE


def _train_file(path) -> str:
    """Sixteen labelled tweets, written where the GPU machine has them (it has no shared data)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(16):
            writer.writerow([f"{TEXTS[i % len(TEXTS)]} #{i}", TASKS[0].labels[i % 2]])
    return str(path)


def test_twenty_training_steps_end_on_the_cpus_prompt(bases, tmp_path, monkeypatch):
    if importlib.util.find_spec("matplotlib") is None:  # the curves' figure only; the GPU machine may lack it
        monkeypatch.setattr(train, "plot_curves", lambda *args: None)
    data = _train_file(tmp_path / "train.csv")
    prompts = []
    for side, (base, device) in enumerate(zip(bases, ("cpu", DEVICE))):
        config = TrainConfig(train=data, template=TASKS[0].template, label_field="label", num_virtual_tokens=4,
                             max_steps=20, batch_size=4, seed=3, dtype="float32", device=device,
                             output=str(tmp_path / f"run{side}"), progress=False)  # fmt: skip
        tuned = train.fit(config, base=base)
        assert tuned.lm.prompt.embedding.device.type == torch.device(device).type
        prompts.append(tuned.lm.prompt.embedding.detach().cpu())
    task, rows, _ = load_data(config)
    start = train.make_tuned(config, task, rows, bases[0]).lm.prompt.embedding.detach()
    assert not torch.allclose(prompts[0], start, atol=TOLERANCE)  # it trained
    assert torch.allclose(prompts[1], prompts[0], atol=TOLERANCE, rtol=TOLERANCE)


def _jobs(dev: list[TunedPrompt], cpu: list[TunedPrompt]) -> list[tuple[Job, list[str], TunedPrompt]]:
    """Classify and greedy completion jobs of every task on the device, interleaved, each with the texts of its
    rows and its task's prompt on the CPU."""
    params = {"max_tokens": 6, "temperature": 0.0, "top_p": 1.0}
    jobs = []
    for i, (tuned, on_cpu) in enumerate(zip(dev, cpu)):
        for kind, texts in (("classify", TEXTS[i : i + 3]), ("complete", TEXTS[i + 1 : i + 3])):
            rows = [tuned.encoder.input_ids({"text": text}) for text in texts]
            jobs.append((Job(kind, tuned, rows, dict(params) if kind == "complete" else {}), texts, on_cpu))
    return jobs


async def _answer_together(jobs: list[Job]) -> tuple[list, list[tuple[int, int]]]:
    """Every job queued at once, so one worker batch takes them all; the answers, and each batch's (rows, jobs)."""
    batches: list[tuple[int, int]] = []
    config = ServeConfig(prompts="unused", max_batch=256, max_wait_ms=500)
    batcher = Batcher(config, on_batch=lambda rows, n: batches.append((rows, n)))
    try:
        return await asyncio.gather(*(batcher.enqueue(job) for job in jobs)), batches
    finally:
        batcher.close()


def test_a_mixed_task_batch_through_the_batcher_answers_as_offline(sides):
    jobs = _jobs(sides[1], sides[0])
    answers, batches = asyncio.run(_answer_together([job for job, *_ in jobs]))
    assert batches[0][1] == len(jobs)  # every task's classify and complete jobs ran in one batch
    for (job, texts, on_cpu), answer in zip(jobs, answers):
        if job.kind == "classify":
            rows = [{"text": text} for text in texts]
            offline = torch.tensor([list(p["scores"].values()) for p in job.tuned.predict(rows)])
            assert torch.allclose(torch.tensor(answer), offline, atol=TOLERANCE)
            assert [job.tuned.task.labels[int(i)] for i in torch.tensor(answer).argmax(1)] == [
                p["label"] for p in on_cpu.predict(rows)
            ]
        else:
            offline = _generate(job.tuned.lm, job.rows, tokens=6, eos=job.tuned.tokenizer.eos_token_id)
            assert [generated.tokens for generated in answer] == offline


@pytest.mark.skipif(not CUDA, reason="the fused SDPA kernels are CUDA's")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_packed_mask_reaches_a_fused_sdpa_kernel(tmp_path, dtype, record_property):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    folder = synthetic.save_folder(tmp_path / "tiny-llama", "tiny-llama")
    model, tokenizer = load_base(str(folder), dtype, device=DEVICE)
    assert model.config._attn_implementation == "sdpa"
    matrix = init_prompt(6, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=0).embedding.detach()
    tuned = TunedPrompt.build(Base(model, tokenizer), SoftPrompt(matrix), TASKS[0])
    rows, labels = _rows(tuned), [tuned.encoder.label_ids] * len(TEXTS)
    fused = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    with torch.no_grad(), sdpa_kernel(fused), profile(activities=[ProfilerActivity.CUDA]) as prof:
        for mode in (ScoringMode.PACKED, ScoringMode.PACKED_INLINE):  # the math fallback would raise here
            tuned.lm.score_rows(rows, labels, mode=mode)
        torch.cuda.synchronize()
    kernels = sorted({e.key for e in prof.key_averages() if any(k in e.key.lower() for k in ATTENTION_KERNELS)})
    record_property("sdpa_kernels", kernels)
    print(f"{dtype}: attention kernels {kernels}")
    assert kernels, "no fused attention kernel ran"


ATTENTION_KERNELS = ("fmha", "flash", "cudnn", "sdpa", "attention")  # profiler kernel-name parts
