"""The logit lens: what the model would predict if it stopped after each block.

The residual stream at every layer boundary (the embeddings, then after each block; always *before* the final
norm) goes through the model's own final norm and unembedding (:func:`workbench.residual.run.head_of`), optionally
after a tuned lens's per-layer affine translator (:mod:`.tuned_lens`). The last boundary is the model itself, so
its distribution equals the model's output.

>>> from workbench.models import TinyGPT, GPTConfig
>>> from workbench.tokenizers import ByteTokenizer
>>> m = TinyGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=257), ByteTokenizer()).eval()
>>> r = logit_lens(m, "hello", k=3)
>>> r.boundaries, r.top_ids.shape, r.entropy.shape
(['embed', 'block 0', 'block 1'], (3, 5, 3), (3, 5))
>>> bool((r.top_ids[-1, :, 0] == r.final_ids).all())
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ..models.layout import layout_of
from ..tokenizers.base import placeholder
from .errors import OutOfRangeError, ResidualError
from .run import check_index, head_of, residual_stack

if TYPE_CHECKING:  # pragma: no cover
    from .tuned_lens import TunedLens

LN2 = math.log(2.0)


def boundary_names(n_layer: int) -> list[str]:
    """``["embed", "block 0", ..., "block L-1"]``: the ``L + 1`` layer boundaries of a model with ``L`` blocks."""
    return ["embed"] + [f"block {i}" for i in range(n_layer)]


def token_labeller(model) -> Callable[[int], str]:
    """``id -> printable label`` from the model's tokenizer (``<id N>`` for ids without text or without a
    tokenizer); labels are cached, since a lens shows the same few ids many times."""
    tok = getattr(model, "tokenizer", None)
    show = tok.token_str if tok is not None and hasattr(tok, "token_str") else placeholder
    cache: dict[int, str] = {}

    def label(i) -> str:
        i = int(i)
        s = cache.get(i)
        if s is None:
            s = cache[i] = show(i)
        return s

    return label


def lens_logits(model, resid: torch.Tensor, lens: "TunedLens | None" = None) -> torch.Tensor:
    """Logits ``(L + 1, ..., V)`` of a residual stack ``(L + 1, ..., D)`` (before the final norm, as
    :func:`residual_stack` gives it): the tuned lens's translators (if ``lens``), then the model's own final norm
    and unembedding. With no lens this is the logit lens; the last boundary is never translated."""
    lay = layout_of(model)
    L, D = lay.n_layer, lay.d_model
    if resid.dim() < 2 or resid.size(0) != L + 1 or resid.size(-1) != D:
        raise ResidualError(f"need a residual stack of shape (L + 1 = {L + 1}, ..., D = {D}), got "
                            f"{tuple(resid.shape)}")
    if lens is not None:
        lens.check_shapes(model)
        resid = lens.translate(resid)
    return head_of(model)(resid)


@dataclass
class LensResult:
    """A (logit or tuned) lens on one prompt: for each of the ``L + 1`` boundaries and ``T`` positions, the
    distribution over the next token the residual stream decodes to, compared with the model's final one.

    Shapes: ``ids``, ``final_ids``, ``first_stable`` ``(T,)``; ``top_ids``, ``top_probs`` ``(L + 1, T, k)``;
    ``entropy``, ``final_rank``, ``final_prob``, ``kl`` ``(L + 1, T)``. Entropy and KL are in bits;
    ``kl`` is KL(final || boundary). ``first_stable[t]`` is the first boundary from which the top-1 token equals
    ``final_ids[t]`` and stays so through the last one (``L + 1`` if even the last boundary's top-1 differs,
    which only a tie can cause).
    """

    kind: str
    ids: np.ndarray
    tokens: list
    boundaries: list
    top_ids: np.ndarray
    top_probs: np.ndarray
    top_tokens: list
    entropy: np.ndarray
    final_ids: np.ndarray
    final_rank: np.ndarray
    final_prob: np.ndarray
    kl: np.ndarray
    first_stable: np.ndarray
    final_tokens: list = field(default_factory=list)  # (T,) printable final_ids
    vocab_size: int = 0
    # (boundary, position) -> log-probabilities (V,) float64, for a top-k wider than the stored one
    _logprobs: Callable | None = field(default=None, repr=False, compare=False)
    _label: Callable | None = field(default=None, repr=False, compare=False)

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[-1])

    @property
    def n_boundaries(self) -> int:
        return len(self.boundaries)

    def distribution(self, boundary: int, position: int, k: int | None = None):
        """``(ids (k,), probs (k,), tokens [k])`` of one boundary's distribution at one position, most likely
        first (the widget's click). ``k`` defaults to the stored top-k; a wider one is recomputed from the
        residual stream. Negative indices count from the end; out of range is :class:`OutOfRangeError`."""
        b = check_index("boundary", boundary, self.n_boundaries)
        t = check_index("position", position, len(self.ids))
        k = self.k if k is None else int(k)
        limit = self.vocab_size or self.k
        if not 1 <= k <= limit:
            raise OutOfRangeError(f"k={k} is out of range: choose 1..{limit} (the vocabulary size)")
        if k <= self.k:
            ids, probs = self.top_ids[b, t, :k].copy(), self.top_probs[b, t, :k].copy()
            return ids, probs, list(self.top_tokens[b][t][:k])
        if self._logprobs is None:
            raise OutOfRangeError(f"k={k} is wider than the stored top-{self.k} and this result cannot recompute")
        lp = self._logprobs(b, t)
        top = torch.topk(lp, k)
        ids = top.indices.numpy().astype(np.int64)
        label = self._label or placeholder
        return ids, top.values.exp().numpy(), [label(i) for i in ids]


def _cpu64(logits: torch.Tensor) -> torch.Tensor:
    """Logits as float64 on the CPU: the statistics are taken there, exactly, whatever the model's device."""
    return logits.detach().float().cpu().double()


_CHUNK = 1 << 21  # float64 values per (positions, V) array in the statistics


def _chunks(n: int, vocab: int):
    """Slices of ``range(n)`` of at most ``_CHUNK // vocab`` positions each."""
    step = max(1, _CHUNK // max(1, vocab))
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def _check_k(k: int, vocab: int) -> int:
    k = int(k)
    if not 1 <= k <= vocab:
        raise OutOfRangeError(f"k={k} is out of range: choose 1..{vocab} (the vocabulary size)")
    return k


@torch.no_grad()
def logit_lens(model, text_or_ids, k: int = 5, lens: "TunedLens | None" = None) -> LensResult:
    """The :class:`LensResult` of one prompt (text or ids): the logit lens, or with ``lens`` the tuned lens
    (``kind`` says which). Empty text, out-of-range ids or a lens trained for another model raise the lab's
    errors (:class:`~workbench.residual.errors.LensMismatchError` for the lens)."""
    if lens is not None:
        lens.check(model)
    lay = layout_of(model)
    head = head_of(model)
    V = int(model.config.vocab_size)
    k = _check_k(k, V)
    rs = residual_stack(model, text_or_ids)
    resid = rs.resid[:, 0]  # (L + 1, T, D)
    if lens is not None:
        resid = lens.translate(resid)
    final_ids = rs.logits[0].argmax(-1).cpu()  # (T,), the model's own top-1
    n_b, T = resid.size(0), resid.size(1)
    top_ids = np.zeros((n_b, T, k), dtype=np.int64)
    top_probs = np.zeros((n_b, T, k), dtype=np.float64)
    entropy, fprob, kl = (np.zeros((n_b, T), dtype=np.float64) for _ in range(3))
    rank, top1 = np.zeros((n_b, T), dtype=np.int64), np.zeros((n_b, T), dtype=np.int64)
    for sl in _chunks(T, V):  # a few positions at a time: (chunk, V) float64 arrays, whatever T, V and the depth
        final_lp = torch.log_softmax(_cpu64(rs.logits[0, sl]), dim=-1)
        p_final, fi = final_lp.exp(), final_ids[sl, None]
        for b in range(n_b):
            lp = torch.log_softmax(_cpu64(head(resid[b, sl])), dim=-1)
            top = torch.topk(lp, k, dim=-1)
            top_ids[b, sl], top_probs[b, sl] = top.indices.numpy(), top.values.exp().numpy()
            top1[b, sl] = lp.argmax(-1).numpy()
            entropy[b, sl] = (-(lp.exp() * lp).sum(-1) / LN2).numpy()
            f = lp.gather(-1, fi)
            rank[b, sl] = (lp > f).sum(-1).numpy()
            fprob[b, sl] = f[:, 0].exp().numpy()
            kl[b, sl] = ((p_final * (final_lp - lp)).sum(-1) / LN2).clamp_min(0.0).numpy()
    fids = final_ids.numpy().astype(np.int64)
    label = token_labeller(model)
    ids = rs.ids[0].cpu().numpy().astype(np.int64)
    translated = resid.detach()

    def logprobs(b: int, t: int) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(_cpu64(head(translated[b, t])), dim=-1)

    return LensResult(
        kind="logit" if lens is None else "tuned",
        ids=ids,
        tokens=[label(i) for i in ids],
        boundaries=boundary_names(lay.n_layer),
        top_ids=top_ids,
        top_probs=top_probs,
        top_tokens=[[[label(i) for i in row] for row in bnd] for bnd in top_ids],
        entropy=entropy,
        final_ids=fids,
        final_rank=rank,
        final_prob=fprob,
        kl=kl,
        first_stable=first_stable(top1, fids),
        final_tokens=[label(i) for i in fids],
        vocab_size=V,
        _logprobs=logprobs,
        _label=label,
    )


def first_stable(top1: np.ndarray, final_ids: np.ndarray) -> np.ndarray:
    """For top-1 ids ``(L + 1, T)`` and final ids ``(T,)``: per position, the first boundary from which every
    boundary's top-1 is the final id (``L + 1`` when the last one's is not)."""
    match = np.asarray(top1) == np.asarray(final_ids)[None]
    n = match.shape[0]
    # stays[b] = match[b] and match[b + 1] and ... and match[n - 1]
    stays = np.flip(np.logical_and.accumulate(np.flip(match, 0), axis=0), 0)
    return (n - stays.sum(0)).astype(np.int64)  # the trailing run of matches starts there


@torch.no_grad()
def lens_kl_by_layer(model, ids, lens: "TunedLens | None" = None) -> np.ndarray:
    """Mean KL(final || boundary) in bits over every position of ``ids`` (text, ``(T,)`` ids or a ``(B, T)``
    batch), per boundary: ``(L + 1,)``. The last entry is 0 (up to rounding): the model itself."""
    if lens is not None:
        lens.check(model)
    rs = residual_stack(model, ids)
    logits = rs.logits.reshape(-1, rs.logits.size(-1))  # (B * T, V)
    resid = rs.resid.reshape(rs.resid.size(0), -1, rs.resid.size(-1))  # (L + 1, B * T, D)
    if lens is not None:
        resid = lens.translate(resid)
    head = head_of(model)
    total = np.zeros(resid.size(0))
    for sl in _chunks(logits.size(0), logits.size(-1)):
        final_lp = torch.log_softmax(_cpu64(logits[sl]), dim=-1)
        p_final = final_lp.exp()
        for b in range(resid.size(0)):
            lp = torch.log_softmax(_cpu64(head(resid[b, sl])), dim=-1)
            total[b] += float((p_final * (final_lp - lp)).sum(-1).clamp_min(0.0).sum())
    return total / logits.size(0) / LN2
