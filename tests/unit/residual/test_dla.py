"""Direct logit attribution (workbench.residual.dla) and the frozen-scale norm (workbench.residual.linear_norm).

The components must add up to the model's own logit (difference) on TinyGPT and all 13 HF families; per head and per
MLP they must equal TransformerLens's decomposition on the same GPT-2 weights (``stack_head_results`` +
``apply_ln_to_stack``), and a plain-PyTorch computation from the HF modules for an RMSNorm family (Llama) and a
post-norm, soft-capped one (Gemma 2)."""
import numpy as np
import pytest
import torch

from tests import hf_families as F
from workbench.models import GPTConfig, TinyGPT
from workbench.models.layout import LayoutError, layout_of
from workbench.residual.dla import direct_logit_attribution, resolve_token
from workbench.residual.errors import OutOfRangeError, ResidualError
from workbench.residual.linear_norm import freeze, norm_form, post_attention_norms
from workbench.tokenizers import ByteTokenizer

TEXT = "def area(r): return 3.14 * r * r"


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=257)
    cfg.update(kw)
    return TinyGPT(GPTConfig(**cfg), ByteTokenizer()).eval()


def model_of(name):
    return tiny() if name == "tinygpt" else F.loaded(name)


def own_logits(m, text):
    from workbench.residual.run import encode

    ids = encode(m, text)
    with torch.no_grad():
        return m.forward(ids).logits[0].double()


# -- the components add up ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tinygpt", *F.FAMILIES])
def test_components_add_up_to_the_models_logit_difference(name):
    m = model_of(name)
    lay = layout_of(m)
    logits = own_logits(m, TEXT)
    for target, contrast, pos in ((5, 7, -1), (11, None, 3)):
        a = direct_logit_attribution(m, TEXT, target, contrast, position=pos)
        want = logits[pos, target] - (0 if contrast is None else logits[pos, contrast])
        assert a.total == pytest.approx(float(want), abs=1e-6)
        assert abs(float(a.values.sum()) - a.total) < 1e-4
        assert len(a.values) == 1 + lay.n_layer * (lay.n_head + 1) + 1
        assert a.kind.count("head") == lay.n_layer * lay.n_head and a.kind.count("mlp") == lay.n_layer
        assert a.labels[0] == "embed" and a.labels[-1] == "bias" and a.labels[1] == "L0H0"
        assert a.by_layer("head").shape == (lay.n_layer, lay.n_head)
        assert a.position == (pos if pos >= 0 else len(a.tokens) + pos)
        assert np.abs(a.values[1:-1]).max() > 0  # the heads and MLPs carry something


def test_a_parallel_model_and_a_model_without_biases_add_up_too():
    m = tiny(n_layer=3, bias=False, pos="rope")
    a = direct_logit_attribution(m, "hello there", "e", "o")
    assert abs(float(a.values.sum()) - a.total) < 1e-4


# -- against TransformerLens on GPT-2 weights -----------------------------------------------------------------------

def test_per_head_and_per_mlp_equal_transformer_lens_on_gpt2():
    pytest.importorskip("transformer_lens")
    from workbench.bench.residual_bench import tl_bridge

    m = F.loaded("gpt2")
    bridge = tl_bridge(F.build("gpt2"), F.hf_tokenizer())  # same seed, same weights, a separate module
    ids = torch.tensor([m.tokenizer.encode(TEXT)])
    p, t, c = 6, 17, 40
    a = direct_logit_attribution(m, ids, t, c, position=p)
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(ids)
        heads = cache.stack_head_results(layer=-1, pos_slice=p)  # (L * H, 1, D), without b_O
        mlps = torch.stack([cache[f"blocks.{i}.hook_mlp_out"][:, p] for i in range(m.config.n_layer)])
        embed = (cache["hook_embed"] + cache["hook_pos_embed"])[:, p][None]
        parts = torch.cat([embed, heads, mlps])
        scaled = cache.apply_ln_to_stack(parts, layer=-1, pos_slice=p)  # centred, divided by ln_final's scale
        ln_w = bridge.ln_final.original_component.weight
        W_U = bridge.unembed.original_component.weight
        direction = (W_U[t] - W_U[c]) * ln_w
        tl = (scaled[:, 0] @ direction).double().numpy()
    L, H = m.config.n_layer, m.config.n_head
    assert a.total == pytest.approx(float(logits[0, p, t] - logits[0, p, c]), abs=1e-5)
    np.testing.assert_allclose(a.values[0], tl[0], atol=1e-6, rtol=1e-4)
    np.testing.assert_allclose(a.by_layer("head").ravel(), tl[1:1 + L * H], atol=1e-6, rtol=1e-4)
    np.testing.assert_allclose(a.by_layer("mlp"), tl[1 + L * H:], atol=1e-6, rtol=1e-4)
    assert np.abs(tl[1:]).max() > 1e-3  # not all zero: the comparison means something


