"""CuPy back-end: compiles ``cu/*.cu`` with NVRTC (``cupy.RawModule``) and launches the kernels.

Attention has two kernels in ``cu/attention.cu``: ``wb_attn_fwd_*`` (SIMT, fp32 arithmetic, every
dtype, can also write probabilities) and ``wb_attn_mma_*`` (tensor cores, fp16/bf16); ``"auto"``
picks the tensor-core one whenever it applies.

Tensors cross between torch and CuPy zero-copy through DLPack (:func:`to_cupy`,
:func:`to_torch`); outputs are allocated by torch, so torch's caching allocator and
``torch.cuda.max_memory_allocated`` see them, and kernels run on torch's current stream.
This module imports CuPy only inside functions: importing it on a machine without CuPy is fine.
CPU tensors take the same launchers through the CPU emulator (:mod:`workbench.kernels.emulator`),
which stands in for CuPy: same sources, same arguments, same launch geometry.
Inputs are assumed validated by :mod:`workbench.kernels`.

Lesson: ``notebooks/05_gpu_kernels.ipynb`` (2. The fused attention kernel).
"""
from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

import numpy as np
import torch

# Query rows per thread block for each head dim (must match WB_ATTN_ENTRY in cu/attention.cu).
ATTN_BLOCK_M = {16: 64, 32: 64, 64: 64, 128: 32}
ATTN_THREADS_PER_ROW = 4
SAMPLE_THREADS = 1024
_DTYPE_TAG = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


@lru_cache(maxsize=None)
def kernel_source(name: str) -> str:
    """Text of ``workbench/kernels/cu/<name>`` (e.g. ``"attention.cu"``)."""
    return resources.files("workbench.kernels").joinpath("cu", name).read_text()


EMULATED = -1   # the device index of CPU tensors: their kernels run in the emulator


@lru_cache(maxsize=None)
def _module(code: str, device_index: int):
    if device_index == EMULATED:
        from . import emulator

        return emulator.load(code, "attention" if "wb_attn" in code else "sampling")
    import cupy

    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=code, options=("--std=c++14",))


@lru_cache(maxsize=None)
def _function(file: str, kernel: str, device_index: int, source: str | None = None):
    """The compiled kernel ``kernel`` from ``cu/<file>`` (or from ``source``, used by the tests
    to build deliberately wrong variants). Modules are compiled once per source and device."""
    return _module(source if source is not None else kernel_source(file), device_index).get_function(kernel)


def to_cupy(t: torch.Tensor):
    """Zero-copy view of a CUDA tensor as a CuPy array (DLPack); a CPU tensor is passed as itself
    (the emulator reads its memory).

    16-bit floats are viewed as int16 first (CuPy has no bfloat16): the kernels read raw bits.
    """
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.view(torch.int16)
    if not t.is_cuda:
        return t
    import cupy

    return cupy.from_dlpack(t)


def to_torch(a) -> torch.Tensor:
    """Zero-copy view of a CuPy array as a torch tensor (DLPack)."""
    return torch.from_dlpack(a)


def _stream(device: torch.device):
    """torch's current stream on ``device`` as a CuPy stream (so kernels queue behind torch work)."""
    return _external_stream(torch.cuda.current_stream(device).cuda_stream, device.index)


@lru_cache(maxsize=64)
def _external_stream(ptr: int, device_index):
    import warnings

    import cupy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # CuPy 14 prefers Stream.from_external
        return cupy.cuda.ExternalStream(ptr, -1 if device_index is None else device_index)


def _device_index(device: torch.device) -> int:
    if device.type != "cuda":
        return EMULATED
    return device.index if device.index is not None else torch.cuda.current_device()


def _launch(fn, grid, block, make_args, device: torch.device, device_index: int):
    """Run ``fn`` on torch's current stream. ``make_args`` builds the arguments (the DLPack
    views) inside the stream context, so the DLPack hand-over is on that same stream."""
    if device_index == EMULATED:
        fn(grid, block, make_args())
        return
    import cupy

    with cupy.cuda.Device(device_index), _stream(device):
        fn(grid, block, make_args())


_NULL = np.uint64(0)   # a null pointer argument


ATTN_IMPLS = ("auto", "mma", "simt")
MMA_BLOCK_M = 64
MMA_THREADS = 128


def attention_impl(dtype: torch.dtype, probs_heads, impl: str = "auto") -> str:
    """Which attention kernel runs: ``"mma"`` (tensor cores: fp16/bf16, no probabilities) or
    ``"simt"`` (fp32 arithmetic on CUDA cores: every dtype, can write probabilities)."""
    if impl not in ATTN_IMPLS:
        raise ValueError(f"impl must be one of {ATTN_IMPLS}, got {impl!r}")
    mma_ok = dtype in (torch.float16, torch.bfloat16) and probs_heads is None
    if impl == "mma" and not mma_ok:
        raise ValueError("the tensor-core kernel takes float16/bfloat16 and writes no probabilities")
    return "mma" if impl == "mma" or (impl == "auto" and mma_ok) else "simt"


def _aligned16(*ts) -> bool:
    """All rows start on 16-byte boundaries (so the mma kernel can load 8 halves at a time)."""
    return all(t.data_ptr() % 16 == 0 and all(st % 8 == 0 for st in t.stride()[:3]) for t in ts)


