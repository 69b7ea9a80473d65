"""SoftPrompt: the trainable [n_tokens, hidden] matrix and the ways to initialise it (Lester et al. §3.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..utils.errors import ParameterError, SoftpromptError

INITS = ("random-uniform", "first-vocab", "sampled-vocab", "text", "class-label")
COMMON_VOCAB = 5000


class SoftPrompt(nn.Module):
    """A float32 matrix of virtual-token embeddings, whatever the base model's dtype.

    Kept in float32 so that a bfloat16 base still gets full-precision updates of the few
    parameters we train.
    """

    def __init__(self, embedding: torch.Tensor) -> None:
        super().__init__()
        if embedding.dim() != 2:
            raise SoftpromptError(f"a soft prompt is a 2-D matrix, got shape {tuple(embedding.shape)}")
        self.embedding = nn.Parameter(embedding.detach().to(torch.float32).clone())

    @classmethod
    def frozen(cls, embedding: torch.Tensor) -> SoftPrompt:
        """A prompt that is not trained (prompt design's examples, model tuning's empty prompt), so its
        keys/values are kept between calls like a trained prompt's at serving time."""
        prompt = cls(embedding)
        prompt.embedding.requires_grad_(False)
        return prompt

    @property
    def n_tokens(self) -> int:
        return self.embedding.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.embedding.shape[1]

    def forward(self) -> torch.Tensor:
        return self.embedding


def ordinary_token_ids(tokenizer, vocab_size: int) -> torch.Tensor:
    """Ids of the `COMMON_VOCAB` most common ordinary tokens.

    Byte-level BPE and SentencePiece vocabularies are built by merging the most frequent pairs
    first, so a lower id means a more frequent piece; we rank by id and drop special and added
    tokens, and pieces that decode to nothing printable (byte fallbacks, control tokens).
    """
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    picked: list[int] = []
    for token_id in range(min(vocab_size, len(tokenizer))):
        if token_id in special:
            continue
        text = tokenizer.decode([token_id])
        if not text.strip() or "\ufffd" in text:
            continue
        picked.append(token_id)
        if len(picked) == COMMON_VOCAB:
            break
    return torch.tensor(picked, dtype=torch.long, device="cpu")


def _embed(embeddings: nn.Module, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Rows as the model itself embeds them (Gemma scales its embeddings inside the module), on its device."""
    with torch.no_grad():
        return embeddings(torch.as_tensor(ids, dtype=torch.long, device=embeddings.weight.device)).to(torch.float32)


def _sampled_vocab(n: int, embeddings: nn.Module, tokenizer, generator: torch.Generator) -> torch.Tensor:
    pool = ordinary_token_ids(tokenizer, embeddings.num_embeddings)
    picks = pool[torch.randperm(len(pool), generator=generator, device="cpu")[:n]]
    if n > len(pool):
        picks = pool[torch.randint(len(pool), (n,), generator=generator, device="cpu")]
    return _embed(embeddings, picks)


def _text_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def init_prompt(
    n_tokens: int,
    embeddings: nn.Module,
    tokenizer,
    init: str = "random-uniform",
    *,
    seed: int = 0,
    init_text: str | None = None,
    label_words: Sequence[str] = (),
    init_range: float = 0.5,
) -> SoftPrompt:
    """Build a SoftPrompt with one of `INITS` on the embeddings' device; the same seed always gives the same
    matrix, on any device (the random draws come from a CPU generator)."""
    if n_tokens < 1:
        raise ParameterError("num_virtual_tokens", "must be at least 1, got {n}", n=n_tokens)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    hidden = embeddings.embedding_dim
    if init == "random-uniform":
        matrix = (torch.rand(n_tokens, hidden, generator=generator, device="cpu") * 2 - 1) * init_range
        matrix = matrix.to(embeddings.weight.device)
    elif init == "first-vocab":
        matrix = _embed(embeddings, list(range(n_tokens)))
    elif init == "sampled-vocab":
        matrix = _sampled_vocab(n_tokens, embeddings, tokenizer, generator)
    elif init == "text":
        if not init_text:
            raise ParameterError("init_text", "needed when {init} is 'text'")
        ids = _text_ids(tokenizer, init_text)
        if not ids:
            raise ParameterError("init_text", "{text!r} has no tokens", text=init_text)
        ids = (ids * (n_tokens // len(ids) + 1))[:n_tokens]
        matrix = _embed(embeddings, ids)
    elif init == "class-label":
        if not label_words:
            raise ParameterError("init", "'class-label' needs the task's labels")
        rows = [_embed(embeddings, _text_ids(tokenizer, word)).mean(0) for word in label_words]
        matrix = torch.stack(rows[:n_tokens])
        if n_tokens > len(rows):
            rest = _sampled_vocab(n_tokens - len(rows), embeddings, tokenizer, generator)
            matrix = torch.cat([matrix, rest])
    else:
        raise ParameterError.not_one_of("init", init, INITS)
    return SoftPrompt(matrix)
