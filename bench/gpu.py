"""The engine against PEFT on one GPU: training step, classification and completion speed, each with its model
FLOPs utilisation, on random weights of the real configs of SmolLM2-135M, Qwen2.5-1.5B and Qwen2.5-7B.

    python bench/gpu.py                     # the three models in bfloat16: meant to take under 8 minutes on an H200
    python bench/gpu.py --quick             # smollm2-135m alone: a smoke test
    python bench/gpu.py --device cpu --quick --models tiny-llama   # a tiny model on the CPU: the bench runs

No network and no download: configs, weights (seeded) and tokenizer come from softprompt/synthetic.py, so the
figures measure shapes, not quality. Needs torch, transformers, peft, tokenizers (and accelerate, safetensors,
as transformers has them); nothing else. Both sides share one model as transformers builds it (SDPA attention),
the same prompt values, the same batches and AdamW, on the same device, in one run:

- train step: forward, backward and an AdamW step on the prompt, at 8 and 100 virtual tokens, on 8x64 and 32x128
  token rows (input + a 2-token label). Ours gets the rows through `lm.target_logprob_sum(sources, targets)`, as
  train.py does; PEFT's PromptTuningConfig model gets them with labels -100 on the input part, as its example.
- classify: 256 rows, 2 labels, 64 rows a forward. Ours ranks the labels (`tuned.predict`: packed rows, the
  prompt's keys/values kept between calls as a server keeps them); PEFT generates the longest label's tokens
  and matches the label word, as its example does.
- complete: 32 rows x 32 new greedy tokens, ours `lm.generate` against PEFT's `generate`. Its line also says
  how many tokens PEFT feeds the model per decoding step (`peft_step_tokens`): PEFT 0.21.2 on transformers 5
  prepends the prompt again at every step.

Each figure is the median of --repeats timed calls after --warmup, the device synchronised around each. Model
FLOPs utilisation is useful FLOPs per second over the GPU's dense bfloat16 peak (989 TFLOP/s on an H100 or H200;
--peak-tflops for others). Useful FLOPs count the work the task needs once, the same for both sides (attention's
own FLOPs are left out; they are small at these lengths); N is the parameter count of the blocks (embeddings and
output layer left out), H the output layer's:
- train: 4 N per token, not the usual 6 N: the base is frozen, so its backward computes the gradient of each
  layer's input (2 N) and no weight gradient. Tokens: every row's, plus the prompt's once (its keys/values are
  the same for every row, so repeating them per row is not useful work).
- classify: 2 N per token of every row and of its labels, plus 2 H per label token.
- complete: 2 N per input and new token, plus 2 H per new token.
Prints the device, versions and dtype, a JSON line per figure (and one per ours/PEFT pair, with the ratios), and
a table at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from softprompt.data.batching import pad_left  # noqa: E402
from softprompt.data.tasks import Task  # noqa: E402
from softprompt.models import synthetic  # noqa: E402
from softprompt.models.base import Base  # noqa: E402
from softprompt.models.prompt import SoftPrompt, init_prompt  # noqa: E402
from softprompt.prompts.tuned import TunedPrompt  # noqa: E402
from softprompt.utils import hardware  # noqa: E402

MODELS = ("smollm2-135m", "qwen2.5-1.5b", "qwen2.5-7b")
VIRTUAL_TOKENS = (8, 100)
TRAIN_SHAPES = ((8, 64), (32, 128))  # (rows, tokens a row: input + label)
LABEL_TOKENS = 2
CLASSIFY_ROWS, CLASSIFY_BATCH = 256, 64
COMPLETE_ROWS, NEW_TOKENS = 32, 32
TASK = Task("Text : {text} Label : ", "label", ["complaint", "no complaint"])
PEAK_TFLOPS = (("H200", 989), ("H100 PCIe", 756), ("H100 NVL", 835), ("H100", 989), ("A100", 312))  # bf16 dense


@dataclass
class Bench:
    """One model on one device, and what every figure needs of it."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    args: argparse.Namespace
    peak: float | None  # FLOP/s

    @property
    def blocks(self) -> int:
        return synthetic.parameter_count(self.model, embeddings=False)

    @property
    def head(self) -> int:
        return self.model.get_output_embeddings().weight.numel()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(bench: Bench, run: Callable[[int], object]) -> tuple[float, float | None, object]:
    """(median seconds of `run(i)` over the timed calls after the warm-up ones, peak GPU memory in GB, the
    first call's result)."""
    device, times, first = bench.device, [], None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(bench.args.warmup + bench.args.repeats):
        sync(device)
        start = time.perf_counter()
        result = run(i)
        sync(device)
        if i >= bench.args.warmup:
            times.append(time.perf_counter() - start)
        first = result if i == 0 else first
    memory = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return statistics.median(times), memory, first


