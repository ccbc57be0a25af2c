"""TinyGPT, the fast version: read :mod:`workbench.models.reference` first (the same model, one plain route).

A small decoder-only transformer with learned / RoPE / ALiBi positions, a KV cache and capture.
The fast path uses ``F.scaled_dot_product_attention``; the capture path computes
``softmax(Q K^T / sqrt(d) + mask)`` explicitly so the probabilities can be returned. Both give the same logits.
Attention takes one of five routes (capture; the GPU kernel; SDPA causal; SDPA unmasked for cached queries
that see every key; SDPA with the bias of ALiBi, a cache or a ``mask_fn``), and a cached step of a few tokens
may run in NumPy (:mod:`workbench.models.numpy_step`): ``tests/unit/models/test_reference.py`` checks each
against the reference.

Lesson: ``notebooks/00_tour.ipynb`` (The shipped model).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig
from .interface import LMOutput, ModelError, as_batch, check_ids
from .kv_cache import KVCache
from .numpy_step import MAX_NEW_TOKENS, ChunkedKVCache, NumpyStep


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi's per-head slopes: a geometric sequence 2^(-8/n), 2^(-16/n), ... (interleaved when n is not a power of 2)."""

    def pow2(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        s = pow2(n_head)
    else:
        p = 2 ** math.floor(math.log2(n_head))
        s = pow2(p) + pow2(2 * p)[0::2][: n_head - p]
    return torch.tensor(s, dtype=torch.float32)


def rope_angles(positions: torch.Tensor, head_dim: int, base: float):
    """cos and sin ``(T, Dh)`` for rotary embeddings at integer ``positions`` ``(T,)``."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    ang = positions.float()[:, None] * inv_freq[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``(B, H, T, Dh)`` by position (half-split convention); ``cos``, ``sin`` ``(T, Dh)``, or any
    layout of ``x`` with angle tables that broadcast against it."""
    x1, x2 = x.chunk(2, dim=-1)  # chunk, not slicing: its backward is a cat, not zero-filled buffers
    rotated = torch.cat([-x2, x1], dim=-1)
    if cos.dtype != x.dtype:
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotated * sin


def causal_allowed(q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """Dense causal mask ``(T, S)``: True where the query at ``q_pos[i]`` may see the key at ``k_pos[j]``."""
    return k_pos[None, :] <= q_pos[:, None]


def attention_bias(q_pos, k_pos, slopes, dtype, allowed_fn=causal_allowed) -> torch.Tensor:
    """Additive mask ``(H or 1, T, S)``: 0 where ``allowed_fn`` allows, -inf elsewhere, plus ALiBi if given."""
    allowed = allowed_fn(q_pos, k_pos)  # (T, S)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=q_pos.device).masked_fill(~allowed, float("-inf"))
    if slopes is not None:
        dist = (q_pos[:, None] - k_pos[None, :]).clamp(min=0).to(dtype)
        bias = bias[None] - slopes.to(dtype)[:, None, None] * dist[None]
    else:
        bias = bias[None]
    return bias


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        # Named points for the model layout (workbench.models.layout): queries after RoPE (B, H, T, Dh), keys and
        # values with the cached ones (B, H, S, Dh). Called only while hooked, so the hot path pays one check.
        self.hook_q, self.hook_k, self.hook_v = nn.Identity(), nn.Identity(), nn.Identity()

    def forward(self, x, layer, ctx):
        """x ``(B, T, D)`` -> ``(B, T, D)``; ``ctx`` carries positions, rope angles, cache and capture flag."""
        B, T, D = x.shape
        # split/unbind/squeeze rather than indexing or permuting first: in training their backward is a
        # cat/stack into the projection's layout, not zero-filled buffers and copies
        qk, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).split((2, 1), dim=2)
        if ctx.rope is not None:  # RoPE rotates queries and keys in one pass, (B, T, 2, H, Dh)
            cos, sin = ctx.rope
            qk = apply_rope(qk, cos[:, None, None], sin[:, None, None])
        q, k = (t.transpose(1, 2) for t in qk.unbind(2))  # (B, H, T, Dh)
        v = v.squeeze(2).transpose(1, 2)
        if ctx.cache is not None:
            k, v = ctx.cache.write(layer, k, v)  # (B, H, S, Dh)
        if self.hook_q._forward_hooks or self.hook_k._forward_hooks or self.hook_v._forward_hooks:
            q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        drop = self.dropout if self.training else 0.0
        if ctx.capture:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim)) + ctx.bias()
            att = att.softmax(dim=-1)
            ctx.attentions.append(att)
            y = F.dropout(att, drop, self.training) @ v
        elif _use_gpu_kernel(q, ctx):
            # inference with the cupy (CUDA tensors) or emulator (CPU tensors) back-end: the fused attention kernel
            from .. import kernels

            y = kernels.attention(q, k, v, causal=True)
        elif ctx.simple_causal:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        elif ctx.no_mask:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.bias(), dropout_p=drop)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


