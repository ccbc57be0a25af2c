"""Logits processors: equal to HF transformers' own processors, stored vectors, properties, bad input."""
from __future__ import annotations

import math
import zlib

import pytest
import torch
from hypothesis import given, settings, strategies as st

from workbench.decoding import processors as P
from workbench.decoding import DecodingError

N = None
# Expected outputs of HF transformers 5.23's processors on one logits vector (ids for the two history-dependent
# ones); recorded once so these definitions are checked even where transformers is not installed.
LOGITS = [2.0, 1.5, 1.5, 0.3, -0.2, -1.0, -1.0, -2.5, 0.9, 3.1]
IDS = [1, 3, 9, 3, 1, 3]
STORED = {
    ("top_k", 3): [2.0, 1.5, 1.5, N, N, N, N, N, N, 3.1],
    ("top_k", 2): [2.0, N, N, N, N, N, N, N, N, 3.1],
    ("min_p", 0.5): [N, N, N, N, N, N, N, N, N, 3.1],
    ("min_p", 0.2): [2.0, 1.5, 1.5, N, N, N, N, N, N, 3.1],
    ("typical", 0.3): [2.0, 1.5, 1.5, N, N, N, N, N, N, N],
    ("typical", 0.6): [2.0, 1.5, 1.5, N, N, N, N, N, N, 3.1],
    ("typical", 0.95): [2.0, 1.5, 1.5, 0.3, N, N, N, N, 0.9, 3.1],
    ("top_p", 0.95): [2.0, 1.5, 1.5, 0.3, N, N, N, N, 0.9, 3.1],
    ("top_p", 0.8): [2.0, 1.5, 1.5, N, N, N, N, N, N, 3.1],
    ("top_p", 0.5): [N, N, N, N, N, N, N, N, N, 3.1],
    ("epsilon", 0.05): [2.0, 1.5, 1.5, N, N, N, N, N, 0.9, 3.1],
    ("eta", 0.1): [2.0, 1.5, 1.5, N, N, N, N, N, N, 3.1],
    ("eta", 0.02): [2.0, 1.5, 1.5, 0.3, N, N, N, N, 0.9, 3.1],
    ("temperature", 0.5): [4.0, 3.0, 3.0, 0.6, -0.4, -2.0, -2.0, -5.0, 1.8, 6.2],
    ("repetition_penalty", 1.5): [2.0, 1.0, 1.5, 0.2, -0.2, -1.0, -1.0, -2.5, 0.9, 2.066667],
    ("no_repeat_ngram", 2): [2.0, N, 1.5, 0.3, -0.2, -1.0, -1.0, -2.5, 0.9, N],
}


def _apply(name, value, logits, ids):
    fn = getattr(P, name)
    if name in ("repetition_penalty", "no_repeat_ngram"):
        return fn(logits, ids, value)
    return fn(logits, value)


@pytest.mark.parametrize("key", list(STORED), ids=[f"{k}-{v}" for k, v in STORED])
def test_stored_vectors(key):
    name, value = key
    out = _apply(name, value, torch.tensor([LOGITS]), torch.tensor([IDS]))[0]
    expected = STORED[key]
    for got, want in zip(out.tolist(), expected):
        if want is None:
            assert got == float("-inf")
        else:
            assert got == pytest.approx(want, abs=1e-5)


# ------------------------------------------------------------------------------------------- against HF
def _hf_processor(name, value, min_keep):
    lp = pytest.importorskip("transformers.generation.logits_process")
    return {
        "temperature": lambda: lp.TemperatureLogitsWarper(float(value)),
        "top_k": lambda: lp.TopKLogitsWarper(value, min_tokens_to_keep=min_keep),
        "top_p": lambda: lp.TopPLogitsWarper(value, min_tokens_to_keep=min_keep),
        "min_p": lambda: lp.MinPLogitsWarper(value, min_tokens_to_keep=min_keep),
        "typical": lambda: lp.TypicalLogitsWarper(value, min_tokens_to_keep=min_keep),
        "epsilon": lambda: lp.EpsilonLogitsWarper(value, min_tokens_to_keep=min_keep),
        "eta": lambda: lp.EtaLogitsWarper(value, min_tokens_to_keep=min_keep),
        "repetition_penalty": lambda: lp.RepetitionPenaltyLogitsProcessor(float(value)),
        "no_repeat_ngram": lambda: lp.NoRepeatNGramLogitsProcessor(value),
    }[name]()


