"""RecurrentLM: a gated linear attention language model whose memory is a constant-size state.

Read top to bottom: the config, the two forms of the recurrence (a plain loop and a chunked parallel form),
the layer, the block, the model, its cache, and :func:`capture_state`.

Each layer keeps, per head, a matrix state ``S`` of shape ``(Dk, Dv)`` and updates it once per token
(Yang et al. 2023, "Gated Linear Attention Transformers with Hardware-Efficient Training", eq. 1-3)::

    S_t = diag(a_t) S_{t-1} + k_t^T v_t        a_t = sigmoid(x_t W_a)^(1/tau)  in (0, 1)^Dk, data-dependent
    o_t = q_t S_t

``a_t`` forgets per key channel and depends on the token, as the selective scan of Mamba (Gu & Dao 2023) does
with its input-dependent step size. Unrolled, ``o_t = sum_{s<=t} (q_t * prod_{s<j<=t} a_j) . k_s  v_s``: softmax
attention without the softmax and with a decay, so the weights ``q_t . (prod a) k_s`` are the layer's per-position
mixing weights (:func:`capture_state` returns them).

Two ways to compute the same outputs:

* :func:`gla_recurrent`, the loop above, token by token: what decoding runs (one state update per new token,
  the same cost at T = 16,384 as at T = 16) and the reference the tests hold the fast form to;
* :func:`gla_chunked`, for training: the sequence is cut into chunks of ``C`` tokens; inside a chunk an
  attention-like ``(C, C)`` matrix with cumulative decays, between chunks the state is passed on (GLA section 4).
  Every decay is computed in log space as ``exp(b_t - b_s)`` with ``b_t - b_s <= 0``: nothing overflows and
  nothing is divided by a tiny cumulative product, at any gate value.

The cache of a :class:`RecurrentLM` is the per-layer state ``(B, H, Dk, Dv)`` and a length, plus a short ring of
the last ``rewind`` states so that speculative decoding can crop back a few tokens (:class:`RecurrentCache`).
No positions are embedded: the model runs on sequences longer than ``block_size`` (the training context), though
what it learned about longer ones is another matter.

>>> m = RecurrentLM(RecurrentConfig(vocab_size=257, n_layer=2, n_head=2, n_embd=32, d_state=16, block_size=64))
>>> m(torch.zeros(1, 5, dtype=torch.long)).logits.shape
torch.Size([1, 5, 257])

Lesson: ``notebooks/08_memory_and_icl.ipynb``.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ConfigDict, check_config, check_int
from .interface import LMOutput, ModelError, as_batch, check_ids
from .tinygpt import check_tokenizer, init_gpt2

#: ``d_state`` (key dimension per head) is allowed in [1, MAX_D_STATE]. Above it the chunked form's
#: ``(B, H, T / C, C, C, Dk)`` decay tensor and the state itself stop being small for a workbench model.
MAX_D_STATE = 512
#: :func:`capture_state` returns mixing weights ``(L, B, H, T, T)`` only up to this length (memory grows as T^2 Dk).
MIXING_MAX_T = 512
#: Why the attention tools do not apply (read by ``attention.capture`` and ``models.layout``).
NO_ATTENTION = ("it is a recurrent model (gated linear attention): each layer keeps a fixed-size state instead of "
                "attending over past tokens, so there are no softmax attention probabilities, no KV cache and no "
                "query/key/value attention points; use workbench.models.recurrent.capture_state for its state "
                "norms and mixing weights")


class RecurrentCacheError(ModelError):
    """A recurrent cache asked for something it cannot do (crop back further than the states it kept)."""


@dataclass
class RecurrentConfig(ConfigDict):
    """A gated-linear-attention model's shape.

    ``d_state`` is the key dimension per head: each head's state is ``(d_state, n_embd // n_head)``.
    ``block_size`` is the training context (windows :func:`workbench.models.train` cuts); decoding and forward
    may run longer. ``chunk_size`` is the chunk of the parallel form (any value gives the same outputs; 16 keeps the
    ``(C, C, Dk)`` decay tensor small). ``gate_rank`` and ``gate_tau``: the decay is
    ``sigmoid(x W_down W_up + b)^(1 / gate_tau)``, a low-rank projection and a temperature that keeps decays near
    1 at init (GLA uses rank 16 and tau 16). ``rewind`` is how many past states a cache keeps by default (crop).
    """

    vocab_size: int = 257
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    d_state: int = 32
    block_size: int = 256
    chunk_size: int = 16
    gate_rank: int = 16
    gate_tau: float = 16.0
    mlp_ratio: int = 4
    tied: bool = True
    dropout: float = 0.0
    rewind: int = 16

    def __post_init__(self):
        check_config(self, ("vocab_size", "n_layer", "n_head", "n_embd", "block_size", "chunk_size", "gate_rank",
                            "mlp_ratio"))
        check_int(self, "d_state", 1, MAX_D_STATE, what="key dimension per head")
        if not (isinstance(self.gate_tau, (int, float)) and math.isfinite(self.gate_tau) and self.gate_tau >= 1):
            raise ValueError(f"RecurrentConfig.gate_tau must be a finite number >= 1, got {self.gate_tau!r}")
        check_int(self, "rewind", lo=0)

    @property
    def head_dim(self) -> int:
        """Dv, the value dimension per head."""
        return self.n_embd // self.n_head


# -- the recurrence, two ways ------------------------------------------------------------------------------------


def gla_recurrent(q, k, v, log_a, state):
    """The recurrence as written: q, k, log_a ``(B, H, T, Dk)``, v ``(B, H, T, Dv)``, state ``(B, H, Dk, Dv)``.

    Returns the outputs ``(B, H, T, Dv)`` and the list of the ``T`` states after each token, ``(B, H, Dk, Dv)``
    each. ``log_a`` is the log of the decay (``<= 0``)."""
    outs, states = [], []
    for t in range(q.size(2)):
        # S_t = diag(a_t) S_{t-1} + k_t^T v_t: the decay scales the state's rows (key channels)
        state = log_a[:, :, t, :, None].exp() * state + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append((q[:, :, t, None, :] @ state).squeeze(-2))  # o_t = q_t S_t, (B, H, Dv)
        states.append(state)
    return torch.stack(outs, dim=2), states


def gla_chunked(q, k, v, log_a, state, chunk: int):
    """The same outputs as :func:`gla_recurrent` in parallel over chunks of ``chunk`` tokens; shapes as there.

    Returns the outputs ``(B, H, T, Dv)`` and the state after the last token ``(B, H, Dk, Dv)``.
    Within a chunk, with ``b_t = sum_{j<=t} log a_j`` counted from the chunk's start (GLA section 4.2)::

        o_t = (q_t * exp(b_t)) S_in  +  sum_{s<=t in chunk} (q_t . (exp(b_t - b_s) * k_s)) v_s
        S_out = exp(b_C) * S_in  +  sum_s (exp(b_C - b_s) * k_s)^T v_s

    Every exponent is ``<= 0``. The intra-chunk term builds a ``(B, H, n, C, C, Dk)`` tensor, which is why the
    chunk is kept short; GLA's secondary chunking trades that memory for matmuls, not done here.
    """
    B, H, T, Dk = q.shape
    Dv = v.size(-1)
    pad = -T % chunk
    if pad:  # zero keys add nothing and log a = 0 (decay 1) keeps the state: padding leaves S_out unchanged
        q, k, v, log_a = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v, log_a))
    n = (T + pad) // chunk
    q, k, log_a = (x.view(B, H, n, chunk, Dk) for x in (q, k, log_a))
    v = v.view(B, H, n, chunk, Dv)
    b = log_a.cumsum(dim=3)  # (B, H, n, C, Dk), cumulative log decay within each chunk, decreasing

    # intra-chunk: A[t, s] = sum_d q_td k_sd exp(b_td - b_sd) for s <= t; masked before exp (b_t - b_s > 0 above)
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    diff = (b[..., :, None, :] - b[..., None, :, :]).masked_fill(~causal[:, :, None], float("-inf"))
    A = torch.einsum("bhntd,bhnsd,bhntsd->bhnts", q, k, diff.exp())  # (B, H, n, C, C)
    o = A @ v  # (B, H, n, C, Dv)

    # what each chunk adds to the state, and how much it decays the state it receives
    b_end = b[:, :, :, -1:, :]  # (B, H, n, 1, Dk)
    added = (k * (b_end - b).exp()).transpose(-1, -2) @ v  # (B, H, n, Dk, Dv)
    kept = b_end.squeeze(3).exp()[..., None]  # (B, H, n, Dk, 1)
    entering = []
    for c in range(n):  # the only sequential part: n = T / C small state updates
        entering.append(state)
        state = kept[:, :, c] * state + added[:, :, c]
    o = o + (q * b.exp()) @ torch.stack(entering, dim=2)  # inter-chunk: (B, H, n, C, Dk) @ (B, H, n, Dk, Dv)
    return o.reshape(B, H, n * chunk, Dv)[:, :, :T], state


# -- the model ---------------------------------------------------------------------------------------------------


class GatedLinearAttention(nn.Module):
    """One GLA token mixer: ``(B, T, D) -> (B, T, D)``, carrying a state ``(B, H, Dk, Dv)`` across calls."""

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        D, H, Dk, Dv = cfg.n_embd, cfg.n_head, cfg.d_state, cfg.head_dim
        self.n_head, self.d_state, self.head_dim, self.chunk, self.tau = H, Dk, Dv, cfg.chunk_size, cfg.gate_tau
        self.q = nn.Linear(D, H * Dk, bias=False)
        self.k = nn.Linear(D, H * Dk, bias=False)
        self.v = nn.Linear(D, H * Dv, bias=False)
        # the decay gate: low rank (GLA eq. 5), so it costs 2 r D parameters instead of D H Dk
        self.gate_down = nn.Linear(D, cfg.gate_rank, bias=False)
        self.gate_up = nn.Linear(cfg.gate_rank, H * Dk, bias=True)
        # output: each head's o normalised (linear attention outputs grow with the state; GLA normalises per
        # head), then an output gate swish(x W_r) (GLA eq. 4), then the projection back to the residual stream
        self.norm = nn.LayerNorm(Dv)
        self.out_gate = nn.Linear(D, D, bias=True)
        self.proj = nn.Linear(D, D, bias=False)

    def heads(self, x):
        """q, k, log_a ``(B, H, T, Dk)`` and v ``(B, H, T, Dv)`` of ``x`` ``(B, T, D)``."""
        B, T, _ = x.shape
        H, Dk, Dv = self.n_head, self.d_state, self.head_dim
        q = self.q(x).view(B, T, H, Dk).transpose(1, 2) * Dk ** -0.5  # scaled as softmax attention's q k / sqrt(d)
        k = self.k(x).view(B, T, H, Dk).transpose(1, 2)
        v = self.v(x).view(B, T, H, Dv).transpose(1, 2)
        # log a = log sigmoid(z) / tau, in (-inf, 0): logsigmoid is exact where sigmoid(z) underflows
        log_a = (F.logsigmoid(self.gate_up(self.gate_down(x))) / self.tau).view(B, T, H, Dk).transpose(1, 2)
        return q, k, v, log_a

    def forward(self, x, state=None, keep: int = 0, record: dict | None = None):
        """x ``(B, T, D)``; state ``(B, H, Dk, Dv)`` or None (zeros).

        Returns ``(y (B, T, D), final state, states after each of the last `keep` tokens)``. The last ``keep``
        tokens (all of them when ``record`` is a dict or ``T == 1``) go through the recurrent loop, which yields
        every state; the rest through the chunked form. ``record`` receives ``state_norms`` ``(B, H, T)``,
        ``mixing`` ``(B, H, T, T)`` (T <= MIXING_MAX_T, else absent), ``log_decay`` ``(B, H, T)`` (mean over Dk)
        and ``o`` ``(B, H, T, Dv)``.
        """
        B, T, D = x.shape
        q, k, v, log_a = self.heads(x)
        if state is None:
            state = x.new_zeros(B, self.n_head, self.d_state, self.head_dim)
        # one token (a decoding step) always takes the loop: the chunked form would pad it to a whole chunk
        tail = T if record is not None or T == 1 else min(keep, T)
        outs, kept = [], []
        if tail < T:
            o, state = gla_chunked(q[:, :, :T - tail], k[:, :, :T - tail], v[:, :, :T - tail], log_a[:, :, :T - tail],
                                   state, self.chunk)
            outs.append(o)
        if tail:
            o, kept = gla_recurrent(q[:, :, T - tail:], k[:, :, T - tail:], v[:, :, T - tail:],
                                    log_a[:, :, T - tail:], state)
            state = kept[-1]
            outs.append(o)
        o = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)  # (B, H, T, Dv)
        if record is not None:
            record["o"] = o
            record["state_norms"] = torch.stack([s.flatten(-2).norm(dim=-1) for s in kept], dim=-1)
            record["log_decay"] = log_a.mean(-1)
            if T <= MIXING_MAX_T:
                record["mixing"] = mixing_weights(q, k, log_a)
        y = self.norm(o).transpose(1, 2).reshape(B, T, D) * F.silu(self.out_gate(x))
        return self.proj(y), state, kept


def mixing_weights(q, k, log_a):
    """The effective weights ``w[t, s] = q_t . (prod_{s<j<=t} a_j * k_s)`` for ``s <= t`` (0 above the diagonal):
    ``(B, H, T, T)`` from q, k, log_a ``(B, H, T, Dk)``, so that the layer's output is ``o_t = sum_s w[t, s] v_s``
    (from a zero state). Unnormalised and signed, unlike softmax attention; memory ``T^2 Dk`` per head."""
    T = q.size(2)
    b = log_a.cumsum(dim=2)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    diff = (b[..., :, None, :] - b[..., None, :, :]).masked_fill(~causal[:, :, None], float("-inf"))
    return torch.einsum("bhtd,bhsd,bhtsd->bhts", q, k, diff.exp())


class MLP(nn.Module):
    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm residual block: ``x + mix(norm(x))``, then ``x + mlp(norm(x))``, as TinyGPT's with GLA for attention."""

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.mix = GatedLinearAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(self, x, state=None, keep: int = 0, record=None):
        y, state, kept = self.mix(self.ln1(x), state, keep, record)
        x = x + self.drop(y)
        return x + self.drop(self.mlp(self.ln2(x))), state, kept


