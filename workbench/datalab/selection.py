"""Perplexity-based data selection with a small reference model.

Claim (Ankner et al. 2024, "Perplexed by Perplexity"): scoring every chunk of the training corpus with a much
smaller reference model and keeping a band of chunks by perplexity (for their web-scale corpus the *middle* or
*high* band, depending on the domain composition) trains a better model than a random subset of the same size.
Here: 256-byte chunks of ``python-docs`` (train split) scored by the shipped ``docs-byte-draft``, a third of
them kept (the low, middle or high band by score, or a random third), the micro model trained on each for the
same number of tokens, scored on the held-out split. Which band wins at this scale is measured, not assumed:
see :func:`load_selection` and ``sweeps/DATALAB.md``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import DataLabError
from .recipes import BOS, chunk, corpus_split, curves_by_seed, index_runs, read_sweep_file

#: Named bands as (low, high) quantiles of the chunk scores for a kept fraction f (``"random"`` is separate).
BAND_NAMES = ("low", "middle", "high", "random")
CHUNK = 256
FRACTION = 1 / 3


class BandError(DataLabError):
    """A band that selects nothing: quantiles outside [0, 1], score bounds outside the scores' range, or empty."""


def score_chunks(model, chunks, bos: int | None = BOS, batch_size: int = 32) -> np.ndarray:
    """Mean next-token loss (nats/token) of each chunk under ``model``, every chunk scored on its own.

    chunks: ``(n, L)`` ids with ``L <= model.config.block_size``. With ``bos`` the input of a chunk is
    ``[bos] + chunk[:-1]`` and all ``L`` tokens are scored (the first from BOS alone); without it, the first
    token is context and ``L - 1`` are scored. Returns ``(n,)`` float64.
    """
    import torch
    import torch.nn.functional as F

    c = torch.as_tensor(np.array(chunks), dtype=torch.long)
    if c.dim() != 2 or c.shape[1] < 2:
        raise DataLabError(f"chunks must be (n, L) with L >= 2, got shape {tuple(c.shape)}")
    if c.shape[1] > model.config.block_size:
        raise DataLabError(f"chunks of {c.shape[1]} tokens exceed the model's context of "
                           f"{model.config.block_size}")
    if bos is not None:
        x = torch.cat([torch.full((len(c), 1), bos, dtype=torch.long), c[:, :-1]], 1)
        y = c
    else:
        x, y = c[:, :-1], c[:, 1:]
    out = []
    was = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(c), batch_size):
            logits = model(x[i:i + batch_size]).logits.float()           # (b, L, V)
            nll = F.cross_entropy(logits.transpose(1, 2), y[i:i + batch_size], reduction="none")  # (b, L)
            out.append(nll.mean(1).double().numpy())
    model.train(was)
    return np.concatenate(out)


def band_quantiles(band, fraction: float = FRACTION) -> tuple[float, float]:
    """(low, high) quantiles of a named band keeping ``fraction`` of the chunks, or of a given pair."""
    if not 0.0 < fraction <= 1.0:
        raise BandError(f"fraction must be in (0, 1], got {fraction}")
    named = {"low": (0.0, fraction), "middle": ((1 - fraction) / 2, (1 + fraction) / 2),
             "high": (1 - fraction, 1.0)}
    if isinstance(band, str):
        if band not in named:
            raise BandError(f"unknown band {band!r}: use one of {list(named)}, 'random', or (low, high) quantiles")
        return named[band]
    lo, hi = (float(v) for v in band)
    if not 0.0 <= lo < hi <= 1.0:
        raise BandError(f"band quantiles must satisfy 0 <= low < high <= 1, got ({lo}, {hi})")
    return lo, hi


def select_band(scores, band, fraction: float = FRACTION, seed: int = 0) -> np.ndarray:
    """Sorted indices of the chunks in ``band``: ``"low"``/``"middle"``/``"high"`` (a ``fraction`` of the chunks
    by score rank), ``"random"`` (the same number, uniformly at random from ``seed``), or a (low, high) pair of
    quantiles. Ties are broken by position (a stable sort), so every band has exactly its share of chunks."""
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1 or len(s) == 0 or not np.all(np.isfinite(s)):
        raise DataLabError("scores must be a non-empty 1-D array of finite numbers")
    n = len(s)
    if isinstance(band, str) and band == "random":
        if not 0.0 < fraction <= 1.0:
            raise BandError(f"fraction must be in (0, 1], got {fraction}")
        k = max(1, int(round(fraction * n)))
        return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    lo, hi = band_quantiles(band, fraction)
    order = np.argsort(s, kind="stable")
    a, b = int(round(lo * n)), int(round(hi * n))
    if b <= a:
        raise BandError(f"band ({lo}, {hi}) keeps no chunk out of {n}")
    return np.sort(order[a:b])


