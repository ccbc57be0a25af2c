"""Repeated sampling: how the chance of a correct answer grows with the number of samples.

Brown et al., "Large Language Monkeys: Scaling Inference Compute with Repeated Sampling" (2024): coverage,
the fraction of problems solved by at least one of ``k`` samples, grows roughly log-linearly in ``k`` over
orders of magnitude, so a weak model sampled many times can solve more problems than a strong one sampled once;
picking the answer without a verifier (majority voting) plateaus far below coverage.

* :func:`pass_at_k`: the unbiased estimator of Chen et al. (2021) of the chance that ``k`` samples drawn
  without replacement from ``n`` (``c`` of them correct) contain a correct one: ``1 - C(n-c, k) / C(n, k)``.
* :func:`majority_vote` and :func:`majority_at_k`: the most frequent answer among ``k`` samples, and the
  expected accuracy of voting over ``k`` samples drawn without replacement from ``n``.
* :func:`sample_answers` and :func:`repeated_sampling`: ``n`` sampled answers per problem from a model, and
  coverage and majority accuracy against ``k`` (used on the shipped addition models,
  :mod:`workbench.scaling.addition_models`).

**Ties.** :func:`majority_vote` breaks a tie for the most votes by taking, among the tied answers, the one that
appears first in the list (the earliest sample). Drawn in random order, each of ``m`` tied answers is first
with chance ``1/m``, so :func:`majority_at_k` credits a tie that includes the correct answer with ``1/m``.
An empty answer (a sample that produced nothing before the stop) is an answer like any other.

Lesson: ``notebooks/03_decoding.ipynb`` (10. Repeated sampling).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .processors import DecodingError


def _int(name: str, v, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise DecodingError(f"{name} must be an int >= {lo}, got {v!r}")
    return int(v)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: ``1 - C(n - c, k) / C(n, k)``.

    Computed as ``1 - prod_{i = n - c + 1}^{n} (1 - k / i)`` (no huge binomials). Needs ``0 <= c <= n`` and
    ``1 <= k <= n``: ``k`` samples cannot be drawn without replacement from fewer than ``k``.
    """
    n, c, k = _int("n", n, 1), _int("c", c), _int("k", k, 1)
    if c > n:
        raise DecodingError(f"c (correct samples) cannot exceed n (samples): got c={c}, n={n}")
    if k > n:
        raise DecodingError(f"k={k} is larger than n={n}: pass@k needs at least k samples per problem "
                            f"(draw more samples or use k <= {n})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_vote(answers):
    """The most frequent answer; a tie goes to the tied answer that appears first in ``answers``."""
    answers = list(answers)
    if not answers:
        raise DecodingError("majority_vote needs at least one answer")
    counts = Counter(answers)
    top = max(counts.values())
    return next(a for a in answers if counts[a] == top)


def vote_credit(answers, correct) -> float:
    """Credit of voting over ``answers`` in random order: 1 if ``correct`` alone has the most votes, ``1/m`` if
    it ties with ``m - 1`` others, else 0 (the chance that :func:`majority_vote` picks it)."""
    counts = Counter(answers)
    top = max(counts.values())
    if counts.get(correct, 0) != top:
        return 0.0
    return 1.0 / sum(1 for v in counts.values() if v == top)


def majority_at_k(answers, correct, k: int, *, rounds: int = 2000, seed: int = 0) -> float:
    """Expected accuracy of a majority vote over ``k`` of the ``n`` ``answers`` drawn without replacement.

    Exact (every subset) when there are at most ``rounds`` subsets, else the mean over ``rounds`` seeded random
    subsets. Ties as in the module docstring (credit ``1/m``). ``k = 1`` gives ``c / n`` exactly.
    """
    answers = list(answers)
    n = len(answers)
    if n == 0:
        raise DecodingError("majority_at_k needs at least one answer")
    k = _int("k", k, 1)
    if k > n:
        raise DecodingError(f"k={k} is larger than n={n}: cannot vote over more samples than were drawn")
    if k == 1:
        return sum(a == correct for a in answers) / n
    if k == n:
        return vote_credit(answers, correct)
    if math.comb(n, k) <= rounds:
        return float(np.mean([vote_credit([answers[i] for i in s], correct) for s in combinations(range(n), k)]))
    # code the answers as small ints so random subsets are cheap: counts per subset by bincount
    labels = {a: i for i, a in enumerate(dict.fromkeys(answers))}
    codes = np.array([labels[a] for a in answers])
    want = labels.get(correct, -1)
    rng = np.random.default_rng(seed)
    keys = rng.random((rounds, n)).argsort(axis=1)[:, :k]                  # (rounds, k) subsets
    m = len(labels)
    cnt = np.zeros((rounds, m), dtype=np.int64)
    np.add.at(cnt, (np.repeat(np.arange(rounds), k), codes[keys].ravel()), 1)
    if want < 0:
        return 0.0
    top = cnt.max(1)
    win = cnt[:, want] == top
    return float(np.mean(np.where(win, 1.0 / (cnt == top[:, None]).sum(1), 0.0)))


def k_grid(n: int) -> list:
    """Powers of two up to ``n``, and ``n`` itself: the ``k`` values of a coverage curve on a log axis."""
    n = _int("n", n, 1)
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
    return ks + ([n] if ks[-1] != n else [])


# ------------------------------------------------------------------------------------------------ sampling
def sample_answers(model, problems, n: int, *, temperature: float = 1.0, seed: int = 0, stop: str = "\n",
                   max_answer_tokens: int = 5) -> list:
    """``n`` sampled answers (strings, cut at ``stop``) for each problem (objects with ``prompt``), decoded as
    one batch per problem with :func:`~workbench.decoding.strategies.sample_batch` (seed ``seed + i`` for
    problem ``i``, so answers are reproducible and problems independent)."""
    from .pipeline import Pipeline, Stage
    from .strategies import sample_batch

    n = _int("n", n, 1)
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise DecodingError(f"temperature must be > 0, got {temperature!r}")
    problems = list(problems)
    if not problems:
        raise DecodingError("no problems to sample answers for")
    tok = model.tokenizer
    pipe = Pipeline([Stage("temperature", float(temperature))]) if temperature != 1.0 else None
    out = []
    for i, p in enumerate(problems):
        if not getattr(p, "prompt", ""):
            raise DecodingError(f"problem {i} has an empty prompt")
        rows = sample_batch(model, p.prompt, max_answer_tokens, n, pipe, seed=seed + i).tolist()
        answers = []
        for r in rows:
            text = tok.decode_with_placeholders(r) if hasattr(tok, "decode_with_placeholders") else tok.decode(r)
            answers.append(text.split(stop, 1)[0])
        out.append(answers)
    return out


@dataclass(frozen=True)
class RepeatedSampling:
    """Coverage and majority-vote accuracy against ``k`` for one model.

    ``ks``: the sample counts; ``coverage[j]``: mean over problems of pass@ks[j]; ``majority[j]``: mean over
    problems of majority@ks[j]; ``correct``: per problem, how many of the ``n`` samples were right;
    ``greedy``: exact match of greedy decoding on the same problems (when measured, else nan).
    """

    name: str
    n: int
    ks: list
    coverage: list
    majority: list
    correct: list
    temperature: float
    greedy: float = math.nan
    N: int = 0
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "N": self.N, "n": self.n, "ks": list(self.ks), "coverage": list(self.coverage),
                "majority": list(self.majority), "correct": list(self.correct), "temperature": self.temperature,
                "greedy": self.greedy}

    @classmethod
    def from_dict(cls, d: dict) -> "RepeatedSampling":
        return cls(**{k: d[k] for k in ("name", "N", "n", "ks", "coverage", "majority", "correct", "temperature",
                                         "greedy")})


