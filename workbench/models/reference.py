"""The plain version of :class:`~workbench.models.tinygpt.TinyGPT`: the same model written the straightforward
way, to read first and to check the fast one against.

TinyGPT has five attention routes (capture, GPU kernel, SDPA causal, SDPA unmasked for one cached query, SDPA
with a bias), a KV cache and a NumPy decoding step; this file has one route, no cache and no tricks: every
forward recomputes the whole sequence, the mask is built as a dense ``(T, T)`` table, and the softmax is
written out. It covers every :class:`GPTConfig` (learned, RoPE or ALiBi positions, MLP or attention-only
blocks, tied or untied embeddings) and the attention variants' ``mask_fn``; dropout is not modelled (it
matches TinyGPT in ``eval()`` mode). Parameters have TinyGPT's names, so :meth:`ReferenceGPT.load_tinygpt`
takes a TinyGPT's ``state_dict`` unchanged. The tests (``tests/unit/models/test_reference.py``) run every
TinyGPT route against it; ``python -m workbench.bench models`` measures TinyGPT against it.

>>> import torch
>>> from workbench.models import GPTConfig, TinyGPT
>>> fast = TinyGPT(GPTConfig(vocab_size=50, n_layer=2, n_head=2, n_embd=16, block_size=32, pos="alibi")).eval()
>>> plain = ReferenceGPT(fast.config).load_tinygpt(fast).eval()
>>> ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
>>> torch.allclose(fast(ids).logits, plain(ids), atol=1e-5)
True

Lesson: ``notebooks/00_tour.ipynb`` (The shipped model).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def alibi_slopes(n_head: int) -> list[float]:
    """ALiBi's head slopes (Press et al. 2022, section 3): for n heads, a power of two, the geometric
    sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8). Otherwise the slopes of the nearest smaller power of two p,
    then every other slope of 2p heads (2^(-4/p), 2^(-12/p), ...) until there are n.

    >>> alibi_slopes(4)
    [0.25, 0.0625, 0.015625, 0.00390625]
    """
    def geometric(n):
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    p = 2 ** int(math.floor(math.log2(n_head)))
    return geometric(p) + geometric(2 * p)[0::2][: n_head - p]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE with the half-split convention (GPT-NeoX, Llama): feature i pairs with feature i + Dh/2.
    ``x`` ``(B, H, T, Dh)``, ``cos``/``sin`` ``(T, Dh)``."""
    a, b = x.chunk(2, dim=-1)  # (B, H, T, Dh/2) each
    return x * cos + torch.cat([-b, a], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x, rope, bias, sdpa):
        """x ``(B, T, D)`` -> output ``(B, T, D)`` and the attention probabilities ``(B, H, T, T)`` (None with
        ``sdpa``). ``bias`` ``(H or 1, T, T)``: 0 where a query may look, -inf where not, minus ALiBi's
        distance penalty; None means plain causal."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)  # (B, T, D) each
        q, k, v = (t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        if sdpa:  # the fused kernel, for the benchmark's training throughput
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=bias is None)
            att = None
        else:
            if bias is None:
                bias = torch.zeros(T, T, device=x.device).masked_fill(torch.ones(T, T, dtype=torch.bool,
                                                                                 device=x.device).triu(1), -math.inf)
            att = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)) + bias).softmax(dim=-1)  # (B, H, T, T)
            y = att @ v  # (B, H, T, Dh)
        return self.proj(y.transpose(1, 2).reshape(B, T, D)), att


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))  # exact (erf) GELU, as GPT-2


class Block(nn.Module):
    """Pre-LN: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))`` (no MLP in attention-only models)."""

    def __init__(self, cfg):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = Attention(cfg)
        if not cfg.attn_only:
            self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
            self.mlp = MLP(cfg)

    def forward(self, x, rope, bias, sdpa):
        a, att = self.attn(self.ln1(x), rope, bias, sdpa)
        x = x + a
        if hasattr(self, "mlp"):
            x = x + self.mlp(self.ln2(x))
        return x, att


class ReferenceGPT(nn.Module):
    """TinyGPT's architecture, one readable route. ``sdpa=False`` (the default) writes the softmax out and
    can return the attention probabilities; ``sdpa=True`` uses torch's fused attention (the benchmark's
    yardstick for training speed)."""

    def __init__(self, cfg, sdpa: bool = False):
        super().__init__()
        self.cfg, self.sdpa = cfg, sdpa
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = None if cfg.tied else nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)

    def forward(self, ids, mask_fn=None, capture: bool = False):
        """ids ``(B, T)`` -> logits ``(B, T, V)``. ``mask_fn(q_pos, k_pos) -> bool (T, T)`` replaces the
        causal mask (an attention variant, as ``TinyGPT.mask_fn``). With ``capture`` (and ``sdpa=False``),
        also the attention probabilities ``(L, B, H, T, T)`` and the residual stream ``(L + 1, B, T, D)``."""
        cfg = self.cfg
        T = ids.size(1)
        pos = torch.arange(T, device=ids.device)
        x = self.wte(ids)  # (B, T, D)
        if cfg.pos == "learned":
            x = x + self.wpe(pos)
        rope = None
        if cfg.pos == "rope":  # angle of pair i at position t: t / base^(2i/Dh), both halves alike
            hd = cfg.n_embd // cfg.n_head
            inv_freq = 1.0 / cfg.rope_base ** (torch.arange(0, hd, 2, device=ids.device).float() / hd)
            ang = torch.outer(pos.float(), inv_freq).repeat(1, 2)  # (T, Dh)
            rope = ang.cos(), ang.sin()
        bias = None
        if mask_fn is not None or cfg.pos == "alibi":
            allowed = mask_fn(pos, pos) if mask_fn is not None else pos[None, :] <= pos[:, None]  # (T, T)
            bias = torch.zeros(1, T, T, device=ids.device).masked_fill(~allowed, -math.inf)
            if cfg.pos == "alibi":  # each head penalises a key by its slope times its distance to the query
                slopes = torch.tensor(alibi_slopes(cfg.n_head), device=ids.device)
                dist = (pos[:, None] - pos[None, :]).clamp(min=0).float()  # (T, T)
                bias = bias - slopes[:, None, None] * dist  # (H, T, T)
        attentions, residuals = [], [x]
        for block in self.blocks:
            x, att = block(x, rope, bias, self.sdpa)
            attentions.append(att)
            residuals.append(x)
        x = self.ln_f(x)
        logits = x @ self.wte.weight.T if self.lm_head is None else self.lm_head(x)  # (B, T, V)
        if not capture:
            return logits
        if self.sdpa:
            raise ValueError("capture needs the written-out softmax: build the reference with sdpa=False")
        return logits, torch.stack(attentions), torch.stack(residuals)

    def load_tinygpt(self, model):
        """Copy a TinyGPT's weights (the tied head is the token embedding, so it is not a separate entry)."""
        state = dict(model.state_dict())
        if self.cfg.tied:
            state.pop("lm_head.weight")
        self.load_state_dict(state, strict=True)
        return self