def attention(q, k, v, *, causal=True, window=None, sinks=0, scale=None, probs_heads=None,
              impl="auto"):
    """Launch an attention kernel. Same contract as :func:`reference.attention`.

    q (B, H, Tq, D), k/v (B, H, Tk, D), CUDA, same dtype, last dim contiguous (any other strides).
    ``impl``: ``"auto"`` (tensor cores for fp16/bf16 unless probabilities are requested), ``"mma"``
    or ``"simt"``; see :func:`attention_impl`.
    """
    B, H, Tq, D = q.shape
    Tk = k.shape[-2]
    dev = q.device
    idx = _device_index(dev)
    out = torch.empty((B, H, Tq, D), dtype=q.dtype, device=dev)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    i32, i64 = np.int32, np.int64
    if attention_impl(q.dtype, probs_heads, impl) == "mma":
        fn = _function("attention.cu", f"wb_attn_mma_{_DTYPE_TAG[q.dtype]}_d{D}", idx)
        vec = _aligned16(q, k, v)
        make_args = lambda: (  # noqa: E731
            to_cupy(q), to_cupy(k), to_cupy(v), to_cupy(out), i32(H), i32(Tq), i32(Tk),
            i64(q.stride(0)), i64(q.stride(1)), i64(q.stride(2)),
            i64(k.stride(0)), i64(k.stride(1)), i64(k.stride(2)),
            i64(v.stride(0)), i64(v.stride(1)), i64(v.stride(2)),
            np.float32(scale), i32(1 if causal else 0), i32(0 if window is None else window),
            i32(sinks), i32(1 if vec else 0),
        )
        grid = ((Tq + MMA_BLOCK_M - 1) // MMA_BLOCK_M, H, B)
        _launch(fn, grid, (MMA_THREADS,), make_args, dev, idx)
        return out, None
    fn = _function("attention.cu", f"wb_attn_fwd_{_DTYPE_TAG[q.dtype]}_d{D}", idx)
    n_slots = 0
    probs = head_slot = None
    if probs_heads is not None:
        heads = list(probs_heads)
        n_slots = len(heads)
        slot = torch.full((H,), -1, dtype=torch.int32)
        for s, h in enumerate(heads):
            slot[h] = s
        head_slot = slot.to(dev)
        probs = torch.zeros((B, n_slots, Tq, Tk), dtype=torch.float32, device=dev)
    bm = ATTN_BLOCK_M[D]
    grid = ((Tq + bm - 1) // bm, H, B)
    block = (bm * ATTN_THREADS_PER_ROW,)
    make_args = lambda: (  # noqa: E731
        to_cupy(q), to_cupy(k), to_cupy(v), to_cupy(out),
        to_cupy(probs) if probs is not None else _NULL,
        to_cupy(head_slot) if probs is not None else _NULL,
        i32(H), i32(Tq), i32(Tk),
        i64(q.stride(0)), i64(q.stride(1)), i64(q.stride(2)),
        i64(k.stride(0)), i64(k.stride(1)), i64(k.stride(2)),
        i64(v.stride(0)), i64(v.stride(1)), i64(v.stride(2)),
        i32(n_slots), np.float32(scale), i32(1 if causal else 0),
        i32(0 if window is None else window), i32(sinks),
    )
    _launch(fn, grid, block, make_args, dev, idx)
    return out, probs


def sample(logits, *, temperature=1.0, top_k=None, top_p=None, min_p=None, seed=0, source=None):
    """Launch ``wb_sample_rows``: (B, V) float32 CUDA logits (row stride free) -> (B,) int64.

    ``source``: compile this text instead of cu/sampling.cu (tests of a wrong variant)."""
    B, V = logits.shape
    dev = logits.device
    idx = _device_index(dev)
    fn = _function("sampling.cu", "wb_sample_rows", idx, source)
    out = torch.empty((B,), dtype=torch.int64, device=dev)
    t = float(temperature)
    inv_t = np.float32(1.0 / t) if t > 0 else np.float32(0.0)
    make_args = lambda: (  # noqa: E731
        to_cupy(logits), np.int64(logits.stride(0)), np.int32(V),
        np.float32(t), inv_t, np.int32(0 if top_k is None else top_k),
        np.float32(1.0 if top_p is None else top_p), np.float32(0.0 if min_p is None else min_p),
        np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF), to_cupy(out),
    )
    _launch(fn, (B,), (SAMPLE_THREADS,), make_args, dev, idx)
    return out


def verify_speculative(p, q, draft_tokens, *, seed=0, uniforms=None):
    """Launch ``wb_verify_speculative``. Same contract as :func:`reference.verify_speculative`.

    p (B, G+1, V), q (B, G, V) float32 contiguous; draft_tokens (B, G) int64; uniforms (B, G)
    float32 or None.
    """
    B, G1, V = p.shape
    G = G1 - 1
    dev = p.device
    idx = _device_index(dev)
    fn = _function("sampling.cu", "wb_verify_speculative", idx)
    tokens = torch.empty((B, G + 1), dtype=torch.int64, device=dev)
    n_acc = torch.empty((B,), dtype=torch.int64, device=dev)
    if G == 0:   # a zero-size tensor has no usable pointer: pass one-element dummies
        q = torch.zeros(1, device=dev)
        draft_tokens = torch.zeros(1, dtype=torch.int64, device=dev)
        uniforms = None
    make_args = lambda: (  # noqa: E731
        to_cupy(p), to_cupy(q), to_cupy(draft_tokens),
        _NULL if uniforms is None else to_cupy(uniforms),
        np.int32(G), np.int32(V), np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF),
        to_cupy(tokens), to_cupy(n_acc))
    _launch(fn, (B,), (SAMPLE_THREADS,), make_args, dev, idx)
    return tokens, n_acc
