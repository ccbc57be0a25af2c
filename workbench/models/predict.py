"""Next-token predictions and sampled continuations for any workbench model (what the Playground draws).

Ids the tokenizer cannot decode (a padded embedding, as in Pythia, Qwen or Phi checkpoints) are labelled with the
placeholder ``<id N>``; :func:`sample_continuation` can mask them (``mask_undecodable=True``), and by default samples
from the model's own distribution as HF ``generate`` does (see :mod:`workbench.decoding.strategies`).

Lesson: ``notebooks/00_tour.ipynb`` (The playground).
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

    ``probs`` is the distribution the first sampled token is drawn from: the model's at ``temperature`` (0 is
    greedy: all the mass on the argmax), with ids without text removed when ``masked``. ``model_probs`` are the same
    ids' probabilities straight from the model (temperature 1, nothing masked), to compare with. ``entropy_bits`` is
    the entropy of the sampling distribution.

    ``decodable[i]`` is False when ``ids[i]`` has no text in the tokenizer (its label is then ``<id N>``);
    ``undecodable_mass`` is the total model probability (temperature 1) of all such ids, not only those in the top
    ``k``.
    """

    prompt: PromptIds
    ids: list[int]
    labels: list[str]
    probs: list[float]
    entropy_bits: float
    decodable: list[bool] | None = None
    undecodable_mass: float = 0.0
    temperature: float = 1.0
    model_probs: list[float] | None = None
    masked: bool = False


@dataclass
class Continuation:
    """A sampled continuation. ``text`` is decoded as the tokenizer does (invalid UTF-8 becomes U+FFFD, ids without
    text ``<id N>``); ``segments`` says which parts are text, which are bytes that are not valid UTF-8 (``<0xNN>``: a
    byte-level model picks one byte at a time and can emit a lone continuation byte or stop mid-character) and which
    are placeholders, see :meth:`~workbench.tokenizers.Tokenizer.decode_segments`."""

    prompt: PromptIds
    ids: list[int]
    text: str
    seed: int
    temperature: float
    segments: list[tuple[str, str]] | None = None

    @property
    def invalid_bytes(self) -> int:
        """How many emitted bytes are not part of a valid UTF-8 character (each shown as one ``<0xNN>``)."""
        return sum(t.count("<0x") for kind, t in self.segments or () if kind == "bytes")


def _tokenizer(model):
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ModelError("this model has no tokenizer: pass token ids, or wrap it with a tokenizer")
    return tok


def fit_prompt(model, text: str, reserve: int = 0) -> PromptIds:
    """Tokenize ``text`` and keep the last ``block_size - reserve`` tokens (left truncation). A BOS the tokenizer
    puts first (``tokenizer.bos_id``) stays first: the model was trained with it at position 0."""
    tok = _tokenizer(model)
    ids = tok.encode(text)
    room = model.config.block_size - reserve
    if room < 1:
        raise ModelError(f"no room for a prompt: context {model.config.block_size}, {reserve} tokens reserved")
    dropped = max(0, len(ids) - room)
    bos = getattr(tok, "bos_id", None)
    if dropped and bos is not None and ids and ids[0] == bos and room > 1:
        return PromptIds([bos] + ids[dropped + 1:], dropped, len(ids))
    return PromptIds(ids[dropped:], dropped, len(ids))


def _check_temperature(temperature: float) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ModelError(f"temperature must be a number >= 0 (0 means greedy), got {temperature!r}") from None
    if not t >= 0 or t == float("inf"):
        raise ModelError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    return t


def sampling_probs(logits: torch.Tensor, temperature: float, bad_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Probabilities a token is sampled from: ``logits`` (last axis) with ``bad_ids`` set to ``-inf``, divided by
    ``temperature``; temperature 0 puts all the mass on the first argmax (greedy). Used by :func:`next_token` (what the
    Playground draws) and :func:`sample_continuation` (what it samples), so the two cannot drift apart."""
    if bad_ids is not None and bad_ids.numel():
        logits = logits.index_fill(-1, bad_ids.to(logits.device), float("-inf"))
    logits = logits.float()
    if temperature == 0:
        return torch.zeros_like(logits).scatter(-1, logits.argmax(-1, keepdim=True), 1.0)
    return (logits / temperature).softmax(-1)


def _bad_ids(model, tok, mask_undecodable: bool) -> torch.Tensor | None:
    bad = tok.undecodable_ids(model.config.vocab_size) if mask_undecodable else []
    if len(bad) >= model.config.vocab_size:
        raise ModelError("none of the model's ids has text in its tokenizer: nothing is left to sample")
    return torch.tensor(bad, dtype=torch.long) if bad else None


@torch.no_grad()
def next_token(model, text: str, k: int = 10, temperature: float = 1.0, mask_undecodable: bool = False) -> NextToken:
    """The ``k`` most likely next tokens after ``text`` (empty text is an error: there is nothing to condition on),
    with their probabilities at ``temperature`` (default 1: the model's own distribution; 0: greedy) and, with
    ``mask_undecodable``, ids without text masked: exactly the distribution :func:`sample_continuation` draws its
    first token from with the same settings."""
    if not text:
        raise ModelError("the prompt is empty: type some text to condition on")
    if k < 1:
        raise ModelError(f"k must be >= 1, got {k}")
    temperature = _check_temperature(temperature)
    prompt = fit_prompt(model, text)
    tok = _tokenizer(model)
    logits = model.forward(torch.tensor([prompt.ids]), capture=False).logits[0, -1].float()
    p_model = logits.softmax(-1)  # the same numbers as the sampling probabilities at temperature 1, unmasked
    p = sampling_probs(logits, temperature, _bad_ids(model, tok, mask_undecodable))
    # Ranked by the model's probability among the ids that can be sampled, then the rest (masked ids, and every id
    # but the argmax at temperature 0) by the model's probability: the same order as the sampling probabilities,
    # which are a monotone function of the model's.
    ids = (p_model + 2.0 * (p > 0)).topk(min(k, p.numel())).indices.tolist()
    entropy = float(-(p * p.log()).nan_to_num().sum() / torch.log(torch.tensor(2.0)))
    bad = tok.undecodable_ids(p.numel())
    mass = float(p_model[torch.tensor(bad, dtype=torch.long, device=p.device)].sum()) if bad else 0.0
    return NextToken(prompt, ids, [tok.token_str(i) for i in ids], [float(p[i]) for i in ids], entropy,
                     [tok.is_decodable(i) for i in ids], mass, temperature, [float(p_model[i]) for i in ids],
                     bool(mask_undecodable))


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
    temperature = _check_temperature(temperature)
    prompt = fit_prompt(model, text, reserve=max_new_tokens)
    tok = _tokenizer(model)
    bad_ids = _bad_ids(model, tok, mask_undecodable)
    gen = torch.Generator().manual_seed(seed)
    cache = model.new_cache(1)
    logits = model.step(torch.tensor([prompt.ids]), cache).logits[0, -1]
    if bad_ids is not None:
        bad_ids = bad_ids.to(logits.device)
    out: list[int] = []
    for _ in range(max_new_tokens):
        if temperature == 0:
            if bad_ids is not None:
                logits = logits.index_fill(-1, bad_ids, float("-inf"))
            nxt = int(logits.argmax())
        else:
            probs = sampling_probs(logits, temperature, bad_ids).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        out.append(nxt)
        if len(out) == max_new_tokens:
            break
        logits = model.step(torch.tensor([[nxt]]), cache).logits[0, -1]
    return Continuation(prompt, out, tok.decode_with_placeholders(out), seed, temperature, tok.decode_segments(out))
