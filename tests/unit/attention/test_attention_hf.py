"""Capture from HF models through from_hf (GPT-2 eager and SDPA; Llama with GQA + RoPE) against HF's own
``output_attentions=True`` under eager attention; head ablation on GPT-2 against weight surgery."""
import copy

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
hf_adapter = pytest.importorskip("workbench.models.hf_adapter")

from workbench.attention import (  # noqa: E402
    BudgetExceededError,
    ContextLengthError,
    IndexOutOfRangeError,
    PolicyError,
    ablate_heads,
    capture_attention,
    sliding_window,
)

IDS = np.random.default_rng(0).integers(0, 100, 24)


def gpt2(impl):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                  attn_implementation=impl)
    m = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for blk in m.transformer.h:
            blk.attn.c_attn.weight.mul_(10.0)  # sharper patterns than the default init
    return m


def llama(impl):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                   attn_implementation=impl)
    return transformers.LlamaForCausalLM(cfg).eval()


def reference(factory):
    hf = factory("eager")
    with torch.no_grad():
        out = hf(input_ids=torch.tensor([IDS.tolist()]), output_attentions=True)
    return torch.stack(out.attentions)[:, 0].numpy()


@pytest.mark.parametrize("factory", [gpt2, llama], ids=["gpt2", "llama-gqa-rope"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_hf_capture_equals_output_attentions(factory, impl):
    ref = reference(factory)
    model = hf_adapter.from_hf(factory(impl))
    cap = capture_attention(model, IDS)
    assert cap.probs.shape == ref.shape == (2, 4, 24, 24)
    assert np.abs(cap.probs - ref).max() < 1e-5
    assert ref.max() > 0.3  # not uniform: the comparison could fail
    np.testing.assert_allclose(cap.probs.sum(-1), 1.0, atol=1e-5)
    part = capture_attention(model, IDS, layers=[1], heads=[3, 0], window=(4, 20))
    np.testing.assert_allclose(part.probs, ref[[1]][:, [3, 0], 4:20, :20], atol=1e-5)
    assert cap.value_norms is None


def test_hf_errors():
    model = hf_adapter.from_hf(gpt2("sdpa"))
    with pytest.raises(IndexOutOfRangeError):
        capture_attention(model, IDS, heads=[4])
    with pytest.raises(ContextLengthError):
        capture_attention(model, np.zeros(40, dtype=int))
    with pytest.raises(PolicyError, match="TinyGPT"):
        capture_attention(model, IDS, policy=sliding_window(4))
    with pytest.raises(BudgetExceededError, match="shorter text"):
        capture_attention(model, IDS, budget_mb=0.01, layers=[0], heads=[0])


def test_hf_gpt2_zero_ablation_equals_weight_surgery():
    hf = gpt2("sdpa")
    model = hf_adapter.from_hf(hf)
    r = ablate_heads(model, IDS, [(1, 2)])
    c = copy.deepcopy(hf)
    D, Dh = 32, 8
    with torch.no_grad():  # GPT-2's Conv1D weight is (in, out): value columns of head 2
        sl = slice(2 * D + 2 * Dh, 2 * D + 3 * Dh)
        c.transformer.h[1].attn.c_attn.weight[:, sl] = 0
        c.transformer.h[1].attn.c_attn.bias[sl] = 0
        ref = c(input_ids=torch.tensor([IDS.tolist()])).logits[0, -1].log_softmax(-1).numpy()
    np.testing.assert_allclose(r.ablated, ref, atol=1e-5)
    assert np.abs(r.delta).max() > 1e-4
