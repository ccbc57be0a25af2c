"""Attention variants usable at inference: dense causal, sliding window, Lambda mask, StreamingLLM sinks + window.

A :class:`Policy` says which keys each query may see. The three mask policies plug into TinyGPT through its
``mask_fn`` hook (``mask_fn(q_pos (T,), k_pos (S,)) -> bool (T, S)``) and keep absolute positions. The
StreamingLLM policy is a KV-cache policy instead: :class:`SinkCache` keeps ``n_sink`` first tokens plus the most
recent ones and re-indexes positions inside the cache (Xiao et al. 2023), so a RoPE or ALiBi model never sees a
position beyond its cache, however long the stream.

Which keys query ``i`` sees (key ``j``, all ``j <= i``):

=================  ============================================
dense              every ``j <= i``
sliding(w)         ``i - w < j <= i`` (``w`` keys, itself included)
lambda(g, w)       ``j < g`` or ``i - w < j <= i`` (LM-Infinite)
streaming(s, w)    same keys as lambda(s, w); positions re-indexed in the cache
=================  ============================================

>>> import torch
>>> sliding_window(2).allowed(torch.arange(4), torch.arange(4)).int().tolist()
[[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from workbench.models.interface import ModelError, as_batch
from workbench.models.kv_cache import KVCache

from .errors import ContextLengthError, EmptyInputError, PolicyError

KINDS = ("dense", "sliding", "lambda", "streaming")


@dataclass(frozen=True)
class Policy:
    """Which keys a query sees. Build with :func:`dense`, :func:`sliding_window`, :func:`lambda_mask`, :func:`streaming`.

    kind: one of ``dense``, ``sliding``, ``lambda``, ``streaming``; ``window``: recent keys seen, the query itself
    included; ``n_sink``: first tokens always kept (``lambda`` and ``streaming``).
    """

    kind: str = "dense"
    window: int | None = None
    n_sink: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise PolicyError(f"policy kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind != "dense":
            if not isinstance(self.window, int) or self.window < 1:
                raise PolicyError(f"{self.kind} policy needs a window >= 1, got {self.window!r}")
        if not isinstance(self.n_sink, int) or self.n_sink < 0:
            raise PolicyError(f"n_sink must be an int >= 0, got {self.n_sink!r}")
        if self.kind in ("lambda", "streaming") and self.n_sink < 1:
            raise PolicyError(f"{self.kind} policy needs n_sink >= 1 (use sliding_window for no sinks)")

    @property
    def name(self) -> str:
        return {
            "dense": "dense",
            "sliding": f"sliding(w={self.window})",
            "lambda": f"lambda(g={self.n_sink}, w={self.window})",
            "streaming": f"streaming(sinks={self.n_sink}, w={self.window})",
        }[self.kind]

    def allowed(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """Bool ``(T, S)``: True where the query at absolute position ``q_pos[i]`` may see the key at ``k_pos[j]``."""
        q, k = q_pos[:, None], k_pos[None, :]
        ok = k <= q
        if self.kind == "dense":
            return ok
        recent = k > q - self.window
        if self.kind == "sliding":
            return ok & recent
        return ok & (recent | (k < self.n_sink))

    @property
    def mask_fn(self):
        """The TinyGPT ``mask_fn`` hook for this policy (None for dense: keeps the fast SDPA path)."""
        if self.kind == "dense":
            return None
        if self.kind == "streaming":
            raise PolicyError("streaming is a KV-cache policy, not a mask: use SinkCache / perplexity_vs_length")
        return self.allowed

    def __str__(self) -> str:
        return self.name


def dense() -> Policy:
    """Dense causal attention (beyond the context a RoPE/ALiBi model extrapolates its positions)."""
    return Policy("dense")


def sliding_window(window: int) -> Policy:
    """Each query sees its ``window`` most recent keys, itself included."""
    return Policy("sliding", window)


def lambda_mask(n_global: int = 4, window: int = 128) -> Policy:
    """LM-Infinite's Lambda-shaped mask: ``n_global`` starting tokens plus a local ``window``."""
    return Policy("lambda", window, n_global)


def streaming(n_sink: int = 4, window: int = 128) -> Policy:
    """StreamingLLM: a KV cache holding ``n_sink`` attention-sink tokens plus the ``window`` most recent tokens."""
    return Policy("streaming", window, n_sink)


