"""The model-layout layer on TinyGPT: named points equal a hand-written forward, hooks edit and are always removed,
bad point names are specific errors; the HF side is tested on 13 families in tests/unit/attention."""
import math

import pytest
import torch

from workbench.models.layout import LayoutError, layout_of
from workbench.models.tinygpt import apply_rope, rope_angles


def test_tinygpt_points_equal_a_hand_written_forward(tiny_model):
    m = tiny_model
    lay = layout_of(m)
    assert (lay.kind, lay.n_layer, lay.n_head, lay.n_kv, lay.head_dim, lay.positions) == ("tinygpt", 2, 2, 2, 16, "rope")
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    got = {}
    names = ["embed", "blocks.1.resid_pre", "blocks.1.attn.q", "blocks.1.attn.k", "blocks.1.attn.v",
             "blocks.1.attn.z", "blocks.1.attn.out", "blocks.1.mlp.out", "blocks.1.resid_post", "final_norm", "logits"]
    with torch.no_grad(), lay.hooks({n: (lambda t, n=n: got.__setitem__(n, t.detach().clone())) for n in names}):
        logits = m.forward(ids).logits
    # by hand from the block's parameters
    blk = m.blocks[1]
    x = got["blocks.1.resid_pre"]
    h = blk.ln1(x)
    q, k, v = blk.attn.qkv(h).view(1, 8, 3, 2, 16).unbind(2)
    cos, sin = rope_angles(torch.arange(8), 16, m.config.rope_base)
    q, k, v = apply_rope(q.transpose(1, 2), cos, sin), apply_rope(k.transpose(1, 2), cos, sin), v.transpose(1, 2)
    torch.testing.assert_close(got["blocks.1.attn.q"], q, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["blocks.1.attn.k"], k, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["blocks.1.attn.v"], v)
    att = (q @ k.transpose(-2, -1) / math.sqrt(16)).masked_fill(torch.ones(8, 8).triu(1).bool(), float("-inf"))
    z = (att.softmax(-1) @ v).transpose(1, 2)  # (B, T, H, Dh)
    torch.testing.assert_close(got["blocks.1.attn.z"], z, atol=1e-5, rtol=1e-5)
    out = z.reshape(1, 8, 32) @ lay.w_out(1).reshape(32, 32) + lay.w_out_bias(1)
    torch.testing.assert_close(got["blocks.1.attn.out"], out, atol=1e-5, rtol=1e-5)
    mid = x + out
    torch.testing.assert_close(got["blocks.1.mlp.out"], blk.mlp(blk.ln2(mid)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["blocks.1.resid_post"], mid + got["blocks.1.mlp.out"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["final_norm"], m.ln_f(got["blocks.1.resid_post"]))
    torch.testing.assert_close(got["logits"], logits)
    torch.testing.assert_close(got["embed"], m.wte(ids))


def test_hooks_edit_and_are_always_removed(tiny_model):
    m = tiny_model
    lay = layout_of(m)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        base = m.forward(ids).logits
        with lay.hooks({"blocks.0.attn.z": lambda z: torch.zeros_like(z)}):
            edited = m.forward(ids).logits
        assert (edited - base).abs().max() > 1e-4
        with pytest.raises(RuntimeError, match="planted"):
            with lay.hooks({"blocks.0.resid_post": lambda t: t}):
                raise RuntimeError("planted")
        torch.testing.assert_close(m.forward(ids).logits, base)
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())


def test_bad_point_names(tiny_model):
    lay = layout_of(tiny_model)
    with pytest.raises(LayoutError, match="no point 'blocks.2.attn.z'"):
        with lay.hooks({"blocks.2.attn.z": lambda t: None}):
            pass
    with pytest.raises(LayoutError, match="no point 'blocks.0.attn.pattern'"):
        with lay.hooks({"blocks.0.attn.pattern": lambda t: None}):
            pass
    with pytest.raises(LayoutError, match="no torch module"):
        layout_of(object())
