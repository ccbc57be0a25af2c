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
    """The TinyGPT ``m`` recomputed by the plain reference (:mod:`workbench.models.reference`) under a key mask
    ``allowed`` ``(T, T)`` bool (default causal), with absolute positions 0..T-1 whatever the context.
    Returns every layer's attention probabilities ``(L, H, T, T)`` and the logits ``(T, V)``."""
    from workbench.models.reference import ReferenceGPT

    ref = ReferenceGPT(m.config).load_tinygpt(m).eval()
    with torch.no_grad():
        logits, att, _ = ref(torch.as_tensor([ids]), mask_fn=None if allowed is None else lambda q, k: allowed,
                             capture=True)
    return att[:, 0], logits[0]


def explicit_logits(m, ids, allowed):
    """Logits ``(T, V)`` of :func:`explicit_forward`."""
    return explicit_forward(m, ids, allowed)[1]
