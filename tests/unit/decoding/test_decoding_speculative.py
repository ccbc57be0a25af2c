"""Speculative decoding: exact output distribution (chi-square with power), greedy equivalence, statistics."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from tests.unit.decoding.decoding_helpers import chi_square, counts_two, joint_first_two
from tests.factories import peaked_gpt
from workbench.decoding import (
    DecodingError, Pipeline, expected_speedup, expected_tokens_per_call, greedy, sample, speculative_decode,
    speculative_sample_batch, verify_drafts,
)

torch.set_num_threads(1)
PROMPT = [1, 2, 3]
N = 20_000


@pytest.fixture(scope="module")
def pair():
    return peaked_gpt(0, scale=0.25), peaked_gpt(1, scale=0.25)


PIPES = {
    "plain": Pipeline([]),
    "hf-temp-topk": Pipeline.preset("hf", temperature=0.9, top_k=10),
}


@pytest.mark.parametrize("gamma", [1, 3])
@pytest.mark.parametrize("pipe_name", list(PIPES))
def test_speculative_distribution_equals_target(pair, pipe_name, gamma):
    """First two generated tokens of 20,000 speculative decodings vs the target's exact joint distribution."""
    target, draft = pair
    pipe = PIPES[pipe_name]
    toks = speculative_sample_batch(target, draft, PROMPT, 2, gamma, N, pipe, seed=21 + gamma)
    obs = counts_two(toks, 16)
    p_val, _ = chi_square(obs, joint_first_two(target, PROMPT, pipe))
    assert p_val > 0.01
    # and the draft's distribution is clearly different, so agreeing with the target is not a coincidence
    p_draft, _ = chi_square(obs, joint_first_two(draft, PROMPT, pipe))
    assert p_draft < 1e-6


@pytest.mark.parametrize("rule", ["residual-from-p", "accept-if-p-gt-q"])
def test_wrong_rules_are_caught(pair, rule):
    """Two plausible bugs, each caught by the same chi-square test: drawing the correction from p instead of
    norm(max(0, p - q)), and a hard accept rule (accept iff p(x) >= q(x))."""
    target, draft = pair
    kw = {"residual_rule": lambda p, q: p} if rule == "residual-from-p" else \
        {"accept_rule": lambda px, qx: (px >= qx).float()}
    toks = speculative_sample_batch(target, draft, PROMPT, 2, 2, N, Pipeline([]), seed=5, **kw)
    p_val, _ = chi_square(counts_two(toks, 16), joint_first_two(target, PROMPT, Pipeline([])))
    assert p_val < 1e-4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kv_cache_version_equals_batched_version(pair, seed):
    """speculative_decode (KV cache, crop on rejection) and row 0 of the batched full-forward version run the
    same algorithm on the same noise, so their tokens agree: the chi-square above covers speculative_decode."""
    target, draft = pair
    pipe = PIPES["hf-temp-topk"]
    r = speculative_decode(target, draft, PROMPT, 20, gamma=3, pipeline=pipe, seed=seed)
    b = speculative_sample_batch(target, draft, PROMPT, 20, 3, 4, pipe, seed=seed)
    assert r.tokens == b[0].tolist()
    assert any(not all(rd.accepted) for rd in r.rounds)  # rejections happened, so crop was exercised


@pytest.mark.parametrize("gamma", [1, 2, 5])
def test_greedy_speculative_equals_greedy_target(pair, gamma):
    target, draft = pair
    for prompt in ([1, 2, 3], [7], [4, 4, 9, 0, 15]):
        want = greedy(target, prompt, 24).tokens
        got = speculative_decode(target, draft, prompt, 24, gamma=gamma, pipeline=Pipeline.preset("hf", temperature=0.0))
        assert got.tokens == want
        assert got.stats.accepted < got.stats.drafted  # the draft disagreed sometimes: the test is not vacuous


