"""Repeated sampling (workbench.decoding.repeated): pass@k and majority voting against brute-force enumeration,
the sampler against the model's own probability of an answer, and the shipped addition models and results."""
from __future__ import annotations

import math
from itertools import combinations, permutations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.decoding import DecodingError
from workbench.decoding.repeated import (
    k_grid, majority_at_k, majority_vote, pass_at_k, repeated_sampling, sample_answers,
)


def brute_pass_at_k(n, c, k):
    """Fraction of all k-subsets of n samples (the first c correct) that hold a correct one."""
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 9).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_is_the_subset_enumeration(nck):
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_large_n_is_stable():
    # 1 - C(n-c, k)/C(n, k) with exact integers
    n, c, k = 1000, 3, 100
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)
    assert pass_at_k(10, 0, 10) == 0.0 and pass_at_k(10, 1, 10) == 1.0 and pass_at_k(5, 2, 1) == pytest.approx(0.4)


def brute_majority(answers, correct, k):
    """Every ordered draw of k samples; the vote goes to the most frequent answer, a tie to the tied answer drawn
    first (majority_vote's rule), written out here without the 1/m shortcut."""
    wins = total = 0
    for perm in permutations(range(len(answers)), k):
        drawn = [answers[i] for i in perm]
        counts = {a: drawn.count(a) for a in drawn}
        top = max(counts.values())
        winner = next(a for a in drawn if counts[a] == top)
        wins += winner == correct
        total += 1
    return wins / total


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from("abc"), min_size=1, max_size=6), st.data())
def test_majority_at_k_is_the_enumeration_of_ordered_draws(answers, data):
    k = data.draw(st.integers(1, len(answers)))
    correct = data.draw(st.sampled_from("abcd"))
    assert majority_at_k(answers, correct, k) == pytest.approx(brute_majority(answers, correct, k), abs=1e-12)


def test_majority_at_k_monte_carlo_agrees_with_enumeration():
    answers = list("aabbbccdaab") + ["a"]                    # n = 12
    k = 5                                                   # C(12, 5) = 792 subsets
    exact = majority_at_k(answers, "a", k, rounds=10_000)   # enumerated
    est = majority_at_k(answers, "a", k, rounds=400, seed=3)  # sampled
    assert math.comb(12, 5) > 400
    se = math.sqrt(exact * (1 - exact) / 400)
    assert abs(est - exact) < 4 * se + 1e-9


def test_majority_vote_tie_rule():
    assert majority_vote(["b", "a", "a", "b"]) == "b"       # tied 2-2: the one drawn first wins
    assert majority_vote(["a", "b", "b"]) == "b"
    assert majority_vote(["", "", "7"]) == ""               # an empty answer is an answer
    assert majority_at_k(["b", "a"], "a", 2) == 0.5         # a tie of two: credit 1/2


def test_k_one_and_k_n():
    ans = list("xyzxx")
    assert majority_at_k(ans, "x", 1) == pytest.approx(3 / 5)
    assert majority_at_k(ans, "x", 5) == 1.0 and majority_at_k(ans, "y", 5) == 0.0
    assert k_grid(100) == [1, 2, 4, 8, 16, 32, 64, 100] and k_grid(8) == [1, 2, 4, 8]


@pytest.mark.parametrize("call, match", [
    (lambda: pass_at_k(5, 2, 6), "k=6 is larger than n=5"),
    (lambda: pass_at_k(5, 6, 1), "cannot exceed n"),
    (lambda: pass_at_k(5, 2, 0), "k must be an int >= 1"),
    (lambda: pass_at_k(5, -1, 2), "c must be an int >= 0"),
    (lambda: majority_at_k(["a", "b"], "a", 3), "k=3 is larger than n=2"),
    (lambda: majority_vote([]), "at least one answer"),
    (lambda: repeated_sampling([["1"], ["1", "2"]], ["1", "2"]), "same number of samples"),
])
def test_bad_input(call, match):
    with pytest.raises(DecodingError, match=match):
        call()


def test_repeated_sampling_curves():
    answers = [["1", "2", "1", "3"], ["5", "5", "4", "4"], ["9", "8", "7", "6"]]
    r = repeated_sampling(answers, ["1", "4", "0"])
    assert r.ks == [1, 2, 4] and r.correct == [2, 2, 0]
    assert r.coverage == pytest.approx([np.mean([pass_at_k(4, c, k) for c in (2, 2, 0)]) for k in (1, 2, 4)])
    assert r.coverage[0] == pytest.approx(r.majority[0])
    assert r.majority[-1] == pytest.approx((1 + 0.5 + 0) / 3)   # "1" wins; "5"/"4" tie with "5" drawn first


