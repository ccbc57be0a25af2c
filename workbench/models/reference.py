"""A plain-PyTorch GPT of the same architecture as TinyGPT (pre-LN, GELU MLP, RoPE or learned positions).

Written the straightforward way (explicit masked softmax, no cache), it is the yardstick that
``python -m workbench.bench models`` measures TinyGPT against, and a numerical cross-check in the tests:
it loads TinyGPT's ``state_dict`` unchanged.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RefBlock(nn.Module):
    def __init__(self, d, h, mlp_ratio, bias):
        super().__init__()
        self.h = h
        self.ln1 = nn.LayerNorm(d, bias=bias)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(d, 3 * d, bias=bias)
        self.attn.proj = nn.Linear(d, d, bias=bias)
        self.ln2 = nn.LayerNorm(d, bias=bias)
        self.mlp = nn.Module()
        self.mlp.fc = nn.Linear(d, mlp_ratio * d, bias=bias)
        self.mlp.proj = nn.Linear(mlp_ratio * d, d, bias=bias)

    def forward(self, x, cos, sin, sdpa: bool):
        B, T, D = x.shape
        q, k, v = self.attn.qkv(self.ln1(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, T, self.h, D // self.h).permute(0, 2, 1, 3) for t in (q, k, v))
        if cos is not None:
            def rot(t):
                a, b = t.chunk(2, dim=-1)
                return t * cos + torch.cat([-b, a], dim=-1) * sin
            q, k = rot(q), rot(k)
        if sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            y = s.softmax(-1) @ v
        x = x + self.attn.proj(y.permute(0, 2, 1, 3).reshape(B, T, D))
        return x + self.mlp.proj(F.gelu(self.mlp.fc(self.ln2(x))))


class ReferenceGPT(nn.Module):
    """Same parameters and names as TinyGPT for ``pos`` in {"learned", "rope"} with MLPs and tied embeddings."""

    def __init__(self, cfg, sdpa: bool = True):
        super().__init__()
        if cfg.pos not in ("learned", "rope") or cfg.attn_only or not cfg.tied:
            raise ValueError("the reference covers learned/rope positions, MLP blocks and tied embeddings")
        self.cfg, self.sdpa = cfg, sdpa
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.blocks = nn.ModuleList(RefBlock(cfg.n_embd, cfg.n_head, cfg.mlp_ratio, cfg.bias) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)

    def forward(self, ids):
        T = ids.size(1)
        x = self.wte(ids)
        cos = sin = None
        if self.wpe is not None:
            x = x + self.wpe.weight[:T]
        else:
            hd = self.cfg.n_embd // self.cfg.n_head
            freqs = 1.0 / self.cfg.rope_base ** (torch.arange(0, hd, 2, device=ids.device).float() / hd)
            ang = torch.outer(torch.arange(T, device=ids.device).float(), freqs).repeat(1, 2)
            cos, sin = ang.cos(), ang.sin()
        for b in self.blocks:
            x = b(x, cos, sin, self.sdpa)
        return self.ln_f(x) @ self.wte.weight.T

    def load_tinygpt(self, model):
        state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
        self.load_state_dict(state, strict=True)
        return self