@pytest.mark.parametrize("stop", [False, True])
def test_untraced_greedy_shortcut_equals_the_general_rounds(pair, stop):
    """Greedy without a trace skips the distributions (arg-max comparisons only); tokens and every statistic
    equal those of the traced run, which goes through verify_drafts."""
    target, draft = pair
    pipe = Pipeline.preset("hf", temperature=0.0)
    eos_id = greedy(target, [4, 4, 9], 28).tokens[12] if stop else None  # a token that comes up mid-way
    for gamma in (1, 3):
        fast = speculative_decode(target, draft, [4, 4, 9], 28, gamma=gamma, pipeline=pipe, eos_id=eos_id, trace=False)
        full = speculative_decode(target, draft, [4, 4, 9], 28, gamma=gamma, pipeline=pipe, eos_id=eos_id)
        assert fast.tokens == full.tokens and not fast.rounds
        for f in ("drafted", "verified", "accepted", "target_calls", "draft_calls", "tokens", "alpha", "alpha_tv"):
            assert getattr(fast.stats, f) == pytest.approx(getattr(full.stats, f)), f
    if stop:
        assert fast.tokens[-1] == eos_id and len(fast.tokens) <= 13  # the stop token really came up


def test_greedy_with_a_history_stage_is_not_shortcut(pair):
    """A repetition penalty moves the arg-max, so greedy speculative decoding must process the logits."""
    target, draft = pair
    pipe = Pipeline.preset("hf", temperature=0.0, repetition_penalty=3.0)
    want = sample(target, PROMPT, 20, pipe, trace=False).tokens
    assert want != greedy(target, PROMPT, 20).tokens  # the penalty matters here
    assert speculative_decode(target, draft, PROMPT, 20, gamma=3, pipeline=pipe, trace=False).tokens == want


def test_perfect_draft_accepts_everything_and_reproduces_sampling(pair):
    """With draft == target every draft is accepted (alpha = 1, gamma + 1 tokens per call) and, thanks to the
    shared noise stream, the tokens are exactly those of plain sampling with the same seed."""
    target, _ = pair
    pipe = Pipeline.preset("hf", temperature=1.0)
    r = speculative_decode(target, target, PROMPT, 16, gamma=3, pipeline=pipe, seed=9)
    assert r.stats.alpha == 1.0
    assert r.tokens == sample(target, PROMPT, 16, pipe, seed=9, trace=False).tokens
    assert r.stats.tokens_per_call == 16 / 4


def test_stats_and_trace(pair):
    target, draft = pair
    r = speculative_decode(target, draft, PROMPT, 25, gamma=4, pipeline=Pipeline([]), seed=3, cost_ratio=0.25)
    s = r.stats
    assert len(r.tokens) == 25 and s.tokens == 25
    assert s.target_calls == len(r.rounds)
    assert sum(len(rd.emitted) for rd in r.rounds) == 25
    assert [t for rd in r.rounds for t in rd.emitted] == r.tokens
    assert s.alpha == pytest.approx(s.accepted / s.verified)
    assert s.expected_tokens_per_call == pytest.approx((1 - s.alpha ** 5) / (1 - s.alpha))
    assert s.expected_speedup == pytest.approx(s.expected_tokens_per_call / (4 * 0.25 + 1))
    for rd in r.rounds:
        assert rd.n_accepted == sum(rd.accepted)
        assert rd.accept_prob == pytest.approx([min(1.0, p / q) for p, q in zip(rd.p, rd.q)], rel=1e-5)
        if rd.kind == "residual":
            assert rd.accepted[-1] is False and rd.residual_top
            assert sum(pr for _, pr in rd.residual_top) <= 1 + 1e-6


def test_formulas():
    assert expected_tokens_per_call(0.0, 4) == 1.0
    assert expected_tokens_per_call(1.0, 4) == 5.0
    assert expected_tokens_per_call(0.5, 2) == pytest.approx(1.75)
    assert expected_speedup(0.8, 3, 0.1) == pytest.approx((1 - 0.8 ** 4) / 0.2 / 1.3)
    with pytest.raises(DecodingError):
        expected_tokens_per_call(1.5, 3)


def test_verify_drafts_by_hand():
    p = torch.tensor([[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]])
    q = torch.tensor([[[0.25, 0.75, 0.0], [0.6, 0.2, 0.2]]])
    drafts = torch.tensor([[1, 0]])
    # x1 = 1: p/q = 2/3 -> accepted when u < 2/3; x2 = 0: p/q = 1/3
    v = verify_drafts(p, q, drafts, torch.tensor([[0.5, 0.9]]))
    assert int(v.n_accepted) == 1 and bool(v.rejected)
    assert torch.allclose(v.next_dist[0], torch.tensor([0.0, 0.1, 0.3]) / 0.4)  # norm(max(0, p2 - q2))
    v = verify_drafts(p, q, drafts, torch.tensor([[0.7, 0.0]]))
    assert int(v.n_accepted) == 0 and torch.allclose(v.next_dist[0], torch.tensor([1.0, 0.0, 0.0]))
    v = verify_drafts(p, q, drafts, torch.tensor([[0.1, 0.2]]))
    assert int(v.n_accepted) == 2 and not bool(v.rejected)
    assert torch.equal(v.next_dist[0], p[0, 2])  # bonus from p