def repeated_sampling(answers, targets, *, ks=None, name: str = "", temperature: float = 1.0,
                      greedy: float = math.nan, N: int = 0, rounds: int = 2000, seed: int = 0) -> RepeatedSampling:
    """Coverage and majority accuracy against ``k`` from ``answers`` (``n`` per problem) and the right
    ``targets`` (one per problem)."""
    answers = [list(a) for a in answers]
    if len(answers) != len(targets):
        raise DecodingError(f"need one list of answers per target, got {len(answers)} and {len(targets)}")
    if not answers:
        raise DecodingError("no problems")
    n = len(answers[0])
    if any(len(a) != n for a in answers):
        raise DecodingError("every problem needs the same number of samples n")
    ks = k_grid(n) if ks is None else [_int("k", k, 1) for k in ks]
    correct = [sum(x == t for x in a) for a, t in zip(answers, targets)]
    cov = [float(np.mean([pass_at_k(n, c, k) for c in correct])) for k in ks]
    maj = [float(np.mean([majority_at_k(a, t, k, rounds=rounds, seed=seed + i)
                          for i, (a, t) in enumerate(zip(answers, targets))])) for k in ks]
    return RepeatedSampling(name=name, n=n, ks=ks, coverage=cov, majority=maj, correct=correct,
                            temperature=float(temperature), greedy=float(greedy), N=int(N))


__all__ = ["pass_at_k", "majority_vote", "vote_credit", "majority_at_k", "k_grid", "sample_answers",
           "RepeatedSampling", "repeated_sampling"]
