"""Attention probabilities of HF models recomputed from hooked queries and keys, whatever the attention back-end.

During one ordinary forward pass (SDPA, flash or eager: the model is never switched) hooks keep each layer's
queries and keys; :meth:`QKRecorder.probs` then computes ``softmax(Q K^T * scaling + mask)`` for the requested
heads and query window only.

Supported layouts (found by module names and attention class):

* GPT-2: ``h.N.attn`` (``GPT2Attention``); q and k are the first two thirds of the ``c_attn`` output, heads of
  ``n_embd / n_head``; the scale is the module's ``scaling`` (``1/sqrt(head_dim)`` when
  ``config.scale_attn_weights``, divided by ``layer + 1`` when ``config.scale_attn_by_inverse_layer_idx``).
* Llama-style (``LlamaAttention``, ``MistralAttention``, ``Qwen2Attention``): ``layers.N.self_attn`` with
  ``q_proj`` / ``k_proj``; the rotary embedding is applied with the modeling module's own ``apply_rotary_pos_emb``
  to the ``position_embeddings=(cos, sin)`` the attention module receives; grouped-query attention: query head
  ``h`` reads kv head ``h // (n_head / n_kv)``; the scale is ``module.scaling``; a sliding window (Mistral,
  Qwen2 sliding layers) is applied as HF's mask does (key ``j`` visible from query ``i`` iff
  ``i - window < j <= i``).

Anything else raises :class:`CaptureNotSupportedError`; :mod:`workbench.attention.capture` then falls back to the
model's own capture (for ``from_hf`` models: a forward pass switched to eager attention).

>>> RECOMPUTE_SUPPORTED.split(";")[0]
'GPT-2 (GPT2Attention)'
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import torch

from .errors import CaptureNotSupportedError
from .hf_values import _torch_module
from .hooks import HookedRecorder

RECOMPUTE_SUPPORTED = "GPT-2 (GPT2Attention); Llama-style (LlamaAttention, MistralAttention, Qwen2Attention)"

_LLAMA_STYLE = ("LlamaAttention", "MistralAttention", "Qwen2Attention")
_GPT2_PAT = re.compile(r"(^|\.)h\.(\d+)\.attn$")
_LLAMA_PAT = re.compile(r"(^|\.)layers\.(\d+)\.self_attn$")


@dataclass
class QKLayout:
    """Where a model's queries and keys come from, and how they are scored."""

    family: str  # "gpt2" or "llama"
    attn_modules: list  # per layer, the attention module
    n_head: int
    n_kv: int
    head_dim: int
    scaling: list  # per layer, the factor on Q K^T
    sliding_window: list  # per layer, None or the window (keys i - w < j <= i)
    rope_fn: object = None  # Llama-style: the modeling module's apply_rotary_pos_emb


def qk_layout(model) -> QKLayout:
    """Find the attention modules of an HF model whose queries and keys can be hooked; otherwise
    :class:`CaptureNotSupportedError`."""
    root = _torch_module(model)
    name = type(root).__name__ if root is not None else type(model).__name__
    if root is None:
        raise CaptureNotSupportedError(f"{name} has no torch module to hook: recompute supports {RECOMPUTE_SUPPORTED}")
    L, H = model.config.n_layer, model.config.n_head
    found: dict[str, dict[int, torch.nn.Module]] = {"gpt2": {}, "llama": {}}
    for n, mod in root.named_modules():
        cls = type(mod).__name__
        if cls == "GPT2Attention" and (m := _GPT2_PAT.search(n)):
            found["gpt2"][int(m.group(2))] = mod
        elif cls in _LLAMA_STYLE and (m := _LLAMA_PAT.search(n)):
            found["llama"][int(m.group(2))] = mod
    for family, mods in found.items():
        if len(mods) != L or sorted(mods) != list(range(L)):
            continue
        attn = [mods[i] for i in range(L)]
        if family == "gpt2":
            return _gpt2_layout(name, attn, H)
        return _llama_layout(name, attn, H)
    raise CaptureNotSupportedError(
        f"recomputing attention from hooked queries and keys is not supported for {name}: supported are "
        f"{RECOMPUTE_SUPPORTED}")


