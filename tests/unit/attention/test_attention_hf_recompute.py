"""Attention of from_hf models recomputed from hooked queries and keys (no switch to eager attention), against
HF's own ``output_attentions=True`` from an eager copy of the same weights: GPT-2 (SDPA and eager, with the
scale flags), Llama with grouped-query attention and RoPE, Mistral with a sliding window, Qwen2 with sliding
and full layers. Unsupported families fall back to the eager switch and say so in ``meta``."""
import copy

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
hf_adapter = pytest.importorskip("workbench.models.hf_adapter")

from workbench.attention import AttentionProbe, BudgetExceededError, capture_attention  # noqa: E402
from workbench.attention.hf_recompute import RECOMPUTE_SUPPORTED, qk_layout  # noqa: E402

IDS = np.random.default_rng(1).integers(0, 100, 24)


def gpt2(**kw):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4, **kw)
    m = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for blk in m.transformer.h:
            blk.attn.c_attn.weight.mul_(10.0)  # sharper patterns than the default init
    return m


def gpt2_scaled():
    return gpt2(scale_attn_by_inverse_layer_idx=True)


def _sharpen(m):
    with torch.no_grad():
        for layer in m.model.layers:
            layer.self_attn.q_proj.weight.mul_(6.0)
            layer.self_attn.k_proj.weight.mul_(6.0)
    return m


def llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    return _sharpen(transformers.LlamaForCausalLM(cfg))


def mistral():
    torch.manual_seed(0)
    cfg = transformers.MistralConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=32,
                                     sliding_window=8)
    return _sharpen(transformers.MistralForCausalLM(cfg))


def qwen2():
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                   use_sliding_window=True, sliding_window=6, max_window_layers=1)
    return _sharpen(transformers.Qwen2ForCausalLM(cfg))


def load(factory, impl):
    """The same weights twice: ``impl`` for the workbench, an eager copy for the reference."""
    hf = factory().eval()
    ref = copy.deepcopy(hf)
    ref.set_attn_implementation("eager")
    hf.set_attn_implementation(impl)
    assert hf.config._attn_implementation == impl and ref.config._attn_implementation == "eager"
    with torch.no_grad():
        out = ref(input_ids=torch.tensor([IDS.tolist()]), output_attentions=True)
    return hf, torch.stack(out.attentions)[:, 0].numpy()


def attention_modules(hf):
    return [blk.attn for blk in hf.transformer.h] if hasattr(hf, "transformer") else \
        [lay.self_attn for lay in hf.model.layers]


class NeverEager:
    """Records the back-end seen inside every attention forward, and forbids switching it."""

    def __init__(self, hf):
        self.hf, self.seen, self.hooks = hf, [], []

    def __enter__(self):
        for mod in attention_modules(self.hf):
            self.hooks.append(mod.register_forward_pre_hook(
                lambda m, a, k: self.seen.append((self.hf.config._attn_implementation, k.get("output_attentions"))),
                with_kwargs=True))

        def refuse(*a, **k):
            raise AssertionError("the model was switched to another attention implementation")

        self.hf.set_attn_implementation = refuse
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()
        del self.hf.set_attn_implementation
        return False


CASES = [
    (gpt2, "sdpa"), (gpt2, "eager"), (gpt2_scaled, "sdpa"), (llama, "sdpa"), (llama, "eager"), (mistral, "sdpa"),
    (qwen2, "sdpa"),
]


@pytest.mark.parametrize("factory,impl", CASES, ids=[f"{f.__name__}-{i}" for f, i in CASES])
def test_recompute_equals_eager_output_attentions(factory, impl):
    hf, ref = load(factory, impl)
    model = hf_adapter.from_hf(hf)
    with NeverEager(hf) as guard:
        cap = capture_attention(model, IDS)
    assert cap.meta["mechanism"] == "recompute" and cap.meta["attn_implementation"] == impl
    assert guard.seen and all(s == (impl, None) for s in guard.seen), guard.seen  # never eager, never asked
    assert hf.config._attn_implementation == impl
    assert cap.probs.shape == ref.shape == (2, 4, 24, 24)
    assert np.abs(cap.probs - ref).max() < 1e-5
    assert ref.max() > 0.3  # far from uniform: the comparison could fail
    np.testing.assert_allclose(cap.probs.sum(-1), 1.0, atol=1e-5)
    part = capture_attention(model, IDS, layers=[1], heads=[3, 0], window=(4, 20))
    assert part.meta["mechanism"] == "recompute"
    np.testing.assert_allclose(part.probs, ref[[1]][:, [3, 0], 4:20, :20], atol=1e-5)


def test_sliding_windows_and_gqa_matter():
    """The cases above would pass vacuously if the window or the kv-head mapping had no effect."""
    _, ref = load(qwen2, "sdpa")
    assert ref[1, :, 10, :4].max() == 0 and ref[0, :, 10, :4].max() > 1e-3  # layer 1 slides (w = 6), layer 0 not
    hf, _ = load(llama, "sdpa")
    lay = qk_layout(hf_adapter.from_hf(hf))
    assert (lay.n_head, lay.n_kv, lay.head_dim) == (4, 2, 8)
    hf, _ = load(mistral, "sdpa")
    assert qk_layout(hf_adapter.from_hf(hf)).sliding_window == [8, 8]
    hf, _ = load(gpt2_scaled, "sdpa")
    s = qk_layout(hf_adapter.from_hf(hf)).scaling
    assert s == pytest.approx([8 ** -0.5, 8 ** -0.5 / 2])


def test_recompute_budget_counts_only_the_request():
    hf, ref = load(llama, "sdpa")
    model = hf_adapter.from_hf(hf)
    one = capture_attention(model, IDS, layers=[1], heads=[2], budget_mb=0.005)  # 2.3 kB < 5 kB < 18 kB all
    np.testing.assert_allclose(one.probs[0, 0], ref[1, 2], atol=1e-5)
    with pytest.raises(BudgetExceededError, match="narrow the request"):
        capture_attention(model, IDS, budget_mb=0.005)
    probe = AttentionProbe(model, IDS)
    assert probe.meta["mechanism"] == "recompute" and probe._full is None
    np.testing.assert_allclose(probe.probs(0, [1, 3]).numpy(), ref[0, [1, 3]], atol=1e-5)


def neox():
    torch.manual_seed(0)
    cfg = transformers.GPTNeoXConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, max_position_embeddings=32)
    return transformers.GPTNeoXForCausalLM(cfg)


def test_unsupported_family_falls_back_to_eager_switch_and_says_so():
    hf, ref = load(neox, "sdpa")
    model = hf_adapter.from_hf(hf)
    cap = capture_attention(model, IDS)
    assert cap.meta["mechanism"] == "eager_switch"
    assert "GPTNeoXForCausalLM" in cap.meta["fallback_reason"] and RECOMPUTE_SUPPORTED in cap.meta["fallback_reason"]
    assert cap.meta["attn_implementation"] == "sdpa"
    assert hf.config._attn_implementation == "sdpa"  # switched back after the eager pass
    np.testing.assert_allclose(cap.probs, ref, atol=1e-5)


def test_recompute_false_forces_the_old_path():
    hf, ref = load(gpt2, "sdpa")
    model = hf_adapter.from_hf(hf)
    cap = capture_attention(model, IDS, recompute=False)
    assert cap.meta["mechanism"] == "eager_switch" and cap.meta["fallback_reason"] == "recompute=False"
    np.testing.assert_allclose(cap.probs, ref, atol=1e-5)
    assert hf.config._attn_implementation == "sdpa"
