"""Per-head attention metrics: each takes probabilities ``(L, H, Tq, Tk)`` and returns an ``(L, H)`` array.

Inputs are an :class:`~workbench.attention.capture.AttentionCapture` (whose ``q_start`` and policy mask are used)
or a bare array ``(L, H, T, T)`` / ``(H, T, T)`` / ``(T, T)`` of a causal pattern starting at position 0.
Row ``r`` is the query at position ``p = q_start + r``; column ``j`` the key at position ``j``.

Each score is a mean over the query rows where it is defined (listed per function); a head with no such rows
gets NaN.

>>> import numpy as np
>>> prev = np.eye(5, k=-1); prev[0, 0] = 1.0       # every token looks at the one before it
>>> float(previous_token_score(prev)[0, 0])
1.0
>>> uniform = np.tril(np.ones((5, 5))) / np.arange(1, 6)[:, None]
>>> round(float(entropy(uniform)[0, 0]), 6)
1.0
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .capture import AttentionCapture, AttentionProbe
from .errors import AttentionError, IndexOutOfRangeError

METRICS = ("entropy", "sink_mass", "previous_token", "induction", "duplicate_token", "distance", "value_sink_mass")


def _unpack(att, q_start: int = 0, mask=None):
    """-> probs (L, H, Tq, Tk) float64-able array, q_start, allowed (Tq, Tk) bool, ids or None."""
    ids = None
    if isinstance(att, AttentionCapture):
        probs, q_start, allowed, ids = att.probs, att.q_start, att.allowed(), att.ids
    else:
        probs = np.asarray(att)
        while probs.ndim < 4:
            probs = probs[None]
        if probs.ndim != 4:
            raise AttentionError(f"attention must be (L, H, Tq, Tk), got shape {probs.shape}")
        Tq, Tk = probs.shape[-2:]
        if Tk != q_start + Tq:
            raise AttentionError(f"keys ({Tk}) must equal q_start ({q_start}) + queries ({Tq})")
        if mask is None:
            allowed = np.arange(Tk)[None, :] <= (q_start + np.arange(Tq))[:, None]
        else:
            allowed = np.asarray(mask, dtype=bool)
    return probs, q_start, allowed, ids


def _rowmean(score: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean of ``score`` ``(L, H, Tq)`` over the rows where ``rows`` ``(Tq,)`` is True -> ``(L, H)``."""
    if not rows.any():
        return np.full(score.shape[:2], np.nan)
    return score[..., rows].mean(axis=-1)


def _positions(probs, q_start):
    Tq, Tk = probs.shape[-2:]
    return q_start + np.arange(Tq), np.arange(Tk)


def entropy(att, q_start: int = 0, mask=None) -> np.ndarray:
    """Row entropy normalised by its maximum, ``log(n_i)`` with ``n_i`` the keys query ``i`` may see, ``(L, H)``.

    1 for a uniform head, 0 for a head that puts all its mass on one key. Rows that see a single key are skipped.
    """
    probs, q_start, allowed, _ = _unpack(att, q_start, mask)
    n = allowed.sum(-1)  # (Tq,)
    p = probs.astype(np.float64)
    h = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)  # (L, H, Tq)
    rows = n > 1
    with np.errstate(divide="ignore", invalid="ignore"):
        h = h / np.log(np.maximum(n, 2))
    return _rowmean(h, rows)


def sink_mass(att, k: int = 1, q_start: int = 0) -> np.ndarray:
    """Mass on the first ``k`` tokens, averaged over queries at positions ``>= k``, ``(L, H)``."""
    if k < 1:
        raise AttentionError(f"k must be >= 1, got {k}")
    probs, q_start, _, _ = _unpack(att, q_start)
    qp, _ = _positions(probs, q_start)
    return _rowmean(probs[..., :k].astype(np.float64).sum(-1), qp >= k)


def previous_token_score(att, q_start: int = 0) -> np.ndarray:
    """Mean weight on the previous token ``a[i, i-1]`` over queries at positions ``>= 1``, ``(L, H)``."""
    probs, q_start, _, _ = _unpack(att, q_start)
    qp, _ = _positions(probs, q_start)
    rows = qp >= 1
    r = np.nonzero(rows)[0]
    score = np.zeros(probs.shape[:3])
    score[..., r] = probs[..., r, qp[r] - 1]
    return _rowmean(score, rows)


