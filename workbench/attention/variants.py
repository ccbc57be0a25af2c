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

Lesson: ``notebooks/02_attention.ipynb`` (3 · Beyond the context).
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


def _is_hf(model) -> bool:
    return not hasattr(model, "mask_fn") and isinstance(getattr(model, "hf", None), torch.nn.Module)


@contextmanager
def use_policy(model, policy: Policy | None):
    """Within the block, the model attends under ``policy`` (mask policies only); restored afterwards.

    A TinyGPT gets the policy as its ``mask_fn``; an HF model (any family whose layout
    :func:`workbench.models.layout.layout_of` finds) runs the workbench attention function with the policy's mask.
    """
    policy = as_policy(policy)
    fn = None if policy is None or policy.kind == "dense" else policy.mask_fn
    if fn is not None and _is_hf(model):
        from workbench.models.layout import LayoutError, layout_of

        try:
            lay = layout_of(model)
        except LayoutError as e:
            raise PolicyError(f"attention variants need the model's layout: {e}") from None
        with lay.hooks(mask=fn):
            yield model
        return
    if fn is not None and not hasattr(model, "mask_fn"):
        raise PolicyError(f"{type(model).__name__} has neither a mask_fn hook nor an HF layout: attention variants "
                          "need a TinyGPT or a from_hf model")
    old = getattr(model, "mask_fn", None)
    if hasattr(model, "mask_fn"):
        model.mask_fn = fn
    try:
        yield model
    finally:
        if hasattr(model, "mask_fn"):
            model.mask_fn = old


@torch.no_grad()
def hf_forward_logits(model, ids: torch.Tensor, policy: Policy | None = None, lay=None, fns=None,
                      last_only: bool = False) -> torch.Tensor:
    """Logits ``(B, T, V)`` of a ``from_hf`` model on ``ids`` ``(B, T)`` under a mask ``policy``, with ``fns`` hooked
    at the layout's named points; beyond the model's context only for rotary (or position-free) families.
    ``last_only``: only the last position's logits ``(B, 1, V)`` are computed (``logits_to_keep=1``)."""
    from workbench.models.layout import layout_of

    lay = lay or layout_of(model)
    ctx = model.config.block_size
    T = ids.size(1)
    if T > ctx and lay.positions == "absolute":
        raise ContextLengthError(
            f"{T} tokens exceed the context of {ctx} and {lay.model_class} has learned absolute positions, which "
            "stop there: shorten the text, or use streaming(s, w), whose positions stay inside the cache")
    policy = as_policy(policy)
    mask = None if policy is None or policy.kind == "dense" else policy.mask_fn
    with lay.hooks(fns, mask=mask):
        if T <= ctx and not last_only:
            return model.forward(ids).logits
        if T <= ctx:
            model._check(ids)  # the adapter's id and length checks
        kw = {"logits_to_keep": 1} if last_only else {}
        return model.hf(input_ids=ids.to(model.device), use_cache=False, **kw).logits.float()


class HFSinkCache:
    """StreamingLLM for an HF model: a ``DynamicCache`` that keeps ``n_sink`` first tokens plus the most recent ones.

    The caller feeds tokens with ``position_ids`` equal to their slot in the cache (:meth:`positions`), so positions
    stay inside ``[0, n_sink + window)`` however long the stream ("positions within the cache", Xiao et al. 2023).
    With rotary positions the kept keys were rotated at their old slot; on eviction they are rotated back by the
    shift with the model's own ``cos``/``sin`` (recorded from the attention modules' ``position_embeddings`` at the
    slots seen so far), on the rotary part of each head (partial rotary as NeoX / Phi do). Absolute positions
    (GPT-2, OPT) need no rotation: the new token simply gets the slot as its position.
    """

    def __init__(self, model, n_sink: int, window: int):
        from transformers import DynamicCache

        from workbench.models.layout import layout_of

        self.lay = layout_of(model)
        if n_sink + window > model.config.block_size:
            raise PolicyError(f"n_sink + window = {n_sink + window} exceeds the context of {model.config.block_size}")
        self.model, self.n_sink, self.window = model, n_sink, window
        self.max_len = n_sink + window
        self.pkv = DynamicCache()
        self.evicted = 0
        self._rope: dict = {}  # layer -> {slot: (cos (rot,), sin (rot,))}

    @property
    def length(self) -> int:
        return int(self.pkv.get_seq_length())

    def _record_rope(self, layer):
        def pre(mod, args, kwargs):
            pe = kwargs.get("position_embeddings")
            pos = self._slots
            if isinstance(pe, tuple) and pos is not None:
                cos, sin = pe
                table = self._rope.setdefault(layer, {})
                for j, p in enumerate(pos.tolist()):
                    table.setdefault(p, (cos[0, j].detach(), sin[0, j].detach()))
        return pre

    def make_room(self, t: int) -> None:
        """Evict the oldest non-sink entries so ``t`` new tokens fit, re-rotating the kept keys."""
        excess = self.length + t - self.max_len
        if excess <= 0:
            return
        s = self.n_sink
        for i, layer in enumerate(self.pkv.layers):
            k, v = layer.keys, layer.values  # (B, n_kv, S, Dh)
            kept = k[:, :, s + excess:]
            if self.lay.positions == "rope":
                cos, sin = self._rope[i][excess]  # rotation by the shift: R(-shift) = (cos, -sin)
                r = cos.size(-1)
                half = r // 2
                x = kept[..., :r]
                rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
                kept = torch.cat((x * cos.to(x.dtype) - rot * sin.to(x.dtype), kept[..., r:]), dim=-1)
            layer.keys = torch.cat((k[:, :, :s], kept), dim=2)
            layer.values = torch.cat((v[:, :, :s], v[:, :, s + excess:]), dim=2)
        self.evicted += excess

    @torch.no_grad()
    def feed(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed ``ids`` ``(1, t)`` (``t`` at most the free room after eviction); logits ``(1, t, V)``."""
        self.make_room(ids.size(1))
        n = self.length
        self._slots = torch.arange(n, n + ids.size(1))
        hooks = [a.register_forward_pre_hook(self._record_rope(i), with_kwargs=True)
                 for i, a in enumerate(self.lay.attn)]
        try:
            with self.lay.hooks():
                dev = self.model.device
                out = self.model.hf(input_ids=ids.to(dev), position_ids=self._slots[None].to(dev),
                                    past_key_values=self.pkv, use_cache=True)
        finally:
            for h in hooks:
                h.remove()
            self._slots = None
        return out.logits.float()


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
    as the text so a RoPE/ALiBi model may go beyond its context (a ``from_hf`` model of any family whose layout is
    found: the policy's mask in the workbench attention function; rotary families may go beyond the context). ``streaming`` prefills ``n_sink + window`` tokens
    and then feeds one token at a time through a :class:`SinkCache` (:class:`HFSinkCache` for ``from_hf`` models). ``length`` truncates the text first.
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
    if policy.kind == "streaming" and _is_hf(model):
        cache = HFSinkCache(model, policy.n_sink, policy.window)
        first = min(T, cache.max_len)
        logits = [cache.feed(ids[:, :first])[0]]
        for i in range(first, T):
            logits.append(cache.feed(ids[:, i : i + 1])[0])
        loss = _nll(torch.cat(logits)[:-1], ids[0, 1:])
        extra = {"evicted": cache.evicted}
    elif _is_hf(model):
        out = hf_forward_logits(model, ids, policy)
        loss = _nll(out[0, :-1], ids[0, 1:])
        extra = {}
    elif policy.kind == "streaming":
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
