"""Logits processors as plain functions: ``(..., V)`` logits in, ``(..., V)`` logits out, removed tokens at -inf.

Every function keeps the batch shape of its input and never edits it in place. The definitions follow
HF transformers' processors exactly (the tests compare against ``TopPLogitsWarper`` and friends on random
logits), so a result here can be checked against ``generate``:

* :func:`temperature` divides by ``t``; ``t == 0`` means greedy (only the arg-max survives, first index on ties),
  a documented extension: HF refuses ``t == 0``.
* :func:`top_k` keeps every token whose logit is at least the ``k``-th largest (ties at the boundary survive).
* :func:`top_p` keeps the smallest set of most likely tokens whose mass reaches ``p``, including the token that
  crosses ``p``. Computed as HF does: sort ascending, drop tokens whose cumulative mass is ``<= 1 - p``.
* :func:`min_p` keeps tokens with ``p_i >= min_p * max_j p_j``.
* :func:`typical` ranks tokens by ``|-log p_i - H|`` and keeps the closest ones until their mass reaches
  ``mass`` (the token that crosses is kept, as are ties with it).
* :func:`epsilon` drops tokens with ``p_i < eps``; :func:`eta` drops ``p_i < min(eps, sqrt(eps) * exp(-H))``.
* :func:`repetition_penalty` divides positive logits of seen tokens by ``penalty`` and multiplies negative ones.
* :func:`no_repeat_ngram` bans every token that would complete an n-gram already present in ``ids``.

All truncation functions keep at least ``min_tokens_to_keep`` tokens (default 1) and refuse NaN logits.

Lesson: ``notebooks/03_decoding.ipynb`` (1. What the truncation rules keep).
"""
from __future__ import annotations

import math

import torch


class DecodingError(ValueError):
    """Bad input to a decoding function: a parameter out of range, NaN logits, incompatible models, ..."""


NEG_INF = float("-inf")


# ----------------------------------------------------------------------------------------------- validation
def check_logits(logits: torch.Tensor, where: str = "logits") -> torch.Tensor:
    """Raise :class:`DecodingError` when ``logits`` is not a float tensor of shape ``(..., V)`` or holds NaN."""
    if not isinstance(logits, torch.Tensor):
        raise DecodingError(f"{where} must be a torch.Tensor of shape (..., V), got {type(logits).__name__}")
    if logits.dim() == 0 or logits.size(-1) == 0:
        raise DecodingError(f"{where} must have shape (..., V) with V >= 1, got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise DecodingError(f"{where} must be floating point, got {logits.dtype}")
    # max propagates NaN: one reduction and one sync cover both NaN and +inf
    if logits.numel() and not float(logits.max()) < math.inf:
        if bool(torch.isnan(logits).any()):
            raise DecodingError(
                f"{where} contain NaN: the model produced an invalid distribution (check the weights/inputs); "
                "refusing to sample from it"
            )
        raise DecodingError(f"{where} contain +inf: the distribution is undefined")
    return logits


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
        isinstance(value, torch.Tensor) and value.numel() == 1
    ):
        raise DecodingError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if math.isnan(v):
        raise DecodingError(f"{name} must be a number, got NaN")
    return v


def _keep_count(min_tokens_to_keep) -> int:
    if isinstance(min_tokens_to_keep, bool) or not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
        raise DecodingError(f"min_tokens_to_keep must be an int >= 1, got {min_tokens_to_keep!r}")
    return min_tokens_to_keep


def validate_temperature(t) -> float:
    t = _number("temperature", t)
    if t < 0 or math.isinf(t):
        raise DecodingError(
            f"temperature must be >= 0 and finite, got {t} (0 means greedy: only the most likely token is kept)"
        )
    return t


def validate_top_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DecodingError(f"top_k must be an int >= 1, got {k!r} (to disable top-k, leave it out of the pipeline)")
    return k


def validate_top_p(p) -> float:
    p = _number("top_p", p)
    if not 0.0 < p <= 1.0:
        raise DecodingError(f"top_p must be in (0, 1], got {p} (1 keeps everything)")
    return p


def validate_min_p(m) -> float:
    m = _number("min_p", m)
    if not 0.0 <= m <= 1.0:
        raise DecodingError(f"min_p must be in [0, 1], got {m} (0 keeps everything, 1 keeps only the top ties)")
    return m


def validate_typical(mass) -> float:
    mass = _number("typical mass", mass)
    if not 0.0 < mass < 1.0:
        raise DecodingError(f"typical mass must be in (0, 1), got {mass}")
    return mass


