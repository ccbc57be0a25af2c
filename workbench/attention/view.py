"""What a viewer needs from a capture: a downsampled head image, its labels, payload sizes, PNG export.

The widget sends one image per head view, never the whole ``(L, H, T, T)`` tensor. For large ``T`` the pattern
is downsampled by a factor ``f``: image row ``r`` is the *mean* over queries ``r*f .. r*f+f-1`` and image column
``c`` the *sum* over keys ``c*f .. c*f+f-1``, so every image row still sums to 1 (mass per block of keys).

>>> import numpy as np
>>> v = head_view(np.tril(np.ones((6, 6))) / np.arange(1, 7)[:, None], max_side=3)
>>> v.image.shape, v.factor, [round(float(s), 6) for s in v.image.sum(1)]
((3, 3), 2, [1.0, 1.0, 1.0])

Lesson: ``notebooks/02_attention.ipynb`` (4 · The Attention lab).
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import AttentionError


@dataclass
class HeadView:
    """A displayable head pattern: ``image`` ``(n_q, n_k)`` float32 covering queries ``q_start ..`` and keys ``0 ..``.

    Image row ``r`` covers query positions ``[q_edges[r], q_edges[r + 1])``, column ``c`` key positions
    ``[k_edges[c], k_edges[c + 1])``; ``q_labels`` / ``k_labels`` name them (a token, or ``"a-b"`` for a block).
    """

    image: np.ndarray
    q_edges: np.ndarray
    k_edges: np.ndarray
    q_labels: list[str]
    k_labels: list[str]
    factor: int

    @property
    def nbytes(self) -> int:
        return int(self.image.nbytes)


def downsample(a: np.ndarray, factor: int) -> np.ndarray:
    """``(Tq, Tk)`` -> ``(ceil(Tq/f), ceil(Tk/f))``: mean over blocks of query rows, sum over blocks of key columns."""
    if factor <= 1:
        return np.ascontiguousarray(a, dtype=np.float32)
    Tq, Tk = a.shape
    nq, nk = math.ceil(Tq / factor), math.ceil(Tk / factor)
    if (Tq, Tk) == (nq * factor, nk * factor):
        pad = np.asarray(a, dtype=np.float32)
    else:
        pad = np.zeros((nq * factor, nk * factor), dtype=np.float32)
        pad[:Tq, :Tk] = a
    s = pad.reshape(nq, factor, nk, factor).sum(axis=3, dtype=np.float64)  # keys summed per block: (nq, f, nk)
    counts = np.minimum(factor, Tq - np.arange(nq) * factor)  # last block may be short
    return (s.sum(axis=1) / counts[:, None]).astype(np.float32)


def _labels(tokens, edges) -> list[str]:
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        out.append(tokens[a] if b - a == 1 else f"{a}-{b - 1}")
    return out


def head_view(pattern, q_start: int = 0, tokens=None, max_side: int = 512) -> HeadView:
    """Downsample one head's pattern ``(Tq, Tk)`` so that neither side exceeds ``max_side`` pixels."""
    a = np.asarray(pattern.detach().cpu() if hasattr(pattern, "detach") else pattern)
    if a.ndim != 2:
        raise AttentionError(f"a head pattern is (Tq, Tk), got shape {a.shape}")
    if max_side < 1:
        raise AttentionError(f"max_side must be >= 1, got {max_side}")
    Tq, Tk = a.shape
    f = max(1, math.ceil(max(Tq, Tk) / max_side))
    return _make_view(downsample(a, f), f, q_start, Tq, Tk, tokens)


def _make_view(img, f, q_start, Tq, Tk, tokens) -> HeadView:
    q_edges = np.minimum(q_start + np.arange(img.shape[0] + 1) * f, q_start + Tq)
    k_edges = np.minimum(np.arange(img.shape[1] + 1) * f, Tk)
    tokens = tokens if tokens is not None else [str(i) for i in range(Tk)]
    return HeadView(img, q_edges, k_edges, _labels(tokens, q_edges), _labels(tokens, k_edges), f)


