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

Lesson: ``notebooks/02_attention.ipynb`` (1 · Attention sinks; 2 · Induction heads form during training).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .capture import AttentionCapture, AttentionProbe, capture_attention
from .errors import AttentionError

METRICS = ("entropy", "sink_mass", "previous_token", "induction", "duplicate_token", "distance", "value_sink_mass")


def _unpack(att, q_start: int = 0, mask=None):
    """-> probs (L, H, Tq, Tk), q_start, a function giving allowed (Tq, Tk) bool, ids or None."""
    ids = None
    if isinstance(att, AttentionCapture):
        probs, q_start, allowed, ids = att.probs, att.q_start, att.allowed, att.ids
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
            def allowed():
                return np.arange(Tk)[None, :] <= (q_start + np.arange(Tq))[:, None]
        else:
            def allowed():
                return np.asarray(mask, dtype=bool)
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
    n = allowed().sum(-1)  # (Tq,)
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


def induction_mask(ids: np.ndarray, q_start: int, Tq: int, Tk: int, shift: int = 0) -> np.ndarray:
    """Bool ``(Tq, Tk)``: key ``j`` follows an earlier occurrence of the query's token (``ids[j-1] == ids[p]``,
    ``j <= p``). With ``shift`` s the key is ``s`` tokens further on (``ids[j-1-s] == ids[p]``, an earlier
    occurrence: ``j - 1 - s < p``)."""
    qp = q_start + np.arange(Tq)
    k = np.arange(Tk)
    lag = 1 + shift
    prev_tok = np.concatenate([np.full(min(lag, Tk), -1), ids[: max(Tk - lag, 0)]])  # ids[j-lag]
    M = ((prev_tok[None, :] == ids[qp][:, None]) & (k[None, :] >= lag) & (k[None, :] <= qp[:, None])
         & (k[None, :] - lag < qp[:, None]))
    return M


def duplicate_mask(ids: np.ndarray, q_start: int, Tq: int, Tk: int) -> np.ndarray:
    """Bool ``(Tq, Tk)``: key ``j < p`` holds the same token as the query at ``p``."""
    qp = q_start + np.arange(Tq)
    k = np.arange(Tk)
    return (ids[:Tk][None, :] == ids[qp][:, None]) & (k[None, :] < qp[:, None])


def induction_score(att, ids=None, q_start: int = 0, shift: int = 0) -> np.ndarray:
    """Mass on the token right after an earlier occurrence of the current token, ``(L, H)``.

    Averaged over queries whose token occurred before (and whose target is visible). On a repeated random
    sequence ``x x`` this is the usual offset-diagonal score (query ``n + t`` looking at key ``t + 1``).
    ``shift`` s scores a shifted variant, key ``t + 1 + s`` (a circuit that matches ``s + 1`` tokens back and
    copies ``s`` tokens back can predict as well; small models trained on ``x x`` sometimes find it).
    """
    probs, q_start, _, given = _unpack(att, q_start)
    Tq, Tk = probs.shape[-2:]
    return _masked_score(probs, induction_mask(_ids_for(ids, given, Tk), q_start, Tq, Tk, shift))


def attention_by_offset(att, q_start: int = 0) -> np.ndarray:
    """Mean weight at each distance ``d = i - j`` over the queries that have a key at that distance, ``(L, H, Tk)``.

    A previous-token head peaks at ``d = 1``, a sink head at ``d = i``; a head that looks a fixed number of tokens
    back shows a single peak.
    """
    probs, q_start, _, _ = _unpack(att, q_start)
    Tq, Tk = probs.shape[-2:]
    qp = q_start + np.arange(Tq)
    out = np.zeros(probs.shape[:2] + (Tk,))
    for d in range(Tk):
        rows = np.nonzero(qp - d >= 0)[0]
        if rows.size:
            out[..., d] = probs[..., rows, qp[rows] - d].mean(-1)
    return out


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
    if not isinstance(att, AttentionCapture):
        raise AttentionError(f"value-weighted attention needs an AttentionCapture, got {type(att).__name__}")
    if att.value_norms is None:
        why = att.meta.get("value_norms") or "the capture has no value_norms"
        raise AttentionError(f"value-weighted attention needs a capture with value_norms: {why}")
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
            why = self.extra.get("value_norms")
            raise AttentionError(f"metric {name!r} is not available for this model" + (f": {why}" if why else ""))
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