def _use_gpu_kernel(q: torch.Tensor, ctx) -> bool:
    """The fused attention kernel serves dense causal inference (it has no backward): on CUDA tensors with
    the cupy back-end, and on CPU tensors with the emulator back-end."""
    if torch.is_grad_enabled() or ctx._slopes is not None or not (ctx.simple_causal or ctx.no_mask):
        return False
    from .. import kernels

    return (kernels.kernels_run_for(q.is_cuda) and q.dtype in kernels.SUPPORTED_DTYPES
            and q.size(-1) in kernels.SUPPORTED_HEAD_DIMS)


def _kernels_on_cpu() -> bool:
    from .. import kernels

    return kernels.kernels_run_for(False)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = None if cfg.attn_only else nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = None if cfg.attn_only else MLP(cfg)
        # No dropout module at all when p == 0: one module call less per sub-layer in decoding.
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else None

    def forward(self, x, layer, ctx):
        if self.drop is None:
            x = x + self.attn(self.ln1(x), layer, ctx)
            return x if self.mlp is None else x + self.mlp(self.ln2(x))
        x = x + self.drop(self.attn(self.ln1(x), layer, ctx))
        if self.mlp is not None:
            x = x + self.drop(self.mlp(self.ln2(x)))
        return x


class _Ctx:
    """Per-forward state shared by the layers (positions, masks, cache, capture buffers)."""

    def __init__(self, model, q_pos, cache, capture, dtype):
        self.cache, self.capture = cache, capture
        self.attentions: list[torch.Tensor] = []
        cfg = model.config
        self.rope = model.rope_table(q_pos) if cfg.pos == "rope" else None
        self._slopes = model.alibi_slopes if cfg.pos == "alibi" else None
        self._q_pos = q_pos
        self._bias = None
        self._dtype = dtype
        past = cache.length if cache is not None else 0
        T = q_pos.numel()
        self._mask_fn = model.mask_fn or causal_allowed
        dense = model.mask_fn is None
        self.simple_causal = past == 0 and self._slopes is None and dense
        self.no_mask = T == 1 and self._slopes is None and dense  # one new query sees every cached key

    def bias(self):
        if self._bias is None:
            S = int(self._q_pos[-1]) + 1
            k_pos = torch.arange(S, device=self._q_pos.device)
            self._bias = attention_bias(self._q_pos, k_pos, self._slopes, self._dtype, self._mask_fn)
        return self._bias


def check_tokenizer(tokenizer, config) -> None:
    """Raise :class:`ModelError` unless ``tokenizer`` is None or has ``config.vocab_size`` tokens (TinyGPT and
    RecurrentLM check this on construction)."""
    if tokenizer is not None and tokenizer.vocab_size != config.vocab_size:
        raise ModelError(f"tokenizer has {tokenizer.vocab_size} tokens but config.vocab_size is {config.vocab_size}")


def _init_module(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, 0.0, 0.02)


