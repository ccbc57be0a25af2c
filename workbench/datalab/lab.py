"""Glue for the data lab widget (``widgets.DataLab``) and lesson 07: small headless helpers around the core
modules (:mod:`.compress`, :mod:`.baselines`, :mod:`.selection`, :mod:`.distill`, :mod:`.traps`), so the widget
only draws. Nothing here imports ipywidgets or bokeh.
"""
from __future__ import annotations

import base64
import binascii

import numpy as np

from .errors import DataLabError
from .recipes import MICRO_CONFIG, RunSettings, ShippedSweepError, chunk, corpus_split

#: the general-purpose compressors the compression tab sets beside the model
CODERS = ("gzip", "bz2", "xz", "zstd")


def coder_sizes(model, data: bytes) -> tuple[list[dict], object]:
    """Each coder's size of ``data``: the model-driven arithmetic coder (:func:`~.compress.compress_report`) and
    gzip/bz2/xz/zstd (:func:`~.baselines.baseline_rows`). Returns (rows ``{method, kind, size, bpb}``, the
    model's :class:`~.compress.CompressionResult`)."""
    from .baselines import baseline_rows
    from .compress import compress_report

    if not data:
        raise DataLabError("the text is empty: paste or type something to compress")
    res = compress_report(model, data)
    name = str(getattr(model, "name", "model"))
    rows = [{"method": f"{name} (blob)", "kind": "language model", "size": len(res.blob),
             "bpb": res.bits_per_byte},
            {"method": f"{name} (ideal)", "kind": "language model", "size": res.ideal_bits / 8,
             "bpb": res.ideal_bits_per_byte}]
    for r in baseline_rows(data):
        rows.append({"method": r.method, "kind": "general compressor", "size": r.size, "bpb": r.bits_per_byte})
    return rows, res


def blob_to_text(blob: bytes) -> str:
    """A blob as base64 text (what the widget shows and a student can copy, damage or paste back)."""
    return base64.b64encode(blob).decode("ascii")


def blob_from_text(text: str) -> bytes:
    """Base64 text -> blob bytes; anything that is not base64 is a :class:`DataLabError` saying so."""
    s = "".join(str(text).split())
    if not s:
        raise DataLabError("the blob field is empty: compress a text first (or paste a blob as base64)")
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise DataLabError("the blob field is not base64 text (letters, digits, + / and = padding)") from None


# -- selection: train on a score band ----------------------------------------------------------------------------
def selection_chunks(scores) -> np.ndarray:
    """The ``python-docs`` train-split chunks the shipped ``scores`` belong to (one score per chunk)."""
    from .selection import CHUNK

    train_ids, _ = corpus_split("python-docs")
    chunks = chunk(train_ids, CHUNK)
    if len(chunks) != len(scores):
        raise ShippedSweepError(f"the shipped selection scores cover {len(scores)} chunks, the corpus has "
                                f"{len(chunks)}: remake it with python -m workbench.datalab.make_sweeps selection")
    return chunks


def train_band(scores, low: float, high: float, steps: int, *, batch_size: int = 16, lr: float = 3e-3,
               seed: int = 0, progress=None, should_stop=None) -> dict:
    """Train the micro model on the chunks scoring in ``[low, high]`` and, as the baseline, on as many chunks
    drawn at random, each for ``steps`` steps. Returns ``{"band": run, "random": run, "n_chunks", "low",
    "high", "stopped"}``, each run ``{"steps", "val_loss"}`` (nats/byte on the held-out docs split).
    progress: ``progress(done, 2 * steps)``; should_stop: a callable (stops the run in progress)."""
    from .distill import train_student
    from .selection import select_score_range

    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise DataLabError(f"steps must be a positive int, got {steps!r}")
    s = np.asarray(scores, dtype=float)
    idx = select_score_range(s, low, high)
    chunks = selection_chunks(s)
    rand = np.sort(np.random.default_rng(seed).choice(len(s), size=len(idx), replace=False))
    _, val_ids = corpus_split("python-docs")
    out = {"n_chunks": int(len(idx)), "low": float(low), "high": float(high), "stopped": False}
    from .recipes import micro_model

    for k, (name, sel) in enumerate((("band", idx), ("random", rand))):
        model = micro_model(MICRO_CONFIG, seed)
        h = train_student(model, chunks[sel].reshape(-1), steps, batch_size, lr, val_sets={"docs": val_ids},
                          seed=seed, eval_every=max(1, steps // 6), eval_tokens=4096, should_stop=should_stop,
                          progress=None if progress is None else (lambda d, _t, b=k * steps: progress(b + d, 2 * steps)))
        out[name] = {"steps": list(h.steps), "val_loss": list(h.val_loss["docs"])}
        if h.stopped:
            out["stopped"] = True
            break
    return out


def settings(steps: int, seed: int = 0, batch_size: int = 16, lr: float = 3e-3) -> RunSettings:
    """The run settings of a live run: the micro model, ``steps`` steps."""
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise DataLabError(f"steps must be a positive int, got {steps!r}")
    return RunSettings(MICRO_CONFIG, int(steps), batch_size, lr, seed)


def parse_proportions(text: str) -> np.ndarray:
    """``"0.4, 0.6"`` -> checked proportions (:func:`~.mixing.check_proportions`: two domains, sum 1)."""
    from .mixing import DOMAINS, ProportionError, check_proportions

    try:
        vals = [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise ProportionError(f"proportions must be numbers separated by commas, got {text!r}") from None
    return check_proportions(vals, len(DOMAINS))


__all__ = ["CODERS", "coder_sizes", "blob_to_text", "blob_from_text", "selection_chunks", "train_band", "settings",
           "parse_proportions"]