def as_policy(policy) -> Policy | None:
    """Accept a :class:`Policy`, None, or a name such as ``"dense"``."""
    if policy is None or isinstance(policy, Policy):
        return policy
    if policy == "dense":
        return dense()
    raise PolicyError(f"policy must be a Policy (dense(), sliding_window(w), lambda_mask(g, w), streaming(s, w)), got {policy!r}")


def _pos_kind(model) -> str:
    return getattr(model.config, "pos", "learned")


@contextmanager
def use_policy(model, policy: Policy | None):
    """Within the block, ``model.mask_fn`` follows ``policy`` (mask policies only); restored afterwards."""
    policy = as_policy(policy)
    if policy is None or policy.kind == "dense":
        fn = None
    else:
        fn = policy.mask_fn
    if fn is not None and not hasattr(model, "mask_fn"):
        raise PolicyError(f"{type(model).__name__} has no mask_fn hook: attention variants need a TinyGPT")
    old = getattr(model, "mask_fn", None)
    if hasattr(model, "mask_fn"):
        model.mask_fn = fn
    try:
        yield model
    finally:
        if hasattr(model, "mask_fn"):
            model.mask_fn = old


class SinkCache(KVCache):
    """A StreamingLLM KV cache: ``n_sink`` first tokens plus the most recent tokens, positions re-indexed.

    A :class:`workbench.models.KVCache` whose :meth:`advance` evicts, so ``model.step(ids, cache)`` works
    unchanged. It holds at most ``n_sink + window`` entries ``(L, B, H, n_sink + window, Dh)``; :meth:`advance` evicts the oldest non-sink entries so that the next token
    finds room (its query then sees the sinks plus ``window`` keys including itself). The model assigns the new
    query the position ``length`` (a slot index), so positions stay inside ``[0, n_sink + window)``. With RoPE the
    kept keys were rotated at their old slot; on eviction they are rotated back by the shift (rotations compose),
    which is what StreamingLLM's "positions within the cache" means. ALiBi distances are computed from slots.
    """

    def __init__(self, model, n_sink: int, window: int, batch_size: int = 1):
        c = model.config
        pos = _pos_kind(model)
        if pos not in ("rope", "alibi"):
            raise PolicyError(
                f"a StreamingLLM cache re-indexes positions, which needs RoPE or ALiBi; this model uses {pos!r} "
                "positions (use a mask policy within the context instead)"
            )
        if n_sink + window > c.block_size:
            raise PolicyError(f"n_sink + window = {n_sink + window} exceeds the context of {c.block_size}")
        self.n_sink, self.window = n_sink, window
        self.rope = pos == "rope"
        self.head_dim, self.rope_base = c.head_dim, getattr(c, "rope_base", 10000.0)
        dev = next(model.parameters()).device
        super().__init__(c.n_layer, batch_size, c.n_head, c.head_dim, n_sink + window, device=dev)
        self.evicted = 0  # tokens dropped so far

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store ``k, v`` ``(B, H, t, Dh)`` after the kept tokens; return the kept keys and values."""
        if self.length + k.size(2) > self.max_len:
            raise ModelError(
                f"SinkCache holds {self.max_len} tokens: feed at most {self.max_len - self.length} new tokens now"
            )
        return super().write(layer, k, v)

    def advance(self, t: int) -> None:
        self.length += t
        self.make_room(1)

    def make_room(self, t: int) -> None:
        """Evict the oldest non-sink entries so ``t`` new tokens fit."""
        excess = self.length + t - self.max_len
        if excess <= 0:
            return
        s = self.n_sink
        keep_from = s + excess
        n_keep = self.length - keep_from
        if n_keep < 0:
            raise ModelError(f"cannot make room for {t} tokens in a SinkCache of {self.max_len}")
        k_kept = self.k[:, :, :, keep_from : self.length]
        if self.rope:
            from workbench.models.tinygpt import apply_rope, rope_angles

            # a key rotated at slot p moves to slot p - excess: rotate by -excess
            shift = torch.full((n_keep,), -excess, device=self.k.device)
            cos, sin = rope_angles(shift, self.head_dim, self.rope_base)
            k_kept = apply_rope(k_kept, cos, sin)
        self.k[:, :, :, s : s + n_keep] = k_kept.clone()
        self.v[:, :, :, s : s + n_keep] = self.v[:, :, :, keep_from : self.length].clone()
        self.length = s + n_keep
        self.evicted += excess


@dataclass
class PerplexityResult:
    """Per-position loss of one policy on one text.

    ``loss``: ``(T - 1,)`` nats, ``loss[i]`` is the loss of predicting token ``i + 1`` from tokens ``0..i``;
    ``positions``: ``(T - 1,)`` the predicted token's position. ``context``: the model's training context.
    """

    policy: str
    loss: np.ndarray
    positions: np.ndarray
    context: int
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def binned(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss in bins of ``width`` positions: (bin starts ``(n,)``, mean loss ``(n,)``)."""
        n = int(math.ceil(len(self.loss) / width))
        starts = np.arange(n) * width
        means = np.array([self.loss[s : s + width].mean() for s in starts])
        return starts + 1, means

    def mean(self, start: int = 0, end: int | None = None) -> float:
        """Mean loss over predicted positions in ``[start, end)``."""
        sel = (self.positions >= start) & (self.positions < (end if end is not None else 1 << 62))
        return float(self.loss[sel].mean())

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.loss.mean()))


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    return F.cross_entropy(logits.float(), targets, reduction="none").detach().cpu().numpy()