# ------------------------------------------------------------------------------------ the shipped models
@pytest.fixture(scope="module")
def shipped():
    from workbench.scaling.addition_models import addition_models

    return addition_models()


def test_seven_shipped_sizes(shipped):
    assert len(shipped) == 7
    assert [i.N for i in shipped] == sorted(i.N for i in shipped)
    assert shipped[0].exact_match < 0.05 and shipped[-1].exact_match > 0.8


def test_shipped_weights_are_the_trained_models(shipped):
    """Greedy answers on 40 held-out problems: the largest model mostly right, the smallest mostly wrong, as the
    exact match recorded in their metadata (measured on all 500) says."""
    from workbench.decoding import greedy_fast
    from workbench.scaling.addition_models import addition_test_problems, load_addition_model

    probs = addition_test_problems(40)
    for info in (shipped[0], shipped[-1]):
        m = load_addition_model(info.name)
        right = 0
        for p in probs:
            out = m.tokenizer.decode(greedy_fast(m, p.prompt, 4))
            right += out.split("\n")[0] == p.answer
        se = math.sqrt(info.exact_match * (1 - info.exact_match) / 40)
        assert abs(right / 40 - info.exact_match) < 4 * se + 0.05, (info.name, right)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampled_answer_frequency_is_the_models_probability(shipped, temperature):
    """Binomial check: the share of samples equal to a given answer is P(answer tokens, then the stop)."""
    from workbench.scaling.addition_models import addition_test_problems, load_addition_model

    m = load_addition_model(shipped[3].name)
    p = addition_test_problems(3)[2]
    n = 3000
    got = sample_answers(m, [p], n, temperature=temperature, seed=11)[0]
    tok = m.tokenizer
    for ans in {got[0], p.answer}:
        ids = tok.encode(p.prompt)
        tail = tok.encode(ans) + tok.encode("\n")
        with torch.no_grad():
            lp = torch.log_softmax(m(torch.tensor([ids + tail])).logits[0].double() / temperature, -1)
        prob = math.exp(sum(lp[len(ids) - 1 + i, t].item() for i, t in enumerate(tail)))
        count = sum(a == ans for a in got)
        assert abs(count - n * prob) < 4.5 * math.sqrt(n * prob * (1 - prob)) + 1, (ans, count, n * prob)


def test_bad_sampling_input(shipped):
    from workbench.scaling.addition_models import load_addition_model

    m = load_addition_model(shipped[0].name)
    with pytest.raises(DecodingError, match="temperature must be > 0"):
        sample_answers(m, [], 4, temperature=0)
    with pytest.raises(DecodingError, match="no problems"):
        sample_answers(m, [], 4)

    class Empty:
        prompt = ""

    with pytest.raises(DecodingError, match="empty prompt"):
        sample_answers(m, [Empty()], 4)


def test_shipped_results_show_coverage_beyond_exact_match():
    """The lesson's claim, on the shipped results: models with near-zero exact match reach useful coverage."""
    from workbench.scaling.addition_models import load_repeated_sampling

    runs = load_repeated_sampling()
    assert len(runs) == 7
    for r in runs:
        assert np.all(np.diff(r.coverage) >= -1e-12)
        assert r.coverage[0] == pytest.approx(r.majority[0], abs=1e-9)
        assert r.coverage[-1] >= r.majority[-1] - 1e-9
    weak = [r for r in runs if r.greedy < 0.05]
    assert weak and all(r.coverage[-1] > 0.5 for r in weak)


def test_make_repeated_sampling_plumbing(tmp_path):
    """The remake command at a tiny size writes a file the loader reads back."""
    from workbench.scaling import make_repeated_sampling as mk
    from workbench.scaling.addition_models import load_repeated_sampling

    out = tmp_path / "rs.json"
    assert mk.main(["--out", str(out), "--problems", "2", "--samples", "4"]) == 0
    runs = load_repeated_sampling(out, temperature=None)
    assert len(runs) == 14 and {r.temperature for r in runs} == {1.0, 0.5}
    assert all(r.n == 4 and r.ks == [1, 2, 4] and len(r.correct) == 2 for r in runs)
