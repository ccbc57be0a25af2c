"""CPU (any-device torch) reference implementations of the GPU kernels.

Each function here computes exactly what the matching kernel in ``cu/*.cu`` computes, written
for reading: the attention reference walks the keys block by block with the same online
softmax as the kernel, and the sampling references use the same thresholds and the same
counter-based random numbers, so a seed gives the same tokens on CPU and GPU (up to float
rounding in rare ties). They take and return torch tensors on any device, and do no input
validation: the public functions in :mod:`workbench.kernels` check inputs, then dispatch here
or to :mod:`workbench.kernels.cupy_ops`.

Lesson: ``notebooks/05_gpu_kernels.ipynb`` (1. Online softmax; 3. Sampling without sorting; 4. Speculative
verification).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

NEG_INF = float("-inf")

# Random-number streams (mirrored in cu/sampling.cu).
STREAM_SAMPLE = 0
STREAM_ACCEPT = 1
STREAM_RESAMPLE = 2


# ----------------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------------
def attention_mask(
    Tq: int,
    Tk: int,
    *,
    causal: bool = True,
    window: int | None = None,
    sinks: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean visibility mask, shape (Tq, Tk); ``True`` where query i may attend to key j.

    Query row i sits at absolute position ``p = Tk - Tq + i``. Key j is visible when
    ``(not causal or j <= p) and (window is None or p - j < window or j < sinks)``:
    a sliding window of the ``window`` most recent keys (self included) plus ``sinks`` sink tokens.
    """
    pos = torch.arange(Tq, device=device)[:, None] + (Tk - Tq)
    j = torch.arange(Tk, device=device)[None, :]
    vis = torch.ones(Tq, Tk, dtype=torch.bool, device=device)
    if causal:
        vis &= j <= pos
    if window is not None:
        vis &= ((pos - j) < window) | (j < sinks)
    return vis


def naive_attention(q, k, v, *, causal=True, window=None, sinks=0, scale=None):
    """The plain formula: ``softmax(Q K^T * scale + mask) V`` with the full (Tq, Tk) matrix.

    q (B, H, Tq, D), k and v (B, H, Tk, D). Returns ``(out (B, H, Tq, D) in q's dtype,
    probs (B, H, Tq, Tk) float32)``. Memory is O(Tq * Tk) per head.
    """
    D = q.shape[-1]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    s = (q.float() @ k.float().transpose(-1, -2)) * scale
    vis = attention_mask(q.shape[-2], k.shape[-2], causal=causal, window=window, sinks=sinks,
                         device=q.device)
    s = s.masked_fill(~vis, NEG_INF)
    probs = torch.softmax(s, dim=-1)
    return (probs @ v.float()).to(q.dtype), probs


def online_softmax(x: torch.Tensor, block: int = 4):
    """Softmax of a 1-D tensor computed block by block, as the attention kernel does.

    Returns ``(probs, steps)``: ``steps`` is a list of dicts, one per block, with the block's
    values, its max, the running max ``m``, the factor ``alpha = exp(m_old - m_new)`` that
    rescales the old running sum, and the running sum ``l`` after the block. Only one pass
    over x is needed for ``m`` and ``l``; the final probabilities are ``exp(x - m) / l``.
    """
    m = NEG_INF
    l = 0.0
    steps = []
    for start in range(0, x.numel(), block):
        blk = x[start:start + block].double()
        m_new = max(m, float(blk.max()))
        alpha = math.exp(m - m_new) if m != NEG_INF else 0.0
        l = l * alpha + float(torch.exp(blk - m_new).sum())
        steps.append({"block": [round(float(t), 4) for t in blk], "block_max": float(blk.max()),
                      "m": m_new, "alpha": alpha, "l": l})
        m = m_new
    return torch.exp(x.double() - m) / l, steps


