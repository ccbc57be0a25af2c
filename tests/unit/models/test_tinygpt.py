import math

import pytest
import torch

from tests.factories import tiny_gpt
from workbench.models import CausalLM, GPTConfig, ModelError
from workbench.models.tinygpt import alibi_slopes


def make(pos="rope", **kw):
    return tiny_gpt(vocab_size=61, n_layer=2, n_head=4, n_embd=32, block_size=48, pos=pos, **kw)


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_kv_cache_matches_full_forward(pos):
    m = make(pos)
    ids = torch.randint(0, 61, (3, 40), generator=torch.Generator().manual_seed(1))
    full = m(ids).logits
    cache = m.new_cache(3)
    parts = [m.step(ids[:, :9], cache).logits]  # a chunked prefill, then one token at a time
    parts += [m.step(ids[:, t : t + 1], cache).logits for t in range(9, 40)]
    assert cache.length == 40
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_cached_step_processes_only_the_new_token(monkeypatch):
    m = make()
    seen = []
    linear = torch.nn.functional.linear

    def spy(x, w, b=None):
        if w is m.blocks[0].attn.qkv.weight:
            seen.append(x.shape[1])  # tokens that go through layer 0's qkv projection
        return linear(x, w, b)

    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    cache = m.new_cache(1)
    m.step(torch.zeros(1, 20, dtype=torch.long), cache)
    m.step(torch.zeros(1, 1, dtype=torch.long), cache)
    assert seen == [20, 1]


def test_cache_crop_and_reorder():
    m = make()
    ids = torch.randint(0, 61, (2, 12))
    cache = m.new_cache(2)
    m.step(ids[:, :10], cache)
    cache.crop(6)
    out = m.step(ids[:, 6:12], cache).logits
    torch.testing.assert_close(out, m(ids).logits[:, 6:12], atol=1e-5, rtol=1e-5)
    cache.reorder(torch.tensor([1, 1]))
    nxt = m.step(ids[1:2, :1].repeat(2, 1), cache).logits
    assert torch.allclose(nxt[0], nxt[1])
    with pytest.raises(ModelError, match="crop"):
        cache.crop(99)


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_capture_gives_the_same_logits_and_valid_attention(pos):
    m = make(pos)
    ids = torch.randint(0, 61, (2, 17))
    plain = m(ids)
    assert plain.attentions is None and plain.residuals is None
    cap = m(ids, capture=True)
    torch.testing.assert_close(cap.logits, plain.logits, atol=1e-5, rtol=1e-5)
    assert cap.attentions.shape == (2, 2, 4, 17, 17)
    assert cap.residuals.shape == (3, 2, 17, 32)
    torch.testing.assert_close(cap.attentions.sum(-1), torch.ones(2, 2, 4, 17))
    assert float(cap.attentions.triu(1).abs().max()) == 0.0
    # the residual stream's last entry, through the final norm and unembedding, gives the logits
    torch.testing.assert_close(m.lm_head(m.ln_f(cap.residuals[-1])), plain.logits, atol=1e-5, rtol=1e-5)


def test_captured_attention_equals_explicit_recomputation():
    m = make("learned")
    ids = torch.randint(0, 61, (1, 10))
    cap = m(ids, capture=True)
    x = cap.residuals[0]
    blk = m.blocks[0]
    q, k, _ = blk.attn.qkv(blk.ln1(x)).split(32, dim=2)
    q = q.view(1, 10, 4, 8).transpose(1, 2)
    k = k.view(1, 10, 4, 8).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(8)
    s = s.masked_fill(torch.ones(10, 10, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(cap.attentions[0], s.softmax(-1), atol=1e-6, rtol=1e-5)


def test_alibi_slopes_follow_the_paper():
    assert alibi_slopes(8).tolist() == [2.0 ** -(i + 1) for i in range(8)]


@pytest.mark.parametrize("n_head", range(1, 17))
def test_alibi_slopes_equal_bloom(n_head):
    """HF BLOOM's ALiBi (the paper authors' reference code) for every head count up to 16, the ones that are not
    a power of two included: its bias at key distance 1 is the slope."""
    bloom = pytest.importorskip("transformers.models.bloom.modeling_bloom")
    alibi = bloom.build_alibi_tensor(torch.ones(1, 2, dtype=torch.long), n_head, torch.float32)  # (H, 1, T)
    torch.testing.assert_close(alibi_slopes(n_head), alibi[:, 0, 1], rtol=1e-6, atol=0)


def test_interface_and_errors():
    m = make()
    assert isinstance(m, CausalLM)
    with pytest.raises(ModelError, match="longer than the context of 48"):
        m(torch.zeros(1, 49, dtype=torch.long))
    with pytest.raises(ModelError, match="out of range"):
        m(torch.tensor([[1, 61]]))
    with pytest.raises(ModelError, match="empty"):
        m(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ModelError, match="1-D"):
        m(torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ModelError, match="integers"):
        m(torch.zeros(1, 3))
    cache = m.new_cache(1, max_len=4)
    with pytest.raises(ModelError, match="cache is full"):
        m.step(torch.zeros(1, 5, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="pos must be one of"):
        GPTConfig(pos="sinusoid")


def test_tied_embeddings_and_attn_only():
    m = make()
    assert m.lm_head.weight is m.wte.weight
    untied = make(tied=False)
    assert untied.lm_head.weight is not untied.wte.weight
    ao = make(attn_only=True)
    assert all(b.mlp is None for b in ao.blocks)
    assert ao(torch.zeros(1, 5, dtype=torch.long)).logits.shape == (1, 5, 61)


def test_dropout_only_in_training():
    m = make(dropout=0.5)
    ids = torch.randint(0, 61, (1, 20))
    m.eval()
    assert torch.equal(m(ids).logits, m(ids).logits)
    m.train()
    assert not torch.equal(m(ids).logits, m(ids).logits)
