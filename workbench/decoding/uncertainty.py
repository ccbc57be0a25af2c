"""How sure is a model, token by token: surprisal, entropy, rank and top-2 margin of every prediction.

:func:`distribution_scores` measures next-token distributions (any logits ``(..., V)``); :func:`token_scores`
runs a model over a text once (teacher forcing) and scores the prediction of every token from the tokens before
it. These are the per-token signals a cascade (:mod:`workbench.decoding.cascade`) defers on: Gupta et al.,
"Language Model Cascades: Token-level uncertainty and beyond" (2024), build their deferral rules from the
small model's per-token maximum probability.

All information quantities are in bits. The first token of a text has no prediction (nothing before it), so a
text of ``T`` tokens gives ``T - 1`` scores, aligned with ``tokens[1:]``.

Lesson: ``notebooks/03_decoding.ipynb`` (8. How sure is the model, token by token).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .processors import DecodingError

LN2 = math.log(2.0)

#: The per-token scores, in the order views offer them; "higher = less sure" holds for all but margin and max_prob.
SCORES = ("surprisal", "entropy", "rank", "margin", "max_prob")


def distribution_scores(logits: torch.Tensor, targets: torch.Tensor | None = None) -> dict:
    """Uncertainty of next-token distributions ``softmax(logits)``: logits ``(..., V)`` -> each score ``(...)``.

    * ``entropy``: ``-sum p log2 p`` (bits; 0 for a one-hot, ``log2 V`` for uniform);
    * ``max_prob``: the largest probability ``p1``;
    * ``margin``: ``p1 - p2``, the top-2 margin (0 when the two most likely tokens tie; ``p1`` when ``V = 1``);
    * with ``targets`` (``(...)`` long): ``surprisal`` ``-log2 p(target)`` and ``rank``, 1 + the number of tokens
      strictly more likely than the target (so tied tokens share the better rank; 1 = the model's top choice).

    ``-inf`` logits are tokens of probability 0. Computed in float64 so hand-built cases come out exact.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() < 1 or logits.size(-1) < 1:
        raise DecodingError(f"logits must be a tensor of shape (..., V) with V >= 1, got "
                            f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    logp = logits.double().log_softmax(-1)                                     # (..., V)
    if torch.isnan(logp).any():
        raise DecodingError("logits contain NaN, or a row where every logit is -inf: no distribution to score")
    p = logp.exp()
    ent = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1) / LN2
    top = p.topk(min(2, p.size(-1)), dim=-1).values                          # (..., 1 or 2)
    p1 = top[..., 0]
    p2 = top[..., 1] if top.size(-1) > 1 else torch.zeros_like(p1)
    out = {"entropy": ent.clamp_min(0.0), "max_prob": p1, "margin": p1 - p2}
    if targets is not None:
        targets = torch.as_tensor(targets, dtype=torch.long, device=logits.device)
        if targets.shape != logits.shape[:-1]:
            raise DecodingError(f"targets must have shape {tuple(logits.shape[:-1])}, got {tuple(targets.shape)}")
        if targets.numel() and (targets.min() < 0 or targets.max() >= logits.size(-1)):
            raise DecodingError(f"targets must be ids in [0, {logits.size(-1)}), got {targets.min()}..{targets.max()}")
        lp_t = logp.gather(-1, targets[..., None])                             # (..., 1)
        out["surprisal"] = -lp_t[..., 0] / LN2
        raw = logits.double()                      # rank on the logits: log_softmax may round tiny gaps away
        out["rank"] = (raw > raw.gather(-1, targets[..., None])).sum(-1) + 1
    return out


@dataclass(frozen=True)
class TokenScores:
    """Every token of a text scored by the model's prediction of it from the tokens before it.

    ``ids``/``tokens``: the ``T`` tokens of the text (``tokens[i]`` is the text of ``ids[i]``). The score arrays
    have ``T - 1`` entries, entry ``i`` belonging to token ``i + 1``: ``surprisal`` (bits), ``entropy`` (bits,
    of the whole predicted distribution), ``rank`` (1 = the model's top choice), ``margin`` (``p1 - p2``) and
    ``max_prob`` (``p1``). ``bits_per_byte``: total surprisal over the UTF-8 bytes of tokens 1..T-1.
    """

    ids: list
    tokens: list
    surprisal: np.ndarray
    entropy: np.ndarray
    rank: np.ndarray
    margin: np.ndarray
    max_prob: np.ndarray
    bits_per_byte: float
    model_name: str = field(default="", compare=False)

    def score(self, name: str) -> np.ndarray:
        """One score array by name (one of :data:`SCORES`)."""
        if name not in SCORES:
            raise DecodingError(f"unknown score {name!r}; choose one of {SCORES}")
        return getattr(self, name)

    def rows(self) -> list[dict]:
        """One dict per scored token (token text and all five scores), for tables and hovers."""
        return [{"position": i + 1, "token": self.tokens[i + 1], **{s: self.score(s)[i].item() for s in SCORES}}
                for i in range(len(self.surprisal))]


def text_ids(model, text) -> list:
    """Encode ``text`` (a str) with the model's tokenizer, or pass ids through; refuses what cannot be scored."""
    if isinstance(text, str):
        if text == "":
            raise DecodingError("the text is empty: give at least two tokens of text to score")
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            raise DecodingError("this model has no tokenizer, so text cannot be encoded: pass token ids")
        ids = list(tok.encode(text))
    else:
        ids = [int(i) for i in torch.as_tensor(text).reshape(-1).tolist()]
    if len(ids) < 2:
        raise DecodingError(f"need at least two tokens to score (the first one has no prediction), got {len(ids)}")
    if len(ids) > model.config.block_size:
        raise DecodingError(f"the text has {len(ids)} tokens, more than the model's context of "
                            f"{model.config.block_size}: score a shorter text")
    V = model.config.vocab_size
    if min(ids) < 0 or max(ids) >= V:
        raise DecodingError(f"token ids must be in [0, {V}), got {min(ids)}..{max(ids)}")
    return ids


def token_texts(model, ids) -> list:
    """The text of each id (``<id N>`` where the tokenizer has none)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [f"<id {i}>" for i in ids]
    if hasattr(tok, "decode_with_placeholders"):
        return [tok.decode_with_placeholders([i]) for i in ids]
    return [tok.decode([i]) for i in ids]


def ids_text(model, ids) -> str:
    """The text of a run of ids decoded together (multi-byte characters survive), placeholders for ids without text."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return "".join(f"<id {i}>" for i in ids)
    if hasattr(tok, "decode_with_placeholders"):
        return tok.decode_with_placeholders(list(ids))
    return tok.decode(list(ids))


@torch.inference_mode()
def next_token_logits(model, ids) -> torch.Tensor:
    """Teacher-forced logits of a model over ``ids``: ``(T, V)`` float64, row ``t`` predicting token ``t + 1``."""
    from .strategies import model_device

    x = torch.as_tensor([list(ids)], dtype=torch.long, device=model_device(model))
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        return model(x).logits[0].double().cpu()
    finally:
        if was_training:
            model.train()


def token_scores(model, text) -> TokenScores:
    """Score every token of ``text`` (a str, or ids) by the model's prediction of it: one forward pass.

    Raises :class:`DecodingError` for an empty text, a text of one token, or one longer than the context.
    """
    ids = text_ids(model, text)
    logits = next_token_logits(model, ids)[:-1]                               # (T-1, V): predicts ids[1:]
    s = distribution_scores(logits, torch.tensor(ids[1:]))
    toks = token_texts(model, ids)
    n_bytes = len(ids_text(model, ids[1:]).encode("utf-8"))
    surprisal = s["surprisal"].numpy()
    return TokenScores(ids=ids, tokens=toks, surprisal=surprisal, entropy=s["entropy"].numpy(),
                       rank=s["rank"].numpy(), margin=s["margin"].numpy(), max_prob=s["max_prob"].numpy(),
                       bits_per_byte=float(surprisal.sum() / max(1, n_bytes)),
                       model_name=str(getattr(model, "name", "")))


__all__ = ["SCORES", "TokenScores", "distribution_scores", "next_token_logits", "token_scores", "token_texts"]