HF_CASES = [
    ("temperature", 0.3), ("temperature", 1.7), ("top_k", 1), ("top_k", 5), ("top_k", 40), ("top_p", 0.1),
    ("top_p", 0.5), ("top_p", 0.9), ("top_p", 1.0), ("min_p", 0.0), ("min_p", 0.05), ("min_p", 0.3),
    ("min_p", 1.0), ("typical", 0.2), ("typical", 0.5), ("typical", 0.95), ("epsilon", 1e-3), ("epsilon", 0.05),
    ("eta", 1e-3), ("eta", 0.05), ("repetition_penalty", 1.3), ("repetition_penalty", 0.7),
    ("no_repeat_ngram", 1), ("no_repeat_ngram", 2), ("no_repeat_ngram", 3),
]


@pytest.mark.parametrize("name,value", HF_CASES)
@pytest.mark.parametrize("scale", [0.5, 3.0])
@pytest.mark.parametrize("min_keep", [1, 3])
def test_matches_hf_processor(name, value, scale, min_keep):
    """Same output as HF's processor, bit for bit, on random logits of two scales (flat and peaked) plus
    rows with exact ties; ``min_tokens_to_keep`` forwarded where HF has it."""
    g = torch.Generator().manual_seed(zlib.crc32(repr((name, value, scale, min_keep)).encode()))  # stable seed
    V = 37
    logits = torch.randn(8, V, generator=g) * scale
    logits[0, :5] = logits[0, 5]  # ties with the boundary
    logits[1] = torch.round(logits[1])  # many ties
    ids = torch.randint(0, 5, (8, 12), generator=g)  # small alphabet: repeated n-grams
    hf = _hf_processor(name, value, min_keep)
    want = hf(ids, logits.clone())
    if name in ("repetition_penalty", "no_repeat_ngram"):
        got = getattr(P, name)(logits, ids, value)
    elif name == "temperature":
        got = P.temperature(logits, value)
    else:
        got = getattr(P, name)(logits, value, min_keep)
    assert torch.equal(torch.isinf(got), torch.isinf(want)), name
    fin = torch.isfinite(want)
    assert torch.allclose(got[fin], want[fin], rtol=0, atol=1e-6)


def test_batch_shapes_are_kept():
    x = torch.randn(2, 3, 11)
    for fn in (lambda z: P.top_p(z, 0.7), lambda z: P.typical(z, 0.5), lambda z: P.top_k(z, 4)):
        y = fn(x)
        assert y.shape == x.shape
        assert torch.equal(fn(x[1, 2]), y[1, 2])  # rows are independent


# ------------------------------------------------------------------------------------------- properties
logit_rows = st.lists(st.floats(-30, 30, allow_nan=False, width=32), min_size=1, max_size=40)
TRUNCATORS = {
    "top_k": st.integers(1, 50), "top_p": st.floats(0.001, 1.0), "min_p": st.floats(0.0, 1.0),
    "typical": st.floats(0.001, 0.999), "epsilon": st.floats(1e-4, 0.999), "eta": st.floats(1e-4, 0.999),
}


@settings(max_examples=60, deadline=None)
@given(row=logit_rows, data=st.data(), min_keep=st.integers(1, 4))
def test_truncation_properties(row, data, min_keep):
    """Any truncation: kept entries unchanged, removed ones -inf, at least min(min_keep, V) kept, the arg-max
    kept (one of them on ties; except by typical, which may drop it), no NaN."""
    name = data.draw(st.sampled_from(sorted(TRUNCATORS)))
    value = data.draw(TRUNCATORS[name])
    x = torch.tensor(row)
    y = getattr(P, name)(x, value, min_keep)
    fin = torch.isfinite(y)
    assert not torch.isnan(y).any()
    assert torch.equal(y[fin], x[fin])
    assert bool(torch.isneginf(y[~fin]).all())
    assert int(fin.sum()) >= min(min_keep, len(row))
    if name != "typical":
        assert bool(fin[x == x.max()].any())  # a most likely token survives (which one, on ties, is HF's sort order)