def head_metrics(source, sink_k: int = 1, window=None, block_rows: int | None = None) -> HeadMetrics:
    """All metrics ``(L, H)`` for a capture, or for an :class:`AttentionProbe` blockwise.

    With a probe the scores are accumulated over blocks of ``block_rows`` queries (default: about 4M
    probabilities per block, :func:`block_rows_for`), every head of a layer at once: nothing bigger than one
    block ``(H, rows, keys)`` is held and each block's keys stop at its last query, so T = 8,192 is fine. The
    results equal the full-matrix functions above within float32 rounding.
    """
    if isinstance(source, AttentionCapture):
        extra = {}
        if source.value_norms is None and "value_norms" in source.meta:
            extra["value_norms"] = source.meta["value_norms"]
        return HeadMetrics(**_metrics_of(source, sink_k), sink_k=sink_k, T=source.T, extra=extra)
    if not isinstance(source, AttentionProbe):
        raise AttentionError(f"head_metrics takes an AttentionCapture or an AttentionProbe, got {type(source).__name__}")
    return _probe_metrics(source, sink_k, window, block_rows)


#: probabilities per block of :func:`head_metrics` on a probe (16 MB of float32): small enough that the
#: temporaries are reused by the allocator instead of being mapped (and page-faulted) afresh for every head
BLOCK_ELEMENTS = 1 << 22


