"""Pipelines, ancestral sampling (chi-square against the analytic truncated distribution), greedy, traces."""
from __future__ import annotations

import math

import pytest
import torch

from tests.unit.decoding.decoding_helpers import chi_square, counts_two, joint_first_two
from tests.factories import peaked_gpt
from workbench.decoding import (
    DecodingError, NoiseStream, Pipeline, Stage, greedy, greedy_fast, sample, sample_batch,
)

torch.set_num_threads(1)
PROMPT = [1, 2, 3]


@pytest.fixture(scope="module")
def model():
    return peaked_gpt(0, scale=0.25)  # broad enough that the pipelines keep 30-60 of the 256 token pairs


# ---------------------------------------------------------------------------------------------- pipelines
def test_preset_orders():
    kw = dict(temperature=0.7, top_k=5, top_p=0.9, min_p=0.1)
    assert [s.name for s in Pipeline.preset("hf", **kw).stages] == ["temperature", "top_k", "top_p", "min_p"]
    assert [s.name for s in Pipeline.preset("vllm", **kw).stages] == ["temperature", "min_p", "top_k", "top_p"]
    assert [s.name for s in Pipeline.preset("llamacpp", **kw).stages] == ["top_k", "top_p", "min_p", "temperature"]
    with pytest.raises(DecodingError, match="vllm preset has no stage"):
        Pipeline.preset("vllm", typical=0.5)
    with pytest.raises(DecodingError, match="unknown preset"):
        Pipeline.preset("sglang", top_k=3)


