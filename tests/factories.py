"""The tests' small models, built in one place: every test module asks here instead of writing its own builder.

:func:`tiny_gpt` is the one factory; the named presets below are the shapes several test modules share.
Each seeds torch, so the same arguments always give the same weights.
"""
from __future__ import annotations

import torch

from workbench.models import GPTConfig, TinyGPT


def tiny_gpt(tokenizer=None, *, seed: int | None = 0, train: bool = False, name: str = "tinygpt",
             weight_std: float | None = None, weight_scale: float | None = None, qkv_scale: float | None = None,
             jitter: float | None = None, **config) -> TinyGPT:
    """A random TinyGPT. ``config`` goes to :class:`GPTConfig` (``vocab_size`` defaults to the tokenizer's, or
    GPTConfig's 257 without one); ``seed`` seeds torch first (None: leave the generator alone); the model is in
    ``eval()`` mode unless ``train``.

    Larger weights than the init make peaked, varied distributions, so that tests can fail: ``weight_std``
    redraws every weight matrix from N(0, weight_std), ``weight_scale`` multiplies every weight matrix,
    ``qkv_scale`` multiplies the attention projections only, ``jitter`` adds N(0, jitter) noise to every parameter
    (LayerNorm gains of 1 and biases of 0 would hide a wrong fold)."""
    if seed is not None:
        torch.manual_seed(seed)
    if tokenizer is not None:
        config.setdefault("vocab_size", tokenizer.vocab_size)
    m = TinyGPT(GPTConfig(**config), tokenizer=tokenizer, name=name)
    m = m.train() if train else m.eval()
    with torch.no_grad():
        for p in m.parameters():
            if jitter is not None:
                p.add_(torch.randn_like(p) * jitter)
            if p.dim() > 1 and weight_std is not None:
                p.normal_(0.0, weight_std)
            if p.dim() > 1 and weight_scale is not None:
                p.mul_(weight_scale)
        if qkv_scale is not None:
            for b in m.blocks:
                b.attn.qkv.weight.mul_(qkv_scale)
    return m


def peaked_gpt(seed: int, vocab: int = 16, scale: float = 0.6, block_size: int = 32, n_layer: int = 1) -> TinyGPT:
    """The decoding tests' model: no tokenizer, width 16, weights large enough for peaked, varied next-token
    distributions."""
    return tiny_gpt(seed=seed, vocab_size=vocab, n_layer=n_layer, n_head=2, n_embd=16, block_size=block_size,
                    weight_std=scale)


def byte_gpt(seed: int, n_layer: int = 2, n_embd: int = 32) -> TinyGPT:
    """A byte-level TinyGPT named ``t{seed}`` (context 64, RoPE) with weights large enough for varied next-token
    distributions: what the DecodingLab tests and their core and export twins are driven with."""
    from workbench.tokenizers import ByteTokenizer

    return tiny_gpt(ByteTokenizer(), seed=seed, name=f"t{seed}", n_layer=n_layer, n_head=2, n_embd=n_embd,
                    block_size=64, pos="rope", weight_std=0.15)


def attention_gpt(pos: str = "learned", n_layer: int = 2, n_head: int = 2, n_embd: int = 32, block_size: int = 64,
                  seed: int = 0, attn_only: bool = False) -> TinyGPT:
    """The attention tests' byte-level model: attention projections 8x the init, so the patterns are far from
    uniform."""
    from workbench.tokenizers import ByteTokenizer

    return tiny_gpt(ByteTokenizer(), seed=seed, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                    block_size=block_size, pos=pos, attn_only=attn_only, qkv_scale=8.0)
