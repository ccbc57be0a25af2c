"""The one model interface every lab is written against.

A model of the workbench (TinyGPT, or an HF causal LM wrapped by :func:`from_hf`) offers:

* ``forward(ids, capture=False) -> LMOutput``: logits ``(B, T, V)`` for ids ``(B, T)``;
  with ``capture=True`` also attention probabilities ``(L, B, H, T, T)`` and the residual stream
  ``(L + 1, B, T, D)``.
* ``new_cache(batch_size) -> cache`` and ``step(ids, cache, capture=False) -> LMOutput``: incremental
  decoding; ``ids`` are the new tokens ``(B, t)``, the cache grows by ``t`` and the logits are ``(B, t, V)``.
  A cache has ``length``, ``reorder(index)`` (beam search) and ``crop(length)`` (speculative decoding).
* ``tokenizer`` (a :class:`workbench.tokenizers.Tokenizer`), ``config`` (with ``vocab_size``, ``n_layer``,
  ``n_head``, ``n_embd``, ``block_size``), ``supports_capture``, ``name``.

Lesson: ``notebooks/00_tour.ipynb`` (The labs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


class ModelError(ValueError):
    """Bad input to a model: ids out of range, a sequence longer than the context, a wrong shape."""


@dataclass
class LMOutput:
    """What a forward pass returns.

    logits: ``(B, T, V)``. attentions: ``(L, B, H, T, S)`` with ``S`` the key length (``T`` plus cached
    tokens), or None. residuals: ``(L + 1, B, T, D)`` (embeddings, then after each block), or None.
    """

    logits: torch.Tensor
    attentions: torch.Tensor | None = None
    residuals: torch.Tensor | None = None


@runtime_checkable
class Cache(Protocol):
    length: int

    def reorder(self, index: torch.Tensor) -> None: ...

    def crop(self, length: int) -> None: ...


@runtime_checkable
class CausalLM(Protocol):
    """Structural type of a workbench model; see the module docstring."""

    tokenizer: object
    config: object
    supports_capture: bool

    def forward(self, ids: torch.Tensor, capture: bool = False) -> LMOutput: ...

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> Cache: ...

    def step(self, ids: torch.Tensor, cache: Cache, capture: bool = False) -> LMOutput: ...


def as_batch(ids, device=None) -> torch.Tensor:
    """Turn a list of ints, a 1-D or a 2-D tensor into a ``(B, T)`` long tensor."""
    t = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(list(ids), dtype=torch.long)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise ModelError(f"ids must be 1-D (T,) or 2-D (B, T), got shape {tuple(t.shape)}")
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ModelError(f"ids must be integers, got dtype {t.dtype}")
    return t.long().to(device) if device is not None else t.long()


def check_ids(ids: torch.Tensor, vocab_size: int) -> None:
    """Raise a :class:`ModelError` naming the first id outside ``[0, vocab_size)``."""
    if ids.numel() == 0:
        raise ModelError("ids are empty: give at least one token")
    lo, hi = torch.aminmax(ids)
    if int(lo) < 0 or int(hi) >= vocab_size:
        bad = (ids < 0) | (ids >= vocab_size)
        pos = bad.nonzero()[0].tolist()
        raise ModelError(
            f"token id {int(ids[tuple(pos)])} at position {tuple(pos)} is out of range [0, {vocab_size})"
        )
