"""TinyGPT's cached decoding step for a few new tokens, in NumPy on the CPU.

At the shipped size (under 1M parameters) one decoding step is a few hundred tiny operations: its cost is
dispatch and weight traffic, not arithmetic. A NumPy operation on a 128-vector costs about a microsecond, a
torch one a few, so the same computation written in NumPy runs a step about 1.6x faster (0.65 -> 0.4 ms for
the shipped ``docs-byte`` on the project's CPU). ``TinyGPT.forward`` uses it for
inference without gradients (decoding steps, speculative verification, beams); tests check it against the
full torch forward pass.

The weights are copied once into the layout BLAS likes for a few rows (``(in, out)``, contiguous: a
transposed view costs 5x more per call) with the algebra folded in ahead of time, which changes only
rounding:

* each LayerNorm's gain and bias go into the linear layer that reads it: ``(n w + b) W = n (w W) + b W``;
* the attention scale ``1/sqrt(Dh)`` goes into the query rows (RoPE is linear, so it commutes);
* exact GELU ``h/2 (1 + erf(h/sqrt 2))`` is computed on ``u = h/sqrt 2`` (folded into the MLP's first
  layer) as ``u (1 + erf u)``, with the remaining ``sqrt(2)/2`` folded into the MLP's second layer.

The copies are rebuilt when a parameter changes in place (``load_state_dict``, ``p.mul_()``), after any
optimizer step (a global post-step hook, since fused optimizers bump no version counters), when a parameter or
submodule is replaced or added, or a parameter's storage moves (``model.double()``, ``p.data = ...``,
``vector_to_parameters``). What it cannot see is writing into a tensor through ``p.data`` (``p.data.mul_()``)
or changing a module's settings (a LayerNorm's ``eps``): call :meth:`TinyGPT.refresh_fast_path` after that.
Modules with forward hooks (head ablations, probes) or in training mode always take the torch path, so hooks
run.

Lesson: ``notebooks/00_tour.ipynb``.
"""
from __future__ import annotations

import math
import operator

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from .kv_cache import KVCache

_optimizer_steps = [0]  # bumped after every optimizer step anywhere: weights may have changed


def _count_step(optimizer, args, kwargs):
    _optimizer_steps[0] += 1


register_optimizer_step_post_hook(_count_step)

#: New tokens per call up to which the NumPy path is used (decoding steps and speculative verification);
#: longer inputs (a prompt's prefill) go through torch's fused attention.
MAX_NEW_TOKENS = 16


def _erf(u: np.ndarray) -> np.ndarray:
    # torch's vectorised erf on a zero-copy view: several times faster than scipy.special.erf here
    return torch.from_numpy(u).erf().numpy()


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy().copy()


def _fold_norm(ln, lin, col_scale=None):
    """``(in, out)`` weight and ``(out,)`` bias of ``lin(ln_affine(n))`` as one linear map of the
    normalised ``n``; ``col_scale`` (out,) then scales its outputs."""
    w_t = lin.weight.detach().double().T  # (in, out)
    bias = None if lin.bias is None else lin.bias.detach().double()
    if ln.bias is not None:
        bias = ln.bias.detach().double() @ w_t + (0.0 if bias is None else bias)
    w_t = ln.weight.detach().double()[:, None] * w_t
    if col_scale is not None:
        w_t = w_t * col_scale
        bias = None if bias is None else bias * col_scale
    return w_t, bias


