"""The attention lab on tiny random models of 13 HF families (tests/hf_families.py), reached only through the model
layout (workbench.models.layout): captured attention equals HF's own ``output_attentions`` from an eager copy; value
vectors rebuild the attention block's output; head ablation equals weight surgery on ``W_O``; mask policies equal
HF's eager attention under the same hand-built 4-D mask; StreamingLLM eviction re-rotates keys exactly; a family
whose attention does not call transformers' interface falls back and says why."""
import copy

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from tests import hf_families as F  # noqa: E402
from workbench.attention import (  # noqa: E402
    AttentionProbe,
    ContextLengthError,
    HFSinkCache,
    ablate_heads,
    capture_attention,
    dense,
    lambda_mask,
    perplexity_vs_length,
    sliding_window,
    streaming,
)
from workbench.models import from_hf  # noqa: E402
from workbench.models.layout import LayoutError, layout_of  # noqa: E402

IDS = np.random.default_rng(1).integers(0, F.TOKENIZER_VOCAB, 24)
WINDOWED = {"mistral", "gemma2", "gemma3"}  # families with their own sliding-window layers (window 8)


def sharp(family, seed=0):
    """A random model of ``family`` with larger attention weights (patterns far from uniform)."""
    hf = F.build(family, seed)
    lay = layout_of(from_hf(hf))
    with torch.no_grad():
        for a in lay.attn:
            for mod in a.modules():
                if isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D":
                    mod.weight.mul_(6.0)
    return hf


def without_head(hf, layer, head):
    """A copy of ``hf`` with one head's columns of ``W_O`` zeroed (weight surgery: the reference for ablation)."""
    c = copy.deepcopy(hf)
    lay = layout_of(from_hf(c))
    rows = slice(head * lay.head_dim, (head + 1) * lay.head_dim)
    with torch.no_grad():
        w = lay.w_o[layer].weight
        if isinstance(lay.w_o[layer], torch.nn.Linear):
            w[:, rows] = 0
        else:  # GPT-2's Conv1D: (in, out)
            w[rows] = 0
    return c