def select_score_range(scores, low: float, high: float) -> np.ndarray:
    """Sorted indices of the chunks whose score lies in ``[low, high]`` (nats/token); a range that misses the
    scores (they run from ``min`` to ``max``) or keeps nothing raises :class:`BandError`."""
    s = np.asarray(scores, dtype=float)
    if not low < high:
        raise BandError(f"score range needs low < high, got ({low}, {high})")
    if high < s.min() or low > s.max():
        raise BandError(f"score range [{low:.3f}, {high:.3f}] is outside the scores' range "
                        f"[{s.min():.3f}, {s.max():.3f}]")
    idx = np.flatnonzero((s >= low) & (s <= high))
    if len(idx) == 0:
        raise BandError(f"no chunk scores within [{low:.3f}, {high:.3f}]")
    return idx


@lru_cache(maxsize=4)
def docs_chunk_scores(reference: str = "docs-byte-draft", chunk_len: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(chunks ``(n, chunk_len)``, scores ``(n,)``) of the ``python-docs`` train split under a shipped reference
    model; cached per process (a sweep's runs score once per worker)."""
    from workbench.models import load_pretrained

    train_ids, _ = corpus_split("python-docs")
    chunks = chunk(train_ids, chunk_len)
    return chunks, score_chunks(load_pretrained(reference), chunks)


def selection_run(settings, *, band: str, fraction: float = FRACTION, reference: str = "docs-byte-draft",
                  progress=None, should_stop=None) -> dict:
    """One run: the micro model trained on ``band`` of the scored chunks, for ``settings.steps`` steps."""
    from .distill import micro_run

    chunks, scores = docs_chunk_scores(reference)
    idx = select_band(scores, band, fraction, seed=settings.seed)
    run = micro_run(settings, chunks[idx].reshape(-1), progress=progress, should_stop=should_stop)
    return {**run, "n_chunks": int(len(idx)), "score_range": [float(scores[idx].min()), float(scores[idx].max())]}


@dataclass
class SelectionResult:
    """Held-out validation loss (nats/byte) of the micro model trained on each band.

    bands, seeds: labels; steps: evaluation steps; curves: ``(bands, seeds, len(steps))``; final:
    ``(bands, seeds)``; mean, sd: over seeds ``(bands,)``; score_range: ``(bands, seeds, 2)`` min/max chunk score
    kept; scores: every chunk's score (for a histogram); winner: the band with the lowest mean final loss.
    """

    bands: list
    seeds: list
    steps: np.ndarray
    curves: np.ndarray
    final: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    score_range: np.ndarray
    scores: np.ndarray
    winner: str
    stopped: bool = False


def selection_from_runs(runs: list, scores) -> SelectionResult:
    """Assemble a :class:`SelectionResult` from run dicts (``band``, ``seed``, ``steps``, ``val_loss``,
    ``score_range``)."""
    bands, seeds, table = index_runs(runs, "band", "selection")
    curves, final, mean, sd = curves_by_seed(table, bands, seeds)
    return SelectionResult(bands=bands, seeds=seeds, steps=np.asarray(table[(bands[0], seeds[0])]["steps"]),
                           curves=curves, final=final, mean=mean, sd=sd,
                           score_range=np.array([[table[(b, s)]["score_range"] for s in seeds] for b in bands]),
                           scores=np.asarray(scores, dtype=float), winner=bands[int(np.argmin(mean))])


def run_selection(bands=BAND_NAMES, seeds=(0,), steps: int = 60, batch_size: int = 16, lr: float = 3e-3,
                  fraction: float = FRACTION, progress=None, should_stop=None) -> SelectionResult:
    """A live run (seconds): train on each band for each seed at equal tokens.

    progress: ``progress(done_steps, total_steps)``; should_stop: a callable; the bands finished when it
    returned True are returned (``stopped=True``).
    """
    from .recipes import MICRO_CONFIG, RunSettings

    bands = list(bands)
    for b in bands:                         # fail before any training
        select_band(np.arange(10.0), b, fraction)
    total = len(bands) * len(seeds) * steps
    runs, stopped = [], False
    for i, band in enumerate(bands):
        rows = []
        for j, seed in enumerate(seeds):
            base = (i * len(seeds) + j) * steps
            r = selection_run(RunSettings(MICRO_CONFIG, steps, batch_size, lr, seed), band=band,
                              fraction=fraction, should_stop=should_stop,
                              progress=None if progress is None else (lambda d, _t, b=base: progress(b + d, total)))
            if r["stopped"]:
                stopped = True
                break
            rows.append({**r, "band": band, "seed": seed})
        if stopped:
            break
        runs += rows
    if not runs:
        raise DataLabError("stopped before the first band finished; nothing to show")
    res = selection_from_runs(runs, docs_chunk_scores()[1])
    res.stopped = stopped
    return res


def load_selection(path=None) -> SelectionResult:
    """The shipped selection sweep (``sweeps/selection.json``), validated."""
    from .recipes import SWEEP_DIR

    doc = read_sweep_file(path or SWEEP_DIR / "selection.json", "selection",
                          ("band", "seed", "steps", "val_loss", "score_range"), ("scores",))
    return selection_from_runs(doc["runs"], doc["settings"]["scores"])
