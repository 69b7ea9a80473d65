"""Random-weight models on real configs, and a small tokenizer built in code: tests and benches with no download.

What a GPU check needs of a model is its shapes (a bench's speed and memory) or the same weights on two devices
(a test's agreement), never good weights; the GPU machine has no network and only a few MiB of the tree travel
to it. So the configs of the models we bench are written out here, weights are drawn from a seed, and the
tokenizer is a byte-level BPE trained, deterministically, on the fixed text below: it tokenizes any text (its
alphabet is every byte), and its ids lie below every real vocabulary's size, so they are valid ids for all of
them. Needs torch, transformers and tokenizers only.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

VOCAB_SIZE = 1024  # the tokenizer's ids, special tokens included; the tiny models' vocabulary
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}  # ids 0..3

CORPUS = """\
Prompt tuning learns a few soft prompt vectors in front of the input embeddings of a frozen language model.
The model itself never changes: only the prompt is trained, so one copy of the model can serve many tasks,
each with its own small prompt. As models grow, prompt tuning comes close to the quality of model tuning.
A tweet that complains about a lost bag, a delayed flight or a rude agent is labelled complaint; a tweet
that thanks the crew, praises the food or asks a question is labelled no complaint. Tweet text : the flight
was delayed three hours and nobody told us anything. Label : complaint. Tweet text : what a lovely flight,
thank you for the upgrade! Label : no complaint. Sentence : a gripping, funny and warm film. Label : positive.
Sentence : the plot is thin and the acting is worse. Label : negative. Question : who wrote the book?
The server gathers requests of many tasks that arrive within a few milliseconds and runs them in one batch:
rows are packed end to end, each row sees only its own prompt and its own text, and every label is scored in
the same forward pass. Completions are decoded token by token, greedy or sampled, until the end of text.
Training runs the prompt through the model, computes the loss on the label tokens only, and sends the
gradient back to the prompt; the optimizer then updates those few numbers, step after step, epoch after
epoch, while the weights of the base model stay exactly as they were loaded from the checkpoint.
On a graphics card the same code runs with every tensor on the device: matrix multiplies in bfloat16, the
attention in a fused kernel, and the scores back on the host as plain floats for the response.
My suitcase arrived broken, the handle snapped and the zipper is gone; customer service hung up twice.
Loved the new lounge at the airport: quiet chairs, fresh coffee, friendly staff and quick boarding.
Why does every train to the city leave late on Mondays? Refund my ticket, please, I waited forty minutes.
Our weather today: sunny mornings, cloudy afternoons, light rain by evening and strong winds near the coast.
Recipes for dinner: roast chicken with lemon, garlic and thyme; a green salad; warm bread and butter.
History tells of kings, queens, empires and revolutions; science measures atoms, planets, cells and genes.
Numbers such as one, two, three, four, five, six, seven, eight, nine, ten, hundred, thousand and million.
Children played football in the park while their parents talked about school, music, holidays and work.
Is this review positive or negative? Does the premise entail the hypothesis? Answer yes or no, true or false.
Write a short summary, translate the sentence into French, or continue the story in the same style.
Mountains, rivers, forests and deserts cover the continents; oceans hold whales, sharks, corals and ships.
"""

# Transformers config kwargs as each model's own config.json has them (the released Hugging Face checkpoints);
# token ids come from the tokenizer above.
CONFIGS: dict[str, dict] = {
    "smollm2-135m": dict(  # HuggingFaceTB/SmolLM2-135M-Instruct
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, hidden_act="silu", max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        tie_word_embeddings=True, initializer_range=0.041666666666666664,
    ),
    "qwen2.5-1.5b": dict(  # Qwen/Qwen2.5-1.5B-Instruct
        model_type="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, hidden_act="silu", max_position_embeddings=32768,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True, use_sliding_window=False, max_window_layers=21,
    ),
    "qwen2.5-7b": dict(  # Qwen/Qwen2.5-7B-Instruct
        model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, hidden_act="silu", max_position_embeddings=32768,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=False, use_sliding_window=False, max_window_layers=28,
    ),
    # Tiny ones for tests: two layers, grouped-query attention, one tied and one untied output layer. Their
    # weights are drawn wider than the released models' (10x Llama's 0.02, 5x T5's factor), so that what they
    # generate depends on them: at 0.02 a tied two-layer model only repeats its last token, whatever its weights.
    "tiny-llama": dict(
        model_type="llama", vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        initializer_range=0.2,
    ),
    "tiny-qwen2": dict(
        model_type="qwen2", vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, initializer_range=0.2,
    ),
    "tiny-t5": dict(
        model_type="t5", vocab_size=VOCAB_SIZE, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
        num_heads=4, initializer_factor=5.0,
    ),
}  # fmt: skip
TINY = tuple(name for name in CONFIGS if name.startswith("tiny-"))


@functools.cache
def _tokenizer_json() -> str:
    """The trained tokenizer, serialised: training takes a few milliseconds, but once per process is enough.
    The BPE trainer breaks ties between equally frequent pairs by the pair itself, so the merges, and with them
    the ids, are the same on every run and machine."""
    bpe = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    return bpe.to_str()


def tokenizer() -> PreTrainedTokenizerFast:
    """A fresh tokenizer (callers may change it, e.g. its pad token): byte-level BPE, bos/eos/pad/unk set, no
    special tokens added to the text (as SmolLM2's and Qwen's tokenizers add none)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        clean_up_tokenization_spaces=False,
        **SPECIAL,
    )


def config(name: str) -> PretrainedConfig:
    """The named config, with the tokenizer's special-token ids (a T5 decoder starts from its pad token)."""
    if name not in CONFIGS:
        raise ValueError(f"no synthetic model {name!r}; one of {', '.join(CONFIGS)}")
    kwargs = dict(CONFIGS[name])
    tok = tokenizer()
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    if kwargs["model_type"] == "t5":
        ids["decoder_start_token_id"] = tok.pad_token_id
        del ids["bos_token_id"]
    return AutoConfig.for_model(**kwargs, **ids)


def random_model(
    name: str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> PreTrainedModel:
    """A frozen, eval-mode model of the named config with weights drawn from `seed`, made directly on `device`
    (a 7B in bfloat16 is 15 GB: it never passes through host memory). The same seed gives the same weights on
    one device type; to hold the same weights on two devices, make them on one and copy (or `save_folder`).
    The "meta" device gives the shapes alone, to count parameters."""
    cfg = config(name)
    model_cls = AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else AutoModelForCausalLM
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_cls.from_config(cfg, dtype=dtype, attn_implementation=attn_implementation)
    model.eval()
    model.requires_grad_(False)
    return model


def parameter_count(model: PreTrainedModel, embeddings: bool = True) -> int:
    """Parameters, a tied matrix once; without `embeddings`, those of the blocks alone (less the input
    embeddings and an untied output layer: Qwen's "non-embedding" count, 6.53B of the 7.6B)."""
    params = {id(p): p.numel() for p in model.parameters()}
    if not embeddings:
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            params.pop(id(module.weight), None)
    return sum(params.values())


def save_folder(path: str | Path, name: str, seed: int = 0) -> Path:
    """A Hugging Face model folder (config, safetensors weights, the tokenizer) of a random-weight float32 model,
    which `softprompt.models.load_base(str(path))` loads; meant for the tiny models."""
    path = Path(path)
    random_model(name, seed=seed).save_pretrained(path)
    tokenizer().save_pretrained(path)
    return path
