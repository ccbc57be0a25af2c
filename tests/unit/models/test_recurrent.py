"""RecurrentLM: the chunked form against the recurrence, decoding against the parallel forward, the cache's crop
and reorder, capture against plain loops written here, and bad input."""
from __future__ import annotations

import pytest
import torch

from workbench.models import ModelError, RecurrentConfig, RecurrentLM, capture_state
from workbench.models.recurrent import MAX_D_STATE, RecurrentCacheError, gla_chunked, gla_recurrent


@pytest.fixture(autouse=True)
def one_thread():
    """Decoding is thousands of tiny ops: on two busy shared cores a second intra-op thread makes each one wait
    (a 2,000-step loop took 130 s with two threads, 5 s with one)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def recurrent_lm(seed=0, vocab=50, n_layer=2, n_embd=32, n_head=2, d_state=16, std=0.3, **kw) -> RecurrentLM:
    """A random model with weights larger than the init, so that logits vary and decays differ by token."""
    torch.manual_seed(seed)
    m = RecurrentLM(RecurrentConfig(vocab_size=vocab, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                                    d_state=d_state, block_size=64, **kw)).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std)
    return m


def plain_loop(q, k, v, log_a, S):
    """The recurrence for one sequence and head, element by element: q, k, log_a (T, Dk), v (T, Dv), S (Dk, Dv)."""
    T, Dk = q.shape
    Dv = v.size(1)
    outs, norms = [], []
    S = S.clone()
    for t in range(T):
        for i in range(Dk):
            for j in range(Dv):
                S[i, j] = torch.exp(log_a[t, i]) * S[i, j] + k[t, i] * v[t, j]
        outs.append(torch.stack([sum(q[t, i] * S[i, j] for i in range(Dk)) for j in range(Dv)]))
        norms.append(S.norm())
    return torch.stack(outs), torch.stack(norms), S


def random_heads(B, H, T, Dk, Dv, decay_scale, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, T, Dk, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, H, T, Dv, generator=g, dtype=dtype)
    log_a = -decay_scale * torch.rand(B, H, T, Dk, generator=g, dtype=dtype)
    S0 = torch.randn(B, H, Dk, Dv, generator=g, dtype=dtype)
    return q, k, v, log_a, S0


def test_recurrent_form_is_the_recurrence_written_out():
    q, k, v, log_a, S0 = random_heads(1, 1, 7, 3, 2, decay_scale=1.0)
    o, states = gla_recurrent(q, k, v, log_a, S0)
    ref_o, ref_norms, ref_S = plain_loop(q[0, 0], k[0, 0], v[0, 0], log_a[0, 0], S0[0, 0])
    torch.testing.assert_close(o[0, 0], ref_o)
    torch.testing.assert_close(torch.stack([s[0, 0].norm() for s in states]), ref_norms)
    torch.testing.assert_close(states[-1][0, 0], ref_S)


@pytest.mark.parametrize("T,chunk", [(1, 4), (16, 4), (37, 8), (37, 16), (64, 64), (50, 1)])
@pytest.mark.parametrize("decay_scale", [0.05, 3.0, 500.0])  # near 1, strong, and far past exp's float range
def test_chunked_form_equals_recurrence(T, chunk, decay_scale):
    q, k, v, log_a, S0 = random_heads(2, 3, T, 5, 4, decay_scale, seed=T + chunk)
    o_ref, states = gla_recurrent(q, k, v, log_a, S0)
    o, S = gla_chunked(q, k, v, log_a, S0, chunk)
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, states[-1], rtol=1e-10, atol=1e-10)


def test_chunked_form_survives_gates_that_underflow_in_float32():
    """log a = -200 per token: a product of decays is exactly 0 in float32 and 1 / it would be inf; the chunked
    form never forms either, so its gradients stay finite too."""
    q, k, v, log_a, S0 = random_heads(1, 2, 40, 4, 4, decay_scale=1.0, dtype=torch.float32)
    log_a = log_a * 0 - 200.0
    log_a.requires_grad_(True)
    q.requires_grad_(True)
    o, S = gla_chunked(q, k, v, log_a, S0, 16)
    (o.sum() + S.sum()).backward()
    assert torch.isfinite(o).all() and torch.isfinite(log_a.grad).all() and torch.isfinite(q.grad).all()
    # decay 0 forgets everything: o_t = (q_t . k_t) v_t
    torch.testing.assert_close(o.detach(), (q * k).sum(-1, keepdim=True).detach() * v, rtol=1e-5, atol=1e-5)


def test_step_by_step_decoding_equals_the_parallel_forward_over_a_long_sequence():
    """2,000 tokens (31 times the training context), float32: every step's logits within 1e-4 of forward's."""
    m = recurrent_lm(seed=1)
    ids = torch.randint(0, 50, (2, 2000), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = m(ids).logits
        cache = m.new_cache(2, rewind=0)
        steps = torch.cat([m.step(ids[:, t:t + 1], cache).logits for t in range(ids.size(1))], dim=1)
    assert cache.length == 2000
    assert full.std() > 1.0  # logits that vary, so that agreement means something
    assert (steps - full).abs().max() < 1e-4


def test_steps_of_any_size_equal_the_forward():
    m = recurrent_lm(seed=2)
    ids = torch.randint(0, 50, (3, 300), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = m(ids).logits
        cache = m.new_cache(3)
        parts, start = [], 0
        for size in (1, 40, 3, 17, 1, 100, 138):
            parts.append(m.step(ids[:, start:start + size], cache).logits)
            start += size
    assert start == 300 and cache.length == 300
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-4)


def test_the_cache_does_not_grow():
    from workbench.models.interface import Cache, CausalLM

    m = recurrent_lm()
    cache = m.new_cache(1, rewind=4)
    assert isinstance(m, CausalLM) and isinstance(cache, Cache)  # the interface's structural types
    with torch.no_grad():
        m.step(torch.zeros(1, 10, dtype=torch.long), cache)
        n10 = cache.nbytes
        m.step(torch.zeros(1, 990, dtype=torch.long), cache)
    assert cache.nbytes == n10 == 2 * 2 * 16 * 16 * 4 * 5  # layers x heads x Dk x Dv x 4 bytes x (1 + rewind)


@pytest.mark.parametrize("first,back", [(30, 1), (30, 6), (5, 5), (30, 0), (3, 3)])
def test_crop_goes_back_to_the_state_after_that_prefix(first, back):
    """Feed ``first`` tokens (as one step, then a few single steps), crop ``back``, feed other tokens: the logits
    are those of the forward on the kept prefix plus the new tokens."""
    m = recurrent_lm(seed=3)
    g = torch.Generator().manual_seed(first + back)
    ids = torch.randint(0, 50, (1, first), generator=g)
    other = torch.randint(0, 50, (1, 4), generator=g)
    with torch.no_grad():
        cache = m.new_cache(1, rewind=6)
        m.step(ids[:, :first - 2], cache)
        m.step(ids[:, first - 2:first - 1], cache)
        m.step(ids[:, first - 1:], cache)
        cache.crop(first - back)
        got = m.step(other, cache).logits
        want = m(torch.cat([ids[:, :first - back], other], dim=1)).logits[:, -4:]
    assert cache.length == first - back + 4
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_crop_twice_and_after_a_long_multi_token_step():
    m = recurrent_lm(seed=4)
    ids = torch.randint(0, 50, (1, 100), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = m(ids).logits
        cache = m.new_cache(1, rewind=5)
        m.step(ids[:, :80], cache)  # the last 6 of 80 tokens go through the recurrent loop for their states
        cache.crop(78)
        cache.crop(75)
        got = m.step(ids[:, 75:100], cache).logits
    torch.testing.assert_close(got, full[:, 75:], rtol=0, atol=1e-4)


def test_crop_beyond_the_kept_states_is_a_specific_error():
    m = recurrent_lm()
    with torch.no_grad():
        cache = m.new_cache(1, rewind=3)
        m.step(torch.zeros(1, 20, dtype=torch.long), cache)
        with pytest.raises(RecurrentCacheError, match=r"length 20 back to 16.*last 3 tokens only.*rewind=4"):
            cache.crop(16)
        with pytest.raises(RecurrentCacheError, match="cannot crop a cache of length 20 to 21"):
            cache.crop(21)
        assert cache.length == 20  # a refused crop changes nothing
        none = m.new_cache(1, rewind=0)
        m.step(torch.zeros(1, 5, dtype=torch.long), none)
        with pytest.raises(RecurrentCacheError, match="rewind=0"):
            none.crop(4)
    assert issubclass(RecurrentCacheError, ModelError)


def test_reorder_selects_rows_and_their_past_states():
    m = recurrent_lm(seed=5)
    ids = torch.randint(0, 50, (3, 40), generator=torch.Generator().manual_seed(3))
    index = torch.tensor([2, 0, 2])
    with torch.no_grad():
        cache = m.new_cache(3, rewind=4)
        m.step(ids[:, :30], cache)
        cache.reorder(index)
        cache.crop(28)
        got = m.step(ids[index, 28:], cache).logits
        want = m(ids[index]).logits[:, 28:]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_capture_returns_residuals_and_no_attentions():
    m = recurrent_lm(seed=6)
    ids = torch.randint(0, 50, (2, 33), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        plain = m(ids).logits
        out = m(ids, capture=True)
    assert out.attentions is None
    assert out.residuals.shape == (3, 2, 33, 32)
    torch.testing.assert_close(out.logits, plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.residuals[0], m.wte(ids))


def test_capture_state_against_plain_loops():
    """State norms and mixing weights of layer 0 recomputed here from its projections, by the element-wise loop
    and by the product of decays written out."""
    m = recurrent_lm(seed=7, n_layer=2, n_head=2, d_state=3, n_embd=8)
    ids = torch.randint(0, 50, (1, 9), generator=torch.Generator().manual_seed(5))
    cap = capture_state(m, ids)
    assert cap.state_norms.shape == (2, 1, 2, 9) and cap.mixing.shape == (2, 1, 2, 9, 9)
    assert cap.log_decay.shape == (2, 1, 2, 9) and (cap.log_decay < 0).all()
    with torch.no_grad():
        torch.testing.assert_close(cap.logits, m(ids).logits, rtol=0, atol=1e-5)
        q, k, v, log_a = m.blocks[0].mix.heads(m.blocks[0].ln1(m.wte(ids)))
    for h in range(2):
        _, norms, _ = plain_loop(q[0, h], k[0, h], v[0, h], log_a[0, h], torch.zeros(3, 4))
        torch.testing.assert_close(cap.state_norms[0, 0, h], norms, rtol=1e-5, atol=1e-6)
        for t in range(9):
            for s in range(9):
                decay = torch.exp(log_a[0, h, s + 1:t + 1].sum(0)) if s <= t else None
                want = (q[0, h, t] * decay * k[0, h, s]).sum() if s <= t else torch.tensor(0.0)
                torch.testing.assert_close(cap.mixing[0, 0, h, t, s], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cap.log_decay[0, 0], log_a[0].mean(-1))


def test_mixing_weights_reproduce_the_layer_output():
    """o_t = sum_s w[t, s] v_s: the weights are exactly what the layer mixes, in every layer."""
    m = recurrent_lm(seed=8)
    ids = torch.randint(0, 50, (2, 40), generator=torch.Generator().manual_seed(6))
    records = [{} for _ in m.blocks]
    with torch.no_grad():
        out = m._run(ids, capture=True, records=records)
    for i, block in enumerate(m.blocks):
        _, _, v, _ = block.mix.heads(block.ln1(out.residuals[i]))
        torch.testing.assert_close(records[i]["mixing"] @ v, records[i]["o"], rtol=1e-4, atol=1e-4)


def test_mixing_weights_are_left_out_for_long_inputs():
    from workbench.models.recurrent import MIXING_MAX_T

    cap = capture_state(recurrent_lm(), torch.zeros(MIXING_MAX_T + 1, dtype=torch.long))
    assert cap.mixing is None and cap.state_norms.shape[-1] == MIXING_MAX_T + 1


def test_capture_state_of_an_attention_model_says_why_not():
    from workbench.models import GPTConfig, TinyGPT

    with pytest.raises(ModelError, match="TinyGPT has none"):
        capture_state(TinyGPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8)), [1, 2])


def test_forward_runs_past_the_training_context():
    m = recurrent_lm()
    assert m(torch.zeros(1, 3 * m.config.block_size, dtype=torch.long)).logits.shape == (1, 192, 50)


@pytest.mark.parametrize("d_state", [0, -1, MAX_D_STATE + 1, 2.0, True, "16"])
def test_state_size_out_of_range_is_a_specific_error(d_state):
    with pytest.raises(ValueError, match=rf"d_state \(key dimension per head\) must be an int in \[1, {MAX_D_STATE}\]"):
        RecurrentConfig(d_state=d_state)


@pytest.mark.parametrize("field,value,message", [
    ("n_embd", 30, "divisible by n_head"), ("chunk_size", 0, "chunk_size must be a positive int"),
    ("gate_tau", 0.5, "gate_tau must be a finite number >= 1"), ("rewind", -1, "rewind must be an int >= 0"),
    ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
])
def test_other_bad_config_fields(field, value, message):
    with pytest.raises(ValueError, match=message):
        RecurrentConfig(**{field: value})


def test_bad_ids_and_mismatched_caches():
    m = recurrent_lm()
    with pytest.raises(ModelError, match="out of range"):
        m(torch.tensor([[1, 50]]))
    with pytest.raises(ModelError, match="holds 2 sequences but ids have 1 rows"):
        m.step(torch.zeros(1, 1, dtype=torch.long), m.new_cache(2))
    with pytest.raises(ModelError, match="needs the cache of its new_cache"):
        from workbench.models import KVCache
        m.step(torch.zeros(1, 1, dtype=torch.long), KVCache(2, 1, 2, 16, 8))
    with pytest.raises(ModelError, match="rewind must be an int >= 0"):
        m.new_cache(1, rewind=-2)
    with pytest.raises(ValueError, match="unknown RecurrentConfig fields"):
        RecurrentConfig.from_dict({"pos": "rope"})
