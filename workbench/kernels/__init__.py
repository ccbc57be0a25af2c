"""GPU kernels (CuPy) with CPU reference paths: fused attention, fused sampling, speculative verify.

Public API (torch tensors in, torch tensors out, on the inputs' device)::

    from workbench import kernels
    kernels.backend()                       # "cupy", "emulator" or "reference"
    out = kernels.attention(q, k, v, causal=True, window=None, sinks=0)
    out, probs = kernels.attention(q, k, v, return_probs_heads=[0, 3])
    tok = kernels.sample(logits, temperature=0.8, top_k=50, top_p=0.9, min_p=0.05, seed=1)
    tokens, n_acc = kernels.verify_speculative(p, q, draft_tokens, seed=1)

Which code runs: the CuPy kernels when the back-end is ``cupy`` *and* the inputs are CUDA
tensors (or the same kernels compiled for the CPU when it is ``emulator`` and they are CPU
tensors); otherwise the torch reference (:mod:`workbench.kernels.reference`) on the inputs'
device. Both follow the same contract and validation, and the same seed gives the same tokens.
The back-end is chosen once (see :mod:`workbench.kernels.backend`), may be forced with
:func:`set_backend` or the ``WORKBENCH_KERNELS`` environment variable, or per call with
``backend="reference"`` / ``"cupy"`` / ``"emulator"``.

Non-contiguous inputs: the kernels take arbitrary batch/head/row strides, so views such as
``x.transpose(1, 2)`` of a (B, T, H, D) tensor are used without a copy as long as the last
dimension is contiguous; otherwise a contiguous copy is made. Sampling logits need only a
contiguous last dimension, too; p and q of :func:`verify_speculative` are made contiguous.

Lesson: ``notebooks/05_gpu_kernels.ipynb`` (2. The fused attention kernel).
"""
from __future__ import annotations

import operator

import torch

from . import reference
from .backend import (
    BACKENDS,
    BackendInfo,
    BackendUnavailableError,
    KernelError,
    KernelInputError,
    backend,
    backend_info,
    kernels_run_for,
    probe_cupy,
    resolve_for,
    set_backend,
)
from .reference import attention_mask, truncated_probs

__all__ = [
    "attention", "sample", "verify_speculative", "truncated_probs", "attention_mask",
    "backend", "backend_info", "set_backend", "kernels_run_for", "BACKENDS", "BackendInfo",
    "KernelError", "KernelInputError", "BackendUnavailableError",
    "SUPPORTED_DTYPES", "SUPPORTED_HEAD_DIMS", "reference", "kernel_source",
]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
_DTYPE_NAMES = "float16, bfloat16, float32"
_MAX_GRID_YZ = 65535


def kernel_source(name: str) -> str:
    """Source text of a kernel file shipped with the package: ``"attention.cu"`` or ``"sampling.cu"``."""
    from .cupy_ops import kernel_source as _src

    return _src(name)


def _as_int(x, what: str) -> int:
    try:
        return operator.index(x)
    except TypeError:
        raise KernelInputError(f"{what} must be an int, got {type(x).__name__}") from None