def validate_epsilon(eps, name: str = "epsilon") -> float:
    eps = _number(name, eps)
    if not 0.0 < eps < 1.0:
        raise DecodingError(f"{name} must be in (0, 1), got {eps}")
    return eps


def validate_penalty(penalty) -> float:
    penalty = _number("repetition penalty", penalty)
    if not penalty > 0 or math.isinf(penalty):
        raise DecodingError(f"repetition penalty must be > 0 and finite, got {penalty} (1 means no penalty)")
    return penalty


def validate_ngram(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DecodingError(f"no_repeat_ngram size must be an int >= 1, got {n!r}")
    return n


# ------------------------------------------------------------------------------------------------ helpers
def _kth_largest(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th largest logit of each row, shape ``(..., 1)`` (``k`` clipped to ``V``)."""
    k = min(k, logits.size(-1))
    return torch.topk(logits, k, dim=-1).values[..., -1:]


def _protect_top(remove: torch.Tensor, logits: torch.Tensor, min_tokens_to_keep: int) -> torch.Tensor:
    """Un-remove every token at least as large as the ``min_tokens_to_keep``-th largest logit."""
    return remove & (logits < _kth_largest(logits, min_tokens_to_keep))


# ----------------------------------------------------------------------------------------------- warpers
def temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    """Divide logits ``(..., V)`` by ``t > 0``. ``t == 0`` is greedy: all but the first arg-max go to -inf.

    Sampling at ``t -> 0`` tends to the arg-max, so 0 is given that limit's meaning instead of an error.
    """
    return _temperature(check_logits(logits), validate_temperature(t))


def _temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    if t == 0.0:
        idx = logits.argmax(-1, keepdim=True)
        return torch.full_like(logits, NEG_INF).scatter_(-1, idx, logits.gather(-1, idx))
    return logits / t


def top_k(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep tokens whose logit is ``>=`` the ``max(k, min_tokens_to_keep)``-th largest; ``k > V`` keeps all."""
    return _top_k(check_logits(logits), validate_top_k(k), _keep_count(min_tokens_to_keep))


def _top_k(logits, k, n_keep=1):
    return logits.masked_fill(logits < _kth_largest(logits, max(k, n_keep)), NEG_INF)


def top_p(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus: keep the most likely tokens until their mass reaches ``p`` (the crossing token included).

    In ascending order of logit, a token is dropped when the mass of itself and everything less likely is
    ``<= 1 - p``; the ``min_tokens_to_keep`` most likely tokens always stay.
    """
    return _top_p(check_logits(logits), validate_top_p(p), _keep_count(min_tokens_to_keep))


def _top_p(logits, p, n_keep=1):
    asc, order = torch.sort(logits, dim=-1, descending=False)
    cum = asc.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1.0 - p)
    remove_sorted[..., -n_keep:] = False
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def min_p(logits: torch.Tensor, m: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep tokens with probability ``>= m * (largest probability)``; scale-free, unlike a fixed cut-off."""
    return _min_p(check_logits(logits), validate_min_p(m), _keep_count(min_tokens_to_keep))


def _min_p(logits, m, n_keep=1):
    probs = logits.softmax(dim=-1)
    remove = probs < m * probs.amax(dim=-1, keepdim=True)
    top = torch.topk(probs, min(n_keep, probs.size(-1)), dim=-1).indices
    remove = remove.scatter(-1, top, False)
    return logits.masked_fill(remove, NEG_INF)


def typical(logits: torch.Tensor, mass: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Locally typical sampling (Meister et al.): keep the tokens whose surprisal is closest to the entropy.

    Tokens are ranked by ``|-log p_i - H|``; the first ones are kept until their mass reaches ``mass``
    (the crossing token, and ties with its distance, are kept).
    """
    return _typical(check_logits(logits), validate_typical(mass), _keep_count(min_tokens_to_keep))


def _typical(logits, mass, n_keep=1):
    logp = logits.log_softmax(dim=-1)
    H = -(logp * logp.exp()).nansum(dim=-1, keepdim=True)
    dist = (-logp - H).abs()
    dist_sorted, order = torch.sort(dist, dim=-1, descending=False)
    cum = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cum < mass).sum(dim=-1, keepdim=True).clamp_(max=logits.size(-1) - 1)
    remove_sorted = dist_sorted > dist_sorted.gather(-1, last)
    remove_sorted[..., :n_keep] = False
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def epsilon(logits: torch.Tensor, eps: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Epsilon sampling (Hewitt et al.): drop tokens with probability below the absolute cut-off ``eps``."""
    return _epsilon(check_logits(logits), validate_epsilon(eps), _keep_count(min_tokens_to_keep))


def _epsilon(logits, eps, n_keep=1):
    remove = logits.softmax(dim=-1) < eps
    return logits.masked_fill(_protect_top(remove, logits, n_keep), NEG_INF)


def eta(logits: torch.Tensor, eps: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Eta sampling (Hewitt et al.): an entropy-dependent cut-off ``min(eps, sqrt(eps) * exp(-H))``."""
    return _eta(check_logits(logits), validate_epsilon(eps, "eta epsilon"), _keep_count(min_tokens_to_keep))


def _eta(logits, eps, n_keep=1):
    probs = logits.softmax(dim=-1)
    H = torch.distributions.Categorical(logits=logits).entropy()
    e = torch.tensor(eps, dtype=logits.dtype, device=logits.device)
    cut = torch.minimum(e, e.sqrt() * torch.exp(-H))[..., None]
    return logits.masked_fill(_protect_top(probs < cut, logits, n_keep), NEG_INF)


# ------------------------------------------------------------------------------------ history-dependent
def _ids_like(logits: torch.Tensor, ids) -> torch.Tensor:
    """``ids`` as a long tensor ``(..., T)`` whose leading shape matches ``logits`` ``(..., V)``."""
    t = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(list(ids), dtype=torch.long)
    t = t.to(device=logits.device, dtype=torch.long)
    if t.dim() == 1 and logits.dim() > 1:
        t = t.expand(*logits.shape[:-1], t.size(0))
    if tuple(t.shape[:-1]) != tuple(logits.shape[:-1]):
        raise DecodingError(
            f"ids of shape {tuple(t.shape)} do not match logits of shape {tuple(logits.shape)}: "
            "give ids (..., T) with the same leading dimensions as logits (..., V)"
        )
    V = logits.size(-1)
    if t.numel() and (bool((t < 0).any()) or bool((t >= V).any())):
        raise DecodingError(f"ids must be in [0, {V}), got values in [{int(t.min())}, {int(t.max())}]")
    return t


def repetition_penalty(logits: torch.Tensor, ids, penalty: float) -> torch.Tensor:
    """CTRL's penalty on every token that occurs in ``ids`` (prompt included): positive logits are divided by
    ``penalty``, negative ones multiplied, each token at most once. ``penalty > 1`` discourages repeats.

    logits ``(..., V)``, ids ``(..., T)`` (or ``(T,)`` shared by every row).
    """
    return _repetition_penalty(check_logits(logits), ids, validate_penalty(penalty))


def _repetition_penalty(logits, ids, penalty):
    t = _ids_like(logits, ids)
    if t.size(-1) == 0:
        return logits.clone()
    seen = logits.gather(-1, t)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(-1, t, seen)


def no_repeat_ngram(logits: torch.Tensor, ids, n: int) -> torch.Tensor:
    """Ban (set to -inf) each token that would complete an ``n``-gram already present in ``ids``.

    With ``n == 1`` every seen token is banned. logits ``(..., V)``, ids ``(..., T)`` or ``(T,)``.
    """
    return _no_repeat_ngram(check_logits(logits), ids, validate_ngram(n))


def _no_repeat_ngram(logits, ids, n):
    t = _ids_like(logits, ids)
    T = t.size(-1)
    if T < n:
        return logits.clone()
    lead = t.shape[:-1]
    flat_ids = t.reshape(-1, T)
    flat = logits.reshape(-1, logits.size(-1))
    banned = torch.zeros(flat.shape, dtype=torch.bool, device=logits.device)
    prefix_len = n - 1
    for row in range(flat_ids.size(0)):
        seq = flat_ids[row].tolist()
        tail = tuple(seq[T - prefix_len:]) if prefix_len else ()
        for s in range(T - n + 1):
            if tuple(seq[s:s + prefix_len]) == tail:
                banned[row, seq[s + prefix_len]] = True
    return flat.masked_fill(banned, NEG_INF).reshape(*lead, logits.size(-1))


# ------------------------------------------------------------------------------------------- statistics
def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of ``softmax(logits)`` ``(..., V) -> (...)``; -inf entries contribute 0."""
    logp = logits.log_softmax(dim=-1)
    p = logp.exp()
    return -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(-1) / math.log(2.0)


def kept_count(logits: torch.Tensor) -> torch.Tensor:
    """How many tokens are still finite ``(..., V) -> (...)``."""
    return torch.isfinite(logits).sum(-1)


__all__ = [
    "DecodingError", "check_logits", "temperature", "top_k", "top_p", "min_p", "typical", "epsilon", "eta",
    "repetition_penalty", "no_repeat_ngram", "entropy_bits", "kept_count",
]