def _gpt2_layout(name, attn, H) -> QKLayout:
    a0 = attn[0]
    if getattr(a0, "is_cross_attention", False) or type(a0.c_attn).__name__ != "Conv1D":
        raise CaptureNotSupportedError(f"{name}: GPT-2 attention without a self-attention c_attn")
    D = a0.c_attn.weight.size(0)
    if a0.c_attn.weight.size(1) != 3 * D or D % H:
        raise CaptureNotSupportedError(f"{name}: c_attn does not output [q | k | v] of width {D} each")
    Dh = D // H
    scales = []
    for i, a in enumerate(attn):
        s = getattr(a, "scaling", None)
        if s is None:  # older transformers: from the config flags, as GPT2Attention does
            s = Dh ** -0.5 if getattr(a, "scale_attn_weights", True) else 1.0
            if getattr(a, "scale_attn_by_inverse_layer_idx", False):
                s /= float(i + 1)
        scales.append(float(s))
    return QKLayout("gpt2", attn, H, H, Dh, scales, [None] * len(attn))


def _llama_layout(name, attn, H) -> QKLayout:
    a0 = attn[0]
    mod = sys.modules.get(type(a0).__module__)
    rope = getattr(mod, "apply_rotary_pos_emb", None)
    if rope is None:
        raise CaptureNotSupportedError(f"{name}: {type(a0).__module__} has no apply_rotary_pos_emb")
    for part in ("q_proj", "k_proj"):
        if not isinstance(getattr(a0, part, None), torch.nn.Linear):
            raise CaptureNotSupportedError(f"{name}: {type(a0).__name__} has no nn.Linear {part}")
    if hasattr(a0, "q_norm") or hasattr(a0, "k_norm"):
        raise CaptureNotSupportedError(f"{name}: query/key norms are not supported by the recompute")
    Dh = getattr(a0, "head_dim", None) or a0.q_proj.out_features // H
    if a0.q_proj.out_features != H * Dh or a0.k_proj.out_features % Dh:
        raise CaptureNotSupportedError(f"{name}: q_proj/k_proj widths do not match {H} heads of {Dh}")
    n_kv = a0.k_proj.out_features // Dh
    if H % n_kv:
        raise CaptureNotSupportedError(f"{name}: {n_kv} kv heads do not divide {H} query heads")
    scales, windows = [], []
    for a in attn:
        scales.append(float(getattr(a, "scaling", Dh ** -0.5)))
        if hasattr(a, "sliding_window"):
            w = a.sliding_window
        else:
            w = getattr(getattr(a, "config", None), "sliding_window", None)
        windows.append(int(w) if w else None)
    return QKLayout("llama", attn, H, n_kv, Dh, scales, windows, rope)


