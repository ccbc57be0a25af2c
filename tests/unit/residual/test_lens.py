"""The logit lens against independent references: a plain-PyTorch TinyGPT forward written here, HF's own
``output_hidden_states`` through each family's final norm and ``lm_head`` found by hand, and the lens statistics
(entropy, rank, KL, first stable layer) recomputed with numpy from the logits."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as Fn

from tests import hf_families as F
from workbench.models import GPTConfig, TinyGPT, load_pretrained
from workbench.models.interface import LMOutput
from workbench.models.layout import LayoutError
from workbench.residual import LensResult, OutOfRangeError, ResidualError, lens_logits, logit_lens, residual_stack
from workbench.residual.lens import first_stable, lens_kl_by_layer
from workbench.tokenizers import ByteTokenizer

TEXT = "def f(x):\n    return x + 1"


def tiny(seed=0, n_layer=3):
    torch.manual_seed(seed)
    tok = ByteTokenizer()
    m = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=n_layer, n_head=2, n_embd=32, block_size=64,
                          pos="rope"), tokenizer=tok, name="tiny").eval()
    with torch.no_grad():  # larger weights than the init, so distributions are far from uniform
        for p in m.parameters():
            p.mul_(4.0)
    return m


def plain_tinygpt_stack(m, ids):
    """Residual stream ``(L + 1, T, D)`` of a rope TinyGPT, written out with plain tensor ops (no workbench code)."""
    cfg = m.config
    H, D = cfg.n_head, cfg.n_embd
    Dh = D // H
    T = ids.numel()
    x = m.wte.weight[ids]  # (T, D)
    inv = cfg.rope_base ** (-torch.arange(0, Dh, 2, dtype=torch.float32) / Dh)
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(t):  # (H, T, Dh), half-split rotation
        a, b = t[..., : Dh // 2], t[..., Dh // 2:]
        return t * cos + torch.cat([-b, a], -1) * sin

    out = [x]
    causal = torch.ones(T, T).tril().bool()
    for blk in m.blocks:
        h = Fn.layer_norm(x, (D,), blk.ln1.weight, blk.ln1.bias)
        qkv = h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
        q, k, v = (qkv[:, i * D:(i + 1) * D].reshape(T, H, Dh).transpose(0, 1) for i in range(3))
        q, k = rope(q), rope(k)
        att = (q @ k.transpose(1, 2)) / math.sqrt(Dh)
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        z = (att @ v).transpose(0, 1).reshape(T, D)
        x = x + z @ blk.attn.proj.weight.T + blk.attn.proj.bias
        h = Fn.layer_norm(x, (D,), blk.ln2.weight, blk.ln2.bias)
        x = x + Fn.gelu(h @ blk.mlp.fc.weight.T + blk.mlp.fc.bias) @ blk.mlp.proj.weight.T + blk.mlp.proj.bias
        out.append(x)
    return torch.stack(out)


def plain_tinygpt_head(m, h):
    return Fn.layer_norm(h, (m.config.n_embd,), m.ln_f.weight, m.ln_f.bias) @ m.lm_head.weight.T


def check_result_matches(r: LensResult, ref_logits: torch.Tensor, atol=1e-4):
    """Top-k probabilities of every boundary equal softmax of the reference logits ``(L + 1, T, V)``."""
    p = ref_logits.detach().double().softmax(-1)
    got = np.take_along_axis(p.numpy(), r.top_ids, axis=-1)
    np.testing.assert_allclose(r.top_probs, got, atol=atol)
    np.testing.assert_allclose(r.top_probs, p.topk(r.k, dim=-1).values.numpy(), atol=atol)


# -- equality with the model and with independent forwards -----------------------------------------------------------

@pytest.mark.parametrize("which", ["random", "docs-byte"])
def test_tinygpt_every_boundary_equals_a_plain_forward(which):
    m = tiny() if which == "random" else load_pretrained("docs-byte")
    ids = torch.tensor(m.tokenizer.encode(TEXT))
    with torch.no_grad():
        ref_resid = plain_tinygpt_stack(m, ids)
        ref_logits = plain_tinygpt_head(m, ref_resid)  # (L + 1, T, V)
        model_logits = m(ids[None]).logits[0]
        rs = residual_stack(m, ids.tolist())
        got = lens_logits(m, rs.resid[:, 0])
    assert got.shape == (m.config.n_layer + 1, ids.numel(), m.config.vocab_size)
    torch.testing.assert_close(got[-1], model_logits, atol=1e-4, rtol=0)  # the last boundary is the model
    torch.testing.assert_close(got, ref_logits, atol=1e-4, rtol=1e-4)  # every boundary, the independent forward
    r = logit_lens(m, ids.tolist(), k=7)
    check_result_matches(r, ref_logits)
    np.testing.assert_array_equal(r.final_ids, model_logits.argmax(-1).numpy())


def _hf_final_norm(hf):
    """The final norm of an HF causal LM, looked up by the attribute names transformers uses (not by the layout)."""
    for path in ("norm", "ln_f", "final_layer_norm", "final_layernorm", "decoder.final_layer_norm"):
        mod = hf.base_model
        try:
            for part in path.split("."):
                mod = getattr(mod, part)
        except AttributeError:
            continue
        if isinstance(mod, torch.nn.Module):
            return mod
    raise AssertionError(f"no final norm found on {type(hf).__name__}")


@pytest.mark.parametrize("family", F.FAMILIES)
def test_hf_family_boundaries_equal_hidden_states_through_the_head(family):
    m = F.loaded(family)
    hf = m.hf
    ids = torch.tensor(np.random.default_rng(3).integers(0, F.TOKENIZER_VOCAB, 16))[None]
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        norm, unembed = _hf_final_norm(hf), hf.get_output_embeddings()
        cap = getattr(hf.config, "final_logit_softcapping", None)
        L = len(out.hidden_states) - 1

        def by_hand(h):
            y = unembed(norm(h)).float()
            return torch.tanh(y / cap) * cap if cap else y

        got = lens_logits(m, residual_stack(m, ids).resid)[:, 0]  # (L + 1, T, V)
    assert got.shape[0] == L + 1
    torch.testing.assert_close(got[-1], out.logits[0].float(), atol=1e-4, rtol=0)
    for i in range(L):  # hidden_states[i < L] are before the final norm; hidden_states[L] is after it
        torch.testing.assert_close(got[i], by_hand(out.hidden_states[i][0]), atol=1e-4, rtol=1e-4)
    r = logit_lens(m, ids, k=4)
    ref = torch.cat([torch.stack([by_hand(out.hidden_states[i][0]) for i in range(L)]), out.logits[0:1].float()])
    check_result_matches(r, ref)
    assert r.kl[-1].max() < 1e-6
    padded = r.top_ids >= F.TOKENIZER_VOCAB  # ids of the padded vocabulary have no text
    assert all(r.top_tokens[b][t][j] == f"<id {r.top_ids[b, t, j]}>" for b, t, j in zip(*np.nonzero(padded)))


# -- the statistics, recomputed by hand ----------------------------------------------------------------------------

def test_statistics_equal_hand_computations():
    m = tiny(seed=1)
    r = logit_lens(m, TEXT, k=3)
    with torch.no_grad():
        logits = lens_logits(m, residual_stack(m, TEXT).resid[:, 0]).double().numpy()  # (L + 1, T, V)
    n_b, T, V = logits.shape
    for b in range(n_b):
        for t in range(T):
            z = logits[b, t] - logits[b, t].max()
            p = np.exp(z) / np.exp(z).sum()
            zf = logits[-1, t] - logits[-1, t].max()
            pf = np.exp(zf) / np.exp(zf).sum()
            f = int(np.argmax(pf))
            assert r.final_ids[t] == f
            assert r.entropy[b, t] == pytest.approx(-sum(x * math.log2(x) for x in p if x > 0), abs=1e-6)
            assert r.final_rank[b, t] == sum(1 for x in p if x > p[f])
            assert r.final_prob[b, t] == pytest.approx(p[f], abs=1e-7)
            assert r.kl[b, t] == pytest.approx(sum(a * math.log2(a / c) for a, c in zip(pf, p) if a > 0), abs=1e-6)
            assert list(r.top_ids[b, t]) == list(np.argsort(-p, kind="stable")[:3])
    top1 = logits.argmax(-1)
    for t in range(T):
        stable = [b for b in range(n_b) if all(top1[c, t] == r.final_ids[t] for c in range(b, n_b))]
        assert r.first_stable[t] == (stable[0] if stable else n_b)
    np.testing.assert_allclose(r.kl[-1], 0.0, atol=1e-6)
    assert (r.final_rank[-1] == 0).all()
    assert (r.kl[:-1] > 1e-3).any() and (r.final_rank[:-1] > 0).any()  # the example is not trivial
    assert len(set(r.first_stable.tolist())) > 1
    np.testing.assert_allclose(lens_kl_by_layer(m, TEXT), r.kl.mean(1), atol=1e-9)


def test_first_stable_on_a_planted_example():
    top1 = np.array([[1, 2, 3, 4],
                     [5, 2, 3, 4],
                     [5, 9, 3, 4],
                     [5, 2, 7, 4]])
    final = np.array([5, 2, 3, 4])
    # position 0: from boundary 1; 1: only the last (2 at 0-1, 9 at 2); 2: never (7 at the last); 3: from 0
    np.testing.assert_array_equal(first_stable(top1, final), [1, 3, 4, 0])


def test_labels_come_from_the_tokenizer():
    m = tiny()
    r = logit_lens(m, "ab\n", k=2)
    assert r.tokens == ["a", "b", m.tokenizer.token_str(10)]
    assert r.boundaries == ["embed", "block 0", "block 1", "block 2"]
    assert r.top_tokens[1][2] == [m.tokenizer.token_str(int(i)) for i in r.top_ids[1, 2]]
    assert r.kind == "logit" and r.final_tokens == [m.tokenizer.token_str(int(i)) for i in r.final_ids]


# -- the widget's click: distribution() ------------------------------------------------------------------------------

def test_distribution_slices_and_widens():
    m = tiny()
    r = logit_lens(m, TEXT, k=3)
    ids, probs, toks = r.distribution(1, 4)
    np.testing.assert_array_equal(ids, r.top_ids[1, 4])
    assert toks == r.top_tokens[1][4]
    ids2, probs2, toks2 = r.distribution(-3, -len(r.ids) + 4, k=20)  # negative indices count from the end
    with torch.no_grad():
        ref = lens_logits(m, residual_stack(m, TEXT).resid[:, 0])[1, 4].double().softmax(-1)
    np.testing.assert_allclose(probs2, ref.topk(20).values.numpy(), atol=1e-7)
    np.testing.assert_array_equal(ids2[:3], ids)
    assert toks2 == [m.tokenizer.token_str(int(i)) for i in ids2]
    assert probs2.sum() <= 1.0 + 1e-9 and np.all(np.diff(probs2) <= 0)


@pytest.mark.parametrize("args, match", [((4, 0), "boundary 4"), ((0, 99), "position 99"), ((-5, 0), "boundary"),
                                         ((0, 0, 0), "k=0"), ((0, 0, 258), "k=258")])
def test_distribution_out_of_range(args, match):
    r = logit_lens(tiny(), "hello", k=3)
    with pytest.raises(OutOfRangeError, match=match):
        r.distribution(*args)


# -- bad input --------------------------------------------------------------------------------------------------------

def test_bad_input_errors():
    m = tiny()
    with pytest.raises(ResidualError, match="empty"):
        logit_lens(m, "")
    with pytest.raises(ResidualError, match="zero tokens"):
        logit_lens(m, [])
    with pytest.raises(OutOfRangeError, match="token id 999"):
        logit_lens(m, [1, 999])
    with pytest.raises(OutOfRangeError, match="k=0"):
        logit_lens(m, "hi", k=0)
    with pytest.raises(ResidualError, match=r"L \+ 1 = 4"):
        lens_logits(m, torch.zeros(3, 5, 32))
    with pytest.raises(ResidualError, match="D = 32"):
        lens_logits(m, torch.zeros(4, 5, 16))


class _ScaledLogits(TinyGPT):
    """A model whose logits are not its final norm + unembedding (a hidden temperature after the head)."""

    def forward(self, ids, capture=False, cache=None):
        return LMOutput(super().forward(ids).logits * 2.0)


def test_a_head_that_does_not_give_the_logits_is_a_layout_error():
    torch.manual_seed(0)
    m = _ScaledLogits(GPTConfig(vocab_size=257, n_layer=1, n_head=2, n_embd=32, block_size=16), ByteTokenizer()).eval()
    with pytest.raises(LayoutError, match="final norm") as e:
        logit_lens(m, "hi")
    assert "LayerNorm" in str(e.value) and "unembedding" in str(e.value)


def test_chunked_statistics_equal_the_whole(monkeypatch):
    """Long prompts and large vocabularies are processed a few positions at a time: same numbers."""
    import workbench.residual.lens as lens_mod

    m = tiny(seed=2)
    whole, kl_whole = logit_lens(m, TEXT, k=4), lens_kl_by_layer(m, TEXT)
    monkeypatch.setattr(lens_mod, "_CHUNK", 3 * m.config.vocab_size)  # 3 positions per chunk, a ragged last one
    assert len(lens_mod._chunks(len(whole.ids), m.config.vocab_size)) > 5
    part = logit_lens(m, TEXT, k=4)
    for f in ("top_ids", "final_rank", "first_stable", "final_ids"):
        np.testing.assert_array_equal(getattr(part, f), getattr(whole, f))
    for f in ("top_probs", "entropy", "final_prob", "kl"):  # float32 matmuls of other shapes round differently
        np.testing.assert_allclose(getattr(part, f), getattr(whole, f), atol=1e-5)
    np.testing.assert_allclose(lens_kl_by_layer(m, TEXT), kl_whole, atol=1e-5)
