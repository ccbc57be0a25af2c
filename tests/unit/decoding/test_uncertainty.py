"""Per-token uncertainty (workbench.decoding.uncertainty) against hand-built distributions and brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factories import byte_gpt
from workbench.decoding import DecodingError
from workbench.decoding.uncertainty import SCORES, distribution_scores, token_scores


def logits_of(probs):
    p = torch.tensor(probs, dtype=torch.float64)
    return torch.where(p > 0, p.log(), torch.full_like(p, -math.inf))


def test_hand_built_distribution():
    # p = (1/2, 1/4, 1/8, 1/8): H = 1/2*1 + 1/4*2 + 2 * 1/8*3 = 1.75 bits; margin 1/4
    s = distribution_scores(logits_of([0.5, 0.25, 0.125, 0.125]), torch.tensor(2))
    assert s["entropy"].item() == pytest.approx(1.75, abs=1e-12)
    assert s["max_prob"].item() == pytest.approx(0.5, abs=1e-12)
    assert s["margin"].item() == pytest.approx(0.25, abs=1e-12)
    assert s["surprisal"].item() == pytest.approx(3.0, abs=1e-12)
    assert s["rank"].item() == 3                     # two tokens strictly more likely; the tie at 1/8 shares rank 3


@pytest.mark.parametrize("V", [1, 2, 7, 50])
def test_uniform_and_one_hot(V):
    u = distribution_scores(torch.zeros(V), torch.tensor(V - 1))
    assert u["entropy"].item() == pytest.approx(math.log2(V), abs=1e-12)
    assert u["margin"].item() == pytest.approx(1.0 if V == 1 else 0.0, abs=1e-12)
    assert u["surprisal"].item() == pytest.approx(math.log2(V), abs=1e-12)
    assert u["rank"].item() == 1
    one = distribution_scores(logits_of([0.0] * (V - 1) + [1.0]), torch.tensor(V - 1))
    assert one["entropy"].item() == 0.0
    assert one["margin"].item() == 1.0 and one["surprisal"].item() == 0.0 and one["rank"].item() == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-30, 30, allow_nan=False), min_size=1, max_size=12), st.data())
def test_matches_brute_force(vals, data):
    logits = torch.tensor(vals, dtype=torch.float64)
    t = data.draw(st.integers(0, len(vals) - 1))
    s = distribution_scores(logits, torch.tensor(t))
    z = np.exp(np.array(vals) - max(vals))
    p = z / z.sum()
    ent = -sum(x * math.log2(x) for x in p if x > 0)
    ps = sorted(p, reverse=True) + [0.0]
    assert s["entropy"].item() == pytest.approx(ent, abs=1e-9)
    assert s["max_prob"].item() == pytest.approx(ps[0], abs=1e-12)
    assert s["margin"].item() == pytest.approx(ps[0] - ps[1], abs=1e-12)
    assert s["surprisal"].item() == pytest.approx(-math.log2(p[t]), rel=1e-9, abs=1e-9)
    # rank: 1 + number of logits strictly greater than the target's
    assert s["rank"].item() == 1 + sum(v > vals[t] for v in vals)


def test_batched_shapes():
    lg = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0))
    s = distribution_scores(lg, torch.zeros(3, 5, dtype=torch.long))
    assert all(v.shape == (3, 5) for v in s.values())


def test_token_scores_against_full_forward():
    m = byte_gpt(3)
    text = "def f(x): return x + 1"
    r = token_scores(m, text)
    ids = m.tokenizer.encode(text)
    assert r.ids == ids and len(r.tokens) == len(ids) and len(r.surprisal) == len(ids) - 1
    with torch.no_grad():
        logp = torch.log_softmax(m(torch.tensor([ids])).logits[0].double(), -1).numpy()
    for i in range(len(ids) - 1):
        row, tgt = logp[i], ids[i + 1]
        assert r.surprisal[i] == pytest.approx(-row[tgt] / math.log(2), rel=1e-6)
        assert r.rank[i] == 1 + int((row > row[tgt]).sum())
        top2 = np.sort(np.exp(row))[::-1][:2]
        assert r.margin[i] == pytest.approx(top2[0] - top2[1], abs=1e-6)
        assert r.max_prob[i] == pytest.approx(top2[0], abs=1e-6)
    # the first byte has no prediction (no BOS here), so the bytes of text[1:] are scored
    assert r.bits_per_byte == pytest.approx(r.surprisal.sum() / len(text[1:].encode()), rel=1e-9)
    rows = r.rows()
    assert rows[0]["token"] == r.tokens[1] and set(SCORES) <= set(rows[0])


def test_token_scores_shipped_model_predicts_its_corpus():
    # the shipped target reads documentation prose far better than chance (8 bits per byte)
    from workbench.models import load_pretrained

    r = token_scores(load_pretrained("docs-byte"), "The for statement is used to iterate over the elements of a sequence.")
    assert r.bits_per_byte < 2.5
    assert np.median(r.rank) == 1


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("a", "at least two tokens"),
    ("x" * 100, "more than the model's context"),
])
def test_bad_text(text, match):
    m = byte_gpt(0)
    with pytest.raises(DecodingError, match=match):
        token_scores(m, text)


def test_bad_score_name_and_targets():
    r = token_scores(byte_gpt(0), "hello")
    with pytest.raises(DecodingError, match="unknown score"):
        r.score("perplexity")
    with pytest.raises(DecodingError, match="targets must have shape"):
        distribution_scores(torch.zeros(2, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(DecodingError, match="NaN"):
        distribution_scores(torch.tensor([float("nan"), 0.0]))