def _ids_for(ids, given, Tk):
    ids = given if ids is None else ids
    if ids is None:
        raise AttentionError("this metric needs the token ids (pass ids=..., or use an AttentionCapture)")
    ids = np.asarray(ids).reshape(-1)
    if len(ids) < Tk:
        raise AttentionError(f"need ids for all {Tk} key positions, got {len(ids)}")
    return ids


def _masked_score(probs, M):
    """Sum of attention on the keys marked in ``M`` ``(Tq, Tk)``, averaged over rows with any mark."""
    score = (probs.astype(np.float64) * M).sum(-1)
    return _rowmean(score, M.any(-1))


def induction_mask(ids: np.ndarray, q_start: int, Tq: int, Tk: int) -> np.ndarray:
    """Bool ``(Tq, Tk)``: key ``j`` follows an earlier occurrence of the query's token (``ids[j-1] == ids[p]``, ``j <= p``)."""
    qp = q_start + np.arange(Tq)
    k = np.arange(Tk)
    prev_tok = np.concatenate([[-1], ids[: Tk - 1]])  # ids[j-1], none for j = 0
    M = (prev_tok[None, :] == ids[qp][:, None]) & (k[None, :] >= 1) & (k[None, :] <= qp[:, None])
    return M


def duplicate_mask(ids: np.ndarray, q_start: int, Tq: int, Tk: int) -> np.ndarray:
    """Bool ``(Tq, Tk)``: key ``j < p`` holds the same token as the query at ``p``."""
    qp = q_start + np.arange(Tq)
    k = np.arange(Tk)
    return (ids[:Tk][None, :] == ids[qp][:, None]) & (k[None, :] < qp[:, None])


def induction_score(att, ids=None, q_start: int = 0) -> np.ndarray:
    """Mass on the token right after an earlier occurrence of the current token, ``(L, H)``.

    Averaged over queries whose token occurred before. On a repeated random sequence ``x x`` this is the
    usual offset-diagonal score (query ``n + t`` looking at key ``t + 1``).
    """
    probs, q_start, _, given = _unpack(att, q_start)
    Tq, Tk = probs.shape[-2:]
    return _masked_score(probs, induction_mask(_ids_for(ids, given, Tk), q_start, Tq, Tk))


def duplicate_token_score(att, ids=None, q_start: int = 0) -> np.ndarray:
    """Mass on earlier copies of the current token, averaged over queries that have one, ``(L, H)``."""
    probs, q_start, _, given = _unpack(att, q_start)
    Tq, Tk = probs.shape[-2:]
    return _masked_score(probs, duplicate_mask(_ids_for(ids, given, Tk), q_start, Tq, Tk))


def mean_distance(att, q_start: int = 0) -> np.ndarray:
    """Expected distance ``sum_j a[i, j] (i - j)`` in tokens, averaged over all queries, ``(L, H)``."""
    probs, q_start, _, _ = _unpack(att, q_start)
    qp, kp = _positions(probs, q_start)
    dist = np.clip(qp[:, None] - kp[None, :], 0, None)
    return (probs.astype(np.float64) * dist).sum(-1).mean(-1)


def value_weighted(att: AttentionCapture, normalise: bool = True) -> np.ndarray:
    """``||a_ij v_j W_O^h||`` ``(L, H, Tq, Tk)`` (Kobayashi et al. 2020), rows renormalised to 1 by default.

    A sink token that receives much attention but whose value vector is small contributes little here.
    """
    if not isinstance(att, AttentionCapture) or att.value_norms is None:
        raise AttentionError("value-weighted attention needs a capture with value_norms (TinyGPT captures have them)")
    w = att.probs * att.value_norms[:, :, None, :]
    if normalise:
        w = w / np.maximum(w.sum(-1, keepdims=True), 1e-30)
    return w


def value_sink_mass(att: AttentionCapture, k: int = 1) -> np.ndarray:
    """:func:`sink_mass` of the value-weighted pattern, ``(L, H)``: the sinks' share of what is actually written."""
    vw = value_weighted(att)
    return sink_mass(vw, k, att.q_start)