class RecurrentLM(nn.Module):
    """A GLA language model satisfying the workbench model interface (``interface.py``) with a constant-size cache.

    ``forward(ids, capture=True)`` returns ``attentions=None`` (there are none) and the residual stream
    ``(L + 1, B, T, D)``; :func:`capture_state` returns what the layers have instead (state norms, mixing weights).
    """

    #: No attention probabilities: the attention tools read :data:`no_attention_reason` and say so.
    supports_capture = False
    no_attention_reason = NO_ATTENTION

    def __init__(self, config: RecurrentConfig, tokenizer=None, name: str = "recurrent"):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.name = name
        check_tokenizer(tokenizer, config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # no position embedding: the state is the order
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tied:
            self.lm_head.weight = self.wte.weight
        init_gpt2(self, config.n_layer)  # the same GPT-2 initialisation as TinyGPT

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the (tied) token embedding, as TinyGPT counts."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    def _run(self, ids, cache=None, capture=False, records=None) -> LMOutput:
        ids = as_batch(ids, self.device)
        check_ids(ids, self.config.vocab_size)
        if cache is not None and cache.batch_size != ids.size(0):
            raise ModelError(f"the cache holds {cache.batch_size} sequences but ids have {ids.size(0)} rows")
        x = self.drop(self.wte(ids))  # (B, T, D)
        residuals = [x] if capture else None
        keep = cache.keep_for(ids.size(1)) if cache is not None else 0
        new_states, kept = [], []
        for i, block in enumerate(self.blocks):
            state = cache.states[i] if cache is not None else None
            x, state, k = block(x, state, keep, records[i] if records is not None else None)
            new_states.append(state)
            kept.append(k)
            if capture:
                residuals.append(x)
        logits = self.lm_head(self.ln_f(x))
        if cache is not None:
            cache.advance(ids.size(1), new_states, kept)
        return LMOutput(logits, None, torch.stack(residuals) if capture else None)

    def forward(self, ids, capture: bool = False, cache: "RecurrentCache | None" = None) -> LMOutput:
        """ids ``(B, T)`` -> :class:`LMOutput` with logits ``(B, T, V)``; any ``T`` (no position limit).

        ``capture=True`` adds the residual stream ``(L + 1, B, T, D)``; ``attentions`` is always None."""
        return self._run(ids, cache, capture)

    def new_cache(self, batch_size: int = 1, max_len: int | None = None,
                  rewind: int | None = None) -> "RecurrentCache":
        """An empty cache (zero states) for ``batch_size`` sequences. ``max_len`` is accepted for the interface and
        ignored: the state does not grow. ``rewind`` (default ``config.rewind``) past states are kept for crop."""
        c = self.config
        rewind = c.rewind if rewind is None else rewind
        if not isinstance(rewind, int) or isinstance(rewind, bool) or rewind < 0:
            raise ModelError(f"rewind must be an int >= 0, got {rewind!r}")
        w = self.wte.weight
        states = [torch.zeros(batch_size, c.n_head, c.d_state, c.head_dim, dtype=w.dtype, device=w.device)
                  for _ in range(c.n_layer)]
        return RecurrentCache(states, rewind)

    def step(self, ids, cache: "RecurrentCache", capture: bool = False) -> LMOutput:
        """Feed new tokens ``(B, t)`` through the cache: one state update per token and layer, whatever the
        length so far (O(1) in it; attention's step is O(length))."""
        if not isinstance(cache, RecurrentCache):
            raise ModelError(f"RecurrentLM.step needs the cache of its new_cache(), got {type(cache).__name__}")
        return self._run(ids, cache, capture)


class RecurrentCache:
    """The decoding state of a :class:`RecurrentLM`: per layer ``(B, H, Dk, Dv)``, the same size at any length.

    * ``length``: tokens fed so far.
    * ``reorder(index)``: select batch rows (beam search), the kept past states too.
    * ``crop(length)``: go back to the state after ``length`` tokens. A state cannot be un-updated, so the cache
      keeps the states after each of the last ``rewind`` tokens (a ring; references, not copies) and can go back
      that far: enough for speculative decoding, which crops at most its draft length. Further back raises
      :class:`RecurrentCacheError`; re-run the prefix into a new cache instead.
    * ``max_len`` is unbounded (``sys.maxsize``): nothing here runs out of room.
    """

    max_len = 2 ** 63 - 1

    def __init__(self, states: list[torch.Tensor], rewind: int):
        self.states = states
        self.rewind = rewind
        self.length = 0
        self.past: deque[list[torch.Tensor]] = deque(maxlen=rewind)  # past[i]: the states after length - 1 - i

    @property
    def batch_size(self) -> int:
        return self.states[0].size(0)

    @property
    def nbytes(self) -> int:
        """Bytes held: the states and the kept past states."""
        per = sum(s.numel() * s.element_size() for s in self.states)
        return per * (1 + len(self.past))

    def keep_for(self, t: int) -> int:
        """How many of ``t`` new tokens must yield their states: the last ``rewind + 1`` (the one before the
        kept ones included), or all ``t`` when fewer."""
        return min(t, self.rewind + 1) if self.rewind else 0

    def advance(self, t: int, states: list[torch.Tensor], kept: list[list[torch.Tensor]]) -> None:
        """Record ``t`` new tokens: ``states`` after the last, ``kept[layer]`` after each of the last few."""
        if self.rewind:
            r = len(kept[0])
            if r == t:  # every new token's state is known: the state before them is a past one too
                self.past.appendleft(self.states)
            for j in range(r - 1):  # oldest first, so the newest ends at past[0]
                self.past.appendleft([layer[j] for layer in kept])
        self.states = states
        self.length += t

    def reorder(self, index: torch.Tensor) -> None:
        self.states = [s.index_select(0, index) for s in self.states]
        self.past = deque(([s.index_select(0, index) for s in snap] for snap in self.past), maxlen=self.rewind)

    def crop(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise RecurrentCacheError(f"cannot crop a cache of length {self.length} to {length}")
        back = self.length - length
        if back == 0:
            return
        if back > len(self.past):
            raise RecurrentCacheError(
                f"cannot crop a recurrent cache of length {self.length} back to {length}: it keeps the states of "
                f"the last {len(self.past)} tokens only (rewind={self.rewind}); create it with "
                f"new_cache(..., rewind={back}) or more, or feed the first {length} tokens into a new cache")
        self.states = self.past[back - 1]
        for _ in range(back):
            self.past.popleft()
        self.length = length


# -- capture -----------------------------------------------------------------------------------------------------


@dataclass
class StateCapture:
    """What a recurrent model has to show instead of attention, for ids ``(B, T)``.

    logits ``(B, T, V)``; residuals ``(L + 1, B, T, D)``; state_norms ``(L, B, H, T)``: the Frobenius norm of each
    head's state after each token; log_decay ``(L, B, H, T)``: the mean over key channels of ``log a_t`` (0 keeps
    everything, very negative forgets); mixing ``(L, B, H, T, T)``: ``w[t, s]``, how much of token ``s``'s value
    reaches the output at ``t`` (see :func:`mixing_weights`), or None when ``T > MIXING_MAX_T``.
    """

    logits: torch.Tensor
    residuals: torch.Tensor
    state_norms: torch.Tensor
    log_decay: torch.Tensor
    mixing: torch.Tensor | None


@torch.no_grad()
def capture_state(model: RecurrentLM, ids) -> StateCapture:
    """Run ``ids`` ``(B, T)`` or ``(T,)`` through ``model`` token by token (the recurrent form, which yields every
    state) and return a :class:`StateCapture`."""
    if not isinstance(model, RecurrentLM):
        raise ModelError(f"capture_state reads a RecurrentLM's states; {type(model).__name__} has none "
                         "(for attention models use workbench.attention.capture_attention)")
    records = [{} for _ in model.blocks]
    out = model._run(ids, capture=True, records=records)
    mixing = torch.stack([r["mixing"] for r in records]) if "mixing" in records[0] else None
    return StateCapture(out.logits, out.residuals, torch.stack([r["state_norms"] for r in records]),
                        torch.stack([r["log_decay"] for r in records]), mixing)
