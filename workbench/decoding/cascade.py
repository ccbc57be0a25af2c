"""Token-level cascades: a small model writes, and hands a token to a large model when it is unsure.

Gupta et al., "Language Model Cascades: Token-level uncertainty and beyond" (2024): the simplest deferral
rule, Chow's rule, defers when the small model's confidence (its maximum probability) is low; they compare it
with other ways of reading the same per-token uncertainty and find that how the uncertainty is read matters.
Here a cascade works token by token: at every position the small model's next-token distribution gives an
uncertainty ``u`` under a deferral ``rule`` (see :data:`RULES`), and when ``u >= threshold`` the large model
supplies that token. Threshold 0 defers everything (the large model alone); threshold ``inf`` defers nothing
(the small model alone).

* :func:`cascade_generate`: greedy generation through the cascade, with KV caches; the large model catches
  up on the tokens it has not seen in one call when it is asked, so its calls are what deferral costs.
* :func:`cascade_curve`: cost against quality for every threshold at once, teacher-forced on a text: both
  models score every position once, and each threshold only chooses whose prediction counts. Cost is the
  fraction of tokens deferred (and, measured at a few thresholds, wall time of generation); quality is
  bits per byte of the cascade's predictions and their agreement with the large model's top token.
* :func:`sequence_curves`: the paper's sequence-level version, each text window deferred whole by an aggregate
  (sum, mean, quantile, max) of its tokens' uncertainties.

Lesson: ``notebooks/03_decoding.ipynb`` (9. Cascades).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .processors import DecodingError
from .uncertainty import distribution_scores, ids_text, next_token_logits, text_ids

#: Deferral rules: the uncertainty each one reads from the small model's distribution (higher = less sure).
#: "entropy": entropy in bits, range [0, log2 V]; "margin": 1 - (p1 - p2), range [0, 1];
#: "max_prob": 1 - p1 (Chow's rule), range [0, 1).
RULES = ("entropy", "margin", "max_prob")


def uncertainty(logits: torch.Tensor, rule: str) -> torch.Tensor:
    """The small model's uncertainty under ``rule`` for logits ``(..., V)`` -> ``(...)`` (float64)."""
    check_rule(rule)
    s = distribution_scores(logits)
    if rule == "entropy":
        return s["entropy"]
    if rule == "margin":
        return 1.0 - s["margin"]
    return 1.0 - s["max_prob"]


def check_rule(rule) -> str:
    if rule not in RULES:
        raise DecodingError(f"unknown deferral rule {rule!r}; choose one of {RULES}")
    return rule


def check_threshold(rule: str, threshold) -> float:
    """A threshold is a number in the rule's range: ``[0, inf]`` for entropy (bits), ``[0, 1]`` or ``inf`` for
    margin and max_prob (both uncertainties lie in [0, 1]). 0 defers every token, ``inf`` none."""
    check_rule(rule)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
        raise DecodingError(f"threshold must be a number, got {type(threshold).__name__}")
    t = float(threshold)
    if math.isnan(t) or t < 0:
        raise DecodingError(f"threshold must be >= 0 (0 defers every token, inf none), got {threshold!r}")
    if rule != "entropy" and 1.0 < t < math.inf:
        raise DecodingError(f"a {rule} threshold must lie in [0, 1] (its uncertainty is 1 - probability) or be "
                            f"inf, got {threshold!r}")
    return t


def check_cascade_pair(small, large) -> None:
    """A cascade passes token ids from one model to the other: same number of ids, same tokenizer."""
    vs, vl = small.config.vocab_size, large.config.vocab_size
    if vs != vl:
        raise DecodingError(f"the small and large models have different vocabularies ({vs} vs {vl} ids): a "
                            "cascade hands token ids from one to the other, so they must share one tokenizer")
    ts, tl = getattr(small, "tokenizer", None), getattr(large, "tokenizer", None)
    if ts is None or tl is None:
        return
    if not hasattr(tl, "vocab_difference"):
        raise DecodingError(f"cannot compare the tokenizers ({type(tl).__name__} is not a workbench Tokenizer; "
                            "wrap an HF tokenizer with HFTokenizer)")
    diff = tl.vocab_difference(ts)
    if diff is not None:
        raise DecodingError(f"the small and large models have different tokenizers although both have {vl} ids "
                            f"({diff}): a cascade hands token ids from one to the other, so they must share one")