def block_rows_for(n_head: int, n_keys: int, elements: int = BLOCK_ELEMENTS) -> int:
    """Query rows per block so that ``n_head x rows x n_keys`` is about ``elements`` (16 to 1,024 rows)."""
    return int(min(1024, max(16, elements // max(1, n_head * n_keys))))


def _on_cpu(t) -> bool:
    return t.device.type == "cpu"


def _probe_metrics(probe: AttentionProbe, sink_k: int, window=None, block_rows: int | None = None) -> HeadMetrics:
    """The definitions above, accumulated over query blocks of every head of a layer at once.

    Per block ``(s, e)`` the masks that do not depend on the layer (visible keys, induction and duplicate
    targets) are built once; per layer one ``probe.probs(layer, None, (s, e))`` ``(H, b, e)`` gives each row's
    entropy, sink mass, previous-token weight, induction and duplicate mass (row dot products with the masks),
    expected distance (``p . (i - j)`` as ``i * sum(p) - p . j``) and value-weighted sink mass
    (``sum_{j<k} p_j n_j / sum_j p_j n_j``). Row scores are summed in float64 and divided by the number of rows
    where each score is defined, as :func:`_rowmean` does. CPU blocks go through NumPy (its ``log`` and
    ``einsum`` are several times faster than torch's here); others stay on their device."""
    import torch

    from .capture import _window

    if sink_k < 1:
        raise AttentionError(f"k must be >= 1, got {sink_k}")
    L, H, T = probe.n_layer, probe.n_head, probe.T
    start, end = _window(window, T)
    B = block_rows if block_rows is not None else block_rows_for(H, end)
    if B < 1:
        raise AttentionError(f"block_rows must be >= 1, got {B}")
    pol = probe.policy
    ids = probe.ids.cpu().numpy()
    has_vn = probe.has_value_norms
    sums = {m: np.zeros((L, H)) for m in METRICS}
    counts = dict.fromkeys(METRICS, 0)
    vns: list = [None] * L
    buf = None
    for s in range(start, end, B):
        e = min(s + B, end)
        b = e - s
        qp = np.arange(s, e)
        if pol is not None:
            n = pol.allowed(torch.arange(s, e), torch.arange(e)).sum(-1).numpy()
        else:
            n = qp + 1
        ind = induction_mask(ids, s, b, e)
        dup = duplicate_mask(ids, s, b, e)
        rows = {"entropy": n > 1, "sink_mass": qp >= sink_k, "previous_token": qp >= 1,
                "induction": ind.any(-1), "duplicate_token": dup.any(-1), "distance": np.ones(b, dtype=bool)}
        rows["value_sink_mass"] = rows["sink_mass"]
        for m, r in rows.items():
            counts[m] += int(r.sum())
        log_n = np.log(np.maximum(n, 2)).astype(np.float32)
        r_prev = np.nonzero(rows["previous_token"])[0]
        c_prev = qp[r_prev] - 1
        kp = np.arange(e, dtype=np.float32)
        qpf = qp.astype(np.float32)
        ind_f, dup_f = ind.astype(np.float32), dup.astype(np.float32)
        tmasks = None
        for layer in range(L):
            Pt = probe.probs(layer, None, (s, e))  # (H, b, e)
            if Pt.dtype != torch.float32:
                Pt = Pt.float()
            if has_vn and vns[layer] is None:
                vns[layer] = probe.value_norms(layer, None, end).float()  # (H, end)
            vn = vns[layer][:, :e] if has_vn else None
            if _on_cpu(Pt):
                P = Pt.numpy()
                if buf is None or buf.size < P.size:
                    buf = np.empty(H * B * end, dtype=np.float32)
                logp = buf[: P.size].reshape(P.shape)
                with np.errstate(divide="ignore"):
                    np.log(P, out=logp)
                np.maximum(logp, -200.0, out=logp)  # log 0 = -inf -> 0 * log 0 counts 0, as xlogy does
                if tmasks is None:
                    tmasks = [torch.from_numpy(kp)]
                score = {  # (NumPy's matmul goes through OpenBLAS threads: torch's mv instead)
                    "entropy": -np.einsum("hre,hre->hr", P, logp) / log_n,
                    "induction": np.einsum("hre,re->hr", P, ind_f),
                    "duplicate_token": np.einsum("hre,re->hr", P, dup_f),
                    "distance": qpf * Pt.sum(-1).numpy() - (Pt @ tmasks[0]).numpy(),
                }
                if has_vn:
                    v = vn.cpu()
                    den = np.stack([torch.mv(Pt[h], v[h]).numpy() for h in range(H)])
                    num = np.einsum("hrk,hk->hr", P[..., :sink_k], v[:, :sink_k].numpy())
            else:  # the same on the probabilities' device (CUDA)
                P = Pt
                if tmasks is None:
                    tmasks = [torch.from_numpy(x).to(P.device) for x in (ind_f, dup_f, kp, qpf, log_n)]
                ti, td, tk, tq, tl = tmasks
                score = {
                    "entropy": -torch.special.xlogy(P, P).sum(-1) / tl,
                    "induction": (P * ti).sum(-1),
                    "duplicate_token": (P * td).sum(-1),
                    "distance": tq * P.sum(-1) - P @ tk,
                }
                if has_vn:
                    v = vn.to(P.device)
                    den = (P * v[:, None, :]).sum(-1)
                    num = (P[..., :sink_k] * v[:, None, :sink_k]).sum(-1)
            score["sink_mass"] = P[..., :sink_k].sum(-1)
            score["previous_token"] = P[:, r_prev, c_prev]
            if has_vn:
                score["value_sink_mass"] = num / (den.clamp(min=1e-30) if hasattr(den, "clamp")
                                                  else np.maximum(den, 1e-30))
            for m, val in score.items():
                val = val.double().cpu().numpy() if hasattr(val, "cpu") else np.asarray(val, dtype=np.float64)
                if m != "previous_token":  # previous_token holds only its rows already
                    val = val[:, rows[m]]
                sums[m][layer] += val.sum(-1)
            del P, Pt
    out = {m: sums[m] / counts[m] if counts[m] else np.full((L, H), np.nan) for m in METRICS}
    extra = {}
    if not has_vn:
        out["value_sink_mass"] = None
        extra["value_norms"] = probe.value_norm_error
    return HeadMetrics(**out, sink_k=sink_k, T=T, extra=extra)


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


def repeated_sequence_induction(model, n: int = 32, reps: int = 2, seed: int = 0, shift: int = 0, low: int = 0,
                                policy=None) -> np.ndarray:
    """Induction score ``(L, H)`` of ``model`` on a repeated random sequence (the standard probe, Olsson et al.).

    The sequence is :func:`repeated_random_ids` ``(n, reps, vocab=model.config.vocab_size, seed, low)``: ``n``
    distinct random tokens repeated ``reps`` times, so every query in a repeat has exactly one induction target.
    Unlike the induction column of :func:`head_metrics` on a text, this does not depend on what the text repeats.
    """
    if n < 1 or reps < 2:
        raise AttentionError(f"need n >= 1 tokens repeated reps >= 2 times, got n={n}, reps={reps}")
    ids = repeated_random_ids(n, reps, vocab=model.config.vocab_size, seed=seed, low=low)
    cap = capture_attention(model, ids, value_norms=False, policy=policy)
    return induction_score(cap, shift=shift)


