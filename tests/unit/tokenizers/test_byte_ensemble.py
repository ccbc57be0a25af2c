"""The byte-level ensemble (workbench.tokenizers.byte_ensemble): mixing models with different tokenizers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tests.factories import tiny_gpt
from tests.unit.tokenizers.test_byte_probs import tiny_model
from workbench.tokenizers import ByteTokenizer
from workbench.tokenizers.byte_ensemble import (
    RESULT_FILE, HeldOutTerms, ensemble_next_byte, ensemble_report, mixture_bits, score_texts,
)
from workbench.tokenizers.byte_probs import ByteProbError, byte_logprob, next_byte_distribution


def byte_model():
    return tiny_gpt(ByteTokenizer(bos=True), seed=2, n_layer=1, n_head=2, n_embd=16, block_size=64, weight_std=0.3)


def test_mixture_bits_by_hand():
    terms = np.log([[0.5, 0.25], [0.1, 0.4]])
    want = -(math.log2(0.3 * 0.5 + 0.7 * 0.25) + math.log2(0.3 * 0.1 + 0.7 * 0.4)) / 2
    assert mixture_bits(terms, [0.3, 0.7]) == pytest.approx(want)
    assert mixture_bits(terms, [1.0, 0.0]) == pytest.approx(-(math.log2(0.5) + math.log2(0.1)) / 2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(1e-6, 1.0), st.floats(1e-6, 1.0)), min_size=1, max_size=30),
       st.floats(0.0, 1.0))
def test_a_mixture_is_never_worse_than_the_same_mix_of_its_members(rows, w):
    """Concavity of log: mixing probabilities costs at most the weighted mean of the members' bits."""
    terms = np.log(np.array(rows))
    single = -terms.mean(axis=0) / math.log(2)
    assert mixture_bits(terms, [w, 1 - w]) <= w * single[0] + (1 - w) * single[1] + 1e-9


def test_ensemble_next_byte_mixes_the_exact_distributions():
    a, b = byte_model(), tiny_model(bos=False)
    p = ensemble_next_byte([a, b], "the lo", [0.25, 0.75])
    want = 0.25 * next_byte_distribution(a, "the lo").probs + 0.75 * next_byte_distribution(b, "the lo").probs
    np.testing.assert_allclose(p, want, atol=1e-12)
    assert p.sum() == pytest.approx(1.0)


def test_score_texts_scores_the_same_bytes_with_each_model():
    a, b = byte_model(), tiny_model(bos=False)
    texts = ["the lowest newer", "newer there low"]
    scored = score_texts([a, b], texts, ["byte", "bpe"])
    assert scored.terms.shape == (len("the lowest newer") - 3 + len("newer there low") - 5, 2)
    # the BPE model has no BOS: both are scored from the end of the first piece ("the", "newer")
    np.testing.assert_allclose(scored.terms[scored.chunk == 0, 1], byte_logprob(b, texts[0], start=3).terms)
    np.testing.assert_allclose(scored.terms[scored.chunk == 1, 0], byte_logprob(a, texts[1], start=5).terms)
    rep = ensemble_report(scored, tune_chunks=1, steps=4)
    assert rep.grid[1.0] == pytest.approx(rep.single["byte"]) and rep.grid[0.0] == pytest.approx(rep.single["bpe"])
    assert rep.ensemble == pytest.approx(rep.grid[rep.weight])


def test_bad_input():
    a = byte_model()
    with pytest.raises(ByteProbError, match="sum to 1"):
        ensemble_next_byte([a, a], "hi", [0.5, 0.6])
    with pytest.raises(ByteProbError, match="at least one model"):
        ensemble_next_byte([], "hi")
    with pytest.raises(ByteProbError, match="exactly two"):
        ensemble_report(HeldOutTerms(["x"], np.zeros((3, 1)), np.zeros(3)), 1)
    with pytest.raises(ByteProbError, match="no tuning or no test"):
        ensemble_report(HeldOutTerms(["x", "y"], np.zeros((3, 2)), np.zeros(3)), 1)


def test_the_lessons_numbers_are_consistent():
    """The stored result (python -m workbench.tokenizers.byte_ensemble) agrees with itself: the grid's ends are
    the single models, the reported mixture is the grid at the tuned weight."""
    r = json.loads(RESULT_FILE.read_text())
    assert r["grid"]["1.00"] == pytest.approx(r["single"]["docs-byte"])
    assert r["grid"]["0.00"] == pytest.approx(r["single"]["docs-bpe"])
    assert r["ensemble"] == pytest.approx(r["grid"][f"{r['weight_on_docs_byte']:.2f}"])
    assert r["n_test_bytes"] > 1000