# ------------------------------------------------------------------------------------------------ generation
@dataclass(frozen=True)
class CascadeResult:
    """One greedy generation through a cascade.

    ``ids``: the new tokens ``(n,)``; ``deferred[i]``: whether token ``i`` came from the large model;
    ``uncertainty[i]``: the small model's uncertainty before token ``i`` under ``rule``; ``large_calls``: forward
    calls of the large model (each one catches up on every token it had not seen); ``wall_s``: seconds.
    """

    ids: list
    deferred: list
    uncertainty: list
    rule: str
    threshold: float
    large_calls: int
    wall_s: float
    text: str = ""

    @property
    def deferral(self) -> float:
        """Fraction of the generated tokens that the large model supplied."""
        return float(np.mean(self.deferred)) if self.deferred else 0.0


@torch.inference_mode()
def cascade_generate(small, large, prompt, max_new_tokens: int, *, rule: str = "max_prob",
                     threshold: float = 0.5) -> CascadeResult:
    """Greedy generation where each token comes from ``small`` unless its uncertainty is ``>= threshold``.

    ``prompt`` is text (encoded with the small model's tokenizer) or ids; an empty prompt is refused (there is
    nothing to predict from). Threshold 0 gives exactly the large model's greedy output, ``inf`` the small's.
    """
    from .strategies import model_device, prepare_prompt

    check_cascade_pair(small, large)
    thr = check_threshold(rule, threshold)
    if isinstance(prompt, str) and prompt == "":
        raise DecodingError("the prompt is empty: a cascade needs at least one token to predict from")
    ids = prepare_prompt(small, prompt, max_new_tokens)
    if ids.size(1) == 0:
        raise DecodingError("the prompt is empty: a cascade needs at least one token to predict from")
    if ids.size(1) + max_new_tokens > large.config.block_size:
        raise DecodingError(f"prompt ({ids.size(1)}) + max_new_tokens ({max_new_tokens}) exceeds the large model's "
                            f"context of {large.config.block_size}")
    dev_l = model_device(large)
    t0 = time.perf_counter()
    total = ids.size(1) + max_new_tokens
    s_cache, l_cache = small.new_cache(1, max_len=total), large.new_cache(1, max_len=total)
    seq = ids[0].tolist()
    logits = small.step(ids, s_cache).logits[:, -1]                      # (1, V)
    fed, calls = 0, 0                                                    # tokens the large model has seen
    out, deferred, us = [], [], []
    for t in range(max_new_tokens):
        u = float(uncertainty(logits, rule)[0])
        if u >= thr:
            new = torch.tensor([seq[fed:]], dtype=torch.long, device=dev_l)
            nxt = int(large.step(new, l_cache).logits[0, -1].argmax())
            fed, calls = len(seq), calls + 1
        else:
            nxt = int(logits[0].argmax())
        out.append(nxt)
        deferred.append(u >= thr)
        us.append(u)
        seq.append(nxt)
        if t < max_new_tokens - 1:
            logits = small.step(torch.tensor([[nxt]], dtype=torch.long, device=ids.device), s_cache).logits[:, -1]
    wall = time.perf_counter() - t0
    return CascadeResult(ids=out, deferred=deferred, uncertainty=us, rule=rule, threshold=thr, large_calls=calls,
                         wall_s=wall, text=ids_text(small, out))