class QKRecorder(HookedRecorder):
    """Hooks that keep each layer's queries ``(H, T, Dh)`` and keys ``(n_kv, T, Dh)`` (post-RoPE, float32, batch
    0) during one forward pass, and compute probabilities from them on demand."""

    def __init__(self, layout: QKLayout):
        super().__init__()
        self.layout = layout
        L = len(layout.attn_modules)
        self.q: list = [None] * L
        self.k: list = [None] * L
        self._raw: list = [None] * L  # Llama-style: (q, k) before RoPE, waiting for the module's cos/sin
        self._bias_cache: dict = {}

    # -- hooks --------------------------------------------------------------------------------------------------
    def __enter__(self):
        lay = self.layout
        for i, attn in enumerate(lay.attn_modules):
            if lay.family == "gpt2":
                self._hooks.append(attn.c_attn.register_forward_hook(
                    lambda m, inp, out, i=i: self._gpt2(i, out)))
            else:
                self._hooks.append(attn.q_proj.register_forward_hook(
                    lambda m, inp, out, i=i: self._raw_part(i, 0, out)))
                self._hooks.append(attn.k_proj.register_forward_hook(
                    lambda m, inp, out, i=i: self._raw_part(i, 1, out)))
                self._hooks.append(attn.register_forward_pre_hook(
                    lambda m, args, kwargs, i=i: self._pos(i, args, kwargs), with_kwargs=True))
                self._hooks.append(attn.register_forward_hook(lambda m, inp, out, i=i: self._llama(i)))
        return self

    def _gpt2(self, i, out):
        lay = self.layout
        D = lay.n_head * lay.head_dim
        x = out[0].detach().float()  # (T, 3D)
        T = x.size(0)
        self.q[i] = x[:, :D].reshape(T, lay.n_head, lay.head_dim).transpose(0, 1).contiguous()
        self.k[i] = x[:, D:2 * D].reshape(T, lay.n_head, lay.head_dim).transpose(0, 1).contiguous()

    def _pos(self, i, args, kwargs):
        pe = kwargs.get("position_embeddings")
        if pe is None and len(args) > 1:
            pe = args[1]
        self._raw[i] = {"pe": pe}
        return None

    def _raw_part(self, i, which, out):
        if self._raw[i] is not None:
            self._raw[i][which] = out.detach()

    def _llama(self, i):
        raw, self._raw[i] = self._raw[i], None
        if raw is None or raw.get("pe") is None or 0 not in raw or 1 not in raw:
            return  # leaves q/k None: the caller falls back
        lay = self.layout
        q, k = raw[0][:1], raw[1][:1]  # (1, T, H*Dh)
        T = q.size(1)
        q = q.view(1, T, -1, lay.head_dim).transpose(1, 2)  # (1, H, T, Dh), as the module does
        k = k.view(1, T, -1, lay.head_dim).transpose(1, 2)
        cos, sin = raw["pe"]
        q, k = lay.rope_fn(q, k, cos[:1], sin[:1])  # HF's own rotary embedding, in the model's dtype
        self.q[i] = q[0].float().contiguous()
        self.k[i] = k[0].float().contiguous()

    @property
    def complete(self) -> bool:
        return all(x is not None for x in self.q) and all(x is not None for x in self.k)

    # -- probabilities ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def probs(self, layer: int, heads, start: int, end: int) -> torch.Tensor:
        """``softmax(Q K^T * scaling + mask)`` ``(H', Tq, Tk)`` for queries ``start..end-1`` and keys ``0..end-1``."""
        lay = self.layout
        hs = list(heads)
        rep = lay.n_head // lay.n_kv
        q = self.q[layer][hs, start:end]  # (H', Tq, Dh)
        k = self.k[layer][[h // rep for h in hs], :end]  # (H', Tk, Dh): query head h reads kv head h // rep
        w = lay.sliding_window[layer]
        key = (start, end, w, q.device)
        bias = self._bias_cache.get(key)
        if bias is None:
            qi = torch.arange(start, end, device=q.device)[:, None]
            kj = torch.arange(end, device=q.device)[None, :]
            ok = kj <= qi
            if w is not None:
                ok &= kj > qi - w
            bias = torch.zeros(ok.shape, dtype=q.dtype, device=q.device).masked_fill(~ok, float("-inf"))
            self._bias_cache = {key: bias}
        att = (q @ k.transpose(-2, -1)) * lay.scaling[layer] + bias
        return att.softmax(dim=-1)


def attn_implementation(model) -> str | None:
    """The attention back-end an HF model runs (``config._attn_implementation``), or None."""
    root = _torch_module(model)
    cfg = getattr(root, "config", None)
    return getattr(cfg, "_attn_implementation", None)


__all__ = ["QKLayout", "QKRecorder", "RECOMPUTE_SUPPORTED", "attn_implementation", "qk_layout"]
