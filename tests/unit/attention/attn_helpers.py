"""Tiny models for the attention tests (fixed seeds, built locally, no download)."""
import torch

from workbench.models import GPTConfig, TinyGPT
from workbench.tokenizers import ByteTokenizer


def tiny(pos="learned", n_layer=2, n_head=2, n_embd=32, block_size=64, seed=0, attn_only=False):
    torch.manual_seed(seed)
    m = TinyGPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, pos=pos,
                          attn_only=attn_only), ByteTokenizer())
    # larger weights than the default init so the patterns are far from uniform
    with torch.no_grad():
        for b in m.blocks:
            b.attn.qkv.weight.mul_(8.0)
    return m.eval()


TEXT = "the cat sat on the mat; the cat sat on the hat."


def explicit_forward(m, ids, allowed=None):
    """A TinyGPT (learned, RoPE or ALiBi positions, with MLPs) written out step by step under a key mask
    ``allowed`` ``(T, T)`` bool (default causal), with absolute positions 0..T-1 whatever the context.
    Returns every layer's attention probabilities ``(L, H, T, T)`` and the logits ``(T, V)``."""
    import math

    import torch.nn.functional as F

    cfg = m.config
    T = len(ids)
    H, Dh, D = cfg.n_head, cfg.head_dim, cfg.n_embd
    pos = torch.arange(T)
    if allowed is None:
        allowed = pos[None, :] <= pos[:, None]
    probs = []
    with torch.no_grad():
        x = m.wte.weight[torch.as_tensor(ids)]
        if cfg.pos == "learned":
            x = x + m.wpe.weight[:T]
        for b in m.blocks:
            h = F.layer_norm(x, (D,), b.ln1.weight, b.ln1.bias)
            qkv = h @ b.attn.qkv.weight.T + b.attn.qkv.bias
            q, k, v = (qkv[:, i * D:(i + 1) * D].reshape(T, H, Dh).transpose(0, 1) for i in range(3))
            s_bias = torch.zeros(H, T, T)
            if cfg.pos == "rope":
                inv = cfg.rope_base ** (-torch.arange(0, Dh, 2).float() / Dh)
                ang = pos.float()[:, None] * inv[None]
                cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

                def rot(t):
                    return t * cos + torch.cat([-t[..., Dh // 2:], t[..., :Dh // 2]], -1) * sin

                q, k = rot(q), rot(k)
            elif cfg.pos == "alibi":
                slopes = torch.tensor([2 ** (-8 * (i + 1) / H) for i in range(H)])
                s_bias = -slopes[:, None, None] * (pos[:, None] - pos[None, :]).clamp(min=0)
            s = q @ k.transpose(1, 2) / math.sqrt(Dh) + s_bias
            a = s.masked_fill(~allowed, float("-inf")).softmax(-1)
            probs.append(a)
            y = (a @ v).transpose(0, 1).reshape(T, D)
            x = x + y @ b.attn.proj.weight.T + b.attn.proj.bias
            h2 = F.layer_norm(x, (D,), b.ln2.weight, b.ln2.bias)
            x = x + F.gelu(h2 @ b.mlp.fc.weight.T + b.mlp.fc.bias) @ b.mlp.proj.weight.T + b.mlp.proj.bias
        x = F.layer_norm(x, (D,), m.ln_f.weight, m.ln_f.bias)
        return torch.stack(probs), x @ m.lm_head.weight.T


def explicit_logits(m, ids, allowed):
    """Logits ``(T, V)`` of :func:`explicit_forward`."""
    return explicit_forward(m, ids, allowed)[1]