def init_gpt2(model: nn.Module, n_layer: int) -> None:
    """GPT-2's initialisation, in place, drawn from torch's global generator: every Linear and Embedding weight
    ``N(0, 0.02)``, Linear biases zero, then each projection into the residual stream (a parameter named
    ``*proj.weight``) ``N(0, 0.02 / sqrt(2 n_layer))``. TinyGPT and RecurrentLM both use it (same draws, same
    order, so a seed gives the same weights as before it was shared)."""
    model.apply(_init_module)
    for name, p in model.named_parameters():
        if name.endswith("proj.weight"):
            nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))


class TinyGPT(nn.Module):
    """A decoder-only transformer satisfying the workbench model interface (see ``interface.py``).

    >>> m = TinyGPT(GPTConfig(vocab_size=257, n_layer=2, n_head=2, n_embd=32, block_size=64))
    >>> m(torch.zeros(1, 5, dtype=torch.long)).logits.shape
    torch.Size([1, 5, 257])
    """

    supports_capture = True
    #: Optional attention-variant hook: ``mask_fn(q_pos (T,), k_pos (S,)) -> bool (T, S)`` replaces the dense
    #: causal mask (sliding window, Lambda mask, ...). None means dense causal (and the fast SDPA path).
    mask_fn = None

    def __init__(self, config: GPTConfig, tokenizer=None, name: str = "tinygpt"):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.name = name
        check_tokenizer(tokenizer, config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.pos == "learned" else None
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tied:
            self.lm_head.weight = self.wte.weight
        self.register_buffer(
            "alibi_slopes", alibi_slopes(config.n_head) if config.pos == "alibi" else None, persistent=False
        )
        init_gpt2(self, config.n_layer)

    def rope_table(self, q_pos: torch.Tensor):
        """cos, sin ``(T, Dh)`` at ``q_pos``, read from a table that covers the context (computed beyond it)."""
        end = int(q_pos[-1]) + 1
        table = getattr(self, "_rope_cache", None)
        if table is None or table[0].device != q_pos.device or table[0].size(0) < end:
            n = max(end, self.config.block_size)
            cos, sin = rope_angles(torch.arange(n, device=q_pos.device), self.config.head_dim, self.config.rope_base)
            self._rope_cache = table = (cos, sin)
        start = int(q_pos[0])
        return table[0][start:end], table[1][start:end]

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the (tied) token and position embeddings, as in scaling-law work."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
        return n

    def forward(self, ids, capture: bool = False, cache: KVCache | None = None) -> LMOutput:
        """ids ``(B, T)`` -> :class:`LMOutput` with logits ``(B, T, V)``; see the interface for capture shapes."""
        ids = as_batch(ids, self.device)
        check_ids(ids, self.config.vocab_size)
        B, T = ids.shape
        past = cache.length if cache is not None else 0
        if past + T > self.config.block_size and (self.wpe is not None or cache is None or past + T > cache.max_len):
            limit = self.config.block_size if self.wpe is not None or cache is None else cache.max_len
            raise ModelError(
                f"sequence of {past + T} tokens is longer than the context of {limit}: "
                "truncate the input (keep the last tokens) or use a long-context policy"
            )
        fast = self._numpy_step_for(ids, cache, capture) if cache is not None else None
        if fast is not None:
            return LMOutput(torch.from_numpy(fast(ids.numpy(), cache)))
        if isinstance(cache, ChunkedKVCache):
            raise ModelError("a ChunkedKVCache runs only on the NumPy step (one new token, no gradients or capture, "
                             "no hooks, eval mode, CPU): use new_cache() for this call")
        q_pos = torch.arange(past, past + T, device=self.device)
        x = self.wte(ids)
        if self.wpe is not None:
            x = x + self.wpe(q_pos)
        x = self.drop(x)
        ctx = _Ctx(self, q_pos, cache, capture, x.dtype)
        residuals = [x] if capture else None
        for i, block in enumerate(self.blocks):
            x = block(x, i, ctx)
            if capture:
                residuals.append(x)
        logits = self.lm_head(self.ln_f(x))
        if cache is not None:
            cache.advance(T)
        if not capture:
            return LMOutput(logits)
        return LMOutput(logits, torch.stack(ctx.attentions), torch.stack(residuals))

    def _numpy_step_for(self, ids, cache, capture):
        """The :class:`NumpyStep` for this call, or None when the torch path must run: gradients wanted,
        capture, an attention variant, ALiBi, a cache policy other than the plain cache, a GPU, more
        than a few new tokens, forward hooks, a submodule in training mode, or the emulator back-end (whose
        attention kernel must then run)."""
        chunked = type(cache) is ChunkedKVCache
        if (ids.size(1) > (1 if chunked else MAX_NEW_TOKENS) or not (chunked or type(cache) is KVCache) or capture
                or self.mask_fn is not None or self.config.pos == "alibi" or self.training or torch.is_grad_enabled()
                or ids.is_cuda or _kernels_on_cpu()):
            return None
        w = self.wte.weight
        if w.dtype not in (torch.float32, torch.float64) or w.is_cuda:
            return None
        if (cache.k.dtype != w.numpy(force=True).dtype) if chunked else (cache.k.dtype != w.dtype or cache.k.is_cuda):
            return None
        fast = self.__dict__.get("_numpy_step")
        if fast is None or not fast.current(self):
            fast = self.__dict__["_numpy_step"] = NumpyStep(self)
        return fast if fast.applies() else None

    def refresh_fast_path(self) -> None:
        """Forget the NumPy decoding step's weight copies; they are rebuilt on the next cached step. Needed
        only after changes no counter records: writing into weights through ``p.data`` or changing a module's
        settings (such as a LayerNorm's ``eps``)."""
        self.__dict__.pop("_numpy_step", None)

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> KVCache:
        """An empty KV cache for ``batch_size`` sequences of up to ``max_len`` (default: the context) tokens."""
        c = self.config
        max_len = max_len or c.block_size
        if self.wpe is not None and max_len > c.block_size:
            raise ModelError(f"learned positions stop at {c.block_size}; max_len {max_len} is too long")
        return KVCache(c.n_layer, batch_size, c.n_head, c.head_dim, max_len,
                       dtype=self.wte.weight.dtype, device=self.device)

    def new_step_cache(self, batch_size: int = 1, max_len: int | None = None):
        """A cache for one-token steps without gradients: a :class:`ChunkedKVCache` (read as one block: faster
        where a step runs at memory speed, as in the compressor) when the NumPy step can run them now, else
        :meth:`new_cache`."""
        c, dtype = self.config, self.wte.weight.dtype
        if dtype not in (torch.float32, torch.float64) or self.device.type != "cpu":
            return self.new_cache(batch_size, max_len)
        max_len = max_len or c.block_size
        if self.wpe is not None and max_len > c.block_size:
            return self.new_cache(batch_size, max_len)  # its error
        chunked = ChunkedKVCache(c.n_layer, batch_size, c.n_head, c.head_dim, max_len,
                                 dtype=np.float64 if dtype == torch.float64 else np.float32)
        with torch.inference_mode():
            ok = self._numpy_step_for(torch.zeros((batch_size, 1), dtype=torch.long), chunked, False) is not None
        return chunked if ok else self.new_cache(batch_size, max_len)

    def step_fn(self, cache):
        """A function ``ids`` ``(B, 1)`` int64 NumPy -> next-token logits ``(B, V)`` NumPy that feeds one token per row
        through ``cache`` (a :meth:`new_step_cache`), for a loop of many steps: the same arithmetic as :meth:`step`
        without its per-call checks (ids are not range-checked, and the weights must not change while it is used).
        None where the NumPy step does not apply (then call :meth:`step`)."""
        ids = torch.zeros((cache.batch_size, 1), dtype=torch.long)
        with torch.inference_mode():
            fast = self._numpy_step_for(ids, cache, False)
        if fast is None:
            return None
        return lambda x: fast(x, cache)[:, -1]

    def step(self, ids, cache: KVCache, capture: bool = False) -> LMOutput:
        """Feed new tokens ``(B, t)`` through the cache; costs O(cached length) per token, not a recompute."""
        return self.forward(ids, capture=capture, cache=cache)
