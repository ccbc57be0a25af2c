"""Headless glue of the ResidualLab (``widgets.residual_lab``): how core results are laid out as cells, labels and
colour ranges. No science here (every number comes from the core modules); this only arranges them for drawing, so
the layout can be tested without a browser.

>>> short_token("\\n"), short_token(" the"), short_token("abcdefghij", width=6)
('⏎', '␣the', 'abcde…')
>>> signed_range([-0.5, 2.0])
(-2.0, 2.0)
>>> strip_cells(["a", "b", "c"], per_row=2)
([0, 1, 0], [0, 0, 1])
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: what the lens grid can be coloured by (control value -> LensResult field, colour-bar title)
LENS_COLOURS = {"probability": ("top_probs", "top-1 probability"), "KL": ("kl", "KL to the output (bits)"),
                "entropy": ("entropy", "entropy (bits)")}

_VISIBLE = {"\n": "⏎", "\t": "⇥", "\r": "␍", " ": "␣"}


def short_token(tok: str, width: int = 8) -> str:
    """A token as a short visible label: whitespace shown (``␣``, ``⏎``, ``⇥``), other control characters escaped,
    at most ``width`` characters (a longer one ends in ``…``)."""
    s = "".join(_VISIBLE.get(c, c if c.isprintable() else repr(c)[1:-1]) for c in str(tok))
    if s == "":
        s = "∅"
    return s if len(s) <= width else s[: width - 1] + "…"


def signed_range(values) -> tuple[float, float]:
    """A colour range symmetric about 0 that holds every finite value (``(-1e-9, 1e-9)`` when all are 0)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    m = float(np.abs(v).max()) if v.size else 0.0
    m = m if m > 0 else 1e-9
    return -m, m


def value_range(values, floor: float | None = None) -> tuple[float, float]:
    """``(lo, hi)`` of the finite values (``floor`` as the low end when given), never an empty range."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    lo = float(v.min()) if v.size else 0.0
    hi = float(v.max()) if v.size else 1.0
    if floor is not None:
        lo = floor
    if hi <= lo:
        hi = lo + 1e-9
    return lo, hi


def ink(values, lo: float, hi: float, diverging: bool = False) -> list[str]:
    """Text colour readable on each cell: white on the dark end(s) of the palette, black elsewhere."""
    out = []
    for v in np.asarray(values, dtype=float):
        if not math.isfinite(v):
            out.append("#000000")
            continue
        if diverging:
            m = max(abs(lo), abs(hi), 1e-12)
            out.append("#ffffff" if abs(v) / m > 0.6 else "#000000")
        else:
            f = (v - lo) / max(hi - lo, 1e-12)
            out.append("#ffffff" if f > 0.62 else "#000000")
    return out


@dataclass
class LensCells:
    """One row per (boundary, position) cell of the lens grid, flattened boundary-major."""

    boundary: list          # boundary index 0..L
    position: list          # position 0..T-1
    boundary_name: list
    input: list             # the input token at the position (short)
    top1: list              # the top-1 prediction (short label drawn in the cell)
    prob: list              # its probability
    kl: list                # KL(final || boundary) in bits
    entropy: list           # entropy in bits
    value: list             # what the colour shows
    top5: list              # hover text: the top-k tokens and probabilities
    ink: list
    low: float
    high: float
    title: str


def lens_cells(res, colour_by: str = "probability", width: int = 6, hover_k: int = 5) -> LensCells:
    """The lens grid's cells from a ``LensResult``: top-1 token, probability, KL, entropy, hover text (the top
    ``hover_k``) and ink."""
    if colour_by not in LENS_COLOURS:
        raise ValueError(f"colour_by must be one of {list(LENS_COLOURS)}, got {colour_by!r}")
    B, T = np.asarray(res.top_probs).shape[:2]
    top_p = np.asarray(res.top_probs, dtype=float)
    kl = np.asarray(res.kl, dtype=float)
    ent = np.asarray(res.entropy, dtype=float)
    bl, pl, bn, il, t1, pr, kk, ee, hov = [], [], [], [], [], [], [], [], []
    for b in range(B):
        for t in range(T):
            toks = res.top_tokens[b][t]
            bl.append(b)
            pl.append(t)
            bn.append(str(res.boundaries[b]))
            il.append(short_token(res.tokens[t], 12))
            t1.append(short_token(toks[0], width))
            pr.append(float(top_p[b, t, 0]))
            kk.append(float(kl[b, t]))
            ee.append(float(ent[b, t]))
            hov.append(", ".join(f"{short_token(s, 12)} {p:.2f}"
                                 for s, p in zip(toks[:hover_k], top_p[b, t, :hover_k])))
    if colour_by == "probability":
        value, (lo, hi) = pr, (0.0, 1.0)
    elif colour_by == "KL":
        value = kk
        lo, hi = value_range(kk, floor=0.0)
    else:
        value = ee
        lo, hi = value_range(ee, floor=0.0)
    return LensCells(bl, pl, bn, il, t1, pr, kk, ee, list(value), hov, ink(value, lo, hi), lo, hi,
                     LENS_COLOURS[colour_by][1])


def strip_cells(tokens, per_row: int = 24) -> tuple[list[int], list[int]]:
    """``(x, y)`` of each token laid out left to right in rows of ``per_row`` (a shaded prompt that wraps)."""
    n = len(tokens)
    return [i % per_row for i in range(n)], [i // per_row for i in range(n)]


def top_components(values, limit: int = 40) -> np.ndarray:
    """Indices of the components to draw: all of them up to ``limit``, else the ``limit`` largest by
    ``|value|``, in their original order."""
    v = np.asarray(values, dtype=float)
    if v.size <= limit:
        return np.arange(v.size)
    keep = np.argsort(-np.abs(np.nan_to_num(v)), kind="stable")[:limit]
    return np.sort(keep)


def integer_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[int]:
    """Whole-number ticks in ``[lo, hi]`` (see :func:`workbench.attention.lab.integer_ticks`)."""
    from ..attention.lab import integer_ticks as ticks

    return ticks(lo, hi, max_ticks)