# -- plain-PyTorch references ---------------------------------------------------------------------------------------

@torch.no_grad()
def _hand_dla(hf, ids, p, t, c, o_proj, post_norm, mlp, final_norm, gemma):
    """Per head and per MLP, from the HF modules by name: heads' z (o_proj's input) times the slices of o_proj,
    through the post-attention norm (if any) and the final RMS norm with their scales computed from their
    definitions (eps from the config), then soft-cap ratio and unembedding."""
    cfg = hf.config
    H, Dh = cfg.num_attention_heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rec = {}
    hooks = []
    layers = hf.model.layers
    for i, layer in enumerate(layers):
        hooks.append(o_proj(layer).register_forward_pre_hook(lambda mod, a, i=i: rec.__setitem__(("z", i), a[0])))
        hooks.append(o_proj(layer).register_forward_hook(lambda mod, a, o, i=i: rec.__setitem__(("o", i), o)))
        hooks.append(mlp(layer).register_forward_hook(lambda mod, a, o, i=i: rec.__setitem__(("mlp", i), o)))
    hooks.append(final_norm(hf).register_forward_pre_hook(lambda mod, a: rec.__setitem__("x", a[0])))
    try:
        with torch.no_grad():
            logits = hf(input_ids=ids).logits[0, p].double()
    finally:
        for h in hooks:
            h.remove()

    def rms(x, w, eps):
        scale = torch.sqrt(x.pow(2).mean() + eps)
        return lambda c: c / scale * ((1 + w) if gemma else w)

    eps = cfg.rms_norm_eps
    fn = final_norm(hf)
    final = rms(rec["x"][0, p].double(), fn.weight.double(), eps)
    W_U = hf.lm_head.weight.double()
    raw = W_U[[t, c]] @ (final(rec["x"][0, p].double()))
    cap = getattr(cfg, "final_logit_softcapping", None)
    ratio = (torch.tanh(raw / cap) * cap / raw) if cap else torch.ones(2, dtype=torch.float64)
    direction = ratio[0] * W_U[t] - ratio[1] * W_U[c]
    heads, mlps = [], []
    for i, layer in enumerate(layers):
        z = rec[("z", i)][0, p].double().reshape(H, Dh)
        W = o_proj(layer).weight.double()  # (D, H * Dh)
        per_head = [W[:, h * Dh:(h + 1) * Dh] @ z[h] for h in range(H)]
        if post_norm is not None:
            pn = post_norm(layer)
            post = rms(rec[("o", i)][0, p].double(), pn.weight.double(), eps)
            per_head = [post(v) for v in per_head]
        heads += [float(final(v) @ direction) for v in per_head]
        mlps.append(rec[("mlp", i)][0, p].double())
    return np.array(heads), mlps, final, direction, logits


def test_llama_per_head_and_mlp_by_hand():
    m = F.loaded("llama")
    ids = torch.tensor([m.tokenizer.encode(TEXT)])
    p, t, c = 9, 3, 250
    a = direct_logit_attribution(m, ids, t, c, position=p)
    heads, mlps, final, direction, logits = _hand_dla(
        m.hf, ids, p, t, c, lambda l: l.self_attn.o_proj, None, lambda l: l.mlp, lambda hf: hf.model.norm, False)
    np.testing.assert_allclose(a.by_layer("head").ravel(), heads, atol=1e-7, rtol=1e-5)
    np.testing.assert_allclose(a.by_layer("mlp"), [float(final(v) @ direction) for v in mlps], atol=1e-7, rtol=1e-5)
    assert a.total == pytest.approx(float(logits[t] - logits[c]), abs=1e-6)


def test_gemma2_post_norm_and_soft_cap_by_hand():
    m = F.loaded("gemma2")
    assert m.hf.config.final_logit_softcapping  # the soft-cap is exercised
    ids = torch.tensor([m.tokenizer.encode(TEXT)])
    p, t, c = 7, 12, 99
    a = direct_logit_attribution(m, ids, t, c, position=p)
    heads, _, _, _, logits = _hand_dla(
        m.hf, ids, p, t, c, lambda l: l.self_attn.o_proj, lambda l: l.post_attention_layernorm,
        lambda l: l.mlp, lambda hf: hf.model.norm, True)
    np.testing.assert_allclose(a.by_layer("head").ravel(), heads, atol=1e-7, rtol=1e-5)
    assert a.total == pytest.approx(float(logits[t] - logits[c]), abs=1e-6)


