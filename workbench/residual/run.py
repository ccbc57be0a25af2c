"""Run a model once and keep what passed its named points: the residual lab's ``run_with_cache``.

Everything in :mod:`workbench.residual` reaches a model through :func:`workbench.models.layout.layout_of`, so it
works the same on TinyGPT and on any ``from_hf`` model whose layout can be found.

>>> from workbench.models import TinyGPT, GPTConfig
>>> from workbench.tokenizers import ByteTokenizer
>>> m = TinyGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=257), ByteTokenizer()).eval()
>>> rs = residual_stack(m, "hello")
>>> tuple(rs.resid.shape), tuple(rs.logits.shape)
((3, 1, 5, 32), (1, 5, 257))
>>> bool(torch.allclose(unembed_residual(m, rs.resid[-1]), rs.logits, atol=1e-5))
True
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ..models.encode import encode_one
from ..models.interface import as_batch
from ..models.layout import LayoutError, ModelLayout, layout_of
from .errors import OutOfRangeError, ResidualError


def encode(model, text_or_ids) -> torch.Tensor:
    """Text, a list of ids or a ``(T,)``/``(1, T)`` tensor -> ``(1, T)`` long ids on the model's device; empty input,
    a batch, a sequence longer than the context or an id outside the vocabulary is a :class:`ResidualError`."""
    t = encode_one(model, text_or_ids, error=ResidualError, out_of_range=OutOfRangeError)
    check_tokens(model, t)
    return t.to(_device(model))


def check_tokens(model, ids: torch.Tensor) -> None:
    """Raise :class:`OutOfRangeError` for an id outside ``[0, vocab_size)`` and :class:`ResidualError` for a
    sequence longer than the model's context."""
    vocab = model.config.vocab_size
    bad = (ids < 0) | (ids >= vocab)
    if bool(bad.any()):
        b, j = bad.nonzero()[0].tolist()
        raise OutOfRangeError(f"token id {int(ids[b, j])} at position {j} is out of range [0, {vocab})")
    if ids.size(-1) > model.config.block_size:
        raise ResidualError(f"{ids.size(-1)} tokens is longer than the model's context of {model.config.block_size}")


def _device(model) -> torch.device:
    d = getattr(model, "device", None)
    return d if isinstance(d, torch.device) else next(layout_of(model).root.parameters()).device


def check_index(what: str, value: int, n: int) -> int:
    """``value`` as an int in ``[0, n)`` (negative values count from the end), else :class:`OutOfRangeError`."""
    v = int(value)
    if v < 0:
        v += n
    if not 0 <= v < n:
        raise OutOfRangeError(f"{what} {value} is out of range: the model has {n} ({what}s 0..{n - 1}"
                              f" or -1..-{n})")
    return v


@torch.no_grad()
def run_with_cache(model, ids: torch.Tensor, points, fns: dict | None = None):
    """One forward pass of ``ids`` ``(B, T)`` recording the named points (see :mod:`workbench.models.layout`);
    returns ``(logits (B, T, V) float, {point: tensor})``. ``fns`` (point -> fn) are attached as well, so a cache
    can be taken from an edited run; a point that is both recorded and edited is recorded after the edit."""
    lay = layout_of(model)
    cache: dict = {}

    def recorder(name, fn=None):
        def rec(t):
            if fn is not None:
                r = fn(t)
                t = t if r is None else r
            cache[name] = t.detach().clone()
            return t if fn is not None else None
        return rec

    hooks = dict(fns or {})
    for p in points:
        hooks[p] = recorder(p, hooks.get(p))
    with lay.hooks(hooks):
        logits = _forward(model, ids)
    return logits, cache


def _forward(model, ids: torch.Tensor) -> torch.Tensor:
    ids = as_batch(ids, _device(model))
    return model.forward(ids).logits.float()


@dataclass
class ResidualStack:
    """The residual stream at every layer boundary and the model's logits.

    ``resid``: ``(L + 1, B, T, D)``: the embeddings (entering block 0), then the stream after each block, *before*
    the final norm (unlike HF's ``hidden_states``, whose last entry is after it in most families). ``logits``:
    ``(B, T, V)``. ``ids``: ``(B, T)``.
    """

    resid: torch.Tensor
    logits: torch.Tensor
    ids: torch.Tensor


def residual_stack(model, text_or_ids) -> ResidualStack:
    """The :class:`ResidualStack` of one prompt (text or ids) or of a ``(B, T)`` batch of ids."""
    if isinstance(text_or_ids, torch.Tensor) and text_or_ids.dim() == 2:
        ids = text_or_ids.to(_device(model))
        check_tokens(model, ids)
    else:
        ids = encode(model, text_or_ids)
    lay = layout_of(model)
    points = ["embed"] + [f"blocks.{i}.resid_post" for i in range(lay.n_layer)]
    logits, cache = run_with_cache(model, ids, points)
    return ResidualStack(torch.stack([cache[p].float() for p in points]), logits, ids)


# -- the model's own head: final norm, unembedding, and any transform of the logits after it ------------------------

@dataclass
class Head:
    """How the model turns its last residual stream into logits: ``final_norm`` (or None), ``unembed``, and an
    optional ``softcap`` applied to the unembedding's output (Gemma 2's ``final_logit_softcapping``)."""

    final_norm: torch.nn.Module | None
    unembed: torch.nn.Module
    softcap: float | None

    def __call__(self, resid: torch.Tensor) -> torch.Tensor:
        x = resid if self.final_norm is None else self.final_norm(resid)
        return self.logits_of_normed(x)

    def logits_of_normed(self, x: torch.Tensor) -> torch.Tensor:
        y = self.unembed(x.to(self.unembed.weight.dtype)).float()
        return y if self.softcap is None else torch.tanh(y / self.softcap) * self.softcap


_HEADS: "weakref.WeakKeyDictionary[torch.nn.Module, Head]" = weakref.WeakKeyDictionary()


def head_of(model) -> Head:
    """The model's :class:`Head`, checked once by data flow: on a short probe, the head applied to the last
    block's output must give the model's logits; otherwise a :class:`LayoutError` names the model class and what
    was looked for."""
    lay: ModelLayout = layout_of(model)
    h = _HEADS.get(lay.root)
    if h is not None:
        return h
    if lay.final_norm is None and lay.kind == "hf":
        pass  # some families unembed the last block's output directly; the check below decides
    cfg = getattr(getattr(model, "config", None), "hf", None)
    softcap = getattr(cfg, "final_logit_softcapping", None) if cfg is not None else None
    h = Head(lay.final_norm, lay.unembed, float(softcap) if softcap else None)
    n = min(5, int(model.config.block_size))
    ids = (torch.arange(n) % int(model.config.vocab_size))[None]
    with torch.no_grad():
        rs = residual_stack(model, ids)
        mine = h(rs.resid[-1])
    if not torch.allclose(mine, rs.logits, atol=1e-4, rtol=1e-4):
        err = float((mine - rs.logits).abs().max())
        raise LayoutError(
            f"{lay.model_class}: the final norm ({type(lay.final_norm).__name__ if lay.final_norm is not None else 'none found'}) "
            f"and unembedding ({type(lay.unembed).__name__}) applied to the last block's output do not give the model's "
            f"logits (max difference {err:.3g}): the lens needs the model's own final norm and unembedding")
    _HEADS[lay.root] = h
    return h


def unembed_residual(model, resid: torch.Tensor) -> torch.Tensor:
    """Logits ``(..., V)`` of residual vectors ``(..., D)`` through the model's own final norm and unembedding (never
    normalising twice: the residual stream here is always taken before the final norm)."""
    return head_of(model)(resid)
