"""Capture attention probabilities ``(L, H, Tq, Tk)`` from any workbench model, within a memory budget.

Three routes:

* TinyGPT: one ordinary forward pass with hooks on each layer's ``qkv`` projection records queries, keys and
  values; the probabilities ``softmax(Q K^T / sqrt(d) + mask)`` (RoPE, ALiBi and the model's ``mask_fn``
  included) are then recomputed only for the requested layers, heads and query window. Nothing outside the
  request is ever materialised, so T = 4,096 fits in memory one head at a time.
* HF models of any family whose parts :mod:`workbench.models.layout` finds (every decoder family of transformers 5
  tried: GPT-2, GPT-NeoX, Llama, Qwen2/3, Mistral, Gemma 2/3, Phi, Phi-3, OPT, StableLM, OLMo 2): the same idea
  through the layout's ``attn.q/k/v`` points during one forward pass: queries and keys as the model's attention
  receives them (RoPE and query/key norms applied, grouped-query heads mapped as ``repeat_kv`` does) are kept and
  the probabilities recomputed on demand with the layer's scale, soft-cap and sliding window, so the budget
  applies to the request only. ``meta["mechanism"] == "recompute"``.
* any other model with ``supports_capture``: its own ``forward(capture=True)`` is called and sliced (for
  ``from_hf`` models that switches to eager attention for the call, ``meta["mechanism"] == "eager_switch"``, with
  the reason in ``meta["fallback_reason"]``). That route materialises every layer and head, so the budget is
  checked on the full ``(L, H, T, T)`` tensor.

>>> from workbench.models import TinyGPT, GPTConfig
>>> from workbench.tokenizers import ByteTokenizer
>>> m = TinyGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64), ByteTokenizer())
>>> cap = capture_attention(m, "hello", layers=[1])
>>> cap.probs.shape  # (L', H, Tq, Tk)
(1, 2, 5, 5)

Lesson: ``notebooks/02_attention.ipynb`` (1 · Attention sinks).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from workbench.models.encode import encode_one
from workbench.models.interface import ModelError

from .errors import (
    AttentionError,
    BudgetExceededError,
    CaptureNotSupportedError,
    ContextLengthError,
    EmptyInputError,
    IndexOutOfRangeError,
    PolicyError,
    check_index,
)
from .variants import Policy, as_policy, use_policy

BYTES_PER_PROB = 4  # float32


@dataclass
class AttentionCapture:
    """Attention probabilities of one sequence.

    ids ``(T,)`` and tokens (``T`` printable strings) describe the whole input. ``probs`` is
    ``(L', H', Tq, Tk)`` float32 for the model layers ``layers`` and heads ``heads``: row ``r`` is the query at
    position ``q_start + r``, column ``j`` the key at position ``j``, and ``Tk = q_start + Tq`` (keys start at 0).
    ``value_norms`` ``(L', H', Tk)`` is ``||v_j W_O^h||``, the norm of what key ``j`` would write into the residual
    stream through head ``h`` (TinyGPT and any HF model whose layout is found; None otherwise, with the reason in
    ``meta["value_norms"]``). ``policy`` is the attention variant used.
    """

    ids: np.ndarray
    tokens: list[str]
    probs: np.ndarray
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    q_start: int = 0
    value_norms: np.ndarray | None = None
    policy: Policy | None = None
    model_name: str = ""
    n_layer: int = 0
    n_head: int = 0
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def T(self) -> int:
        """Length of the whole input."""
        return len(self.ids)

    @property
    def q_end(self) -> int:
        return self.q_start + self.probs.shape[2]

    @property
    def nbytes(self) -> int:
        return int(self.probs.nbytes + (0 if self.value_norms is None else self.value_norms.nbytes))

    def _li(self, layer: int) -> int:
        if layer not in self.layers:
            raise IndexOutOfRangeError(f"layer {layer} is not in this capture (layers {list(self.layers)})")
        return self.layers.index(layer)

    def _hi(self, head: int) -> int:
        if head not in self.heads:
            raise IndexOutOfRangeError(f"head {head} is not in this capture (heads {list(self.heads)})")
        return self.heads.index(head)

    def head(self, layer: int, head: int) -> np.ndarray:
        """The pattern ``(Tq, Tk)`` of model layer ``layer``, head ``head``."""
        return self.probs[self._li(layer), self._hi(head)]

    def allowed(self) -> np.ndarray:
        """Bool ``(Tq, Tk)``: which keys each captured query may see under the capture's policy."""
        pol = self.policy or Policy("dense")
        q = torch.arange(self.q_start, self.q_end)
        k = torch.arange(self.q_end)
        return pol.allowed(q, k).numpy()