# ----------------------------------------------------------------------------------------------- the curve
@dataclass(frozen=True)
class CascadeScores:
    """Both models' teacher-forced predictions of the same tokens, one entry per scored token ``(n,)``.

    ``uncertainty[rule]``: the small model's uncertainty; ``small_bits``/``large_bits``: each model's surprisal
    of the actual token (bits); ``agree``: whether the small model's top token equals the large model's;
    ``n_bytes``: UTF-8 bytes of the scored tokens (bits per byte = bits / n_bytes); ``window[i]``: which text
    window token ``i`` belongs to (the "answers" a sequence-level cascade defers whole).
    """

    uncertainty: dict
    small_bits: np.ndarray
    large_bits: np.ndarray
    agree: np.ndarray
    n_bytes: int
    window: np.ndarray | None = None


def text_windows(model, text: str, chars: int = 200, max_windows: int | None = None) -> list:
    """``text`` cut into pieces of ``chars`` characters, each encoded with the model's tokenizer (a BOS where the
    tokenizer adds one): the windows :func:`cascade_scores` scores."""
    if not isinstance(text, str) or text.strip() == "":
        raise DecodingError("the evaluation text is empty: give some text to score the cascade on")
    pieces = [text[i:i + chars] for i in range(0, len(text), chars)]
    pieces = [p for p in pieces if p]
    if max_windows is not None:
        pieces = pieces[:max_windows]
    return [text_ids(model, p) for p in pieces if len(model.tokenizer.encode(p)) >= 2]


def cascade_scores(small, large, text, *, chars: int | None = None, max_windows: int | None = None) -> CascadeScores:
    """Score every token of ``text`` (a str, or a list of id windows) with both models, teacher-forced; ``chars``
    per window defaults to 200, or less where a model's context is shorter (two tokens spare for a BOS)."""
    check_cascade_pair(small, large)
    if chars is None:
        chars = max(1, min(200, small.config.block_size - 2, large.config.block_size - 2))
    windows = text_windows(small, text, chars, max_windows) if isinstance(text, str) else [list(w) for w in text]
    if not windows:
        raise DecodingError("the evaluation text has no window of two or more tokens to score")
    unc = {r: [] for r in RULES}
    sb, lb, agree, win, n_bytes = [], [], [], [], 0
    for w, ids in enumerate(windows):
        win.append(np.full(len(ids) - 1, w))
        tgt = torch.tensor(ids[1:])
        ls, ll = next_token_logits(small, ids)[:-1], next_token_logits(large, ids)[:-1]   # (T-1, V) each
        ss, sl = distribution_scores(ls, tgt), distribution_scores(ll, tgt)
        unc["entropy"].append(ss["entropy"].numpy())
        unc["margin"].append(1.0 - ss["margin"].numpy())
        unc["max_prob"].append(1.0 - ss["max_prob"].numpy())
        sb.append(ss["surprisal"].numpy())
        lb.append(sl["surprisal"].numpy())
        agree.append((ls.argmax(-1) == ll.argmax(-1)).numpy())
        n_bytes += len(ids_text(small, ids[1:]).encode("utf-8"))
    return CascadeScores(uncertainty={r: np.concatenate(v) for r, v in unc.items()}, small_bits=np.concatenate(sb),
                         large_bits=np.concatenate(lb), agree=np.concatenate(agree), n_bytes=max(1, n_bytes),
                         window=np.concatenate(win))


@dataclass(frozen=True)
class CascadeCurve:
    """Cost against quality of one deferral rule, one point per threshold (thresholds descending, so deferral
    rises from 0 to 1). ``deferral``: fraction of tokens sent to the large model; ``bits_per_byte`` of the
    cascade's predictions; ``agreement``: fraction of tokens whose cascade top choice equals the large model's.
    ``area``: mean bits per byte over deferral in [0, 1] (the area under the deferral curve; lower is better).
    ``rule`` "oracle" defers the tokens where the large model helps most (knowing both; a bound, not a rule);
    "random" defers a random fraction (the straight line between the two models)."""

    rule: str
    thresholds: np.ndarray
    deferral: np.ndarray
    bits_per_byte: np.ndarray
    agreement: np.ndarray
    area: float

    def at_quality(self, bits_per_byte: float) -> tuple:
        """``(deferral, threshold)`` of the cheapest point whose bits per byte is at most ``bits_per_byte``
        (``(nan, nan)`` when none is)."""
        ok = np.flatnonzero(self.bits_per_byte <= bits_per_byte + 1e-12)
        if len(ok) == 0:
            return math.nan, math.nan
        i = ok[np.argmin(self.deferral[ok])]
        return float(self.deferral[i]), float(self.thresholds[i])