@pytest.mark.parametrize("name", F.FAMILIES)
def test_post_attention_norms_are_found_by_data_flow(name):
    m = F.loaded(name)
    found = post_attention_norms(m)
    want = [getattr(b, "post_attention_layernorm", None) if name in ("gemma2", "gemma3", "olmo2") else None
            for b in layout_of(m).blocks]
    assert all(f is w for f, w in zip(found, want)) and len(found) == len(want)


# -- the frozen norm -------------------------------------------------------------------------------------------------

class GemmaStyleRMS(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(d) * 0.3)

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + self.weight)


@pytest.mark.parametrize("kind", ["layernorm", "layernorm-nobias", "rmsnorm", "gemma"])
def test_frozen_norm_is_linear_and_exact_at_the_measured_input(kind):
    torch.manual_seed(3)
    D = 24
    norm = {"layernorm": lambda: torch.nn.LayerNorm(D), "layernorm-nobias": lambda: torch.nn.LayerNorm(D, bias=False),
            "rmsnorm": lambda: torch.nn.RMSNorm(D, eps=1e-5), "gemma": lambda: GemmaStyleRMS(D)}[kind]()
    with torch.no_grad():
        for p in norm.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    parts = torch.randn(5, D) * 2
    x = parts.sum(0)
    f = freeze(norm, x)
    form = norm_form(norm, D)
    assert form.centres == kind.startswith("layernorm")
    gain = (1 + norm.weight) if kind == "gemma" else norm.weight
    np.testing.assert_allclose(form.gain.numpy(), gain.detach().double().numpy(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose((f.linear(parts).sum(0) + f.bias).numpy(), norm(x[None])[0].double().numpy(),
                                   atol=1e-5)
        # the frozen scale is the real one: for another input the frozen map differs from the norm
        y = x * 3
        assert not torch.allclose(f.linear(y) + f.bias, norm(y[None])[0].double(), atol=1e-3)


def test_a_final_module_that_is_not_a_norm_is_a_layout_error():
    m = tiny()
    m.ln_f = torch.nn.Tanh()
    with pytest.raises(LayoutError, match="not of the form"):
        direct_logit_attribution(m, "hello", "e")


# -- bad input --------------------------------------------------------------------------------------------------------

def test_targets_the_tokenizer_cannot_produce():
    m = F.loaded("llama")
    with pytest.raises(ResidualError, match=r"encodes to \d+ tokens"):
        direct_logit_attribution(m, TEXT, "a whole sentence of text")
    with pytest.raises(OutOfRangeError, match="out of range"):
        direct_logit_attribution(m, TEXT, F.MODEL_VOCAB)
    with pytest.raises(OutOfRangeError, match="out of range"):
        direct_logit_attribution(m, TEXT, 3, -1)
    with pytest.raises(OutOfRangeError, match="has no text"):  # a padded row of the embedding
        direct_logit_attribution(m, TEXT, F.TOKENIZER_VOCAB + 2)
    with pytest.raises(ResidualError, match="text or an int"):
        direct_logit_attribution(m, TEXT, 2.0)
    one = m.tokenizer.encode(" return")
    if len(one) == 1:
        assert resolve_token(m, " return") == one[0]


def test_a_bos_tokenizer_resolves_one_character_targets():
    from workbench.models import load_pretrained

    m = load_pretrained("docs-byte")
    assert len(m.tokenizer.encode(" ")) == 2  # the BOS comes with every text
    assert resolve_token(m, " ") == m.tokenizer.encode(" ")[1]
    a = direct_logit_attribution(m, "The function returns", " ", "s")
    assert abs(float(a.values.sum()) - a.total) < 1e-4


def test_position_out_of_range():
    m = tiny()
    with pytest.raises(OutOfRangeError, match="position 5 is out of range"):
        direct_logit_attribution(m, "hello", "e", position=5)
    with pytest.raises(OutOfRangeError):
        direct_logit_attribution(m, "hello", "e", position=-6)
    a = direct_logit_attribution(m, "hello", "e", position=-5)
    assert a.position == 0
