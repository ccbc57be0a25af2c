"""Per-head value vectors of HF models, hooked from outside the adapter: ``f_j^h = v_j^h W_O^h`` ``(T, D)``.

``||a_ij f_j^h||`` is what key ``j`` writes into the residual stream through head ``h`` at query ``i``
(Kobayashi et al. 2020); ``sum_h sum_j a_ij f_j^h`` plus the output bias is the attention block's output.

Supported layouts (found by module names, whatever the attention back-end):

* GPT-2: ``h.N.attn.c_attn`` (a ``Conv1D``, output ``[q | k | v]``, ``D`` columns each) and ``h.N.attn.c_proj``
  (``W_O``, a ``Conv1D`` with weight ``(in, out)``);
* Llama-style (Llama, Mistral, Qwen2, Gemma, ...): ``layers.N.self_attn.v_proj`` (``n_kv`` heads; with grouped-query
  attention query head ``h`` reads kv head ``h // (H / n_kv)``, as ``repeat_kv`` does) and
  ``layers.N.self_attn.o_proj`` (an ``nn.Linear``, ``W_O = weight^T``).

Anything else raises :class:`CaptureNotSupportedError` naming these.

>>> SUPPORTED.split(";")[0]
'GPT-2 (h.N.attn.c_attn + c_proj)'
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .errors import CaptureNotSupportedError
from .hooks import HookedRecorder

SUPPORTED = ("GPT-2 (h.N.attn.c_attn + c_proj); "
             "Llama-style models (layers.N.self_attn.v_proj + o_proj: Llama, Mistral, Qwen2, ...)")

_FAMILIES = (
    ("gpt2", re.compile(r"(^|\.)h\.(\d+)\.attn\.c_attn$"), re.compile(r"(^|\.)h\.(\d+)\.attn\.c_proj$")),
    ("llama", re.compile(r"(^|\.)layers\.(\d+)\.self_attn\.v_proj$"),
     re.compile(r"(^|\.)layers\.(\d+)\.self_attn\.o_proj$")),
)


def _torch_module(model) -> torch.nn.Module | None:
    if isinstance(model, torch.nn.Module):
        return model
    m = getattr(model, "hf", None)
    return m if isinstance(m, torch.nn.Module) else None


def _in_out(mod: torch.nn.Module) -> torch.Tensor:
    """The matrix ``M`` ``(in, out)`` with ``mod(x) = x @ M (+ bias)``: ``weight^T`` for ``nn.Linear``, ``weight``
    for GPT-2's ``Conv1D``."""
    if isinstance(mod, torch.nn.Linear):
        return mod.weight.T
    if type(mod).__name__ == "Conv1D":
        return mod.weight
    raise CaptureNotSupportedError(
        f"unexpected projection type {type(mod).__name__}: value vectors support {SUPPORTED}")


@dataclass
class ValueLayout:
    """Where a model's values come from: per layer the module whose output holds ``v`` and ``W_O`` ``(H, Dh, D)``."""

    family: str
    value_modules: list
    w_out: list  # per layer (H, Dh, D)
    n_head: int
    n_kv: int
    head_dim: int
    n_embd: int

    def values(self, out: torch.Tensor) -> torch.Tensor:
        """The hooked module output ``(B, T, *)`` of one layer -> per-query-head values ``(H, T, Dh)`` (batch 0)."""
        x = out[0].float()
        if self.family == "gpt2":
            x = x[:, 2 * self.n_embd : 3 * self.n_embd]  # c_attn output is [q | k | v]
        T = x.size(0)
        v = x.reshape(T, self.n_kv, self.head_dim).transpose(0, 1)  # (n_kv, T, Dh)
        if self.n_kv != self.n_head:
            v = v.repeat_interleave(self.n_head // self.n_kv, dim=0)  # query head h reads kv head h // rep
        return v


def value_layout(model) -> ValueLayout:
    """Find the value projections and ``W_O`` of an HF model; :class:`CaptureNotSupportedError` if not supported."""
    root = _torch_module(model)
    name = type(root).__name__ if root is not None else type(model).__name__
    if root is None:
        raise CaptureNotSupportedError(f"{name} has no torch module to hook: value vectors support {SUPPORTED}")
    cfg = model.config
    L, H, D = cfg.n_layer, cfg.n_head, cfg.n_embd
    named = list(root.named_modules())
    for family, v_pat, o_pat in _FAMILIES:
        vs, os_ = {}, {}
        for n, mod in named:
            if (m := v_pat.search(n)) is not None:
                vs[int(m.group(2))] = mod
            elif (m := o_pat.search(n)) is not None:
                os_[int(m.group(2))] = mod
        if len(vs) != L or len(os_) != L:
            continue
        w_out = []
        for i in range(L):
            M = _in_out(os_[i]).detach()  # (H * Dh, D)
            if M.size(0) % H:
                raise CaptureNotSupportedError(f"{name}: W_O has {M.size(0)} inputs, not a multiple of {H} heads")
            Dh = M.size(0) // H
            w_out.append(M.float().reshape(H, Dh, M.size(1)))
        Dh = w_out[0].size(1)
        if family == "gpt2":
            n_kv = H
            if _in_out(vs[0]).size(1) != 3 * D or H * Dh != D:
                raise CaptureNotSupportedError(f"{name}: c_attn does not output [q | k | v] of width {D} each")
        else:
            v_out = _in_out(vs[0]).size(1)
            if v_out % Dh or H % (v_out // Dh):
                raise CaptureNotSupportedError(
                    f"{name}: v_proj outputs {v_out} features, not a divisor group of {H} heads of {Dh}")
            n_kv = v_out // Dh
        return ValueLayout(family, [vs[i] for i in range(L)], w_out, H, n_kv, Dh, D)
    raise CaptureNotSupportedError(
        f"value vectors (value-weighted attention) are not supported for {name}: supported are {SUPPORTED}"
    )


class ValueRecorder(HookedRecorder):
    """Forward hooks that keep each layer's per-head values ``(H, T, Dh)`` during one forward pass."""

    def __init__(self, layout: ValueLayout):
        super().__init__()
        self.layout = layout
        self.values: list = [None] * len(layout.value_modules)

    def __enter__(self):
        for i, mod in enumerate(self.layout.value_modules):
            self._hooks.append(mod.register_forward_hook(
                lambda m, inp, out, i=i: self.values.__setitem__(i, self.layout.values(out).detach())))
        return self

    def vectors(self, layer: int, head: int, end: int | None = None) -> torch.Tensor:
        """``f_j = v_j^h W_O^h`` ``(Tk, D)`` for keys ``0 .. end - 1``."""
        v = self.values[layer][head, :end]
        W = self.layout.w_out[layer][head].to(v.device)
        return v @ W