def eager_reference(hf, ids, mask=None):
    """HF's own eager attention ``(L, H, T, T)`` and logits ``(T, V)``, optionally under a bool ``(T, T)`` mask."""
    ref = copy.deepcopy(hf)
    ref.set_attn_implementation("eager")
    kw = {}
    if mask is not None:
        kw["attention_mask"] = torch.zeros(1, 1, *mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    with torch.no_grad():
        out = ref(input_ids=torch.as_tensor(ids)[None], position_ids=torch.arange(len(ids))[None],
                  output_attentions=True, **kw)
    return torch.stack(out.attentions)[:, 0].numpy(), out.logits[0]


@pytest.mark.parametrize("family", F.FAMILIES)
def test_capture_equals_output_attentions(family):
    hf = sharp(family)
    impl = hf.config._attn_implementation
    ref, _ = eager_reference(hf, IDS)
    model = from_hf(hf)
    cap = capture_attention(model, IDS)
    assert cap.meta["mechanism"] == "recompute", cap.meta
    assert hf.config._attn_implementation == impl  # the model's own back-end is restored
    assert cap.probs.shape == ref.shape == (2, 4, 24, 24)
    np.testing.assert_allclose(cap.probs, ref, atol=2e-5)
    assert ref.max() > 0.3  # far from uniform: the comparison could fail
    part = capture_attention(model, IDS, layers=[1], heads=[3, 0], window=(4, 20))
    np.testing.assert_allclose(part.probs, ref[[1]][:, [3, 0], 4:20, :20], atol=2e-5)
    if family in WINDOWED:  # the layer's own window is applied: key 0 is invisible from query 20
        lay = layout_of(model)
        for i, w in enumerate(lay.sliding_window):
            assert (ref[i, :, 20, 0].max() == 0) == (w is not None)


@pytest.mark.parametrize("family", F.FAMILIES)
def test_value_vectors_rebuild_the_attention_output(family):
    """``sum_h sum_j a_ij v_j W_O^h + b`` equals the attention block's output at the layout's ``attn.out`` point."""
    model = from_hf(sharp(family))
    lay = layout_of(model)
    outs = {}
    with lay.hooks({f"blocks.{i}.attn.out": (lambda t, i=i: outs.__setitem__(i, t[0].detach()))
                    for i in range(lay.n_layer)}):
        model.forward(torch.as_tensor(IDS)[None])
    probe = AttentionProbe(model, IDS)
    for layer in range(lay.n_layer):
        rebuilt = sum(probe.probs(layer, [h])[0] @ probe.value_vectors(layer, h) for h in range(lay.n_head))
        b = lay.w_out_bias(layer)
        if b is not None:
            rebuilt = rebuilt + b
        np.testing.assert_allclose(rebuilt.numpy(), outs[layer].numpy(), atol=2e-4, rtol=1e-4)
    norms = probe.value_norms(1, [0, 2])
    assert norms.shape == (2, 24) and bool((norms > 0).all())


@pytest.mark.parametrize("family", F.FAMILIES)
def test_zero_ablation_equals_weight_surgery(family):
    hf = sharp(family)
    model = from_hf(hf)
    r = ablate_heads(model, IDS, [(1, 3)])
    c = without_head(hf, 1, 3)
    with torch.no_grad():
        ref = c(input_ids=torch.as_tensor(IDS)[None]).logits[0, -1].log_softmax(-1).numpy()
    np.testing.assert_allclose(r.ablated, ref, atol=2e-5)
    assert np.abs(r.delta).max() > 1e-4
    m = ablate_heads(model, IDS, [(0, 1)], mode="mean")
    assert np.isfinite(m.ablated).all() and m.kl >= 0


@pytest.mark.parametrize("family", [f for f in F.FAMILIES if f not in WINDOWED])
@pytest.mark.parametrize("policy", [sliding_window(5), lambda_mask(2, 5)], ids=["sliding", "lambda"])
def test_mask_policies_equal_hf_eager_under_the_same_mask(family, policy):
    hf = sharp(family)
    T = len(IDS)
    allowed = policy.allowed(torch.arange(T), torch.arange(T))
    ref, ref_logits = eager_reference(hf, IDS, allowed)
    model = from_hf(hf)
    cap = capture_attention(model, IDS, policy=policy)
    np.testing.assert_allclose(cap.probs, ref, atol=2e-5)
    assert cap.probs[:, :, 20, 10].max() == 0  # outside the window
    res = perplexity_vs_length(model, IDS, policy)
    expect = torch.nn.functional.cross_entropy(ref_logits[:-1], torch.as_tensor(IDS[1:]), reduction="none")
    np.testing.assert_allclose(res.loss, expect.numpy(), atol=1e-4)
    plain = perplexity_vs_length(model, IDS, dense())
    with torch.no_grad():
        base = hf(input_ids=torch.as_tensor(IDS)[None]).logits[0]
    np.testing.assert_allclose(
        plain.loss, torch.nn.functional.cross_entropy(base[:-1], torch.as_tensor(IDS[1:]), reduction="none"),
        atol=1e-4)


def test_a_policy_narrows_a_layers_own_window():
    """Mistral's layers slide with w = 8; a sliding_window(5) policy narrows them, lambda keeps the sinks only
    where the layer's own window allows."""
    model = from_hf(sharp("mistral"))
    cap = capture_attention(model, IDS, policy=sliding_window(5))
    assert cap.probs[:, :, 20, 15].max() == 0 and cap.probs[:, :, 20, 16].min() > 0
    lam = capture_attention(model, IDS, policy=lambda_mask(2, 5))
    assert lam.probs[:, :, 20, 0].max() == 0  # a sink beyond the layer's own window stays invisible
    assert lam.probs[:, :, 6, 0].min() > 0  # within it, the sink is kept


ROPE = [f for f in F.FAMILIES if f not in ("gpt2", "opt")]


@pytest.mark.parametrize("family", ROPE)
def test_streaming_eviction_rerotates_keys_exactly(family):
    """After eviction, each kept layer-0 key equals the key the model computes for that token at its new slot (layer
    0 keys depend only on the token and its position), so the re-rotation is the model's own RoPE; before any
    eviction streaming equals dense attention."""
    model = F.loaded(family)
    ids = torch.as_tensor(IDS)[None]
    s, w = 2, 10
    first = perplexity_vs_length(model, IDS[:12], streaming(s, w))  # 12 = s + w tokens: nothing evicted
    np.testing.assert_allclose(first.loss, perplexity_vs_length(model, IDS[:12], dense()).loss, atol=1e-4)
    cache = HFSinkCache(model, s, w)
    cache.feed(ids[:, :12])
    for i in range(12, 24):
        cache.feed(ids[:, i:i + 1])
    assert cache.evicted == 12 and cache.length == 12
    kept = torch.cat([ids[:, :s], ids[:, 24 - (12 - s):]], dim=1)
    lay = layout_of(model)
    fresh = {}
    with lay.hooks({"blocks.0.attn.k": lambda t: fresh.__setitem__(0, t.detach())}):
        model.hf(input_ids=kept, position_ids=torch.arange(12)[None], use_cache=False)
    np.testing.assert_allclose(cache.pkv.layers[0].keys.numpy(), fresh[0].numpy(), atol=2e-5)
    res = perplexity_vs_length(model, IDS, streaming(s, w))
    assert res.extra["evicted"] == 12 and np.isfinite(res.loss).all()


@pytest.mark.parametrize("family", ["gpt2", "opt", "llama"])
def test_beyond_the_context(family):
    """Rotary families extrapolate under a mask policy; learned absolute positions stop at the context, where
    streaming (positions inside the cache) still runs."""
    model = F.loaded(family)
    ids = np.random.default_rng(2).integers(0, F.TOKENIZER_VOCAB, 150)  # context 128
    if family == "llama":
        r = perplexity_vs_length(model, ids, sliding_window(32))
        assert len(r.loss) == 149 and np.isfinite(r.loss).all()
    else:
        with pytest.raises(ContextLengthError, match="absolute positions"):
            perplexity_vs_length(model, ids, sliding_window(32))
    r = perplexity_vs_length(model, ids, streaming(4, 28))
    assert r.extra["evicted"] == 150 - 32 and np.isfinite(r.loss).all()


def test_a_family_that_bypasses_the_attention_interface_falls_back_and_says_why(monkeypatch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.gpt2 import modeling_gpt2

    class Legacy:
        """Dispatches as a family with its own attention code would: eager or SDPA, never the interface."""

        def get_interface(self, name, default):
            return default if name == "eager" else sdpa_attention_forward

    monkeypatch.setattr(modeling_gpt2, "ALL_ATTENTION_FUNCTIONS", Legacy())
    hf = F.build("gpt2")
    model = from_hf(hf)
    with pytest.raises(LayoutError, match="GPT2LMHeadModel: its attention modules do not call"):
        layout_of(model)
    ref, _ = eager_reference(hf, IDS)
    cap = capture_attention(model, IDS)
    assert cap.meta["mechanism"] == "eager_switch" and "GPT2LMHeadModel" in cap.meta["fallback_reason"]
    np.testing.assert_allclose(cap.probs, ref, atol=1e-5)
    assert cap.value_norms is None


def test_layout_points_and_bad_point_names():
    model = F.loaded("qwen3")
    lay = layout_of(model)
    assert "blocks.1.attn.z" in lay.points() and "final_norm" in lay.points()
    with pytest.raises(LayoutError, match="no point 'blocks.9.attn.z'"):
        with lay.hooks({"blocks.9.attn.z": lambda t: None}):
            pass
    # resid_post of the last block through the final norm and the unembedding gives the model's logits
    got = {}
    with lay.hooks({"blocks.1.resid_post": lambda t: got.__setitem__("r", t.detach()),
                    "logits": lambda t: got.__setitem__("l", t.detach())}):
        logits = model.forward(torch.as_tensor(IDS)[None]).logits
    with torch.no_grad():
        again = lay.unembed(lay.final_norm(got["r"]))
    np.testing.assert_allclose(again.numpy(), logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(got["l"].numpy(), logits.numpy(), atol=1e-6)


@pytest.mark.parametrize("family", F.FAMILIES)
def test_attention_lab_on_every_family(family, tmp_path):
    """The AttentionLab opens on each family, shows the clicked head's pattern as the core computes it, switches to
    the value-weighted view, ablates a head, and runs under a sliding-window policy; padded ids never show up as
    crashes (the tokenizer has 300 ids, the model 320)."""
    from widgets.attention_lab import AttentionLab

    model = F.loaded(family)
    text = "def area(r):\n    return 3.14 * r * r  # the area of a circle\n"
    lab = AttentionLab(model, text, debounce=0, export_dir=tmp_path)
    assert "error" not in lab.info.value.lower(), lab.info.value
    lab.select(1, 2)
    T = len(model.tokenizer.encode(text))
    probe = AttentionProbe(model, text)
    img = np.asarray(lab.image_source.data["image"][0])
    assert img.shape == (T, T)
    np.testing.assert_allclose(img, probe.probs(1, [2])[0].numpy(), atol=1e-5)
    lab.mode.value = "value-weighted"
    np.testing.assert_allclose(np.asarray(lab.image_source.data["image"][0]).sum(-1), 1.0, atol=1e-5)
    lab.mode.value = "raw"
    lab.ablate_button.value = True
    assert lab.ablated == {(1, 2)} and np.isfinite(lab.ablation.ablated).all()
    slid = AttentionLab(model, text, policy=sliding_window(6), debounce=0, export_dir=tmp_path)
    slid.select(0, 0)
    img = np.asarray(slid.image_source.data["image"][0])
    assert img[T - 1, : T - 6].max() == 0 and img[T - 1, T - 6:].sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_ablation_under_a_policy_composes(family):
    """Nested layout sessions compose: a head ablated (outer) while a sliding-window policy runs (inner) equals
    zeroing that head's W_O columns in a copy run by HF's eager attention under the same 4-D mask."""
    hf = sharp(family)
    policy = sliding_window(5)
    r = ablate_heads(from_hf(hf), IDS, [(1, 3)], policy=policy)
    c = without_head(hf, 1, 3)
    T = len(IDS)
    _, logits = eager_reference(c, IDS, policy.allowed(torch.arange(T), torch.arange(T)))
    np.testing.assert_allclose(r.ablated, logits[-1].log_softmax(-1).numpy(), atol=2e-5)
    _, base = eager_reference(hf, IDS, policy.allowed(torch.arange(T), torch.arange(T)))
    np.testing.assert_allclose(r.base, base[-1].log_softmax(-1).numpy(), atol=2e-5)