def attention(q, k, v, *, causal=True, window=None, sinks=0, scale=None, probs_heads=None,
              block_n: int = 64):
    """Attention forward by online softmax over key blocks (the kernel's algorithm, in torch).

    q (B, H, Tq, D); k, v (B, H, Tk, D) with Tq <= Tk; query row i at position Tk - Tq + i.
    Arithmetic in float32. Returns ``(out, probs)``: out (B, H, Tq, D) in q's dtype; probs is
    ``None`` or, when ``probs_heads`` lists head indices, float32 (B, len(probs_heads), Tq, Tk)
    holding the attention probabilities of those heads (zeros where masked).
    """
    B, H, Tq, D = q.shape
    Tk = k.shape[-2]
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    qf = q.float() * scale
    m = torch.full((B, H, Tq), NEG_INF, device=q.device)   # running max
    l = torch.zeros((B, H, Tq), device=q.device)           # running sum of exp(s - m)
    acc = torch.zeros((B, H, Tq, D), device=q.device)      # running un-normalised output
    vis_all = attention_mask(Tq, Tk, causal=causal, window=window, sinks=sinks, device=q.device)
    for j0 in range(0, Tk, block_n):
        j1 = min(Tk, j0 + block_n)
        vis = vis_all[:, j0:j1]
        if not bool(vis.any()):
            continue                                         # the kernel skips these tiles too
        s = (qf @ k[..., j0:j1, :].float().transpose(-1, -2)).masked_fill(~vis, NEG_INF)
        m_new = torch.maximum(m, s.amax(dim=-1))
        m_use = torch.where(m_new == NEG_INF, torch.zeros_like(m_new), m_new)
        alpha = torch.exp(m - m_use)                          # rescales the old state
        p = torch.exp(s - m_use[..., None])
        l = l * alpha + p.sum(dim=-1)
        acc = acc * alpha[..., None] + p @ v[..., j0:j1, :].float()
        m = m_new
    out = (acc / l.clamp_min(1e-30)[..., None]).to(q.dtype)
    probs = None
    if probs_heads is not None:
        heads = list(probs_heads)
        s = (qf[:, heads] @ k[:, heads].float().transpose(-1, -2)).masked_fill(~vis_all, NEG_INF)
        m_use = torch.where(m == NEG_INF, torch.zeros_like(m), m)[:, heads]
        probs = torch.exp(s - m_use[..., None]) / l[:, heads].clamp_min(1e-30)[..., None]
    return out, probs


# ----------------------------------------------------------------------------------------------
# random numbers shared with the kernels
# ----------------------------------------------------------------------------------------------
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform_noise(seed: int, stream: int, rows, idx) -> torch.Tensor:
    """Uniforms in (0, 1), float32, from a hash of (seed, stream, row, index).

    ``rows`` and ``idx`` broadcast against each other (integer array-likes). Bit-identical to
    ``wb_uniform`` in cu/sampling.cu: 23 random bits, ``(h >> 41 + 0.5) * 2**-23``.
    """
    with np.errstate(over="ignore"):
        rows = np.asarray(rows, dtype=np.uint64)
        idx = np.asarray(idx, dtype=np.uint64)
        h = _mix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
        h = _mix64(h ^ rows)
        h = _mix64(h ^ (idx | (np.uint64(stream) << np.uint64(40))))
        u = ((h >> np.uint64(41)).astype(np.float64) + 0.5) * 2.0 ** -23
    return torch.from_numpy(u.astype(np.float32))


def gumbel_noise(seed: int, stream: int, rows, idx) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))`` in float32 from :func:`uniform_noise`."""
    u = uniform_noise(seed, stream, rows, idx)
    return -torch.log(-torch.log(u))


# ----------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------
@dataclass
class Truncation:
    """The kept set of a sampling call: ``keep`` (B, V) bool and ``z`` (B, V) float32, where
    ``z = (x - max x) / temperature`` is the tempered logit relative to the row's max."""

    keep: torch.Tensor
    z: torch.Tensor