def _area(deferral, bpb) -> float:
    x, y = np.asarray(deferral, float), np.asarray(bpb, float)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def curve_from_order(scores: CascadeScores, order, rule: str, thresholds) -> CascadeCurve:
    """A curve that defers the first ``j`` tokens of ``order`` for ``j = 0..n`` (used for the oracle)."""
    n = len(scores.small_bits)
    order = np.asarray(order)
    gain = (scores.small_bits - scores.large_bits)[order]
    bits = scores.small_bits.sum() - np.concatenate([[0.0], np.cumsum(gain)])                  # (n + 1,)
    ag = scores.agree.sum() + np.concatenate([[0], np.cumsum(~scores.agree[order])])
    dfr = np.arange(n + 1) / n
    bpb = bits / scores.n_bytes
    return CascadeCurve(rule=rule, thresholds=np.asarray(thresholds, float), deferral=dfr, bits_per_byte=bpb,
                        agreement=ag / n, area=_area(dfr, bpb))


def curve_for_rule(scores: CascadeScores, rule: str) -> CascadeCurve:
    """Every distinct threshold of ``rule`` at once: defer the tokens with ``u >= threshold``.

    The thresholds are ``inf`` (nothing deferred), then every distinct uncertainty value from the largest down
    (each one defers the tokens at or above it), so the last point, the smallest value, defers everything.
    """
    check_rule(rule)
    u = scores.uncertainty[rule]
    n = len(u)
    order = np.argsort(-u, kind="stable")                                  # most uncertain first
    full = curve_from_order(scores, order, rule, np.concatenate([[math.inf], u[order]]))
    # keep the last index of each run of equal uncertainties: a threshold defers all tokens tied at it
    us = u[order]
    keep = np.concatenate([[0], 1 + np.flatnonzero(np.concatenate([us[1:] != us[:-1], [True]]))])
    keep = keep[keep <= n]
    return CascadeCurve(rule=rule, thresholds=full.thresholds[keep], deferral=full.deferral[keep],
                        bits_per_byte=full.bits_per_byte[keep], agreement=full.agreement[keep],
                        area=_area(full.deferral[keep], full.bits_per_byte[keep]))


def curve_at(scores: CascadeScores, rule: str, threshold: float) -> tuple:
    """``(deferral, bits per byte, agreement)`` of one threshold, straight from the definition (no sorting)."""
    thr = check_threshold(rule, threshold)
    d = scores.uncertainty[rule] >= thr
    bits = np.where(d, scores.large_bits, scores.small_bits).sum()
    return float(d.mean()), float(bits / scores.n_bytes), float(np.where(d, True, scores.agree).mean())


#: How a sequence-level cascade reads one number from a window's per-token uncertainties (Gupta et al.'s
#: Chow-Sum, Chow-Average, Chow-Quantile, and the maximum).
AGGREGATES = ("sum", "mean", "quantile_0.8", "max")


def aggregate(u: np.ndarray, how: str) -> float:
    """One window's uncertainty from its per-token values ``u`` (``how``: one of :data:`AGGREGATES`)."""
    if how == "sum":
        return float(u.sum())
    if how == "mean":
        return float(u.mean())
    if how == "max":
        return float(u.max())
    if how.startswith("quantile_"):
        return float(np.quantile(u, float(how.split("_", 1)[1])))
    raise DecodingError(f"unknown aggregate {how!r}; choose one of {AGGREGATES}")


