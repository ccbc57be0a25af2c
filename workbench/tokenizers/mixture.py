"""Data-mixture inference from a merge list (Hayase et al. 2024, "Data Mixture Inference: What do
BPE Tokenizers Reveal about their Training Data?").

A BPE tokenizer's merge list is an ordered record of which pair was the most frequent at each
step. Given sample text from each candidate category (say Python docs and Python code), replay the
merges on every sample and record pair counts per byte of sample, ``c[i, t, p]``. If the training
data was a mixture with byte shares ``alpha``, then at step ``t`` the merged pair ``m_t`` beat every
other pair ``p``::

    sum_i alpha_i * (c[i, t, m_t] - c[i, t, p]) >= 0

Those inequalities, relaxed by a slack ``v_t >= 0`` per step and, as in the paper, a slack
``v_p >= 0`` per competitor pair (absorbing pairs whose sample counts happen to be off), form a
linear program: minimise ``sum_t v_t + sum_p v_p`` over ``alpha >= 0, sum(alpha) = 1``. Only the strongest competitors are kept per step
(the ``top_k`` pairs of each category), which is where the binding constraints are.

>>> # tok = BPETokenizer.train(docs[:60_000] + code[:40_000], 1000)
>>> # infer_mixture(tok, {"docs": docs, "code": code}).weights  ->  about {"docs": 0.6, "code": 0.4}

Lesson: ``notebooks/01_tokenization.ipynb`` (4. What a tokenizer reveals about its training data).
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from .base import TokenizerError
from .bpe import BPETokenizer
from .bpe_train import merge_word


@dataclass(frozen=True)
class MixtureEstimate:
    """Recovered byte shares per category, the LP's total slack, and its size."""

    weights: dict
    slack: float
    n_merges: int
    n_constraints: int


class _Replay:
    """One category's sample, with exact pair counts kept up to date as merges are applied."""

    def __init__(self, tok: BPETokenizer, text: str):
        counts = Counter(tok.pretokenizer.split(text))
        self.n_bytes = max(1, len(text.encode("utf-8")))
        self.words = [[tok.byte_ids[b] for b in w.encode("utf-8")] for w in counts]
        self.counts = list(counts.values())
        self.pairs: dict = defaultdict(int)
        self.where: dict = defaultdict(set)
        for wi, w in enumerate(self.words):
            for p in zip(w, w[1:]):
                self.pairs[p] += self.counts[wi]
                self.where[p].add(wi)
        self.heap = [(-c, p) for p, c in self.pairs.items()]
        heapq.heapify(self.heap)

    def top(self, k: int) -> list:
        """The ``k`` pairs with the highest current counts (stale heap entries are refreshed)."""
        out, seen = [], set()
        while self.heap and len(out) < k:
            negc, p = heapq.heappop(self.heap)
            cur = self.pairs.get(p, 0)
            if cur <= 0 or p in seen:
                continue
            if -negc != cur:
                heapq.heappush(self.heap, (-cur, p))
                continue
            out.append(p)
            seen.add(p)
        for p in out:
            heapq.heappush(self.heap, (-self.pairs[p], p))
        return out

    def apply(self, a: int, b: int, new: int) -> None:
        touched = set()
        for wi in list(self.where.get((a, b), ())):
            changes: list = []
            nw = merge_word(self.words[wi], a, b, new, changes)
            if nw is None:
                continue
            c = self.counts[wi]
            self.words[wi] = nw
            for p, d in changes:
                self.pairs[p] += d * c
                if d > 0:
                    self.where[p].add(wi)
                touched.add(p)
        self.pairs[(a, b)] = 0  # every occurrence was merged
        for p in touched:
            if self.pairs[p] > 0:
                heapq.heappush(self.heap, (-self.pairs[p], p))


def infer_mixture(
    tokenizer: BPETokenizer,
    samples: Mapping[str, str],
    n_merges: Optional[int] = None,
    top_k: int = 20,
) -> MixtureEstimate:
    """Estimate the byte shares of ``samples``' categories in ``tokenizer``'s training data.

    ``n_merges`` limits the replay to the first merges (all by default); ``top_k`` competitor pairs
    per category and step enter the LP. Needs scipy.
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    names = list(samples)
    if len(names) < 2:
        raise TokenizerError("mixture inference needs samples from at least two categories")
    if any(not samples[n] for n in names):
        raise TokenizerError("every category needs a non-empty sample")
    merges = tokenizer.merges[: n_merges if n_merges is not None else len(tokenizer.merges)]
    if not merges:
        raise TokenizerError("the tokenizer has no merges to learn from")
    replays = [_Replay(tokenizer, samples[n]) for n in names]
    n = len(names)
    T = len(merges)
    rows, cols, vals = [], [], []
    r = 0
    pair_var: dict = {}  # a slack v_p per competitor pair absorbs pairs whose sample counts are off
    for t, (a, b, new) in enumerate(merges):
        cand = set()
        for rp in replays:
            cand.update(rp.top(top_k + 1))
        cand.discard((a, b))
        m_rate = [rp.pairs.get((a, b), 0) / rp.n_bytes for rp in replays]
        for p in cand:
            # -(sum_i alpha_i (c_i(m) - c_i(p))) - v_t <= 0
            for i, rp in enumerate(replays):
                d = m_rate[i] - rp.pairs.get(p, 0) / rp.n_bytes
                if d:
                    rows.append(r)
                    cols.append(i)
                    vals.append(-d)
            rows.append(r)
            cols.append(n + t)
            vals.append(-1.0)
            rows.append(r)
            cols.append(n + T + pair_var.setdefault(p, len(pair_var)))
            vals.append(-1.0)
            r += 1
        for rp in replays:
            rp.apply(a, b, new)
    P = len(pair_var)
    A = coo_matrix((vals, (rows, cols)), shape=(r, n + T + P)).tocsr()
    # Scale: counts per byte are small; the objective is invariant to a common factor.
    scale = 1.0 / max(1e-12, float(np.abs(A[:, :n]).max()) if r else 1.0)
    A = A.multiply(scale).tocsr() if r else A
    c = np.concatenate([np.zeros(n), np.ones(T + P)])
    A_eq = np.concatenate([np.ones(n), np.zeros(T + P)])[None, :]
    res = linprog(c, A_ub=A if r else None, b_ub=np.zeros(r) if r else None, A_eq=A_eq, b_eq=[1.0],
                  bounds=[(0, None)] * (n + T + P), method="highs")
    if res.status != 0:
        raise TokenizerError(f"the linear program failed: {res.message}")
    alpha = np.clip(res.x[:n], 0, None)
    alpha = alpha / alpha.sum()
    return MixtureEstimate(
        weights={name: float(w) for name, w in zip(names, alpha)},
        slack=float(res.fun / scale),
        n_merges=T,
        n_constraints=r,
    )