def token_labels(model, ids: Sequence[int]) -> list[str]:
    """Printable strings for ``ids`` from the model's tokenizer (the id itself when there is none)."""
    tok = getattr(model, "tokenizer", None)
    out = []
    for i in ids:
        try:
            out.append(tok.token_str(int(i)) if hasattr(tok, "token_str") else tok.decode([int(i)]))
        except Exception:
            out.append(str(int(i)))
    return out


def encode_input(model, text_or_ids) -> torch.Tensor:
    """Text or ids -> a ``(T,)`` long tensor (:func:`workbench.models.encode.encode_one`); empty input raises
    :class:`EmptyInputError`, an id outside the vocabulary :class:`IndexOutOfRangeError`, the rest
    :class:`AttentionError`."""
    return encode_one(model, text_or_ids, error=AttentionError, empty=EmptyInputError,
                      out_of_range=IndexOutOfRangeError)[0]


def _select(name: str, sel, n: int) -> tuple[int, ...]:
    if sel is None:
        return tuple(range(n))
    items = [sel] if isinstance(sel, (int, np.integer)) else list(sel)
    if not items:
        raise IndexOutOfRangeError(f"empty {name} selection: give at least one {name} index")
    for x in items:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
            raise IndexOutOfRangeError(f"{name} indices must be ints, got {x!r}")
        check_index(name, x, n)
    return tuple(int(x) for x in items)


def _require_capture(model) -> None:
    reason = getattr(model, "no_attention_reason", None)  # a model without attention says why (RecurrentLM)
    if reason:
        raise CaptureNotSupportedError(
            f"{getattr(model, 'name', type(model).__name__)} has no attention to capture: {reason}")
    if not getattr(model, "supports_capture", False):
        raise CaptureNotSupportedError(
            f"{getattr(model, 'name', type(model).__name__)} does not support attention capture "
            "(supports_capture is False): wrap an HF model with workbench.models.from_hf, or use a TinyGPT"
        )


def _window(window, T: int) -> tuple[int, int]:
    if window is None:
        return 0, T
    if isinstance(window, (int, np.integer)) and not isinstance(window, bool):
        if window < 1:
            raise IndexOutOfRangeError(f"window must be >= 1 token, got {window}")
        return max(0, T - int(window)), T
    try:
        start, end = (int(x) for x in window)
    except (TypeError, ValueError):
        raise AttentionError(f"window must be None, an int (last n queries) or (start, end), got {window!r}") from None
    if not 0 <= start < end <= T:
        raise IndexOutOfRangeError(f"window ({start}, {end}) must satisfy 0 <= start < end <= T = {T}")
    return start, end


def capture_bytes(n_layers: int, n_heads: int, n_queries: int, n_keys: int) -> int:
    """Bytes of a float32 capture ``(L', H', Tq, Tk)``."""
    return n_layers * n_heads * n_queries * n_keys * BYTES_PER_PROB


def _check_budget(n_layers: int, n_heads: int, start: int, end: int, budget_mb: float | None) -> None:
    """Raise :class:`BudgetExceededError`, saying how to narrow the request, when a capture would not fit."""
    need = capture_bytes(n_layers, n_heads, end - start, end)
    if budget_mb is not None and need > budget_mb * 2**20:
        per_head = capture_bytes(1, 1, end - start, end)
        raise BudgetExceededError(
            f"capturing {n_layers} layers x {n_heads} heads x {end - start} queries x {end} keys needs "
            f"{need / 2**20:.0f} MB > budget {budget_mb} MB: narrow the request with layers=[...], heads=[...] "
            f"(one head is {per_head / 2**20:.1f} MB) or window=n (the last n queries) / (start, end), "
            "or raise budget_mb"
        )


def _torch_module_of(model):
    m = getattr(model, "hf", None)
    return m if isinstance(m, torch.nn.Module) else None


def attn_implementation(model) -> str | None:
    """The attention back-end an HF model runs (``config._attn_implementation``), or None."""
    cfg = getattr(_torch_module_of(model), "config", None)
    return getattr(cfg, "_attn_implementation", None)


def _is_tinygpt(model) -> bool:
    from workbench.models.tinygpt import TinyGPT

    return isinstance(model, TinyGPT)


