"""Every route of TinyGPT against the plain reference (workbench.models.reference).

TinyGPT picks among five attention routes and a NumPy decoding step by a dozen conditions; each test below
forces one route, checks that it was the one taken, and compares logits (and, for capture, attentions and
the residual stream) with the reference's single written-out route on the same weights.
"""
import pytest
import torch
import torch.nn.functional as F

from tests.factories import tiny_gpt
from workbench import kernels
from workbench.kernels import emulator
from workbench.models import tinygpt
from workbench.models.reference import ReferenceGPT

V, T = 61, 40
IDS = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(1))
CONFIGS = {
    "learned": dict(pos="learned"),
    "rope": dict(pos="rope"),
    "alibi": dict(pos="alibi"),
    "alibi-6-heads": dict(pos="alibi", n_head=6, n_embd=48),
    "attn-only": dict(pos="rope", attn_only=True),
    "untied": dict(pos="learned", tied=False),
    "no-bias": dict(pos="rope", bias=False),
}
TOL = dict(atol=2e-5, rtol=1e-5)


def window(q_pos, k_pos):
    """A sliding window of 5 keys (an attention variant's mask_fn)."""
    d = q_pos[:, None] - k_pos[None, :]
    return (d >= 0) & (d < 5)


def pair(name, seed=0, **extra):
    shape = dict(vocab_size=V, n_layer=2, n_head=4, n_embd=32, block_size=48)
    m = tiny_gpt(seed=seed, **{**shape, **CONFIGS[name], **extra})
    with torch.no_grad():  # larger weights than the init, so that attention is not nearly uniform
        for p in m.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    return m, ReferenceGPT(m.config).load_tinygpt(m).eval()


@pytest.fixture
def routes(monkeypatch):
    """The SDPA calls TinyGPT makes: 'causal', 'unmasked' or 'bias' each."""
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        seen.append("causal" if is_causal else "bias" if attn_mask is not None else "unmasked")
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kw)

    monkeypatch.setattr(tinygpt.F, "scaled_dot_product_attention", spy)
    return seen


@pytest.mark.parametrize("name", list(CONFIGS))
def test_full_forward(name, routes):
    m, ref = pair(name)
    want = ref(IDS)
    with torch.no_grad():
        got = m(IDS).logits
    assert set(routes) == ({"bias"} if name.startswith("alibi") else {"causal"})
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("name", ["learned", "rope", "alibi"])
def test_mask_fn_route(name, routes):
    m, ref = pair(name)
    want = ref(IDS, mask_fn=window)
    m.mask_fn = window
    got = m(IDS).logits
    assert set(routes) == {"bias"}
    torch.testing.assert_close(got, want, **TOL)
    assert not torch.allclose(got, ref(IDS), **TOL)  # the window really changes the result


@pytest.mark.parametrize("name", ["learned", "alibi-6-heads", "attn-only", "untied"])
def test_capture_route(name, routes):
    m, ref = pair(name)
    logits, att, res = ref(IDS, capture=True)
    out = m(IDS, capture=True)
    assert routes == []
    torch.testing.assert_close(out.logits, logits, **TOL)
    torch.testing.assert_close(out.attentions, att, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.residuals, res, **TOL)


@pytest.mark.parametrize("name", ["learned", "rope", "alibi", "untied"])
def test_cached_steps_with_gradients_on(name, routes):
    """A prefill, a chunk through the cache (a bias: the new queries see the cached keys), then one token at
    a time: unmasked SDPA (ALiBi keeps its bias). Gradients on keep the NumPy step out."""
    m, ref = pair(name)
    want = ref(IDS)
    cache = m.new_cache(2)
    parts = [m.step(IDS[:, :9], cache).logits, m.step(IDS[:, 9:14], cache).logits]
    parts += [m.step(IDS[:, t: t + 1], cache).logits for t in range(14, T)]
    alibi = name == "alibi"
    assert routes == ["bias" if alibi else "causal"] * 2 + ["bias"] * 2 + ["bias" if alibi else "unmasked"] * 2 * (T - 14)
    assert "_numpy_step" not in m.__dict__
    torch.testing.assert_close(torch.cat(parts, 1), want, **TOL)


@pytest.mark.parametrize("name", ["learned", "rope", "attn-only", "untied", "no-bias"])
def test_numpy_decoding_step(name, routes):
    m, ref = pair(name)
    want = ref(IDS)
    cache = m.new_cache(2)
    with torch.no_grad():
        parts = [m.step(IDS[:, :20], cache).logits]                    # a long prefill: torch
        parts += [m.step(IDS[:, 20:23], cache).logits]                 # a few tokens: NumPy
        parts += [m.step(IDS[:, t: t + 1], cache).logits for t in range(23, T)]
    assert routes == ["causal"] * 2                                    # only the prefill went through torch
    assert m.__dict__["_numpy_step"].applies()
    torch.testing.assert_close(torch.cat(parts, 1), want, atol=1e-4, rtol=1e-4)


_ok, _why = emulator.available()


@pytest.mark.skipif(not _ok, reason=f"CPU emulator unavailable: {_why}")
@pytest.mark.parametrize("name", ["learned", "rope"])
def test_gpu_kernel_route(name, restore_backend, monkeypatch, routes):
    """The fused attention kernel (compiled for the CPU by the emulator back-end): full forward and cached steps."""
    m, ref = pair(name, n_head=2)  # head size 16, one the kernel takes
    want = ref(IDS)
    kernels.set_backend("emulator")
    calls = []
    real = kernels.attention
    monkeypatch.setattr(kernels, "attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = m.new_cache(2)
    with torch.no_grad():
        full = m(IDS).logits
        parts = [m.step(IDS[:, :30], cache).logits] + [m.step(IDS[:, t: t + 1], cache).logits for t in range(30, T)]
    assert routes == [] and len(calls) == 2 * (2 + T - 30)
    torch.testing.assert_close(full, want, **TOL)
    torch.testing.assert_close(torch.cat(parts, 1), want, **TOL)


def test_reference_has_one_route_per_config():
    """The reference's own SDPA variant (the benchmark's yardstick) equals its written-out softmax."""
    m, ref = pair("alibi")
    fused = ReferenceGPT(m.config, sdpa=True).load_tinygpt(m).eval()
    torch.testing.assert_close(fused(IDS), ref(IDS), **TOL)
    with pytest.raises(ValueError, match="sdpa=False"):
        fused(IDS, capture=True)