def _ids_of(model, text_or_ids) -> torch.Tensor:
    if isinstance(text_or_ids, str):
        if not text_or_ids:
            raise EmptyInputError("the text is empty: give at least 2 tokens")
        if model.tokenizer is None:
            raise PolicyError("this model has no tokenizer: pass token ids instead of text")
        ids = model.tokenizer.encode(text_or_ids)
    else:
        ids = text_or_ids
    if not isinstance(ids, torch.Tensor):
        ids = list(ids)
        if not ids:
            raise EmptyInputError("the id sequence is empty: give at least 2 tokens")
    t = as_batch(ids)
    if t.size(0) != 1:
        raise PolicyError(f"one sequence at a time, got a batch of {t.size(0)}")
    if t.size(1) < 2:
        raise PolicyError("need at least 2 tokens to measure a loss")
    return t


@torch.no_grad()
def perplexity_vs_length(model, text_or_ids, policy=None, length: int | None = None) -> PerplexityResult:
    """Per-position next-token loss ``(T - 1,)`` of ``model`` on ``text_or_ids`` under ``policy``.

    Mask policies (dense, sliding, lambda) run one forward pass with absolute positions, through a KV cache as long
    as the text so a RoPE/ALiBi model may go beyond its context. ``streaming`` prefills ``n_sink + window`` tokens
    and then feeds one token at a time through a :class:`SinkCache`. ``length`` truncates the text first.
    Beyond the context, ``policy=None`` is an error (say ``dense()`` to extrapolate on purpose); learned positions
    cannot go beyond the context with any mask policy.
    """
    import time

    ids = _ids_of(model, text_or_ids)
    if length is not None:
        ids = ids[:, :length]
    T = ids.size(1)
    ctx = model.config.block_size
    policy = as_policy(policy)
    dev = next(model.parameters()).device
    ids = ids.to(dev)
    t0 = time.perf_counter()
    if policy is None:
        if T > ctx:
            raise ContextLengthError(
                f"{T} tokens exceed the model's context of {ctx} and no long-context policy was given: "
                "pass policy=dense() (extrapolate), sliding_window(w), lambda_mask(g, w) or streaming(s, w)"
            )
        policy = dense()
    if policy.kind == "streaming":
        cache = SinkCache(model, policy.n_sink, policy.window)
        first = min(T, cache.max_len)
        out = model.step(ids[:, :first], cache)
        logits = [out.logits[0]]
        for i in range(first, T):
            out = model.step(ids[:, i : i + 1], cache)
            logits.append(out.logits[0])
        loss = _nll(torch.cat(logits)[:-1], ids[0, 1:])
        extra = {"evicted": cache.evicted}
    else:
        if T > ctx and _pos_kind(model) not in ("rope", "alibi"):
            kind = getattr(model.config, "pos", None)
            what = f"this model has {kind!r} positions, which stop there" if kind else \
                "only a TinyGPT with RoPE/ALiBi can run past its context here"
            raise ContextLengthError(
                f"{T} tokens exceed the context of {ctx} and {what}: no mask policy can go further"
            )
        with use_policy(model, policy):
            cache = model.new_cache(1, max_len=max(T, ctx)) if T > ctx else None
            out = model.forward(ids, cache=cache) if cache is not None else model.forward(ids)
        loss = _nll(out.logits[0, :-1], ids[0, 1:])
        extra = {}
    return PerplexityResult(policy.name, loss, np.arange(1, T), ctx, time.perf_counter() - t0, extra)