def truncate(logits, *, temperature=1.0, top_k=None, top_p=None, min_p=None) -> Truncation:
    """Apply temperature, then top-k, top-p and min-p as thresholds on the logits.

    logits (B, V). Each filter keeps ``{i : x_i >= tau}``: top-k's tau is the k-th largest logit;
    top-p's tau is the logit of the token at which the descending cumulative mass (of the
    top-k-renormalised, tempered distribution) first reaches top_p; min-p keeps
    ``exp(z_i) >= min_p``, i.e. ``p_i >= min_p * max p``. Ties at a threshold are all kept.
    ``temperature <= 0`` keeps only the first maximum (greedy).
    """
    x = logits.float()
    B, V = x.shape
    finite = x > NEG_INF
    m = torch.where(finite, x, torch.full_like(x, NEG_INF)).amax(dim=-1, keepdim=True)
    m = torch.where(m > NEG_INF, m, torch.zeros_like(m))
    if temperature <= 0:
        keep = torch.zeros_like(finite)
        arg = torch.where(finite, x, torch.full_like(x, NEG_INF)).argmax(dim=-1)
        keep[torch.arange(B), arg] = True
        return Truncation(keep & finite, torch.zeros_like(x))
    inv_t = float(np.float32(1.0 / temperature))             # same float32 constant as the kernel
    z = (x - m) * inv_t
    keep = finite.clone()
    if top_k is not None and 0 < top_k < V:
        kth = torch.topk(x, top_k, dim=-1).values[:, -1:]
        keep &= x >= kth
    if top_p is not None and top_p < 1.0:
        w = torch.where(keep, torch.exp(z.double()), torch.zeros_like(z, dtype=torch.float64))
        order = torch.argsort(x, dim=-1, descending=True, stable=True)
        cum = torch.cumsum(torch.gather(w, 1, order), dim=-1)
        target = float(top_p) * cum[:, -1:]
        c = torch.searchsorted(cum, target).clamp(max=V - 1)
        n_keep = keep.sum(dim=-1, keepdim=True).clamp(min=1)
        c = torch.minimum(c, n_keep - 1)
        tau = torch.gather(torch.gather(x, 1, order), 1, c)
        keep &= x >= tau
    if min_p is not None and min_p > 0:
        keep &= torch.exp(z) >= min_p
    return Truncation(keep, z)


