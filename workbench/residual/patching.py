"""Activation patching: copy one activation from one run into another and see how much of the answer comes back.

Two prompts of equal length: ``clean`` (the model gives ``answer``) and ``corrupted`` (it does not, or gives
``wrong``). "denoise" runs the corrupted prompt with one activation taken from the clean run; "noise" runs the clean
prompt with one activation taken from the corrupted run. What can be patched (``what``):

* ``resid_pre``: the residual stream entering each layer, at each position -> effect ``(L, T)``;
* ``attn_out``: each attention block's output (``z W_O + b``, before any post-attention norm), per position
  ``(L, T)``;
* ``mlp_out``: each MLP's write into the residual stream, per position ``(L, T)``; measured as
  ``resid_post - resid_pre - attention write`` and patched as that difference added to ``resid_post``, which is the
  same as replacing the MLP's output (nothing else in the block comes after it) and works for every family;
* ``heads``: each head's output ``z_h`` at every position at once ``(L, H)``.

Patches run in batches: ``B`` copies of the prompt, row ``b`` patched at its own (layer, position or head), in one
forward pass; the unembedding sees only the metric's position, and the pass starts at the first block the batch
patches (the blocks before it are the unpatched run's), so a batch costs little more than its later blocks. A
cell whose activation is the same in both runs (every position before the first token that differs, for a causal
model) cannot change anything: it gets the unpatched run's metric without a forward pass (``skip_identical``).

>>> from workbench.models import TinyGPT, GPTConfig
>>> from workbench.tokenizers import ByteTokenizer
>>> m = TinyGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=257), ByteTokenizer()).eval()
>>> r = activation_patching(m, "ab c", "ax c", answer=" ", wrong="d")
>>> r.effect.shape, r.rows, r.cols[:2]
((2, 4), ['L0', 'L1'], ['0 a', '1 b/x'])
>>> bool(abs(r.effect[0, 1] - 1) < 1e-4)  # the whole clean residual stream at the changed position: all back
True
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..models.layout import layout_of
from .dla import _token_label, resolve_token
from .errors import LengthMismatchError, ResidualError
from .linear_norm import post_attention_norms
from .run import _device, encode, run_with_cache

WHATS = ("resid_pre", "attn_out", "mlp_out", "heads")
DIRECTIONS = ("denoise", "noise")


@dataclass
class PatchResult:
    """The metric after each patch. ``effect``: ``(L, T)`` for ``resid_pre``/``attn_out``/``mlp_out``, ``(L, H)``
    for ``heads``; ``rows``/``cols``: axis labels (``L0``..; positions as ``"3 tok"``, or ``"3 clean/corrupted"``
    where the prompts differ; or ``H0``..). ``clean_metric`` and ``corrupt_metric``: the metric on the unpatched
    runs (1 and 0 for the normalised logit difference); ``clean_raw``/``corrupt_raw``: the raw values it is
    normalised between. ``stopped``: ``should_stop`` ended the sweep early; the cells not run are NaN and ``done``
    counts the ones that were (of ``total``)."""

    what: str
    direction: str
    effect: np.ndarray
    rows: list
    cols: list
    clean_metric: float
    corrupt_metric: float
    metric_name: str
    clean_raw: float = float("nan")
    corrupt_raw: float = float("nan")
    done: int = 0
    total: int = 0
    stopped: bool = False
    skipped: int = 0  # cells whose activation was identical in both runs (metric known without a forward pass)
    tokens_clean: list = field(default_factory=list)
    tokens_corrupted: list = field(default_factory=list)


class LogitDiffMetric:
    """``logit(answer) - logit(wrong)`` (or ``logit(answer)`` alone) of logits ``(B, V)``, normalised once
    :meth:`calibrate` has seen the clean and the corrupted run: 0 at corrupted, 1 at clean."""

    def __init__(self, answer_id: int, wrong_id: int | None = None):
        self.answer_id, self.wrong_id = int(answer_id), None if wrong_id is None else int(wrong_id)
        self.clean_raw = self.corrupt_raw = None

    @property
    def name(self) -> str:
        what = "logit difference" if self.wrong_id is not None else "logit"
        return f"normalised {what}" if self.clean_raw is not None else what

    def raw(self, logits: torch.Tensor) -> torch.Tensor:
        """The logit (difference) of each row of ``logits`` ``(B, V)`` -> ``(B,)``."""
        d = logits[:, self.answer_id]
        return d if self.wrong_id is None else d - logits[:, self.wrong_id]

    def calibrate(self, clean_logits: torch.Tensor, corrupt_logits: torch.Tensor) -> "LogitDiffMetric":
        """A copy normalised between the corrupted (0) and the clean (1) run's raw values; equal values (nothing to
        recover) are a :class:`ResidualError`."""
        c, x = float(self.raw(clean_logits)[0]), float(self.raw(corrupt_logits)[0])
        if abs(c - x) < 1e-6 * max(1.0, abs(c)):
            raise ResidualError(f"the clean and corrupted prompts give the same {self.name} ({c:.4g}): there is "
                                "nothing for a patch to restore; choose prompts whose answers differ")
        m = LogitDiffMetric(self.answer_id, self.wrong_id)
        m.clean_raw, m.corrupt_raw = c, x
        return m

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        d = self.raw(logits)
        if self.clean_raw is None:
            return d
        return (d - self.corrupt_raw) / (self.clean_raw - self.corrupt_raw)


def logit_diff_metric(answer_id: int, wrong_id: int | None = None) -> LogitDiffMetric:
    """The normalised logit difference (see :class:`LogitDiffMetric`): 0 at corrupted, 1 at clean."""
    return LogitDiffMetric(answer_id, wrong_id)


@contextlib.contextmanager
def _unembed_only_at(lay, position: int):
    """Within the block the unembedding sees only ``position``: logits come out ``(B, 1, V)``."""
    h = lay.unembed.register_forward_pre_hook(lambda m, args: (args[0][:, position:position + 1], *args[1:]))
    try:
        yield
    finally:
        h.remove()


def _forward_at(model, ids: torch.Tensor, fns: dict, position: int) -> torch.Tensor:
    """Logits ``(B, V)`` at ``position`` of ``ids`` ``(B, T)`` with ``fns`` attached."""
    lay = layout_of(model)
    with lay.hooks(fns), _unembed_only_at(lay, position):
        out = model.forward(ids).logits.float()
    return out[:, -1] if out.size(1) == 1 else out[:, position]


class _Resume:
    """Run a batch from block ``start`` on: every block's positional and keyword inputs are recorded once from an
    unpatched run of the prompt, so a patch at layer ``l`` recomputes only blocks ``l..L-1`` (all layers before it
    are the unpatched run's, bit for bit) and then the model's own head at one position. Checked on creation against
    the model's full forward pass; where it does not match (a family whose blocks need something else), ``ok`` is
    False and the sweep runs whole forward passes."""

    def __init__(self, model, ids: torch.Tensor, position: int, reference: torch.Tensor):
        from ..models.layout import _tensor_of
        from .run import head_of

        self.model, self.lay, self.head, self.position = model, layout_of(model), head_of(model), position
        self._tensor_of = _tensor_of
        self.saved: list = [None] * self.lay.n_layer
        handles = []
        for i, b in enumerate(self.lay.blocks):
            handles.append(b.register_forward_pre_hook(
                lambda m, args, kwargs, i=i: self.saved.__setitem__(i, (args, kwargs)), with_kwargs=True))
        try:
            with self.lay.hooks({}):
                model.forward(ids)
        finally:
            for h in handles:
                h.remove()
        self.ok = False
        try:
            self.ok = True
            for start in sorted({0, self.lay.n_layer - 1}):
                got = self.run([(start, 0), (start, 0)], {})
                self.ok = self.ok and bool(torch.allclose(got, reference.expand_as(got), atol=1e-4, rtol=1e-4))
        except Exception:  # noqa: BLE001 - any family whose blocks cannot be called alone runs whole passes
            self.ok = False

    def _hidden(self, i: int) -> torch.Tensor:
        args, kwargs = self.saved[i]
        return args[0] if args else kwargs["hidden_states"]

    def logits(self, start: int, x: torch.Tensor, fns: dict) -> torch.Tensor:
        """Logits ``(B, V)`` at the position, from ``x`` ``(B, T, D)`` entering block ``start``, ``fns`` attached."""
        with self.lay.hooks(fns):
            for i in range(start, self.lay.n_layer):
                args, kwargs = self.saved[i]
                if args:
                    out = self.lay.blocks[i](x, *args[1:], **kwargs)
                else:
                    out = self.lay.blocks[i](*args, **{**kwargs, "hidden_states": x})
                x = self._tensor_of(out)
            return self.head(x[:, self.position:self.position + 1])[:, 0]

    def run(self, cells: list, fns: dict) -> torch.Tensor:
        start = min(i for i, _ in cells)
        x = self._hidden(start)
        return self.logits(start, x.expand(len(cells), *x.shape[1:]).contiguous(), fns)


def _cells(what: str, L: int, T: int, H: int) -> list:
    n = H if what == "heads" else T
    return [(i, j) for i in range(L) for j in range(n)]


def _points(what: str, L: int) -> list:
    if what == "resid_pre":
        return [f"blocks.{i}.resid_pre" for i in range(L)]
    if what == "attn_out":
        return [f"blocks.{i}.attn.out" for i in range(L)]
    if what == "heads":
        return [f"blocks.{i}.attn.z" for i in range(L)]
    return [f"blocks.{i}.{p}" for i in range(L) for p in ("resid_pre", "attn.out", "resid_post")]


def _mlp_writes(model, cache: dict) -> torch.Tensor:
    """Each MLP's write ``(L, T, D)`` of one run: ``resid_post - resid_pre - attention write``."""
    lay = layout_of(model)
    post = post_attention_norms(model)
    out = []
    with torch.no_grad():
        for i in range(lay.n_layer):
            a = cache[f"blocks.{i}.attn.out"][0]
            write = a if post[i] is None else post[i](a[None])[0]
            out.append(cache[f"blocks.{i}.resid_post"][0] - cache[f"blocks.{i}.resid_pre"][0] - write)
    return torch.stack(out)


def _patch_fns(what: str, cells: list, source: dict) -> dict:
    """Hook functions for one batch: row ``b`` of the batch is patched at ``cells[b]``. ``source[i]``: the
    activation to copy at layer ``i`` (``(T, D)``, ``(T, H, Dh)`` for heads, or the MLP difference to add)."""
    by_layer: dict = {}
    for b, (i, j) in enumerate(cells):
        by_layer.setdefault(i, ([], []))
        by_layer[i][0].append(b)
        by_layer[i][1].append(j)
    fns = {}
    for i, (rows, idx) in by_layer.items():
        src = source[i]
        rows_t = torch.tensor(rows, device=src.device)
        idx_t = torch.tensor(idx, device=src.device)
        if what == "heads":
            def fn(t, rows_t=rows_t, idx_t=idx_t, src=src):
                t = t.clone()  # (B, T, H, Dh)
                t[rows_t, :, idx_t] = src[:, idx_t].transpose(0, 1).to(t.dtype)
                return t
            fns[f"blocks.{i}.attn.z"] = fn
        elif what == "mlp_out":
            def fn(t, rows_t=rows_t, idx_t=idx_t, src=src):
                t = t.clone()  # (B, T, D)
                t[rows_t, idx_t] += src[idx_t].to(t.dtype)
                return t
            fns[f"blocks.{i}.resid_post"] = fn
        else:
            def fn(t, rows_t=rows_t, idx_t=idx_t, src=src):
                t = t.clone()  # (B, T, D)
                t[rows_t, idx_t] = src[idx_t].to(t.dtype)
                return t
            fns[f"blocks.{i}.{'resid_pre' if what == 'resid_pre' else 'attn.out'}"] = fn
    return fns


@torch.no_grad()
def activation_patching(model, clean, corrupted, answer, wrong=None, what: str = "resid_pre",
                        direction: str = "denoise", metric: Callable | None = None, batch_size: int = 16,
                        progress: Callable | None = None, should_stop: Callable | None = None,
                        skip_identical: bool = True, resume_blocks: bool = True) -> PatchResult:
    """Patch every cell of ``what`` (see the module docstring) from one run into the other and measure ``metric`` on
    the logits ``(B, V)`` at the last position (default: :func:`logit_diff_metric` of ``answer`` and ``wrong``, text of
    one token or ids, normalised). ``batch_size`` patches run per forward pass; ``progress(done, total)`` is called
    after each batch (an exception it raises, e.g. the widgets' ``Cancelled``, ends the sweep); without it a tqdm bar
    shows sweeps of more than 4 batches. ``should_stop()`` returning True between batches ends the sweep with a
    partial result (``stopped=True``, cells not run are NaN). Prompts of different lengths raise
    :class:`LengthMismatchError`. ``skip_identical``: cells whose activation is bit-for-bit the same in both runs
    take the unpatched run's metric without a forward pass (``skipped`` counts them). ``resume_blocks``: a batch
    starts at the first block it patches, from that block's recorded inputs (checked against the full pass once)."""
    if what not in WHATS:
        raise ResidualError(f"what={what!r} cannot be patched: choose one of {', '.join(WHATS)}")
    if direction not in DIRECTIONS:
        raise ResidualError(f"direction={direction!r}: choose 'denoise' (clean into corrupted) or 'noise' "
                            "(corrupted into clean)")
    if int(batch_size) < 1:
        raise ResidualError(f"batch_size must be at least 1, got {batch_size}")
    c_ids, x_ids = encode(model, clean), encode(model, corrupted)
    if c_ids.size(1) != x_ids.size(1):
        raise LengthMismatchError(f"the clean prompt has {c_ids.size(1)} tokens and the corrupted one "
                                  f"{x_ids.size(1)}: patching copies activations position by position, so both "
                                  "must have the same number of tokens")
    a_id = resolve_token(model, answer, "answer")
    w_id = None if wrong is None else resolve_token(model, wrong, "wrong answer")
    lay = layout_of(model)
    L, H, T = lay.n_layer, lay.n_head, c_ids.size(1)
    points = _points(what, L)
    c_logits, c_cache = run_with_cache(model, c_ids, points)
    x_logits, x_cache = run_with_cache(model, x_ids, points)
    c_last, x_last = c_logits[:, -1], x_logits[:, -1]
    del c_logits, x_logits
    if metric is None:
        metric = logit_diff_metric(a_id, w_id)
    if hasattr(metric, "calibrate"):
        metric = metric.calibrate(c_last, x_last)
    clean_metric, corrupt_metric = float(metric(c_last)[0]), float(metric(x_last)[0])
    src_cache, run_ids = (c_cache, x_ids) if direction == "denoise" else (x_cache, c_ids)
    run_cache = x_cache if direction == "denoise" else c_cache
    if what == "mlp_out":
        delta = _mlp_writes(model, src_cache) - _mlp_writes(model, run_cache)
        source = {i: delta[i] for i in range(L)}
        same = {i: (delta[i] == 0).all(-1) for i in range(L)}  # (T,)
    else:
        source = {i: src_cache[points[i]][0] for i in range(L)}
        if what == "heads":  # (T, H, Dh) -> per head, all positions
            same = {i: (source[i] == run_cache[points[i]][0]).all(-1).all(0) for i in range(L)}
        else:
            same = {i: (source[i] == run_cache[points[i]][0]).all(-1) for i in range(L)}
    cells = _cells(what, L, T, H)
    run_metric = corrupt_metric if direction == "denoise" else clean_metric
    effect = np.full(len(cells), np.nan)
    todo = []
    for n, (i, j) in enumerate(cells):
        if skip_identical and bool(same[i][j]):
            effect[n] = run_metric
        else:
            todo.append(n)
    skipped = len(cells) - len(todo)
    bs = int(batch_size)
    batches = [todo[k:k + bs] for k in range(0, len(todo), bs)]
    bar = None
    if progress is None and len(batches) > 4:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), initial=skipped, desc=f"patching {what}", leave=False)
    done, stopped = skipped, False
    dev = _device(model)
    resume = _Resume(model, run_ids, T - 1, (x_last if direction == "denoise" else c_last)) \
        if resume_blocks and batches else None
    try:
        for batch in batches:
            if should_stop is not None and should_stop():
                stopped = True
                break
            fns = _patch_fns(what, [cells[n] for n in batch], source)
            if resume is not None and resume.ok:
                logits = resume.run([cells[n] for n in batch], fns)
            else:
                logits = _forward_at(model, run_ids.to(dev).expand(len(batch), T), fns, T - 1)
            effect[batch] = metric(logits).double().cpu().numpy()
            done += len(batch)
            if bar is not None:
                bar.update(len(batch))
            if progress is not None:
                progress(done, len(cells))
    finally:
        if bar is not None:
            bar.close()
    if progress is not None and not batches:  # every cell was known without a pass: say it is done
        progress(done, len(cells))
    tok = getattr(model, "tokenizer", None)
    tc = [_token_label(tok, int(i)) for i in c_ids[0].tolist()]
    tx = [_token_label(tok, int(i)) for i in x_ids[0].tolist()]
    cols = [f"H{h}" for h in range(H)] if what == "heads" else \
        [f"{t} {a}" if a == b else f"{t} {a}/{b}" for t, (a, b) in enumerate(zip(tc, tx))]
    name = getattr(metric, "name", getattr(metric, "__name__", "metric"))
    return PatchResult(
        what=what, direction=direction, effect=effect.reshape(L, -1), rows=[f"L{i}" for i in range(L)], cols=cols,
        clean_metric=clean_metric, corrupt_metric=corrupt_metric, metric_name=name,
        clean_raw=_or(getattr(metric, "clean_raw", None), clean_metric),
        corrupt_raw=_or(getattr(metric, "corrupt_raw", None), corrupt_metric), done=done, total=len(cells),
        stopped=stopped, skipped=skipped, tokens_clean=tc, tokens_corrupted=tx)


def _or(value, default) -> float:
    return float(default if value is None else value)


__all__ = ["DIRECTIONS", "LogitDiffMetric", "PatchResult", "WHATS", "activation_patching", "logit_diff_metric"]