class _Layer:
    """One block's folded weights as contiguous arrays (``mlp`` is False in an attention-only block)."""

    def __init__(self, blk, dtype):
        a, D, Dh = blk.attn, blk.attn.qkv.in_features, blk.attn.head_dim
        scale = torch.ones(3 * D, dtype=torch.float64)
        scale[:D] = 1.0 / math.sqrt(Dh)
        self.ln1_eps = blk.ln1.eps
        self.qkv_t, self.qkv_b = (_cast(t, dtype) for t in _fold_norm(blk.ln1, a.qkv, scale))
        self.proj_t, self.proj_b = _cast(a.proj.weight.detach().double().T, dtype), _bias(a.proj, dtype)
        self.mlp = blk.mlp is not None
        if self.mlp:
            self.ln2_eps = blk.ln2.eps
            inv_sqrt2 = torch.full((blk.mlp.fc.out_features,), 1.0 / math.sqrt(2.0), dtype=torch.float64)
            self.fc_t, self.fc_b = (_cast(t, dtype) for t in _fold_norm(blk.ln2, blk.mlp.fc, inv_sqrt2))
            self.out_t = _cast(blk.mlp.proj.weight.detach().double().T * (math.sqrt(2.0) / 2.0), dtype)
            self.out_b = _bias(blk.mlp.proj, dtype)


def _cast(t: torch.Tensor | None, dtype) -> np.ndarray | None:
    return None if t is None else np.ascontiguousarray(t.numpy().astype(dtype))


def _bias(lin, dtype):
    return None if lin.bias is None else _cast(lin.bias.detach().double(), dtype)


