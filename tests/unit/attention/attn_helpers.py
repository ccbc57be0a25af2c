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
