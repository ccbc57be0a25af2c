"""MLP neurons checked against hand computations from each family's own modules."""
import numpy as np
import pytest
import torch
import torch.nn.functional as Fn

from tests import hf_families as F
from workbench.models import GPTConfig, TinyGPT, load_pretrained
from workbench.residual.errors import OutOfRangeError, ResidualError
from workbench.residual.neurons import mlp_width, neuron_activations, top_activations, windows
from workbench.residual.run import run_with_cache
from workbench.tokenizers import ByteTokenizer


def tiny():
    torch.manual_seed(0)
    tok = ByteTokenizer()
    return TinyGPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32, block_size=32), tok).eval()


def mid(model, ids, layer):
    """The residual stream between attention and MLP of ``layer``: resid_pre + attn.out."""
    p = f"blocks.{layer}."
    _, c = run_with_cache(model, ids, [p + "resid_pre", p + "attn.out"])
    return c[p + "resid_pre"] + c[p + "attn.out"]


IDS = torch.tensor([[5, 17, 40, 3, 99, 12, 7]])


@torch.no_grad()
def test_tinygpt_neurons_are_gelu_of_the_first_projection():
    m = tiny()
    for layer in range(2):
        b = m.blocks[layer]
        ref = Fn.gelu(b.ln2(mid(m, IDS, layer)) @ b.mlp.fc.weight.T + b.mlp.fc.bias)
        got = neuron_activations(m, IDS, layer)
        assert got.shape == (1, 7, 128) and mlp_width(m, layer) == 128
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("family", ["gpt2", "llama", "opt", "phi3"])
def test_hf_neurons_match_the_family_modules(family):
    m = F.loaded(family)
    layer = 1
    blk = m.hf.base_model.layers[layer] if family not in ("gpt2", "opt") else \
        (m.hf.transformer.h[layer] if family == "gpt2" else m.hf.model.decoder.layers[layer])
    x = mid(m, IDS, layer)
    if family == "gpt2":
        ref = blk.mlp.act(blk.mlp.c_fc(blk.ln_2(x)))
    elif family == "llama":
        h = blk.post_attention_layernorm(x)
        ref = blk.mlp.act_fn(blk.mlp.gate_proj(h)) * blk.mlp.up_proj(h)
    elif family == "opt":
        ref = blk.activation_fn(blk.fc1(blk.final_layer_norm(x)))
    else:  # phi3: one fused gate_up projection, split in halves
        gate, up = blk.mlp.gate_up_proj(blk.post_attention_layernorm(x)).chunk(2, dim=-1)
        ref = up * blk.mlp.activation_fn(gate)
    got = neuron_activations(m, IDS, layer)
    assert mlp_width(m, layer) == ref.shape[-1]
    torch.testing.assert_close(got, ref.float(), atol=1e-5, rtol=1e-4)


def test_top_activations_are_the_largest_non_overlapping_values():
    m = tiny()
    text = "the cat sat on the mat. 12 dogs ran 34 miles!"  # 45 tokens: two windows of the 32-token context
    r = top_activations(m, 1, 9, text, k=3, window=8)
    ids = torch.tensor(m.tokenizer.encode(text))
    full = np.concatenate([neuron_activations(m, p[None], 1)[0, :, 9].numpy() for _, p in windows(m, ids)])
    assert [s.max_activation for s in r.snippets] == sorted((s.max_activation for s in r.snippets), reverse=True)
    assert r.snippets[0].max_activation == pytest.approx(full.max(), abs=1e-6)
    assert r.snippets[0].position == int(full.argmax())
    pos = [s.position for s in r.snippets]
    assert all(abs(a - b) >= 8 for i, a in enumerate(pos) for b in pos[i + 1:])
    for s in r.snippets:
        lo = s.position - s.center
        np.testing.assert_allclose(s.activations, full[lo:lo + len(s.tokens)], atol=1e-6)
        assert s.tokens == [m.tokenizer.token_str(int(i)) for i in ids[lo:lo + len(s.tokens)]]
        assert len(s.tokens) <= 8 and s.activations[s.center] == pytest.approx(s.max_activation)
    # no other position outside the chosen snippets' exclusion zones beats the third
    free = [v for p, v in enumerate(full) if all(abs(p - q) >= 8 for q in pos)]
    assert max(free) <= r.snippets[-1].max_activation + 1e-6
    assert r.n_tokens == len(ids) and r.quantiles[1.0] == pytest.approx(full.max(), abs=1e-6)


@torch.no_grad()
def test_windows_past_the_context_carry_bos():
    m = load_pretrained("docs-byte")  # ByteTokenizer with BOS, context 256
    text = "Lists are mutable sequences, typically used to store collections of items. " * 8
    r = top_activations(m, 0, 3, text, k=2, window=16)
    ids = torch.tensor(m.tokenizer.encode(text))
    pieces = windows(m, ids)
    assert len(pieces) == 3 and all(int(p[0]) == m.tokenizer.bos_id for _, p in pieces)
    assert [s for s, _ in pieces] == [0, 256, 511]
    # the top snippet's values equal a recomputation of the window that holds its peak, BOS prepended
    s = r.snippets[0]
    start, piece = [(st, p) for st, p in pieces if st <= s.position][-1]
    off = 0 if start == 0 else 1
    a = neuron_activations(m, piece[None], 0)[0, :, 3].numpy()
    assert a[s.position - start + off] == pytest.approx(s.max_activation, abs=1e-5)
    assert r.n_tokens == len(ids) - 1  # the BOS token is context, never a peak


def test_bad_input():
    m = tiny()
    with pytest.raises(OutOfRangeError, match="layer"):
        top_activations(m, 2, 0, "abc")
    with pytest.raises(OutOfRangeError, match="neuron"):
        top_activations(m, 0, 128, "abc")
    with pytest.raises(ResidualError, match="empty"):
        top_activations(m, 0, 0, ["", ""])
    with pytest.raises(ResidualError, match="corpus"):
        top_activations(m, 0, 0, 42)
    with pytest.raises(OutOfRangeError):
        mlp_width(m, -3)