def truncated_probs(logits, *, temperature=1.0, top_k=None, top_p=None, min_p=None,
                    dtype=torch.float64) -> torch.Tensor:
    """The exact distribution that :func:`sample` draws from, (B, V), rows summing to 1.

    (All-zero rows for rows with no finite logit.)
    """
    t = truncate(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    if temperature <= 0:
        return t.keep.to(dtype)
    w = torch.where(t.keep, torch.exp(t.z.double()), torch.zeros_like(t.z, dtype=torch.float64))
    return (w / w.sum(dim=-1, keepdim=True).clamp_min(1e-300)).to(dtype)


def sample(logits, *, temperature=1.0, top_k=None, top_p=None, min_p=None, seed=0):
    """Draw one token per row: (B, V) logits -> (B,) int64 (``-1`` for a row of all ``-inf``).

    Gumbel-max over the kept set: ``argmax_i z_i + G_i`` with ``G_i`` from
    :func:`gumbel_noise` (stream 0, row, i), first index on ties.
    """
    t = truncate(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    B, V = t.keep.shape
    none = ~t.keep.any(dim=-1)
    if temperature <= 0:
        tok = t.keep.to(torch.int8).argmax(dim=-1)
    else:
        g = gumbel_noise(seed, STREAM_SAMPLE, np.arange(B)[:, None], np.arange(V)[None, :])
        score = torch.where(t.keep, t.z + g.to(t.z.device), torch.full_like(t.z, NEG_INF))
        tok = score.argmax(dim=-1)
    return torch.where(none, torch.full_like(tok, -1), tok).to(torch.int64)


# ----------------------------------------------------------------------------------------------
# speculative verification
# ----------------------------------------------------------------------------------------------
def accept_uniforms(seed: int, B: int, G: int) -> torch.Tensor:
    """The (B, G) acceptance uniforms that :func:`verify_speculative` draws when none are given."""
    return uniform_noise(seed, STREAM_ACCEPT, np.arange(B)[:, None], np.arange(G)[None, :])


def verify_speculative(p, q, draft_tokens, *, seed=0, uniforms=None):
    """Speculative-decoding verification for a batch (Leviathan et al. 2023, Alg. 1).

    p (B, G+1, V) target probabilities at the G draft positions plus one; q (B, G, V) draft
    probabilities; draft_tokens (B, G) int64; uniforms (B, G) in [0, 1) or None (drawn from
    ``seed``). Draft g is accepted while ``u_g * q_g(x_g) < p_g(x_g)``. At the first rejection n a
    token is drawn from ``norm(max(0, p_n - q_n))``; if all G are accepted, a bonus token from p_G.
    Returns ``(tokens (B, G+1) int64, n_accepted (B,) int64)``: tokens holds the n accepted
    drafts, then the new token, then -1.
    """
    B, G1, V = p.shape
    G = G1 - 1
    pf, qf = p.float(), q.float()
    draft = draft_tokens.long()
    u = accept_uniforms(seed, B, G).to(p.device) if uniforms is None else uniforms.float()
    if G > 0:
        px = torch.gather(pf[:, :G], 2, draft[..., None])[..., 0]
        qx = torch.gather(qf, 2, draft[..., None])[..., 0]
        accepted = u * qx < px
        n = torch.cumprod(accepted.to(torch.int64), dim=1).sum(dim=1)
    else:
        n = torch.zeros(B, dtype=torch.int64, device=p.device)
    rows = torch.arange(B, device=p.device)
    pn = pf[rows, n]                                                        # (B, V)
    qn = torch.where((n < G)[:, None], qf[rows, n.clamp(max=max(G - 1, 0))], torch.zeros_like(pn)) \
        if G > 0 else torch.zeros_like(pn)
    w = torch.where((n < G)[:, None], (pn - qn).clamp_min(0.0), pn)
    empty = ~(w > 0).any(dim=-1)
    w = torch.where(empty[:, None], pn, w)                                  # rounding fallback
    g = gumbel_noise(seed, STREAM_RESAMPLE, np.arange(B)[:, None], np.arange(V)[None, :])
    score = torch.where(w > 0, torch.log(w) + g.to(w.device), torch.full_like(w, NEG_INF))
    tok = score.argmax(dim=-1)
    tokens = torch.full((B, G + 1), -1, dtype=torch.int64, device=p.device)
    gidx = torch.arange(G + 1, device=p.device)[None, :]
    if G > 0:
        tokens[:, :G] = torch.where(gidx[:, :G] < n[:, None], draft, tokens[:, :G])
    tokens[rows, n] = tok
    return tokens, n


# ----------------------------------------------------------------------------------------------
# statistics used by the tests and the notebook
# ----------------------------------------------------------------------------------------------
def chi_square_pvalue(tokens, probs, min_expected: float = 5.0) -> float:
    """Pearson chi-square goodness of fit of drawn ``tokens`` (N,) to the distribution ``probs`` (V,).

    Outcomes with expected count below ``min_expected`` are pooled into one cell. A token drawn
    where ``probs`` is 0 is impossible under the hypothesis and gives p-value 0.
    """
    from scipy import stats

    tokens = torch.as_tensor(tokens).long().cpu()
    probs = torch.as_tensor(probs, dtype=torch.float64).cpu()
    probs = probs / probs.sum()
    n = tokens.numel()
    if bool((tokens < 0).any()) or bool((tokens >= probs.numel()).any()):
        return 0.0
    counts = torch.bincount(tokens, minlength=probs.numel()).double()
    if bool((counts[probs == 0] > 0).any()):
        return 0.0
    expected = probs * n
    big = expected >= min_expected
    obs = counts[big].tolist()
    exp = expected[big].tolist()
    rest_e = float(expected[~big & (probs > 0)].sum())
    if rest_e > 0:
        obs.append(float(counts[~big & (probs > 0)].sum()))
        exp.append(rest_e)
    if len(obs) < 2:
        return 1.0
    scale = sum(obs) / sum(exp)   # guard against rounding in the expected total
    return float(stats.chisquare(obs, [e * scale for e in exp]).pvalue)