def sequence_curves(scores: CascadeScores, rule: str = "max_prob", aggregates=AGGREGATES) -> dict:
    """Sequence-level cascades, as in the paper: each text window (an "answer") goes whole to the large model when
    the aggregate of its tokens' uncertainties is high. ``{aggregate: CascadeCurve}``; deferral counts tokens, so
    the curves share an axis with the token-level ones; thresholds are the aggregate values, most uncertain first.
    """
    check_rule(rule)
    if scores.window is None:
        raise DecodingError("these scores carry no window index; make them with cascade_scores")
    u, w = scores.uncertainty[rule], scores.window
    ids = np.unique(w)
    n = len(u)
    out = {}
    for how in aggregates:
        a = np.array([aggregate(u[w == i], how) for i in ids])
        order = ids[np.argsort(-a, kind="stable")]
        dfr, bits, ag = [0.0], [scores.small_bits.sum()], [scores.agree.sum()]
        for i in order:
            m = w == i
            dfr.append(dfr[-1] + m.sum() / n)
            bits.append(bits[-1] - (scores.small_bits[m] - scores.large_bits[m]).sum())
            ag.append(ag[-1] + (~scores.agree[m]).sum())
        dfr, bpb = np.array(dfr), np.array(bits) / scores.n_bytes
        out[how] = CascadeCurve(rule=f"{rule}:{how}", thresholds=np.concatenate([[math.inf], np.sort(a)[::-1]]),
                                deferral=dfr, bits_per_byte=bpb, agreement=np.array(ag) / n, area=_area(dfr, bpb))
    return out


@dataclass(frozen=True)
class TimedPoint:
    """Wall time of :func:`cascade_generate` at one threshold, against the large model's greedy decoding alone:
    ``deferral`` of the generated tokens, ``large_calls``, ``wall_s`` and ``large_alone_s`` (same prompts)."""

    rule: str
    threshold: float
    deferral: float
    large_calls: int
    wall_s: float
    large_alone_s: float

    @property
    def speedup(self) -> float:
        return self.large_alone_s / self.wall_s if self.wall_s > 0 else math.nan


@dataclass
class CascadeComparison:
    """The deferral rules of one small/large pair side by side: ``curves[rule]`` for every rule in
    :data:`RULES` plus "oracle" and "random"; ``small_bpb``/``large_bpb`` the two models alone; ``timed``: wall
    time at a few thresholds per rule; ``n_tokens`` scored."""

    small_name: str
    large_name: str
    curves: dict
    small_bpb: float
    large_bpb: float
    n_tokens: int
    n_bytes: int
    timed: list = field(default_factory=list)

    def table(self) -> list[dict]:
        """One row per curve: its area and the deferral it needs to close half and 90% of the gap."""
        rows = []
        for name, c in self.curves.items():
            gap = self.small_bpb - self.large_bpb
            rows.append({"rule": name, "area": c.area,
                         "deferral_for_half_gap": c.at_quality(self.small_bpb - 0.5 * gap)[0],
                         "deferral_for_90pct_gap": c.at_quality(self.small_bpb - 0.9 * gap)[0]})
        return rows


def timed_points(small, large, prompts, rule: str, thresholds, max_new_tokens: int = 32) -> list:
    """Measure :func:`cascade_generate` at each threshold over ``prompts`` (best of two runs), and the large
    model's greedy decoding alone on the same prompts."""
    from .strategies import greedy_fast

    def best(fn):
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            r = fn()
            times.append(time.perf_counter() - t0)
        return min(times), r

    alone, _ = best(lambda: [greedy_fast(large, p, max_new_tokens) for p in prompts])
    out = []
    for thr in thresholds:
        wall, rs = best(lambda: [cascade_generate(small, large, p, max_new_tokens, rule=rule, threshold=thr)
                                 for p in prompts])
        out.append(TimedPoint(rule=rule, threshold=float(thr), deferral=float(np.mean([r.deferral for r in rs])),
                              large_calls=sum(r.large_calls for r in rs), wall_s=wall, large_alone_s=alone))
    return out