class AttentionProbe:
    """One forward pass over a sequence; attention probabilities computed on demand per layer and head.

    For TinyGPT it keeps the post-RoPE queries and keys and the values of every layer, ``(H, T, Dh)`` each, and
    :meth:`probs` computes ``(H', Tq, Tk)`` for one layer in O(H' Tq Tk) memory; so it does for HF models of a
    family whose layout :mod:`workbench.models.layout` finds (queries and keys at its named points). Other models are captured whole once (their own capture) and sliced. ``meta`` says which.
    """

    def __init__(self, model, text_or_ids, policy=None, budget_mb: float | None = 512, recompute: bool = True):
        _require_capture(model)
        self.model = model
        self.ids = encode_input(model, text_or_ids)
        self.T = T = int(self.ids.numel())
        cfg = model.config
        self.n_layer, self.n_head = cfg.n_layer, cfg.n_head
        self.policy = as_policy(policy)
        ctx = cfg.block_size
        if T > ctx and self.policy is None:
            raise ContextLengthError(
                f"{T} tokens exceed the model's context of {ctx} and no long-context policy was given: pass "
                "policy=dense() (extrapolate RoPE/ALiBi), sliding_window(w) or lambda_mask(g, w), or a shorter text"
            )
        if self.policy is not None and self.policy.kind == "streaming":
            raise PolicyError(
                "capture under a StreamingLLM cache is not a fixed (T, T) pattern; capture with "
                f"lambda_mask({self.policy.n_sink}, {self.policy.window}), which lets each query see the same keys"
            )
        self.tiny = _is_tinygpt(model)
        self.budget_mb = budget_mb
        self.recompute = recompute
        #: how the probabilities were obtained ("mechanism": "recompute", "eager_switch" or "model_capture"),
        #: the HF model's attention back-end ("attn_implementation") and, for a fallback, why ("fallback_reason")
        self.meta: dict = {"mechanism": "recompute"} if self.tiny else {}
        self._full = None
        self._lay = None  # the model's layout (HF recompute route), with ...
        self._rec: dict = {}  # ... each layer's recorded queries, keys and values, batch 0, float32
        #: why value norms are unavailable (None when they are available)
        self.value_norm_error: str | None = None
        self._bias_cache: dict = {}
        if self.tiny:
            self._run_tiny()
        else:
            self._run_generic()

    # -- TinyGPT route ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _run_tiny(self):
        from workbench.models.layout import layout_of

        m, T = self.model, self.T
        cfg = m.config
        if T > cfg.block_size and cfg.pos == "learned":
            raise ContextLengthError(
                f"{T} tokens exceed the context of {cfg.block_size} and this model has learned positions, "
                "which stop there: shorten the text (keep the last tokens)"
            )
        lay = layout_of(m)
        rec = {"q": [None] * lay.n_layer, "k": [None] * lay.n_layer, "v": [None] * lay.n_layer}

        def keep(part, i):
            return lambda t: rec[part].__setitem__(i, t[0].detach())  # (H, T, Dh), batch 0

        fns = {f"blocks.{i}.attn.{p}": keep(p, i) for i in range(lay.n_layer) for p in ("q", "k", "v")}
        with lay.hooks(fns), use_policy(m, self.policy):
            ids = self.ids[None].to(m.device)
            cache = m.new_cache(1, max_len=T) if T > cfg.block_size else None
            out = m.forward(ids, cache=cache) if cache is not None else m.forward(ids)
        self.logits_last = out.logits[0, -1].float()
        self._q, self._k, self._v = rec["q"], rec["k"], rec["v"]

    def _kernel_masks(self) -> tuple | None:
        """(window, sinks) for the fused attention kernel when it can compute this probe's probabilities
        (CUDA tensors with the cupy back-end or CPU tensors with the emulator, a mask it supports, no ALiBi, a
        supported head size), else None."""
        from workbench import kernels

        cfg = self.model.config
        q = self._q[0]
        if (cfg.pos == "alibi" or cfg.head_dim not in kernels.SUPPORTED_HEAD_DIMS
                or q.dtype not in kernels.SUPPORTED_DTYPES or not kernels.kernels_run_for(q.is_cuda)):
            return None
        pol = self.policy
        if pol is None or pol.kind == "dense":
            return None, 0
        # a window beyond the sequence is no window (and must fit the kernel's 32-bit argument)
        return (min(pol.window, self.T), min(pol.n_sink, self.T)) if pol.kind in ("sliding", "lambda") else None

    @torch.no_grad()
    def _tiny_probs(self, layer: int, heads: Sequence[int], start: int, end: int) -> torch.Tensor:
        from workbench.models.tinygpt import attention_bias

        m = self.model
        cfg = m.config
        hs = list(heads)
        q = self._q[layer][hs, start:end]  # (H', Tq, Dh)
        k = self._k[layer][hs, :end]  # (H', Tk, Dh)
        masks = self._kernel_masks()
        if masks is not None:  # the fused attention kernel writes the selected heads' probabilities
            from workbench import kernels

            v = self._v[layer][hs, :end]
            _, probs = kernels.attention(q[None], k[None], v[None], causal=True, window=masks[0], sinks=masks[1],
                                         return_probs_heads=range(len(hs)))
            return probs[0]
        dev = q.device
        key = (start, end, tuple(hs) if cfg.pos == "alibi" else None)
        bias = self._bias_cache.get(key)
        if bias is None:  # the mask (+ ALiBi) depends on the window, not on the head: reuse it across clicks
            q_pos, k_pos = torch.arange(start, end, device=dev), torch.arange(end, device=dev)
            slopes = m.alibi_slopes[hs] if cfg.pos == "alibi" else None
            allowed_fn = self.policy.allowed if self.policy is not None else (lambda a, b: b[None, :] <= a[:, None])
            bias = attention_bias(q_pos, k_pos, slopes, q.dtype, allowed_fn)
            self._bias_cache = {key: bias}
        # one fused pass: bias + scale * q k^T (baddbmm), then the softmax in place of the scores
        att = torch.baddbmm(bias.expand(q.size(0), *bias.shape) if bias.dim() == 2 else bias, q, k.transpose(-2, -1),
                            alpha=1.0 / math.sqrt(cfg.head_dim))
        return torch.softmax(att, dim=-1, out=att) if att.dtype == torch.float32 else att.softmax(dim=-1).float()

    # -- generic route ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _run_generic(self):
        from workbench.models.layout import LayoutError, layout_of

        from .variants import hf_forward_logits

        m, T = self.model, self.T
        dev = getattr(m, "device", None)
        ids = self.ids[None].to(dev) if isinstance(dev, torch.device) else self.ids[None]
        self.meta["attn_implementation"] = attn_implementation(m)
        lay = None
        if self.recompute:
            try:
                lay = layout_of(m)
            except LayoutError as e:
                self.meta["fallback_reason"] = str(e)
        else:
            self.meta["fallback_reason"] = "recompute=False"
        pol = self.policy
        if pol is not None and pol.kind != "dense" and lay is None:
            raise PolicyError(f"attention variants need the model's layout: {self.meta['fallback_reason']}")
        if lay is not None:  # one ordinary forward pass; probabilities computed on demand from q and k
            L = lay.n_layer
            rec = {"q": [None] * L, "k": [None] * L, "v": [None] * L}

            def keep(part, i):  # in the model's dtype (bfloat16 weights keep bfloat16 copies); upcast per block
                return lambda t: rec[part].__setitem__(i, t[0].detach())

            fns = {f"blocks.{i}.attn.{p}": keep(p, i) for i in range(L) for p in ("q", "k", "v")}
            # only the last position's logits are kept: T x V logits would dominate the memory of a long text
            self.logits_last = hf_forward_logits(m, ids, pol, lay, fns, last_only=True)[0, -1].float()
            self._lay, self._rec = lay, rec
            self.meta["mechanism"] = "recompute"
            return
        # fallback: the model's own capture (for from_hf models, a forward pass switched to eager attention)
        self.meta["mechanism"] = "eager_switch" if _torch_module_of(m) is not None else "model_capture"
        self.value_norm_error = f"value vectors need the model's layout: {self.meta.get('fallback_reason')}"
        need = capture_bytes(self.n_layer, self.n_head, T, T)
        if self.budget_mb is not None and need > self.budget_mb * 2**20:
            raise BudgetExceededError(
                f"this model's own capture holds all {self.n_layer} layers x {self.n_head} heads x {T} x {T} "
                f"({need / 2**20:.0f} MB) > budget {self.budget_mb} MB: use a shorter text "
                f"(at most {int(math.sqrt(self.budget_mb * 2**20 / (BYTES_PER_PROB * self.n_layer * self.n_head)))} "
                "tokens) or raise budget_mb"
            )
        try:
            out = m.forward(ids, capture=True)
        except ModelError as e:
            raise ContextLengthError(str(e)) from None
        if out.attentions is None:
            raise CaptureNotSupportedError(f"{type(m).__name__}.forward(capture=True) returned no attentions")
        self._full = out.attentions[:, 0].float()  # (L, H, T, T)
        self.logits_last = out.logits[0, -1].float()

    def _allowed(self, start: int, end: int, window: int | None, device) -> torch.Tensor:
        """Bool ``(Tq, Tk)``: which keys queries ``start..end-1`` see (causal, the layer's own sliding window, and
        the probe's policy)."""
        q = torch.arange(start, end, device=device)
        k = torch.arange(end, device=device)
        ok = k[None, :] <= q[:, None]
        if window:
            ok &= k[None, :] > q[:, None] - window
        if self.policy is not None:
            ok &= self.policy.allowed(q, k)
        return ok

    @torch.no_grad()
    def _layout_probs(self, layer: int, heads: Sequence[int], start: int, end: int) -> torch.Tensor:
        """``softmax(Q K^T * scaling + mask)`` ``(H', Tq, Tk)`` from the recorded queries and keys, as the model's
        attention computes it (soft-cap and grouped-query heads included)."""
        lay = self._lay
        hs = list(heads)
        rep = lay.n_head // lay.n_kv
        q = self._rec["q"][layer][hs, start:end].float()  # (H', Tq, Dh)
        k = self._rec["k"][layer][[h // rep for h in hs], :end].float()  # query head h reads kv head h // rep
        key = (start, end, lay.sliding_window[layer], q.device)
        bias = self._bias_cache.get(key)
        if bias is None:
            ok = self._allowed(start, end, lay.sliding_window[layer], q.device)
            bias = torch.zeros(ok.shape, dtype=q.dtype, device=q.device).masked_fill(~ok, float("-inf"))
            self._bias_cache = {key: bias}
        cap = lay.softcap[layer]
        if cap:
            att = (q @ k.transpose(-2, -1)) * lay.scaling[layer]
            att = torch.tanh(att / cap) * cap + bias
        else:  # one fused pass: bias + scale * q k^T
            att = torch.baddbmm(bias.expand(q.size(0), *bias.shape), q, k.transpose(-2, -1), alpha=lay.scaling[layer])
        return torch.softmax(att, dim=-1, out=att)

    # -- public -------------------------------------------------------------------------------------------------
    def probs(self, layer: int, heads=None, window=None) -> torch.Tensor:
        """Probabilities ``(H', Tq, Tk)`` of one layer for ``heads`` (default all) and the query ``window``."""
        (layer,) = _select("layer", layer, self.n_layer)
        hs = _select("head", heads, self.n_head)
        start, end = _window(window, self.T)
        if self._full is not None:
            return self._full[layer, list(hs), start:end, :end]
        if self._lay is not None:
            return self._layout_probs(layer, hs, start, end)
        return self._tiny_probs(layer, hs, start, end)

    @property
    def has_value_norms(self) -> bool:
        return self.tiny or self._lay is not None

    def value_vectors(self, layer: int, head: int, end: int | None = None) -> torch.Tensor:
        """What each key ``j < end`` writes into the residual stream through one head, ``f_j = v_j W_O^h``
        ``(Tk, D)``: the attention block's output at query ``i`` is ``sum_h sum_j a_ij f_j`` plus the bias of
        ``W_O``. TinyGPT and HF models whose layout is found; :class:`CaptureNotSupportedError` otherwise."""
        (layer,) = _select("layer", layer, self.n_layer)
        (head,) = _select("head", head, self.n_head)
        end = end or self.T
        v = self._values(layer, head, end)
        with torch.no_grad():
            W = self._w_out(layer)[head]  # (Dh, D)
            return v @ W

    def _values(self, layer: int, head: int, end: int) -> torch.Tensor:
        """One head's values ``(Tk, Dh)``, float32."""
        if self.tiny:
            return self._v[layer][head, :end].float()
        if self._lay is not None:
            return self._rec["v"][layer][head // (self._lay.n_head // self._lay.n_kv), :end].float()
        raise CaptureNotSupportedError(self.value_norm_error or "this model exposes no value vectors")

    def _w_out(self, layer: int) -> torch.Tensor:
        """``W_O`` of one layer ``(H, Dh, D)``, float32, looked up once per layer."""
        cache = self.__dict__.setdefault("_w_out_cache", {})
        if layer not in cache:
            from workbench.models.layout import layout_of

            cache[layer] = layout_of(self.model).w_out(layer).float()
        return cache[layer]

    def value_norms(self, layer: int, heads=None, end: int | None = None) -> torch.Tensor | None:
        """``||v_j W_O^h||`` ``(H', Tk)`` (TinyGPT and HF models with a layout; None otherwise, reason in
        ``value_norm_error``)."""
        (layer,) = _select("layer", layer, self.n_layer)
        hs = _select("head", heads, self.n_head)
        if not self.has_value_norms:
            return None
        end = end or self.T
        W = self._w_out(layer)
        out = []
        with torch.no_grad():
            for h in hs:  # ||v W_h||^2 = v (W_h W_h^T) v^T: (Tk, Dh) work per key instead of (Tk, D)
                v = self._values(layer, h, end)
                G = W[h] @ W[h].T  # (Dh, Dh)
                out.append(((v @ G) * v).sum(-1).clamp_min(0).sqrt())
        return torch.stack(out)

    def capture(self, layers=None, heads=None, window=None, value_norms: bool = True) -> AttentionCapture:
        """Materialise an :class:`AttentionCapture` for a selection, after checking the budget."""
        import time

        t0 = time.perf_counter()
        ls = _select("layer", layers, self.n_layer)
        hs = _select("head", heads, self.n_head)
        start, end = _window(window, self.T)
        _check_budget(len(ls), len(hs), start, end, self.budget_mb)
        probs = np.empty((len(ls), len(hs), end - start, end), dtype=np.float32)
        vn = np.empty((len(ls), len(hs), end), dtype=np.float32) if (value_norms and self.has_value_norms) else None
        for a, layer in enumerate(ls):
            probs[a] = self.probs(layer, hs, (start, end)).cpu().numpy()
            if vn is not None:
                vn[a] = self.value_norms(layer, hs, end).cpu().numpy()
        ids = self.ids.cpu().numpy()
        return AttentionCapture(
            ids=ids,
            tokens=token_labels(self.model, ids),
            probs=probs,
            layers=ls,
            heads=hs,
            q_start=start,
            value_norms=vn,
            policy=self.policy,
            model_name=getattr(self.model, "name", type(self.model).__name__),
            n_layer=self.n_layer,
            n_head=self.n_head,
            seconds=time.perf_counter() - t0,
            meta={**self.meta, **({} if vn is not None else {
                "value_norms": "not requested (value_norms=False)" if not value_norms else self.value_norm_error})},
        )


def capture_attention(
    model, text_or_ids, layers=None, heads=None, window=None, budget_mb: float | None = 512, policy=None,
    value_norms: bool = True, recompute: bool = True,
) -> AttentionCapture:
    """Attention probabilities ``(L', H', Tq, Tk)`` of ``model`` on one text or id sequence.

    layers, heads: an index or a list (default all). window: None (every query), an int ``n`` (the last ``n``
    queries) or ``(start, end)`` (queries ``start..end-1``; keys are always ``0..end-1``). budget_mb: the capture
    must fit (float32), else :class:`BudgetExceededError` says how to narrow it. policy: an attention variant
    (:mod:`workbench.attention.variants`); needed when the text is longer than the model's context. recompute:
    for HF models, recompute from hooked queries and keys when the family is supported (default); False forces
    the model's own capture. ``meta["mechanism"]`` says which route was taken.

    Errors: :class:`EmptyInputError`, :class:`IndexOutOfRangeError`, :class:`ContextLengthError`,
    :class:`CaptureNotSupportedError`, :class:`BudgetExceededError`.
    """
    import time

    t0 = time.perf_counter()
    _require_capture(model)
    # validate the cheap things before running the model
    cfg = model.config
    ls = _select("layer", layers, cfg.n_layer)
    hs = _select("head", heads, cfg.n_head)
    ids = encode_input(model, text_or_ids)
    start, end = _window(window, int(ids.numel()))
    _check_budget(len(ls), len(hs), start, end, budget_mb)
    probe = AttentionProbe(model, ids, policy=policy, budget_mb=budget_mb, recompute=recompute)
    cap = probe.capture(ls, hs, (start, end), value_norms=value_norms)
    cap.seconds = time.perf_counter() - t0
    return cap