def probe_head_view(probe, layer: int, head: int, tokens=None, max_side: int = 512, window=None,
                    value_weighted: bool = False, block_rows: int | None = None) -> HeadView:
    """:func:`head_view` of one head of an :class:`~workbench.attention.AttentionProbe`, computed in blocks of
    query rows (a multiple of the downsampling factor, about 4M probabilities each) so that the ``(Tq, Tk)``
    pattern is never held whole; equal to ``head_view(probe.probs(layer, [head], window)[0], ...)``.

    Each block's keys stop at its last query; the keys after it are masked (weight 0) in the full pattern, so
    those image columns stay 0. ``value_weighted``: rows of ``a_ij ||v_j W_O^h||`` renormalised to 1, as
    :func:`~workbench.attention.value_weighted` does.
    """
    from .capture import _window

    if max_side < 1:
        raise AttentionError(f"max_side must be >= 1, got {max_side}")
    start, end = _window(window, probe.T)
    Tq, Tk = end - start, end
    f = max(1, math.ceil(max(Tq, Tk) / max_side))
    img = np.zeros((math.ceil(Tq / f), math.ceil(Tk / f)), dtype=np.float32)
    vn = None
    if value_weighted:
        vn = probe.value_norms(layer, [head], end)
        if vn is None:
            raise AttentionError(f"value-weighted view unavailable: {probe.value_norm_error}")
        vn = vn[0].float()
    rows = block_rows or max(1, (1 << 22) // max(1, Tk))
    rows = max(f, rows // f * f)
    for s in range(start, end, rows):
        e = min(s + rows, end)
        p = probe.probs(layer, [head], (s, e))[0].float()  # (b, e)
        if vn is not None:
            w = p * vn[:e].to(p.device)[None, :]
            p = w / w.sum(-1, keepdim=True).clamp(min=1e-30)
        sub = downsample(p.cpu().numpy(), f)
        r0 = (s - start) // f
        img[r0 : r0 + sub.shape[0], : sub.shape[1]] = sub
    return _make_view(img, f, start, Tq, Tk, tokens)


def bertviz_json_bytes(probs: np.ndarray, tokens: list[str], sample_rows: int | None = None) -> tuple[int, bool]:
    """Size in bytes of ``(L, H, T, T)`` written as BertViz does: nested lists of floats in JSON, plus tokens.

    With ``sample_rows`` only that many rows per head are serialised and the total is extrapolated
    (returns ``(bytes, estimated)``). ``probs`` may be any object with ``[l, h]`` giving a ``(T, T)`` array.
    """
    L, H = probs.shape[:2]
    total, estimated = 0, False
    rng = np.random.default_rng(0)
    for layer in range(L):
        for h in range(H):
            a = np.asarray(probs[layer, h], dtype=np.float32)
            T = a.shape[0]
            if sample_rows is not None and sample_rows < T:
                rows = rng.choice(T, sample_rows, replace=False)
                n = sum(len(json.dumps(a[r].tolist())) for r in rows)
                total += int(n * T / sample_rows) + (T - 1) * 2 + 2
                estimated = True
            else:
                total += len(json.dumps(a.tolist()))
    total += len(json.dumps({"left_text": tokens, "right_text": tokens})) + (L * H) * 2
    return total, estimated


# --- colours and PNG export (no extra dependency) ---------------------------------------------------------------

def _viridis_lut(n: int = 256) -> np.ndarray:
    """A 256-entry RGB ramp (uint8, ``(n, 3)``) from bokeh's Viridis256 palette."""
    from bokeh.palettes import Viridis256

    lut = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in Viridis256], dtype=np.uint8)
    return lut if n == 256 else lut[np.linspace(0, 255, n).astype(int)]


def to_rgb(image: np.ndarray, vmin: float = 0.0, vmax: float | None = None) -> np.ndarray:
    """Colour-map ``(h, w)`` values to ``(h, w, 3)`` uint8 with Viridis."""
    img = np.asarray(image, dtype=np.float64)
    vmax = float(np.nanmax(img)) if vmax is None else vmax
    scale = (img - vmin) / max(vmax - vmin, 1e-12)
    idx = np.clip(np.nan_to_num(scale) * 255, 0, 255).astype(np.uint8)
    return _viridis_lut()[idx]


def save_png(path, rgb: np.ndarray, scale: int = 1) -> None:
    """Write ``(h, w, 3)`` uint8 as an 8-bit RGB PNG (row 0 at the top); ``scale`` repeats pixels."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise AttentionError(f"PNG export takes (h, w, 3) uint8, got {rgb.shape}")
    if scale > 1:
        rgb = rgb.repeat(scale, 0).repeat(scale, 1)
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))