def _normalise(x: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm without its affine part (folded into the next layer's weights)."""
    inv_d = 1.0 / x.shape[-1]
    x = x - np.add.reduce(x, -1, keepdims=True) * inv_d
    x *= 1.0 / np.sqrt(np.add.reduce(x * x, -1, keepdims=True) * inv_d + eps)
    return x


_VERSION = operator.attrgetter("_version")
_MODULES = operator.attrgetter("_modules")
_TRAINING = operator.attrgetter("training")
_HOOKS = operator.attrgetter("_forward_hooks")
_PRE_HOOKS = operator.attrgetter("_forward_pre_hooks")


def _global_hooks() -> bool:
    from torch.nn.modules import module as M

    return bool(M._global_forward_hooks or M._global_forward_pre_hooks)


class ChunkedKVCache:
    """Keys and values for one-token NumPy steps, in chunks of ``chunk`` positions: ``k``, ``v``
    ``(L, C, B, H, chunk, Dh)`` NumPy arrays, filled up to ``length``.

    Why: a step of a batch reads every cached key and value once, so it runs at memory speed, and memory streams
    fastest through one contiguous block. In :class:`KVCache`'s ``(L, B, H, max_len, Dh)`` the first ``length``
    positions of each row and head are a separate run with a gap after it, and every run restarts the stream (at
    half the context, attention of 128 rows reads about 2x slower than the same bytes in one block, on the
    project's CPU). Here the chunks in use are one block: a step reads whole chunks and masks the positions not
    yet written (at most ``chunk - 1`` per row and head read for nothing). Used by the compressor's lanes
    (:mod:`workbench.datalab.compress`); only :class:`NumpyStep` reads it, one new token per step, and it has no
    ``crop`` or ``reorder``."""

    def __init__(self, n_layer, batch_size, n_head, head_dim, max_len, *, chunk: int = 64, dtype=np.float32):
        if chunk < 1 or max_len < 1:
            raise ValueError(f"chunk and max_len must be positive, got {chunk} and {max_len}")
        n_chunks = -(-max_len // chunk)
        shape = (n_layer, n_chunks, batch_size, n_head, chunk, head_dim)
        self.k = np.zeros(shape, dtype=dtype)  # zeros: positions not yet written stay finite (masked, weight 0)
        self.v = np.zeros(shape, dtype=dtype)
        self._s = np.empty((batch_size, n_head, n_chunks * chunk), dtype=dtype)  # one layer's scores
        self.chunk, self.length, self.max_len = chunk, 0, max_len

    @property
    def batch_size(self) -> int:
        return self.k.shape[2]

    check_room = KVCache.check_room

    def advance(self, t: int) -> None:
        self.length += t

    def attend(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Store one position's ``k, v`` ``(B, H, Dh)`` and attend ``q`` ``(B, H, Dh)`` (already scaled) over every
        cached position -> ``(B, H, Dh)``.

        The scores are written as ``(n, B, H, 1, chunk)`` products over the ``n`` chunks in use into a
        ``(B, H, n chunk)`` buffer, so the softmax runs along contiguous rows."""
        P, t = self.chunk, self.length
        c, p = divmod(t, P)
        n = c + 1
        self.k[layer, c, :, :, p] = k
        self.v[layer, c, :, :, p] = v
        B, H = q.shape[:2]
        s = self._s[:, :, : n * P]  # (B, H, n P)
        chunks = s.reshape(B, H, n, 1, P).transpose(2, 0, 1, 3, 4)  # (n, B, H, 1, P), a view of s
        np.matmul(q[:, :, None], self.k[layer, :n].swapaxes(-1, -2), out=chunks)
        s[:, :, t + 1 :] = -np.inf  # not yet written
        s -= s.max(-1, keepdims=True)
        np.exp(s, out=s)
        y = np.add.reduce(chunks @ self.v[layer, :n], axis=0)[:, :, 0]  # (B, H, Dh), unnormalised
        y *= 1.0 / np.add.reduce(s, -1, keepdims=True)  # the softmax's denominator, after the product
        return y


def _linear(x, w_t, b):
    """``x (..., in) @ w_t (in, out) + b`` as one 2-D product: a ``(B, 1, in)`` stack would run as B vector
    products (about 1.8x slower for a decoding step's 128 rows)."""
    y = (x.reshape(-1, x.shape[-1]) @ w_t).reshape(*x.shape[:-1], w_t.shape[1])
    if b is not None:
        y += b
    return y


class NumpyStep:
    """Runs ``(B, t)`` new tokens through a TinyGPT whose keys and values are in a :class:`KVCache`."""

    def __init__(self, model):
        self.model = model
        # Where every submodule and parameter hangs (owner dict, name), what hangs there, and each parameter's
        # storage and version: re-checked on every call with C-level map()s, since a draft step is ~80 us.
        mods = list(model.modules())
        self._all_modules = mods
        slots = [(m._modules, n, c) for m in mods for n, c in m._modules.items()]
        self._mod_dicts, self._mod_names, self._mods = (list(x) for x in zip(*slots)) if slots else ([], [], [])
        slots = [(m._parameters, n, p) for m in mods for n, p in m._parameters.items() if p is not None]
        self._par_dicts, self._par_names, self._params = (list(x) for x in zip(*slots))
        self._versions = list(map(_VERSION, self._params))
        # storage swaps (model.double(), .to(), torch.nn.utils.vector_to_parameters) bump no version
        self._ptrs = list(map(torch.Tensor.data_ptr, self._params))
        self._mod_lens = list(map(len, (m._modules for m in mods)))  # a block appended to model.blocks
        self._steps = _optimizer_steps[0]
        c = model.config
        dtype = np.float64 if model.wte.weight.dtype == torch.float64 else np.float32
        self.H, self.Dh, self.D = c.n_head, c.head_dim, c.n_embd
        self.wte = _np(model.wte.weight)
        self.wpe = _np(None if model.wpe is None else model.wpe.weight)
        self.ln_f_eps = model.ln_f.eps
        lm_w, lm_b = _fold_norm(model.ln_f, model.lm_head)
        self.lm_t, self.lm_b = _cast(lm_w, dtype), _cast(lm_b, dtype)
        self.layers = [_Layer(b, dtype) for b in model.blocks]
        self.rope = c.pos == "rope"
        self._rope_tables = None  # (cos, sin) as one tuple, so threads stepping at once never see a mixed pair
        self._masks: dict[int, np.ndarray] = {}

    def current(self, model) -> bool:
        """True while the copies still match the model's modules and parameters."""
        return (model is self.model and self._steps == _optimizer_steps[0]
                and all(map(operator.is_, map(dict.get, self._mod_dicts, self._mod_names), self._mods))
                and all(map(operator.is_, map(dict.get, self._par_dicts, self._par_names), self._params))
                and list(map(_VERSION, self._params)) == self._versions
                and list(map(torch.Tensor.data_ptr, self._params)) == self._ptrs
                and list(map(len, map(_MODULES, self._all_modules))) == self._mod_lens)

    def applies(self) -> bool:
        """False when some module has forward hooks or is in training mode: then torch must run the modules."""
        mods = self._all_modules
        return not (_global_hooks() or any(map(_TRAINING, mods)) or any(map(_HOOKS, mods))
                    or any(map(_PRE_HOOKS, mods)))

    def _rope(self, past: int, t: int):
        """cos and sin ``(t, 1, 1, Dh)``, broadcasting over (query/key, head)."""
        tables = self._rope_tables
        if tables is None or tables[0].shape[0] < past + t:
            cos, sin = self.model.rope_table(torch.arange(past + t))
            tables = self._rope_tables = (cos.numpy()[:, None, None], sin.numpy()[:, None, None])
        return tables[0][past : past + t], tables[1][past : past + t]

    def _mask(self, t: int, dtype) -> np.ndarray:
        m = self._masks.get(t)
        if m is None or m.dtype != dtype:
            m = self._masks[t] = np.triu(np.full((t, t), -np.inf, dtype=dtype), 1)
        return m

    @staticmethod
    def _mlp(x: np.ndarray, L: _Layer) -> np.ndarray:
        u = _linear(_normalise(x, L.ln2_eps), L.fc_t, L.fc_b)  # u = h / sqrt(2)
        g = _erf(u)
        g += 1.0
        g *= u
        return _linear(g, L.out_t, L.out_b)

    def __call__(self, ids: np.ndarray, cache) -> np.ndarray:
        """ids ``(B, t)`` int -> logits ``(B, t, V)``; writes the new keys and values and advances ``cache`` (a
        :class:`KVCache`, or a :class:`ChunkedKVCache` for one new token)."""
        B, t = ids.shape
        H, Dh, D = self.H, self.Dh, self.D
        past, end = cache.length, cache.check_room(t)
        chunked = isinstance(cache, ChunkedKVCache)
        if chunked:
            if t != 1:
                raise ValueError(f"a ChunkedKVCache takes one new token per step, got {t}")
        else:
            kc, vc = cache.k.numpy(), cache.v.numpy()  # (L, B, H, max_len, Dh) views, written in place
        x = self.wte[ids]  # (B, t, D)
        if self.wpe is not None:
            x += self.wpe[past:end]
        if self.rope:
            cos, sin = self._rope(past, t)
            half = Dh // 2
        mask = self._mask(t, x.dtype) if t > 1 else None  # the new tokens see each other causally
        for i, L in enumerate(self.layers):
            qkv = _linear(_normalise(x, L.ln1_eps), L.qkv_t, L.qkv_b).reshape(B, t, 3, H, Dh)
            qk = qkv[:, :, :2]  # (B, t, 2, H, Dh), queries already scaled by 1/sqrt(Dh)
            if self.rope:
                rot = np.concatenate((qk[..., half:], qk[..., :half]), axis=-1)
                rot[..., :half] *= -1
                qk = qk * cos + rot * sin
            if chunked:
                y = cache.attend(i, qk[:, 0, 0], qk[:, 0, 1], qkv[:, 0, 2]).reshape(B, 1, D)
                x += _linear(y, L.proj_t, L.proj_b)
                if L.mlp:
                    x += self._mlp(x, L)
                continue
            kc[i, :, :, past:end] = qk[:, :, 1].transpose(0, 2, 1, 3)
            vc[i, :, :, past:end] = qkv[:, :, 2].transpose(0, 2, 1, 3)
            s = qk[:, :, 0].transpose(0, 2, 1, 3) @ kc[i, :, :, :end].transpose(0, 1, 3, 2)  # (B, H, t, S)
            if mask is not None:
                s[..., past:] += mask
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            s *= 1.0 / np.add.reduce(s, -1, keepdims=True)
            y = (s @ vc[i, :, :, :end]).transpose(0, 2, 1, 3).reshape(B, t, D)
            x += _linear(y, L.proj_t, L.proj_b)
            if L.mlp:
                x += self._mlp(x, L)
        cache.advance(t)
        return _linear(_normalise(x, self.ln_f_eps), self.lm_t, self.lm_b)