def _check_tensor(t, name: str, ndim: int, shape_doc: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise KernelInputError(f"{name} must be a torch.Tensor of shape {shape_doc}, "
                               f"got {type(t).__name__}")
    if t.dim() != ndim:
        raise KernelInputError(f"{name} must have shape {shape_doc} ({ndim} dims), "
                               f"got {tuple(t.shape)}")


def _check_float(t, name: str) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise KernelInputError(f"{name} has dtype {t.dtype}; supported: {_DTYPE_NAMES}")


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


# ----------------------------------------------------------------------------------------------
def attention(q, k, v, *, causal=True, window=None, sinks=0, scale=None,
              return_probs_heads=None, backend=None):
    """Fused attention forward: ``softmax(Q K^T * scale + mask) V``, one pass, no T x T matrix.

    Args:
        q: (B, H, Tq, D). Query row i sits at absolute position ``Tk - Tq + i`` (Tq < Tk is a
            decoding step against a KV cache; with ``causal=True``, Tq must be <= Tk).
        k, v: (B, H, Tk, D), same dtype and device as q.
            dtype float16, bfloat16 or float32 (arithmetic is float32); D in 16, 32, 64, 128.
        causal: mask keys after the query's position.
        window: sliding window, ``None`` or an int >= 1: keep the ``window`` most recent keys
            (self included). Needs ``causal=True``.
        sinks: with a window, also keep the first ``sinks`` keys (attention-sink tokens).
        scale: score scale, default ``1 / sqrt(D)``.
        return_probs_heads: ``None`` or a sequence of head indices whose attention
            probabilities are also returned.
        backend: ``None`` (the chosen back-end), ``"cupy"``, ``"emulator"`` or ``"reference"``.

    Returns:
        out (B, H, Tq, D) in q's dtype; or ``(out, probs)`` when ``return_probs_heads`` is given,
        probs float32 (B, len(heads), Tq, Tk), zeros where masked, rows summing to 1.

    On the cupy back-end, float16/bfloat16 run the tensor-core kernel (``wb_attn_mma_*``) and
    float32, or any call asking for probabilities, the SIMT kernel (``wb_attn_fwd_*``).
    """
    _check_tensor(q, "q", 4, "(B, H, Tq, D)")
    _check_tensor(k, "k", 4, "(B, H, Tk, D)")
    _check_tensor(v, "v", 4, "(B, H, Tk, D)")
    _check_float(q, "q")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise KernelInputError(f"q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise KernelInputError(f"q, k, v must be on one device; got {q.device}, {k.device}, {v.device}")
    B, H, Tq, D = q.shape
    if k.shape[:2] != (B, H) or k.shape[-1] != D:
        raise KernelInputError(f"k must have shape (B, H, Tk, D) = ({B}, {H}, Tk, {D}) to match q "
                               f"{tuple(q.shape)}; got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise KernelInputError(f"v must have the shape of k {tuple(k.shape)}; got {tuple(v.shape)}")
    if D not in SUPPORTED_HEAD_DIMS:
        raise KernelInputError(f"head dim D={D} is not supported; supported: "
                               f"{', '.join(map(str, SUPPORTED_HEAD_DIMS))}")
    Tk = k.shape[-2]
    if min(B, H, Tq, Tk) < 1:
        raise KernelInputError(f"empty input: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if causal and Tq > Tk:
        raise KernelInputError(f"causal attention needs Tq <= Tk (queries are the last Tq "
                               f"positions); got Tq={Tq}, Tk={Tk}")
    if window is not None:
        window = _as_int(window, "window")
        if window < 1:
            raise KernelInputError(f"window must be None or >= 1, got {window}")
        if not causal:
            raise KernelInputError("a sliding window needs causal=True")
    sinks = _as_int(sinks, "sinks")
    if sinks < 0:
        raise KernelInputError(f"sinks must be >= 0, got {sinks}")
    heads = None
    if return_probs_heads is not None:
        heads = []
        for h in return_probs_heads:
            h = _as_int(h, "return_probs_heads entries")
            if not -H <= h < H:
                raise KernelInputError(f"head index {h} out of range for H={H}")
            heads.append(h % H)
        if len(set(heads)) != len(heads):
            raise KernelInputError(f"return_probs_heads has duplicates: {list(return_probs_heads)}")
    which = resolve_for(q.is_cuda, backend)
    if which != "reference":   # cupy, or the emulator on CPU tensors
        if H > _MAX_GRID_YZ or B > _MAX_GRID_YZ:
            raise KernelInputError(f"the attention kernel supports B, H <= {_MAX_GRID_YZ}")
        from . import cupy_ops

        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        out, probs = cupy_ops.attention(q, k, v, causal=causal, window=window, sinks=sinks,
                                        scale=scale, probs_heads=heads)
    else:
        out, probs = reference.attention(q, k, v, causal=causal, window=window, sinks=sinks,
                                         scale=scale, probs_heads=heads)
    return out if heads is None else (out, probs)


# ----------------------------------------------------------------------------------------------
def _check_sampling_params(temperature, top_k, top_p, min_p, seed):
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise KernelInputError(f"temperature must be a number, got {temperature!r}") from None
    if not temperature >= 0:
        raise KernelInputError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None:
        top_k = _as_int(top_k, "top_k")
        if top_k < 0:
            raise KernelInputError(f"top_k must be None, 0 (off) or >= 1, got {top_k}")
        top_k = top_k or None
    if top_p is not None:
        top_p = float(top_p)
        if not 0.0 < top_p <= 1.0:
            raise KernelInputError(f"top_p must be in (0, 1], got {top_p}")
    if min_p is not None:
        min_p = float(min_p)
        if not 0.0 <= min_p <= 1.0:
            raise KernelInputError(f"min_p must be in [0, 1], got {min_p}")
    seed = _as_int(seed, "seed")
    if not 0 <= seed < 2 ** 64:
        raise KernelInputError(f"seed must be in [0, 2**64), got {seed}")
    return temperature, top_k, top_p, min_p, seed


def sample(logits, *, temperature=1.0, top_k=None, top_p=None, min_p=None, seed=0, backend=None):
    """Fused sampling: temperature, then top-k, top-p, min-p, then one categorical draw per row.

    Args:
        logits: (B, V), float16/bfloat16/float32 (the kernel reads float32: other dtypes are
            converted first). ``-inf`` entries are never drawn.
        temperature: > 0 divides the logits; 0 means greedy (first maximum).
        top_k: ``None`` or 0 (off), or keep the k largest logits (ties with the k-th all kept).
        top_p: ``None`` (off) or in (0, 1]: keep the smallest top set whose mass reaches top_p,
            the crossing token included (computed on the tempered, top-k-renormalised probs).
        min_p: ``None`` (off) or in [0, 1]: keep tokens with ``p_i >= min_p * max_j p_j``.
        seed: int in [0, 2**64); the draw is a deterministic function of (seed, row, logits).
            Use a new seed for each decoding step.
        backend: ``None``, ``"cupy"``, ``"emulator"`` or ``"reference"``.

    Returns:
        (B,) int64 token ids (``-1`` for a row with no finite logit). The exact distribution
        drawn from is :func:`truncated_probs` with the same arguments.
    """
    _check_tensor(logits, "logits", 2, "(B, V)")
    _check_float(logits, "logits")
    B, V = logits.shape
    if B < 1 or V < 1 or V >= 2 ** 31:
        raise KernelInputError(f"logits must have B >= 1 and 1 <= V < 2**31, got {(B, V)}")
    temperature, top_k, top_p, min_p, seed = _check_sampling_params(
        temperature, top_k, top_p, min_p, seed)
    which = resolve_for(logits.is_cuda, backend)
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed)
    if which != "reference":   # cupy, or the emulator on CPU tensors
        from . import cupy_ops

        x = _last_dim_contiguous(logits.float())
        if x.stride(0) < V:          # overlapping rows (e.g. expand()): copy rather than alias
            x = x.contiguous()
        return cupy_ops.sample(x, **kw)
    return reference.sample(logits, **kw)


# ----------------------------------------------------------------------------------------------
def verify_speculative(p, q, draft_tokens, *, seed=0, uniforms=None, backend=None):
    """Speculative-decoding verification for a batch, in one kernel launch.

    Args:
        p: (B, G+1, V) target-model probabilities at the G draft positions and one more.
        q: (B, G, V) draft-model probabilities at the G draft positions.
        draft_tokens: (B, G) integer token ids drawn from q, each in [0, V).
        seed: int; drives the acceptance uniforms (if not given) and the resampling draw.
        uniforms: optional (B, G) acceptance uniforms in [0, 1): draft g is accepted while
            ``u_g * q_g(x_g) < p_g(x_g)``, i.e. with probability min(1, p/q).
        backend: ``None``, ``"cupy"``, ``"emulator"`` or ``"reference"``.

    Returns:
        ``(tokens, n_accepted)``: tokens (B, G+1) int64 holds the n accepted drafts, then one new
        token (drawn from norm(max(0, p_n - q_n)) after a rejection, or from p_G when all G
        were accepted), then -1 padding; n_accepted (B,) int64 in [0, G]. Each row emits
        ``n_accepted + 1`` tokens. p and q are read as float32 (converted and made contiguous).
    """
    _check_tensor(p, "p", 3, "(B, G+1, V)")
    _check_tensor(q, "q", 3, "(B, G, V)")
    _check_tensor(draft_tokens, "draft_tokens", 2, "(B, G)")
    _check_float(p, "p")
    _check_float(q, "q")
    B, G1, V = p.shape
    G = G1 - 1
    if G1 < 1 or B < 1 or V < 1:
        raise KernelInputError(f"p must have shape (B, G+1, V) with B, G+1, V >= 1; got {tuple(p.shape)}")
    if tuple(q.shape) != (B, G, V):
        raise KernelInputError(f"q must have shape (B, G, V) = {(B, G, V)} to match p "
                               f"{tuple(p.shape)}; got {tuple(q.shape)}")
    if tuple(draft_tokens.shape) != (B, G):
        raise KernelInputError(f"draft_tokens must have shape (B, G) = {(B, G)}; "
                               f"got {tuple(draft_tokens.shape)}")
    if draft_tokens.dtype.is_floating_point or draft_tokens.dtype == torch.bool:
        raise KernelInputError(f"draft_tokens must be an integer tensor, got {draft_tokens.dtype}")
    devices = {p.device, q.device, draft_tokens.device}
    if uniforms is not None:
        _check_tensor(uniforms, "uniforms", 2, "(B, G)")
        if tuple(uniforms.shape) != (B, G):
            raise KernelInputError(f"uniforms must have shape (B, G) = {(B, G)}; "
                                   f"got {tuple(uniforms.shape)}")
        devices.add(uniforms.device)
    if len(devices) != 1:
        raise KernelInputError(f"p, q, draft_tokens (and uniforms) must be on one device; got {devices}")
    if G > 0 and bool(((draft_tokens < 0) | (draft_tokens >= V)).any()):
        raise KernelInputError(f"draft_tokens must lie in [0, V) = [0, {V})")
    seed = _as_int(seed, "seed")
    if not 0 <= seed < 2 ** 64:
        raise KernelInputError(f"seed must be in [0, 2**64), got {seed}")
    which = resolve_for(p.is_cuda, backend)
    p32 = p.float().contiguous()
    q32 = q.float().contiguous()
    d64 = draft_tokens.long().contiguous()
    u32 = None if uniforms is None else uniforms.float().contiguous()
    if which != "reference":   # cupy, or the emulator on CPU tensors
        from . import cupy_ops

        return cupy_ops.verify_speculative(p32, q32, d64, seed=seed, uniforms=u32)
    return reference.verify_speculative(p32, q32, d64, seed=seed, uniforms=u32)