def token_rows(tokenizer, count: int, length: Callable[[int], int], seed: int = 0) -> list[list[int]]:
    """`count` rows of the tokenizer's ids of the built-in text, row i `length(i)` tokens long, from spread-out
    places."""
    text = tokenizer(synthetic.CORPUS, add_special_tokens=False)["input_ids"]
    text = text * (1 + 4 * max(length(i) for i in range(count)) // len(text))
    rows = []
    for i in range(count):
        start = (seed * 7919 + i * 131) % (len(text) - length(i))
        rows.append(text[start : start + length(i)])
    return rows


def peft_wrapped(bench: Bench, matrix: torch.Tensor):
    """PEFT's prompt-tuning model on the shared base, its prompt set to `matrix`."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=matrix.shape[0])
    peft = get_peft_model(bench.model, config)
    with torch.no_grad():
        peft.prompt_encoder["default"].embedding.weight.copy_(matrix)
    return peft


def train_figures(bench: Bench, tuned: TunedPrompt, peft, matrix: torch.Tensor, rows: int, length: int) -> list:
    """One train-step figure per side: the same batches, the prompt reset to `matrix` first."""
    batches = [token_rows(bench.tokenizer, rows, lambda _: length, seed=s) for s in range(4)]
    prompts = {"ours": tuned.lm.prompt.embedding, "peft": peft.prompt_encoder["default"].embedding.weight}
    with torch.no_grad():
        for prompt in prompts.values():
            prompt.copy_(matrix)
    optimizers = {side: torch.optim.AdamW([prompt], lr=3e-2) for side, prompt in prompts.items()}

    def ours(i: int) -> torch.Tensor:
        batch = batches[i % len(batches)]
        loss = -tuned.lm.target_logprob_sum([r[:-LABEL_TOKENS] for r in batch], [r[-LABEL_TOKENS:] for r in batch])
        return _step(loss.sum() / (rows * LABEL_TOKENS), optimizers["ours"])

    def theirs(i: int) -> torch.Tensor:
        ids = torch.tensor(batches[i % len(batches)], device=bench.device)
        labels = ids.masked_fill(torch.arange(length, device=bench.device) < length - LABEL_TOKENS, -100)
        return _step(peft(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss, optimizers["peft"])

    flops = 4 * bench.blocks * (rows * length + matrix.shape[0])
    shape = {"figure": "train_step", "virtual_tokens": matrix.shape[0], "rows": rows, "length": length}
    return [_figure(bench, shape, side, run, flops, "steps/s", lambda s: 1 / s)
            for side, run in (("ours", ours), ("peft", theirs))]  # fmt: skip


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def _figure(bench: Bench, shape: dict, side: str, run: Callable, flops: float, unit: str, rate: Callable) -> dict:
    """Time `run` and write its figure: seconds, throughput in `unit` (`rate(seconds)`), useful TFLOP/s, MFU."""
    seconds, memory, first = timed(bench, run)
    figure = {"model": bench.name, **shape, "side": side, "median_s": seconds, unit: rate(seconds),
              "useful_tflops": flops / seconds / 1e12, "mfu": flops / seconds / bench.peak if bench.peak else None,
              "peak_memory_gb": memory}  # fmt: skip
    if isinstance(first, torch.Tensor):
        figure["first_loss"] = float(first)
    elif first is not None:
        figure["check"] = first
    print(json.dumps(figure), flush=True)
    return figure


def classify_figures(bench: Bench, tuned: TunedPrompt, peft) -> list:
    """Ours ranks the labels (`score_rows`, as `tuned.predict` does); PEFT generates the longest label's tokens
    and matches the word. Both get the same token ids."""
    rows = [{"text": bench.tokenizer.decode(r)} for r in token_rows(bench.tokenizer, CLASSIFY_ROWS, _row_length)]
    inputs = [tuned.encoder.input_ids(row) for row in rows]
    labels, words = tuned.encoder.label_ids, [w.lower() for w in TASK.label_words]
    tokenizer, device = bench.tokenizer, bench.device

    def ours(_: int) -> dict:
        scores = tuned.lm.score_rows(inputs, [labels] * len(inputs), batch_size=CLASSIFY_BATCH)
        return {"labels": [TASK.labels[int(row.argmax())] for row in scores[:3]]}

    def theirs(_: int) -> dict:
        unmatched = 0
        for start in range(0, len(inputs), CLASSIFY_BATCH):
            ids, mask = pad_left(inputs[start : start + CLASSIFY_BATCH], tokenizer.pad_token_id, device=device)
            out = peft.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(map(len, labels)),
                                do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            texts = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
            unmatched += sum(text.strip().lower() not in words for text in texts)
        return {"unmatched": unmatched}

    tokens = sum(map(len, inputs)) + len(inputs) * sum(map(len, labels))
    flops = 2 * bench.blocks * tokens + 2 * bench.head * len(inputs) * sum(map(len, labels))
    shape = {"figure": "classify", "virtual_tokens": tuned.lm.n_prompt, "rows": len(rows), "labels": len(labels)}
    return [_figure(bench, shape, side, run, flops, "rows/s", lambda s: len(rows) / s)
            for side, run in (("ours", ours), ("peft", theirs))]  # fmt: skip


def _row_length(i: int) -> int:
    return 8 + (i * 7) % 33  # 8 to 40 tokens


def complete_figures(bench: Bench, tuned: TunedPrompt, peft) -> list:
    """Greedy completions of the same left-padded rows, exactly NEW_TOKENS each on both sides."""
    rows = token_rows(bench.tokenizer, COMPLETE_ROWS, _row_length, seed=1)
    ids, mask = pad_left(rows, bench.tokenizer.pad_token_id, device=bench.device)
    made, step_tokens = {}, peft_step_tokens(peft, ids, mask, bench.tokenizer.pad_token_id)

    def ours(_: int) -> None:
        made["ours"] = tuned.lm.generate(ids, mask, NEW_TOKENS, None)

    def theirs(_: int) -> dict:
        out = peft.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                            do_sample=False, pad_token_id=bench.tokenizer.pad_token_id)  # fmt: skip
        made["peft"] = out[:, ids.shape[1] :].tolist()
        pairs = list(zip(made["ours"], made["peft"]))
        return {"rows_same_tokens": sum(a == b for a, b in pairs) / len(pairs),
                "rows_same_first_token": sum(a[:1] == b[:1] for a, b in pairs) / len(pairs),
                "peft_tokens_fed_per_step": step_tokens}  # fmt: skip

    new = len(rows) * NEW_TOKENS
    flops = 2 * bench.blocks * (sum(map(len, rows)) + new) + 2 * bench.head * new
    shape = {"figure": "complete", "virtual_tokens": tuned.lm.n_prompt, "rows": len(rows), "new_tokens": NEW_TOKENS}
    return [_figure(bench, shape, side, run, flops, "tokens/s", lambda s: new / s)
            for side, run in (("ours", ours), ("peft", theirs))]  # fmt: skip


def peft_step_tokens(peft, ids: torch.Tensor, mask: torch.Tensor, pad_id: int) -> int:
    """How many tokens PEFT feeds the model at its second decoding step: 1 where it decodes from its cache, the
    prompt's tokens + 1 where it prepends the prompt again at every step (PEFT 0.21.2 on transformers 5, which
    renamed `past_key_values` to `cache`: every token after the first is then wrong, and each costs the prompt's
    tokens again), so a reader knows which PEFT the completion figure timed."""
    fed: list[int] = []

    def hook(module, args, kwargs) -> None:
        inputs = kwargs.get("inputs_embeds") if kwargs.get("inputs_embeds") is not None else kwargs.get("input_ids")
        fed.append(inputs.shape[1])

    handle = peft.get_base_model().base_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        peft.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=2, min_new_tokens=2,
                      do_sample=False, pad_token_id=pad_id)  # fmt: skip
    finally:
        handle.remove()
    return fed[1]


def ratio(pair: list[dict]) -> dict:
    """Ours against PEFT on one figure: above 1, ours is faster."""
    ours, theirs = pair
    keys = ("figure", "virtual_tokens", "rows", "length", "labels", "new_tokens")
    line = {"ratio": "ours/peft", "model": ours["model"], **{k: ours[k] for k in keys if k in ours},
            "speed": theirs["median_s"] / ours["median_s"]}  # fmt: skip
    if ours["peak_memory_gb"] and theirs["peak_memory_gb"]:
        line["peak_memory"] = ours["peak_memory_gb"] / theirs["peak_memory_gb"]
    print(json.dumps(line), flush=True)
    return line


def run_model(name: str, device: torch.device, dtype: torch.dtype, args, peak: float | None) -> list[list[dict]]:
    """Every figure of one model: per prompt length, the train steps, classification and completion."""
    start = time.perf_counter()
    model = synthetic.random_model(name, dtype=dtype, device=device, attn_implementation="sdpa")
    bench = Bench(name, model, synthetic.tokenizer(), device, args, peak)
    print(json.dumps({"model": name, "parameters": synthetic.parameter_count(model), "blocks": bench.blocks,
                      "built_s": round(time.perf_counter() - start, 1)}), flush=True)  # fmt: skip
    pairs = []
    for n in VIRTUAL_TOKENS:
        matrix = init_prompt(n, model.get_input_embeddings(), bench.tokenizer, "sampled-vocab", seed=n).embedding
        tuned = TunedPrompt.build(Base(model, bench.tokenizer), SoftPrompt(matrix), TASK)
        peft = peft_wrapped(bench, matrix)
        for rows, length in TRAIN_SHAPES:
            pairs.append(train_figures(bench, tuned, peft, matrix, rows, length))
        with torch.no_grad():
            tuned.lm.prompt.embedding.copy_(matrix)
            peft.prompt_encoder["default"].embedding.weight.copy_(matrix)
        with torch.inference_mode():
            pairs.append(classify_figures(bench, tuned, peft))
            pairs.append(complete_figures(bench, tuned, peft))
        del peft
    del model, bench
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return pairs


def peak_flops(device: torch.device, dtype: torch.dtype, tflops: float | None) -> float | None:
    """The device's dense peak (FLOP/s): --peak-tflops, else the GPU's bfloat16 peak by its name (a float32 or CPU
    run has no peak here, so no MFU)."""
    if tflops:
        return tflops * 1e12
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    return next((value * 1e12 for key, value in PEAK_TFLOPS if key in name), None)


def versions() -> dict:
    import peft
    import tokenizers
    import transformers

    return {"transformers": transformers.__version__, "peft": peft.__version__, "tokenizers": tokenizers.__version__}


def table(pairs: list[list[dict]]) -> str:
    """The figures side by side: seconds a call, throughput, MFU, and ours/PEFT speed."""
    head = f"{'model':<14} {'figure':<10} {'shape':<16} {'ours s':>9} {'peft s':>9} {'ours MFU':>9} {'peft MFU':>9}"
    lines = [head + f" {'speed ours/peft':>16}"]
    for ours, theirs in pairs:
        shape = f"P{ours['virtual_tokens']} " + (
            f"{ours['rows']}x{ours['length']}" if "length" in ours else f"{ours['rows']} rows"
        )
        mfu = [f"{f['mfu']:.1%}" if f["mfu"] is not None else "-" for f in (ours, theirs)]
        lines.append(f"{ours['model']:<14} {ours['figure']:<10} {shape:<16} {ours['median_s']:>9.4f} "
                     f"{theirs['median_s']:>9.4f} {mfu[0]:>9} {mfu[1]:>9} "
                     f"{theirs['median_s'] / ours['median_s']:>15.2f}x")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help=f"comma-separated, of {', '.join(synthetic.CONFIGS)} (default: the real 3)")
    parser.add_argument("--quick", action="store_true", help="smollm2-135m alone (unless --models), 3 repeats")
    parser.add_argument("--device", default="auto", help=hardware.DEVICE_HELP)
    parser.add_argument("--dtype", choices=tuple(hardware.DTYPES), help="default: bfloat16 on a GPU, float32 on a CPU")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per figure (default 5; --quick 3)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak for the dtype, in TFLOP/s")
    args = parser.parse_args()
    device = hardware.resolve_device(args.device)
    dtype = hardware.DTYPES[args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    models = args.models.split(",") if args.models else ["smollm2-135m"] if args.quick else list(MODELS)
    args.repeats = args.repeats or (3 if args.quick else 5)
    peak = peak_flops(device, dtype, args.peak_tflops)
    facts = {"machine": hardware.describe(device), "dtype": str(dtype).removeprefix("torch."), **versions()}
    print(json.dumps({**facts, "peak_tflops": peak / 1e12 if peak else None, "models": models}), flush=True)
    started = time.perf_counter()
    pairs = [pair for name in models for pair in run_model(name, device, dtype, args, peak)]
    for pair in pairs:
        ratio(pair)
    print(table(pairs))
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
