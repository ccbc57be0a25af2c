"""A byte-level ensemble of models whose tokenizers differ (``docs-byte`` and ``docs-bpe``).

Two models with different vocabularies cannot average their next-token distributions: their tokens are not the
same events. Their next-*byte* distributions are (:mod:`.byte_probs`), so they can be mixed byte by byte:
``p(b | x) = sum_m w_m p_m(b | x)``. Phan et al. ("Exact Byte-Level Probabilities from Tokenized Language Models
for FIM-Tasks and Model Ensembles") ensemble models this way; a mixture can never be worse than its best member by
more than ``-log2(w_best)`` bits per byte, and it is better where the members' errors differ.

:func:`score_texts` scores held-out texts with each model (:func:`~.byte_probs.byte_logprob`, the same bytes for
every model) and :func:`mixture_bits` evaluates mixtures on the stored terms, so a weight can be picked on one
part of the held-out text and reported on another (:func:`ensemble_report`).

Lesson: ``notebooks/01_tokenization.ipynb`` (7. An ensemble of two tokenizers).

>>> import numpy as np
>>> mixture_bits(np.log([[0.5, 0.25]]), [0.5, 0.5])  # one byte, p = 0.5 and 0.25, mixed: -log2(0.375)
1.415...
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .byte_probs import ByteProbError, byte_logprob, byte_view, default_start, next_byte_distribution


def ensemble_next_byte(models: Sequence, text, weights: Sequence[float] | None = None) -> np.ndarray:
    """The mixture of the models' exact next-byte distributions after ``text``: ``(256,)``, sums to 1."""
    w = _weights(weights, len(models))
    return sum(wi * next_byte_distribution(m, text).probs for wi, m in zip(w, models))


def _weights(weights, n: int) -> np.ndarray:
    if n < 1:
        raise ByteProbError("an ensemble needs at least one model")
    w = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n,) or (w < 0).any() or not math.isclose(w.sum(), 1.0, abs_tol=1e-9):
        raise ByteProbError(f"weights must be {n} non-negative numbers that sum to 1, got {list(np.atleast_1d(w))}")
    return w


def mixture_bits(terms: np.ndarray, weights: Sequence[float]) -> float:
    """Bits per byte of the mixture: ``terms`` ``(n_bytes, n_models)`` are each model's log-probability (nats) of
    the true byte; the mixture's is ``log sum_m w_m exp(terms[:, m])``."""
    terms = np.asarray(terms, dtype=float)
    w = _weights(weights, terms.shape[1])
    with np.errstate(divide="ignore"):
        mixed = np.logaddexp.reduce(terms + np.log(w)[None, :], axis=1)
    return float(-mixed.mean() / math.log(2))


@dataclass
class HeldOutTerms:
    """Each model's per-byte log-probabilities (nats) of the same held-out bytes: ``terms`` ``(n_bytes, n_models)``;
    ``chunk`` ``(n_bytes,)`` says which text each byte came from."""

    names: list[str]
    terms: np.ndarray
    chunk: np.ndarray

    def bits_per_byte(self) -> dict[str, float]:
        return {n: float(-self.terms[:, i].mean() / math.log(2)) for i, n in enumerate(self.names)}


def score_texts(models: Sequence, texts: Sequence[str], names: Sequence[str] | None = None) -> HeldOutTerms:
    """Score every text with every model on the same bytes: from the latest default start of the models (the end of
    the first pre-token piece for a model without a BOS) to the end of the text."""
    names = list(names or [getattr(m, "name", f"model {i}") for i, m in enumerate(models)])
    cols, chunks = [], []
    for ci, text in enumerate(texts):
        x = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        start = max(default_start(byte_view(m), x) for m in models)
        cols.append(np.stack([byte_logprob(m, x, start=start).terms for m in models], axis=1))
        chunks.append(np.full(len(x) - start, ci))
    return HeldOutTerms(names, np.concatenate(cols), np.concatenate(chunks))


