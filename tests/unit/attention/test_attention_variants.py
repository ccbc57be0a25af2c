"""Attention variants and perplexity_vs_length: the StreamingLLM cache against an explicit re-run, errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.factories import attention_gpt
from workbench.attention import (
    ContextLengthError,
    EmptyInputError,
    Policy,
    PolicyError,
    SinkCache,
    dense,
    lambda_mask,
    perplexity_vs_length,
    sliding_window,
    streaming,
)

IDS = np.random.default_rng(7).integers(0, 256, 40)


def test_dense_loss_equals_cross_entropy():
    m = attention_gpt("learned")
    r = perplexity_vs_length(m, IDS)
    logits = m.forward(torch.tensor([IDS.tolist()])).logits[0]
    ref = F.cross_entropy(logits[:-1], torch.tensor(IDS[1:]), reduction="none").detach().numpy()
    np.testing.assert_allclose(r.loss, ref, atol=1e-5)
    assert r.positions.tolist() == list(range(1, 40)) and r.policy == "dense"
    assert r.perplexity == pytest.approx(float(np.exp(ref.mean())), rel=1e-5)
    starts, means = r.binned(10)
    assert starts.tolist() == [1, 11, 21, 31] and means[0] == pytest.approx(ref[:10].mean(), abs=1e-5)


def test_wide_windows_equal_dense_and_narrow_ones_differ():
    m = attention_gpt("rope")
    d = perplexity_vs_length(m, IDS, dense()).loss
    np.testing.assert_allclose(perplexity_vs_length(m, IDS, sliding_window(40)).loss, d, atol=1e-5)
    np.testing.assert_allclose(perplexity_vs_length(m, IDS, lambda_mask(1, 39)).loss, d, atol=1e-5)
    np.testing.assert_allclose(perplexity_vs_length(m, IDS, streaming(4, 36)).loss, d, atol=1e-5)
    s = perplexity_vs_length(m, IDS, sliding_window(8)).loss
    np.testing.assert_allclose(s[:7], d[:7], atol=1e-5)  # positions 1..7 see everything either way
    assert np.abs(s[8:] - d[8:]).max() > 1e-3


@pytest.mark.parametrize("pos", ["rope", "alibi"])
def test_streaming_cache_equals_rerun_on_kept_tokens(pos):
    """One layer: cached keys depend only on their token and slot, so keeping sinks + window and re-indexing is
    exactly a fresh run on [sink tokens] + [recent tokens]."""
    m = attention_gpt(pos, n_layer=1, n_head=4)
    s, w = 2, 6
    r = perplexity_vs_length(m, IDS, streaming(s, w))
    for i in [s + w - 1, s + w, s + w + 3, 38]:
        kept = list(range(s)) + list(range(max(s, i - w + 1), i + 1))
        logits = m.forward(torch.tensor([IDS[kept].tolist()])).logits[0, -1]
        ref = F.cross_entropy(logits[None], torch.tensor([IDS[i + 1]])).item()
        assert r.loss[i] == pytest.approx(ref, abs=1e-4), i
    assert r.extra["evicted"] == len(IDS) - (s + w) + 1


def test_sink_cache_holds_sinks_plus_window():
    m = attention_gpt("rope")
    c = SinkCache(m, 2, 5)
    out = m.step(torch.tensor([IDS[:7].tolist()]), c)
    assert out.logits.shape == (1, 7, 257)
    assert c.length == 6 and c.evicted == 1  # room made for the next token
    for t in IDS[7:20]:
        m.step(torch.tensor([[int(t)]]), c)
        assert c.length == 6
    assert c.evicted == 14


def test_beyond_context_rope_runs_and_errors_otherwise():
    m = attention_gpt("rope", block_size=16)
    ids = np.random.default_rng(0).integers(0, 256, 64)
    with pytest.raises(ContextLengthError, match="no long-context policy"):
        perplexity_vs_length(m, ids)
    for pol in (dense(), sliding_window(16), lambda_mask(4, 12), streaming(4, 12)):
        r = perplexity_vs_length(m, ids, pol)
        assert r.loss.shape == (63,) and np.isfinite(r.loss).all()
    learned = attention_gpt("learned", block_size=16)
    with pytest.raises(ContextLengthError, match="learned"):
        perplexity_vs_length(learned, ids, sliding_window(8))
    with pytest.raises(PolicyError, match="RoPE or ALiBi"):
        perplexity_vs_length(learned, ids, streaming(2, 8))
    with pytest.raises(PolicyError, match="exceeds the context"):
        perplexity_vs_length(m, ids, streaming(4, 16))


def test_bad_policies_and_inputs():
    with pytest.raises(PolicyError, match="window"):
        sliding_window(0)
    with pytest.raises(PolicyError, match="n_sink"):
        Policy("lambda", 4, 0)
    with pytest.raises(PolicyError, match="kind"):
        Policy("diagonal")
    with pytest.raises(PolicyError, match="not a mask"):
        streaming(2, 4).mask_fn
    m = attention_gpt()
    with pytest.raises(EmptyInputError):
        perplexity_vs_length(m, "")
    with pytest.raises(PolicyError, match="policy must be"):
        perplexity_vs_length(m, "abc", policy="sliding")


@pytest.mark.parametrize("pos", ["rope", "alibi"])
@pytest.mark.parametrize("policy", [dense(), sliding_window(12), lambda_mask(3, 9)], ids=str)
def test_mask_policies_beyond_4x_context_equal_an_explicit_forward(pos, policy):
    """At 5x the training context, each mask policy's per-position loss equals a forward pass written out by
    hand with that policy's mask and absolute positions 0..T-1."""
    from tests.unit.attention.attn_helpers import explicit_logits

    m = attention_gpt(pos, n_head=4, block_size=16)
    ids = np.random.default_rng(3).integers(0, 256, 80)  # 5 x 16
    r = perplexity_vs_length(m, ids, policy)
    allowed = policy.allowed(torch.arange(80), torch.arange(80))
    ref = F.cross_entropy(explicit_logits(m, ids, allowed)[:-1], torch.tensor(ids[1:]), reduction="none").numpy()
    assert r.loss.shape == (79,) and r.context == 16 and r.positions[-1] == 79
    np.testing.assert_allclose(r.loss, ref, atol=2e-4)
    # beyond the context the policies really differ from dense (the comparison could fail)
    if policy.kind != "dense":
        causal = torch.ones(80, 80).tril().bool()
        dense_ref = F.cross_entropy(explicit_logits(m, ids, causal)[:-1], torch.tensor(ids[1:]),
                                    reduction="none").numpy()
        assert np.abs(dense_ref[16:] - ref[16:]).max() > 1e-2


def test_streaming_beyond_4x_context_equals_rerun_on_kept_tokens():
    """One RoPE layer at 6x its context: the StreamingLLM cache equals a fresh run on the sink tokens plus the
    recent window (positions re-indexed), at every position."""
    m = attention_gpt("rope", n_layer=1, n_head=4, block_size=16)
    ids = np.random.default_rng(4).integers(0, 256, 96)
    s, w = 4, 12
    r = perplexity_vs_length(m, ids, streaming(s, w))
    for i in range(s + w, 95, 7):
        kept = list(range(s)) + list(range(i - w + 1, i + 1))
        logits = m.forward(torch.tensor([ids[kept].tolist()])).logits[0, -1]
        ref = F.cross_entropy(logits[None], torch.tensor([ids[i + 1]])).item()
        assert r.loss[i] == pytest.approx(ref, abs=1e-4), i
    assert r.extra["evicted"] == 96 - (s + w) + 1