def cascade_curve(small, large, text, *, rules=RULES, chars: int | None = None, max_windows: int | None = 8,
                  prompts=None, max_new_tokens: int = 32, timed_deferrals=(0.0, 0.25, 0.5, 1.0)) -> CascadeComparison:
    """Cost against quality of a cascade ``small -> large`` for every threshold of every rule in ``rules``.

    Quality is teacher-forced on ``text`` (cut into windows of ``chars`` characters, at most ``max_windows``).
    With ``prompts`` (a list of texts), :func:`cascade_generate` is also timed at the thresholds whose
    teacher-forced deferral is nearest each of ``timed_deferrals`` (0 runs the small model only, 1 the large
    one through the cascade), against the large model alone.
    """
    for r in rules:
        check_rule(r)
    s = cascade_scores(small, large, text, chars=chars, max_windows=max_windows)
    n = len(s.small_bits)
    curves = {r: curve_for_rule(s, r) for r in rules}
    curves["oracle"] = curve_from_order(s, np.argsort(-(s.small_bits - s.large_bits), kind="stable"), "oracle",
                                        np.full(n + 1, math.nan))
    sb, lb = s.small_bits.sum() / s.n_bytes, s.large_bits.sum() / s.n_bytes
    ends = np.array([0.0, 1.0])
    ag0 = s.agree.mean()
    curves["random"] = CascadeCurve(rule="random", thresholds=np.full(2, math.nan), deferral=ends,
                                    bits_per_byte=np.array([sb, lb]), agreement=np.array([ag0, 1.0]),
                                    area=float((sb + lb) / 2))
    timed = []
    if prompts:
        for r in rules:
            c = curves[r]
            thrs = []
            for f in timed_deferrals:
                t = float(c.thresholds[int(np.argmin(np.abs(c.deferral - f)))])
                if t not in thrs:
                    thrs.append(t)
            timed += timed_points(small, large, prompts, r, thrs, max_new_tokens)
    return CascadeComparison(small_name=str(getattr(small, "name", "small")),
                             large_name=str(getattr(large, "name", "large")), curves=curves, small_bpb=float(sb),
                             large_bpb=float(lb), n_tokens=n, n_bytes=s.n_bytes, timed=timed)


#: The shipped small/large pairs (same tokenizer within a pair).
PAIRS = {"byte": ("docs-byte-draft", "docs-byte"), "bpe": ("docs-bpe-draft", "docs-bpe")}

#: Prompts the shipped pairs are timed on (text of the kind they were trained on).
PROMPTS = ("The for statement ", "A class definition ", "The return value of ", "If the object ")


def eval_text(chars: int = 1600) -> str:
    """The first ``chars`` characters of the docs corpus' validation text (never trained on)."""
    from workbench.models.make_pretrained import text_splits

    return text_splits()[1][:chars]


def shipped_pair_curve(pair: str = "bpe", *, chars: int = 1600, timed: bool = False,
                       max_new_tokens: int = 32) -> CascadeComparison:
    """:func:`cascade_curve` of a shipped pair ("byte" or "bpe") on the validation text, optionally timed."""
    if pair not in PAIRS:
        raise DecodingError(f"unknown pair {pair!r}; choose one of {tuple(PAIRS)}")
    from workbench.models import load_pretrained

    small, large = (load_pretrained(n) for n in PAIRS[pair])
    return cascade_curve(small, large, eval_text(chars), max_windows=None, prompts=list(PROMPTS) if timed else None,
                         max_new_tokens=max_new_tokens)


__all__ = ["RULES", "AGGREGATES", "PAIRS", "aggregate", "sequence_curves", "CascadeResult", "CascadeScores", "CascadeCurve", "CascadeComparison", "TimedPoint",
           "uncertainty", "check_threshold", "check_cascade_pair", "cascade_generate", "cascade_scores",
           "cascade_curve", "curve_for_rule", "curve_at", "timed_points", "shipped_pair_curve", "eval_text"]