def test_order_changes_kept_set_temperature_last():
    """min_p judged after temperature 2 (HF) keeps a token that min_p on the raw distribution (llama.cpp) drops."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    hf = Pipeline.preset("hf", temperature=2.0, min_p=0.3)
    cpp = hf.with_order("llamacpp")
    assert torch.isfinite(hf(logits)).tolist() == [True, True, True, False]
    assert torch.isfinite(cpp(logits)).tolist() == [True, True, False, False]


def test_order_changes_kept_set_min_p_before_top_p():
    """vLLM runs min_p before top_p: the renormalised remainder makes top_p keep fewer tokens than in HF order."""
    logits = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.05, 0.05]))
    hf = Pipeline.preset("hf", top_p=0.75, min_p=0.2)
    vllm = hf.with_order("vllm")
    assert torch.isfinite(hf(logits)).sum() == 3  # top_p on the full distribution: 0.4 + 0.3 < 0.75 needs 0.2 too
    assert torch.isfinite(vllm(logits)).sum() == 2  # min_p drops the 0.05s; then 0.4/0.9 + 0.3/0.9 >= 0.75


def test_stage_validation_at_construction():
    with pytest.raises(DecodingError, match="top_p must be in"):
        Stage("top_p", 0.0)
    with pytest.raises(DecodingError, match="unknown stage"):
        Pipeline([("top_z", 3)])


# -------------------------------------------------------------------------------------------- chi-square
@pytest.mark.parametrize("pipe", [
    Pipeline.preset("hf", temperature=0.8, top_k=8, top_p=0.9),
    Pipeline.preset("llamacpp", typical=0.8, min_p=0.05, temperature=1.3),
], ids=["hf-topk-topp", "llamacpp-typical-minp"])
def test_ancestral_sampling_matches_truncated_distribution(model, pipe):
    """20,000 samples of the first two tokens (cached, batched decoding) against P(x1) P(x2 | x1) computed
    from full forward passes through the same pipeline; then the same samples against the *untruncated*
    distribution, which the test must reject (power)."""
    n = 20_000
    toks = sample_batch(model, PROMPT, 2, n, pipe, seed=11)
    obs = counts_two(toks, 16)
    exact = joint_first_two(model, PROMPT, pipe)
    p_ok, _ = chi_square(obs, exact)
    assert p_ok > 0.01
    assert (obs[exact == 0] == 0).all()  # never a removed token
    plain = joint_first_two(model, PROMPT, Pipeline([]))
    p_bad, _ = chi_square(obs, plain)
    assert p_bad < 1e-6


def test_sampling_power_against_wrong_temperature(model):
    """The same test tells temperature 0.8 from 1.0 with 20,000 samples (a subtle error it must catch)."""
    toks = sample_batch(model, PROMPT, 2, 20_000, Pipeline.preset("hf", temperature=0.8), seed=3)
    p_bad, _ = chi_square(counts_two(toks, 16), joint_first_two(model, PROMPT, Pipeline.preset("hf", temperature=1.0)))
    assert p_bad < 1e-4


# ---------------------------------------------------------------------------------- common random numbers
def test_single_and_batch_share_noise(model):
    pipe = Pipeline.preset("hf", temperature=1.0, top_p=0.95)
    one = sample(model, PROMPT, 12, pipe, seed=7, trace=False).tokens
    batch = sample_batch(model, PROMPT, 12, 5, pipe, seed=7)
    assert batch[0].tolist() == one
    assert sample(model, PROMPT, 12, pipe, seed=7, trace=False).tokens == one
    assert sample(model, PROMPT, 12, pipe, seed=8, trace=False).tokens != one


def test_noise_is_keyed_by_position():
    a, b = NoiseStream(5), NoiseStream(5)
    b.exponential(0, (100,))  # drawing extra numbers elsewhere does not shift later positions
    assert torch.equal(a.exponential(3, (2, 16)), b.exponential(3, (2, 16)))
    assert not torch.equal(a.exponential(3, (16,)), a.exponential(4, (16,)))
    assert not torch.equal(a.exponential(3, (16,)), a.exponential(3, (16,), "residual"))


@torch.no_grad()
def test_greedy_matches_uncached_argmax(model):
    """Greedy on the KV cache equals arg-max of full recomputation at every step."""
    seq = list(PROMPT)
    for _ in range(15):
        seq.append(int(model.forward(torch.tensor([seq])).logits[0, -1].argmax()))
    assert greedy(model, PROMPT, 15).tokens == seq[3:]
    assert greedy_fast(model, PROMPT, 15) == seq[3:]
    assert sample(model, PROMPT, 15, Pipeline.preset("hf", temperature=0.0), seed=123).tokens == seq[3:]


def test_trace_contents(model):
    pipe = Pipeline.preset("hf", temperature=0.9, top_k=6, top_p=0.8)
    r = sample(model, PROMPT, 6, pipe, seed=2, top_n=10)
    assert len(r.steps) == 6 and [s.chosen for s in r.steps] == r.tokens
    seq = list(PROMPT)
    with torch.no_grad():
        for st_, tok in zip(r.steps, r.tokens):
            logits = model.forward(torch.tensor([seq])).logits[0, -1]
            p = logits.softmax(-1)
            assert st_.surprisal == pytest.approx(-math.log2(float(p[tok])), rel=1e-4)
            H = -(p * p.log()).sum() / math.log(2)
            assert st_.entropy == pytest.approx(float(H), rel=1e-4)
            assert [s.name for s in st_.stages] == ["raw", "temperature=0.9", "top_k=6", "top_p=0.8"]
            kept = [s.kept for s in st_.stages]
            assert kept[0] == 16 and kept[1] == 16 and kept[2] <= 6 and kept[3] <= kept[2] == min(6, 16)
            assert st_.kept == kept[-1] == int(torch.isfinite(pipe(logits)).sum())
            assert st_.candidates[:10] == torch.topk(p, 10).indices.tolist()
            assert st_.stages[0].probs == pytest.approx(p[st_.candidates].tolist(), abs=1e-6)
            seq.append(tok)


def test_eos_stops(model):
    g = greedy(model, PROMPT, 10).tokens
    r = greedy(model, PROMPT, 10, eos_id=g[2])
    assert r.tokens == g[: g.index(g[2]) + 1]


def test_trace_shows_tokens_promoted_by_a_penalty():
    """A repetition penalty lifts token 2 above the seen tokens 0 and 1: it must appear among the candidates,
    and the stage probabilities must show top_k removing token 1, not 2."""
    from workbench.decoding import trace_step

    lg = torch.tensor([3.0, 2.9, 1.0, 0.5, 0.1])
    st = trace_step(lg, Pipeline([("repetition_penalty", 5.0), ("top_k", 2)]), ids=[0, 1], top_n=2)
    assert st.candidates == [0, 1, 2]
    assert [s.kept for s in st.stages] == [5, 5, 2]
    assert st.stages[-1].probs[1] == 0.0 and st.stages[-1].probs[2] > 0.5
    assert st.chosen == 2