@pytest.mark.parametrize("seed", range(4))
def test_one_sequence_verification_equals_the_batched_one(seed):
    """verify_drafts takes a shorter path for one row; it must give the batched path's verdict bit for bit,
    including ragged draft counts, u exactly at the acceptance ratio and a residual with no mass (p == q)."""
    g = torch.Generator().manual_seed(seed)
    B, G, V = 12, 4, 9
    p = torch.rand(B, G + 1, V, generator=g).pow(3).softmax(-1)
    q = torch.rand(B, G, V, generator=g).pow(3).softmax(-1)
    q[0] = p[0, :G]  # draft == target: accept everything, and any residual has zero mass
    drafts = torch.randint(0, V, (B, G), generator=g)
    u = torch.rand(B, G, generator=g)
    n_draft = torch.randint(1, G + 1, (B,), generator=g)
    pick = torch.arange(G)
    ratio = (p[3, pick, drafts[3]] / q[3, pick, drafts[3]]).clamp(max=1.0)
    u[3] = ratio  # u == ratio rejects (the test is u < ratio)
    u[1, 0] = 0.999999  # an early rejection
    batched = verify_drafts(p, q, drafts, u, n_draft)
    for b in range(B):
        one = verify_drafts(p[b : b + 1], q[b : b + 1], drafts[b : b + 1], u[b : b + 1], n_draft[b : b + 1])
        assert int(one.n_accepted) == int(batched.n_accepted[b])
        assert bool(one.rejected) == bool(batched.rejected[b])
        assert torch.equal(one.accept_prob[0], batched.accept_prob[b])
        assert torch.equal(one.next_dist[0], batched.next_dist[b])
    assert bool(batched.rejected.any()) and bool((~batched.rejected).any())


def test_bad_inputs(pair):
    target, _ = pair
    other = peaked_gpt(2, vocab=20)
    with pytest.raises(DecodingError, match="different vocabularies"):
        speculative_decode(target, other, PROMPT, 5)
    with pytest.raises(DecodingError, match="gamma"):
        speculative_decode(target, target, PROMPT, 5, gamma=0)
    with pytest.raises(DecodingError, match="exceeds the model's context of 32"):
        speculative_decode(target, target, PROMPT, 30)



def _dist(draw, V):
    w = draw(st.lists(st.sampled_from([0.0, 0.0, 1e-6, 0.1, 0.5, 1.0, 3.0]), min_size=V, max_size=V))
    if sum(w) == 0:
        w[0] = 1.0
    t = torch.tensor(w, dtype=torch.float64)
    return t / t.sum()


def _one_round_output(p, q, **rules):
    """Exact distribution of the first emitted token: sum_x q(x) [a(x) 1{y = x} + (1 - a(x)) r(y)], with the
    acceptance probability a and residual r taken from verify_drafts (u just below 1 forces the rejection branch)."""
    V = p.numel()
    total = torch.zeros(V, dtype=torch.float64)
    for x in range(V):
        if q[x] == 0:
            continue
        P2 = torch.stack([p, p])[None]  # (1, 2, V): the draft position and the bonus position
        v = verify_drafts(P2, q[None, None], torch.tensor([[x]]), torch.tensor([[1.0 - 1e-12]], dtype=torch.float64),
                          **rules)
        a = float(v.accept_prob[0, 0])
        residual = v.next_dist[0] if bool(v.rejected[0]) else p  # not rejected only when a == 1
        total += q[x] * (a * torch.nn.functional.one_hot(torch.tensor(x), V).double() + (1 - a) * residual)
    return total


@settings(max_examples=80, deadline=None)
@given(data=st.data(), V=st.integers(1, 6), same=st.booleans())
def test_one_round_is_exact_for_any_p_q(data, V, same):
    """An exact identity, no sampling, on odd distributions (zeros, p == q, one-hots, tiny masses)."""
    p = _dist(data.draw, V)
    q = p.clone() if same else _dist(data.draw, V)
    assert torch.allclose(_one_round_output(p, q), p, atol=1e-9)


def test_one_round_identity_catches_wrong_residual():
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    assert not torch.allclose(_one_round_output(p, q, residual_rule=lambda p, q: p), p, atol=1e-3)