@settings(max_examples=40, deadline=None)
@given(row=logit_rows, p1=st.floats(0.01, 1.0), p2=st.floats(0.01, 1.0))
def test_top_p_nested(row, p1, p2):
    """A larger top_p never keeps fewer tokens, and the kept mass reaches p."""
    lo, hi = sorted((p1, p2))
    x = torch.tensor(row, dtype=torch.float64)
    a, b = torch.isfinite(P.top_p(x, lo)), torch.isfinite(P.top_p(x, hi))
    assert bool((a <= b).all())
    assert float(x.softmax(-1)[a].sum()) >= lo - 1e-9


def test_temperature_zero_is_greedy():
    x = torch.tensor([[0.1, 2.0, 2.0, -1.0], [3.0, 0.0, 0.0, 0.0]])
    y = P.temperature(x, 0.0)
    assert torch.isfinite(y).tolist() == [[False, True, False, False], [True, False, False, False]]


def test_repetition_penalty_counts_each_token_once():
    x = torch.tensor([2.0, -2.0, 1.0])
    y = P.repetition_penalty(x, [0, 0, 0, 1], 2.0)
    assert y.tolist() == [1.0, -4.0, 1.0]


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call,match", [
    (lambda x: P.top_p(x, 0.0), "top_p must be in"),
    (lambda x: P.top_p(x, 1.5), "top_p must be in"),
    (lambda x: P.top_p(x, -0.1), "top_p must be in"),
    (lambda x: P.top_k(x, 0), "top_k must be an int >= 1"),
    (lambda x: P.top_k(x, 2.5), "top_k must be an int >= 1"),
    (lambda x: P.temperature(x, -0.5), "temperature must be >= 0"),
    (lambda x: P.temperature(x, float("nan")), "temperature must be a number"),
    (lambda x: P.typical(x, 0.0), "typical mass must be in"),
    (lambda x: P.typical(x, 1.0), "typical mass must be in"),
    (lambda x: P.min_p(x, -0.01), "min_p must be in"),
    (lambda x: P.min_p(x, 1.01), "min_p must be in"),
    (lambda x: P.epsilon(x, 0.0), "epsilon must be in"),
    (lambda x: P.eta(x, 1.0), "eta epsilon must be in"),
    (lambda x: P.repetition_penalty(x, [1], 0.0), "repetition penalty must be > 0"),
    (lambda x: P.no_repeat_ngram(x, [1], 0), "no_repeat_ngram size"),
    (lambda x: P.repetition_penalty(x, [99], 1.2), r"ids must be in \[0, 5\)"),
    (lambda x: P.top_k(x, 3, min_tokens_to_keep=0), "min_tokens_to_keep"),
])
def test_bad_parameters(call, match):
    with pytest.raises(DecodingError, match=match):
        call(torch.zeros(5))


@pytest.mark.parametrize("name,value", [("temperature", 1.0), ("top_k", 2), ("top_p", 0.9), ("min_p", 0.1),
                                        ("typical", 0.5), ("epsilon", 0.01), ("eta", 0.01)])
def test_nan_logits_refused(name, value):
    x = torch.tensor([0.0, float("nan"), 1.0])
    with pytest.raises(DecodingError, match="NaN"):
        getattr(P, name)(x, value)


def test_entropy_bits():
    x = torch.log(torch.tensor([0.5, 0.25, 0.25, 0.0]))
    assert float(P.entropy_bits(x)) == pytest.approx(1.5)
    assert math.isclose(float(P.entropy_bits(torch.zeros(8))), 3.0, rel_tol=1e-6)
