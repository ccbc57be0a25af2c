"""Next-token predictions and sampled continuations for any workbench model (what the Playground draws).

Ids the tokenizer cannot decode (a padded embedding, as in Pythia, Qwen or Phi checkpoints) are labelled with the
placeholder ``<id N>``; :func:`sample_continuation` can mask them (``mask_undecodable=True``), and by default samples
from the model's own distribution as HF ``generate`` does (see :mod:`workbench.decoding.strategies`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .interface import ModelError


@dataclass
class PromptIds:
    """A prompt fitted to the context: ``ids`` are the kept tokens; ``dropped`` counts tokens cut from the left."""

    ids: list[int]
    dropped: int
    n_tokens: int

    @property
    def truncated(self) -> bool:
        return self.dropped > 0


@dataclass
class NextToken:
    """The top-``k`` next tokens after a prompt: ids, printable labels and probabilities (descending).

    ``decodable[i]`` is False when ``ids[i]`` has no text in the tokenizer (its label is then ``<id N>``);
    ``undecodable_mass`` is the total probability of all such ids (not only those in the top ``k``).
    """

    prompt: PromptIds
    ids: list[int]
    labels: list[str]
    probs: list[float]
    entropy_bits: float
    decodable: list[bool] | None = None
    undecodable_mass: float = 0.0


@dataclass
class Continuation:
    prompt: PromptIds
    ids: list[int]
    text: str
    seed: int
    temperature: float


def _tokenizer(model):
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ModelError("this model has no tokenizer: pass token ids, or wrap it with a tokenizer")
    return tok


def fit_prompt(model, text: str, reserve: int = 0) -> PromptIds:
    """Tokenize ``text`` and keep the last ``block_size - reserve`` tokens (left truncation)."""
    ids = _tokenizer(model).encode(text)
    room = model.config.block_size - reserve
    if room < 1:
        raise ModelError(f"no room for a prompt: context {model.config.block_size}, {reserve} tokens reserved")
    dropped = max(0, len(ids) - room)
    return PromptIds(ids[dropped:], dropped, len(ids))


@torch.no_grad()
def next_token(model, text: str, k: int = 10) -> NextToken:
    """The ``k`` most likely next tokens after ``text`` (empty text is an error: there is nothing to condition on)."""
    if not text:
        raise ModelError("the prompt is empty: type some text to condition on")
    if k < 1:
        raise ModelError(f"k must be >= 1, got {k}")
    prompt = fit_prompt(model, text)
    logits = model.forward(torch.tensor([prompt.ids]), capture=False).logits[0, -1].float()
    logp = logits.log_softmax(-1)
    p = logp.exp()
    top = p.topk(min(k, p.numel()))
    tok = _tokenizer(model)
    ids = top.indices.tolist()
    entropy = float(-(p * logp).nan_to_num().sum() / torch.log(torch.tensor(2.0)))
    bad = tok.undecodable_ids(p.numel())
    mass = float(p[torch.tensor(bad, dtype=torch.long, device=p.device)].sum()) if bad else 0.0
    return NextToken(prompt, ids, [tok.token_str(i) for i in ids], top.values.tolist(), entropy,
                     [tok.is_decodable(i) for i in ids], mass)


@torch.no_grad()
def sample_continuation(model, text: str, max_new_tokens: int = 64, temperature: float = 0.8,
                        seed: int = 0, mask_undecodable: bool = False) -> Continuation:
    """Sample a continuation with the KV cache (temperature 0 means greedy). Seeded, so it is repeatable.

    ``mask_undecodable`` never samples ids the tokenizer cannot decode (their logits set to ``-inf``); without
    it such ids may be sampled and appear in ``text`` as ``<id N>``."""
    if not text:
        raise ModelError("the prompt is empty: type some text to continue")
    if max_new_tokens < 1 or max_new_tokens >= model.config.block_size:
        raise ModelError(f"max_new_tokens must be in [1, {model.config.block_size - 1}], got {max_new_tokens}")
    if temperature < 0:
        raise ModelError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    prompt = fit_prompt(model, text, reserve=max_new_tokens)
    tok = _tokenizer(model)
    bad = tok.undecodable_ids(model.config.vocab_size) if mask_undecodable else []
    if len(bad) >= model.config.vocab_size:
        raise ModelError("none of the model's ids has text in its tokenizer: nothing is left to sample")
    gen = torch.Generator().manual_seed(seed)
    cache = model.new_cache(1)
    logits = model.step(torch.tensor([prompt.ids]), cache).logits[0, -1]
    bad_ids = torch.tensor(bad, dtype=torch.long, device=logits.device) if bad else None
    out: list[int] = []
    for _ in range(max_new_tokens):
        if bad_ids is not None:
            logits = logits.index_fill(-1, bad_ids, float("-inf"))
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            probs = (logits.float() / temperature).softmax(-1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        out.append(nxt)
        if len(out) == max_new_tokens:
            break
        logits = model.step(torch.tensor([[nxt]]), cache).logits[0, -1]
    return Continuation(prompt, out, tok.decode_with_placeholders(out), seed, temperature)
