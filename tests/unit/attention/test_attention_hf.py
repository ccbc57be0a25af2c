"""Capture from HF models through from_hf (GPT-2 eager and SDPA; Llama with GQA + RoPE) against HF's own
``output_attentions=True`` under eager attention; value vectors and value-weighted attention against an explicit
computation and against the attention block's own output; head ablation against weight surgery; unsupported
families get errors naming what is supported."""
import copy

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
hf_adapter = pytest.importorskip("workbench.models.hf_adapter")

from workbench.attention import (  # noqa: E402
    AttentionError,
    AttentionProbe,
    CaptureNotSupportedError,
    BudgetExceededError,
    ContextLengthError,
    IndexOutOfRangeError,
    PolicyError,
    ablate_heads,
    capture_attention,
    head_metrics,
    sink_mass,
    sliding_window,
    streaming,
    value_sink_mass,
    value_weighted,
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
    assert cap.value_norms.shape == (2, 4, 24)
    assert part.value_norms.shape == (1, 2, 20)
    np.testing.assert_allclose(part.value_norms, cap.value_norms[[1]][:, [3, 0], :20], rtol=1e-6)


def test_hf_errors():
    model = hf_adapter.from_hf(gpt2("sdpa"))
    with pytest.raises(IndexOutOfRangeError):
        capture_attention(model, IDS, heads=[4])
    with pytest.raises(ContextLengthError):
        capture_attention(model, np.zeros(40, dtype=int))
    with pytest.raises(PolicyError, match="StreamingLLM cache"):
        capture_attention(model, IDS, policy=streaming(2, 4))
    slid = capture_attention(model, IDS, policy=sliding_window(4))  # any family the layout finds takes a policy
    assert slid.probs[:, :, 20, 16].max() == 0 and slid.probs[:, :, 20, 17].min() > 0
    # the recompute route materialises only the request: one head fits, all of them do not
    one = capture_attention(model, IDS, budget_mb=0.01, layers=[0], heads=[0])
    assert one.probs.shape == (1, 1, 24, 24) and one.meta["mechanism"] == "recompute"
    with pytest.raises(BudgetExceededError, match="narrow the request"):
        capture_attention(model, IDS, budget_mb=0.01)
    # the model's own capture holds every layer and head: the budget is checked on all of it
    with pytest.raises(BudgetExceededError, match="shorter text"):
        capture_attention(model, IDS, budget_mb=0.01, layers=[0], heads=[0], recompute=False)


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


def explicit_value_norms(hf, ids):
    """||v_j W_O^h|| (L, H, T) written out from the weights and HF's hidden states (the input of each layer)."""
    with torch.no_grad():
        hs = hf(input_ids=torch.tensor([ids.tolist()]), output_hidden_states=True).hidden_states
        out = []
        if hasattr(hf, "transformer"):  # GPT-2: c_attn is Conv1D, x @ W + b, columns [q | k | v]
            for i, blk in enumerate(hf.transformer.h):
                x = blk.ln_1(hs[i][0])
                D = x.size(-1)
                v = (x @ blk.attn.c_attn.weight + blk.attn.c_attn.bias)[:, 2 * D:]
                H = hf.config.n_head
                Dh = D // H
                W = blk.attn.c_proj.weight  # (in, out)
                out.append(torch.stack([(v[:, h * Dh:(h + 1) * Dh] @ W[h * Dh:(h + 1) * Dh]).norm(dim=-1)
                                        for h in range(H)]))
        else:  # Llama: v_proj has n_kv heads; query head h reads kv head h // (H / n_kv); o_proj is x @ W^T
            c = hf.config
            H, n_kv = c.num_attention_heads, c.num_key_value_heads
            Dh = c.hidden_size // H
            for i, layer in enumerate(hf.model.layers):
                x = layer.input_layernorm(hs[i][0])
                v = x @ layer.self_attn.v_proj.weight.T
                W = layer.self_attn.o_proj.weight  # (D, H * Dh)
                rows = []
                for h in range(H):
                    kv = h // (H // n_kv)
                    rows.append((v[:, kv * Dh:(kv + 1) * Dh] @ W[:, h * Dh:(h + 1) * Dh].T).norm(dim=-1))
                out.append(torch.stack(rows))
    return torch.stack(out).numpy()


@pytest.mark.parametrize("factory", [gpt2, llama], ids=["gpt2", "llama-gqa-rope"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_hf_value_norms_and_value_weighted_equal_explicit(factory, impl):
    hf = factory(impl)
    model = hf_adapter.from_hf(hf)
    cap = capture_attention(model, IDS)
    ref = explicit_value_norms(hf, IDS)
    assert cap.value_norms.shape == ref.shape == (2, 4, 24)
    np.testing.assert_allclose(cap.value_norms, ref, rtol=1e-5, atol=1e-6)
    assert ref.std() > 0.05 * ref.mean()  # norms differ across keys: weighting changes the pattern
    w = cap.probs * ref[:, :, None, :]
    expect = w / w.sum(-1, keepdims=True)
    vw = value_weighted(cap)
    np.testing.assert_allclose(vw, expect, atol=1e-5)
    assert np.abs(vw - cap.probs).max() > 1e-2
    np.testing.assert_allclose(value_sink_mass(cap), sink_mass(expect), atol=1e-5)
    # the probe (one head at a time) agrees with the capture
    np.testing.assert_allclose(head_metrics(AttentionProbe(model, IDS)).value_sink_mass, value_sink_mass(cap),
                               atol=1e-5)


@pytest.mark.parametrize("factory", [gpt2, llama], ids=["gpt2", "llama-gqa-rope"])
def test_hf_value_vectors_rebuild_the_attention_output(factory):
    """sum_h sum_j a_ij (v_j W_O^h) + bias is exactly what the output projection returns: checks the q/k/v split,
    the GQA head mapping and the W_O slices against HF's own forward pass."""
    hf = factory("sdpa")
    model = hf_adapter.from_hf(hf)
    probe = AttentionProbe(model, IDS)
    gpt = hasattr(hf, "transformer")
    outs = [blk.attn.c_proj for blk in hf.transformer.h] if gpt else [lay.self_attn.o_proj for lay in hf.model.layers]
    got = {}
    hooks = [mod.register_forward_hook(lambda m, i, o, k=k: got.__setitem__(k, o[0].detach()))
             for k, mod in enumerate(outs)]
    with torch.no_grad():
        hf(input_ids=torch.tensor([IDS.tolist()]))
    for h in hooks:
        h.remove()
    for layer in range(2):
        P = probe.probs(layer)  # (H, T, T)
        y = sum(P[h] @ probe.value_vectors(layer, h) for h in range(4))
        if outs[layer].bias is not None:
            y = y + outs[layer].bias.detach()
        np.testing.assert_allclose(y.numpy(), got[layer].numpy(), atol=1e-5)
        assert got[layer].abs().max() > 1e-2


def test_a_family_without_a_layout_captures_but_says_why_value_weighting_is_missing(monkeypatch):
    """A family whose attention bypasses transformers' interface: plain capture still works (eager switch), value
    vectors, value metrics and ablation each say why they are unavailable."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.gpt2 import modeling_gpt2

    class Legacy:
        def get_interface(self, name, default):
            return default if name == "eager" else sdpa_attention_forward

    monkeypatch.setattr(modeling_gpt2, "ALL_ATTENTION_FUNCTIONS", Legacy())
    hf = gpt2("sdpa")
    model = hf_adapter.from_hf(hf)
    cap = capture_attention(model, IDS)
    assert cap.meta["mechanism"] == "eager_switch"
    assert cap.value_norms is None
    with pytest.raises(AttentionError, match="GPT2LMHeadModel: its attention modules do not call"):
        value_weighted(cap)
    probe = AttentionProbe(model, IDS)
    assert probe.value_norms(0) is None and "attention interface" in probe.value_norm_error
    with pytest.raises(CaptureNotSupportedError, match="layout"):
        probe.value_vectors(0, 0)
    assert head_metrics(probe).value_sink_mass is None
    with pytest.raises(AttentionError, match="value_sink_mass.* not available for this model: .*layout"):
        head_metrics(probe).get("value_sink_mass")
    with pytest.raises(AttentionError, match="head ablation needs the model's layout"):
        ablate_heads(model, IDS, (0, 0))


def test_hf_llama_zero_ablation_equals_weight_surgery():
    """With grouped-query attention a kv head serves two query heads: ablating query head 3 alone must leave
    head 2 (same kv head) intact, i.e. equal zeroing o_proj's input columns of head 3 only."""
    hf = llama("sdpa")
    model = hf_adapter.from_hf(hf)
    r = ablate_heads(model, IDS, [(0, 3)])
    c = copy.deepcopy(hf)
    with torch.no_grad():
        c.model.layers[0].self_attn.o_proj.weight[:, 3 * 8:4 * 8] = 0
        ref = c(input_ids=torch.tensor([IDS.tolist()])).logits[0, -1].log_softmax(-1).numpy()
    np.testing.assert_allclose(r.ablated, ref, atol=1e-5)
    assert np.abs(r.delta).max() > 1e-5