def rollout(att, residual: bool = True) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020): cumulative token mixing after each layer, ``(L, T, T)``.

    Per layer, heads are averaged; with ``residual`` the identity is mixed in (``0.5 A + 0.5 I``) and rows are
    renormalised; the layers are multiplied in order, ``R_l = A'_l R_{l-1}``. Needs every layer, every query
    (``q_start == 0``); heads are those captured. Also takes an :class:`AttentionProbe` (one layer at a time).
    """
    if isinstance(att, AttentionProbe):
        n_layer, T = att.n_layer, att.T

        def layer_mean(layer):
            return att.probs(layer).double().mean(0).cpu().numpy()
    else:
        probs, q_start, _, _ = _unpack(att)
        if q_start != 0:
            raise AttentionError("rollout needs every query (capture without a window)")
        if isinstance(att, AttentionCapture) and len(att.layers) != att.n_layer:
            raise AttentionError(f"rollout needs all {att.n_layer} layers, the capture has {list(att.layers)}")
        n_layer, T = probs.shape[0], probs.shape[-1]

        def layer_mean(layer):
            return probs[layer].astype(np.float64).mean(0)
    R = np.eye(T)
    out = np.empty((n_layer, T, T), dtype=np.float32)
    I = np.eye(T)
    for layer in range(n_layer):
        A = layer_mean(layer)
        if residual:
            A = 0.5 * A + 0.5 * I
            A = A / A.sum(-1, keepdims=True)
        R = A @ R
        out[layer] = R
    return out


@dataclass
class HeadMetrics:
    """Every per-head score ``(L, H)`` of one sequence (rows: model layers, columns: heads), plus context."""

    entropy: np.ndarray
    sink_mass: np.ndarray
    previous_token: np.ndarray
    induction: np.ndarray
    duplicate_token: np.ndarray
    distance: np.ndarray
    value_sink_mass: np.ndarray | None = None
    sink_k: int = 1
    T: int = 0
    extra: dict = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        if name not in METRICS:
            raise AttentionError(f"unknown metric {name!r}; choose one of {METRICS}")
        v = getattr(self, name)
        if v is None:
            raise AttentionError(f"metric {name!r} is not available for this model")
        return v


def _metrics_of(cap: AttentionCapture, sink_k: int) -> dict:
    return dict(
        entropy=entropy(cap),
        sink_mass=sink_mass(cap, sink_k),
        previous_token=previous_token_score(cap),
        induction=induction_score(cap),
        duplicate_token=duplicate_token_score(cap),
        distance=mean_distance(cap),
        value_sink_mass=value_sink_mass(cap, sink_k) if cap.value_norms is not None else None,
    )


def head_metrics(source, sink_k: int = 1, window=None) -> HeadMetrics:
    """All metrics ``(L, H)`` for a capture, or for an :class:`AttentionProbe` one head at a time.

    With a probe nothing bigger than one head's ``(Tq, Tk)`` pattern is held, so T = 4,096 is fine.
    """
    if isinstance(source, AttentionCapture):
        return HeadMetrics(**_metrics_of(source, sink_k), sink_k=sink_k, T=source.T)
    if not isinstance(source, AttentionProbe):
        raise AttentionError(f"head_metrics takes an AttentionCapture or an AttentionProbe, got {type(source).__name__}")
    L, H = source.n_layer, source.n_head
    acc: dict[str, np.ndarray] = {}
    for layer in range(L):
        for h in range(H):
            cap = source.capture([layer], [h], window)
            for name, v in _metrics_of(cap, sink_k).items():
                if v is None:
                    continue
                acc.setdefault(name, np.full((L, H), np.nan))[layer, h] = v[0, 0]
    return HeadMetrics(**{m: acc.get(m) for m in METRICS}, sink_k=sink_k, T=source.T)


def repeated_random_ids(n: int, reps: int = 2, vocab: int = 256, seed: int = 0, low: int = 0) -> np.ndarray:
    """A random sequence of ``n`` tokens in ``[low, vocab)`` repeated ``reps`` times, ``(n * reps,)``.

    Tokens within one copy are distinct when ``n <= vocab - low`` so the induction targets are unambiguous.
    """
    rng = np.random.default_rng(seed)
    if n <= vocab - low:
        base = rng.permutation(np.arange(low, vocab))[:n]
    else:
        base = rng.integers(low, vocab, n)
    return np.tile(base, reps).astype(np.int64)


def check_layer_head(n_layer: int, n_head: int, layer: int, head: int) -> None:
    """Raise :class:`IndexOutOfRangeError` when ``(layer, head)`` is not in an ``n_layer x n_head`` model."""
    if not 0 <= layer < n_layer:
        raise IndexOutOfRangeError(f"layer {layer} is out of range: the model has {n_layer} layers (0..{n_layer - 1})")
    if not 0 <= head < n_head:
        raise IndexOutOfRangeError(f"head {head} is out of range: the model has {n_head} heads (0..{n_head - 1})")