@dataclass
class EnsembleReport:
    """Bits per byte on the test chunks of each model alone and of the mixture whose weight (on the first model)
    was picked on the tuning chunks; ``grid`` maps each weight to the test bits per byte (for a curve)."""

    names: list[str]
    n_tune_bytes: int
    n_test_bytes: int
    weight: float
    single: dict[str, float]
    ensemble: float
    equal_weights: float
    grid: dict[float, float] = field(default_factory=dict)


def ensemble_report(scored: HeldOutTerms, tune_chunks: int, steps: int = 20) -> EnsembleReport:
    """Pick the two-model mixture weight on the first ``tune_chunks`` texts, report on the rest."""
    if scored.terms.shape[1] != 2:
        raise ByteProbError("ensemble_report mixes exactly two models")
    tune = scored.chunk < tune_chunks
    test = ~tune
    if not tune.any() or not test.any():
        raise ByteProbError(f"tune_chunks={tune_chunks} leaves no tuning or no test bytes")
    grid = [i / steps for i in range(steps + 1)]
    tune_bits = {w: mixture_bits(scored.terms[tune], [w, 1 - w]) for w in grid}
    best = min(grid, key=lambda w: tune_bits[w])
    test_terms = scored.terms[test]
    return EnsembleReport(
        names=list(scored.names), n_tune_bytes=int(tune.sum()), n_test_bytes=int(test.sum()), weight=best,
        single={n: float(-test_terms[:, i].mean() / math.log(2)) for i, n in enumerate(scored.names)},
        ensemble=mixture_bits(test_terms, [best, 1 - best]),
        equal_weights=mixture_bits(test_terms, [0.5, 0.5]),
        grid={w: mixture_bits(test_terms, [w, 1 - w]) for w in grid},
    )


def held_out_chunks(n: int, n_bytes: int = 200, seed: int = 0) -> list[str]:
    """``n`` pieces of the docs corpus's validation text (never trained on by the shipped models), each starting at
    a line start and about ``n_bytes`` long (cut at a character boundary), spread evenly through the text."""
    from ..models.make_pretrained import text_splits

    _, val = text_splits()
    lines = [i + 1 for i, ch in enumerate(val) if ch == "\n" and i + 1 < len(val) and val[i + 1].isalpha()]
    if not lines:
        raise ByteProbError("the validation text has no line that starts with a letter")
    step = max(1, len(lines) // n)
    out = []
    for k in range(n):
        s = lines[(k * step + seed) % len(lines)]
        piece = val[s:s + n_bytes].encode("utf-8")[:n_bytes].decode("utf-8", errors="ignore")
        out.append(piece)
    return out


#: Where ``python -m workbench.tokenizers.byte_ensemble`` writes the lesson's numbers (read by notebook 01).
RESULT_FILE = __import__("pathlib").Path(__file__).parent / "results" / "byte_ensemble.json"


def main(argv=None) -> EnsembleReport:
    """Score ``docs-byte`` and ``docs-bpe`` on held-out chunks, tune the mixture weight on the first half of the
    chunks, report on the second half, and write the numbers to :data:`RESULT_FILE` (about a minute on one thread)."""
    import argparse
    import json
    import time

    import torch

    from ..models import load_pretrained

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--bytes", type=int, default=200)
    p.add_argument("--out", default=str(RESULT_FILE))
    a = p.parse_args(argv)
    torch.manual_seed(0)
    names = ["docs-byte", "docs-bpe"]
    models = [load_pretrained(n) for n in names]
    texts = held_out_chunks(a.chunks, a.bytes)
    t0 = time.perf_counter()
    scored = score_texts(models, texts, names)
    rep = ensemble_report(scored, a.chunks // 2)
    out = {"names": rep.names, "chunks": a.chunks, "chunk_bytes": a.bytes, "n_tune_bytes": rep.n_tune_bytes,
           "n_test_bytes": rep.n_test_bytes, "weight_on_docs_byte": rep.weight, "single": rep.single,
           "ensemble": rep.ensemble, "equal_weights": rep.equal_weights,
           "grid": {f"{w:.2f}": b for w, b in rep.grid.items()}, "seconds": time.perf_counter() - t0,
           "command": "python -m workbench.tokenizers.byte_ensemble"}
    path = __import__("pathlib").Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return rep


if __name__ == "__main__":
    main()
