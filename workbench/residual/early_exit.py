"""Early-exit drafts: a model cut after its first ``k`` blocks and read out by a lens, as a model of the interface.

``early_exit(model, k)`` runs blocks ``0..k-1`` only (``k`` is the number of blocks run, ``1..L``) and turns the
residual stream at that boundary into logits with the model's own final norm and unembedding (the logit lens) or,
given a tuned lens (:mod:`.tuned_lens`), with its translator for that boundary first. It is a
:class:`~workbench.models.interface.CausalLM`, so ``speculative_decode(model, early_exit(model, k), ...)`` is
self-speculative decoding: the draft is the target's own first ``k`` layers, with no second set of weights.

What is shared with the target:

* **Weights**: all of them (no copy). The draft holds a reference to the target and calls its blocks; for TinyGPT's
  NumPy decoding step it reuses the target's own folded weight arrays, truncated to ``k`` layers.
* **KV cache**: not shared; the draft has its own cache of the target's kind holding only the ``k`` layers it
  runs, so it costs ``k / L`` of the target's cache memory (:func:`kv_cache_bytes`; ``exit_report`` gives both).
  Layers ``0..k-1`` of the two caches hold the same keys and values for the same tokens, so sharing is possible in
  principle, but not worth it here: (1) ``speculative_decode`` creates both caches itself through ``new_cache``, so
  the draft cannot reach the target's cache without wrapping the target; (2) an HF ``DynamicCache`` takes its
  length from its layers' tensors, so two caches of different lengths cannot share layers; (3) for TinyGPT the
  draft's cache could alias the first ``k`` layers of the target's preallocated tensors, but the draft re-feeds
  tokens the target has already cached (the last accepted draft after a full round), overwriting the target's
  entries with values equal only up to rounding (other BLAS shapes), which breaks the bit-exact equality of greedy
  self-speculative decoding with greedy decoding; and (4) it saves no compute, since the target's verification call
  recomputes layers ``0..k-1`` for every token it is fed (it needs their output to run layers ``k..L-1``). Saving
  that compute needs a decoding loop that hands the draft's exit residuals to the target (LayerSkip's design).

The later blocks never run: a forward hook on block ``k - 1`` records its output and raises a private exception that
stops the model there (TinyGPT and every HF family alike; the hook acts only in the calling thread, so the target
may run meanwhile elsewhere); :func:`exit_report` measures the cost per call.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field

import torch

from ..models.interface import LMOutput, ModelError, as_batch, check_ids
from ..models.kv_cache import KVCache
from ..models.layout import _tensor_of, layout_of
from .errors import OutOfRangeError, ResidualError
from .run import _device, encode, head_of, residual_stack


class _Exited(Exception):
    """Raised by the hook on the last block that runs: unwinds the model's forward pass before the later blocks."""


def _check_layer(model, layer) -> int:
    L = layout_of(model).n_layer
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ResidualError(f"layer must be an int (the number of blocks to run, 1..{L}), got {layer!r}")
    if not 1 <= layer <= L:
        raise OutOfRangeError(f"exit layer {layer} is out of range: it counts the blocks that run, 1..{L} for this "
                              f"{L}-layer model ({L} is the whole model)")
    return layer


def _resolve_lens(model, lens):
    """None / ``"logit"`` -> None (the logit lens); ``"tuned"`` -> the model's shipped tuned lens; a
    :class:`~workbench.residual.tuned_lens.TunedLens` after checking it was trained for ``model``
    (:class:`~workbench.residual.errors.LensMismatchError` otherwise)."""
    from .tuned_lens import TunedLens, load_tuned_lens

    if lens is None or (isinstance(lens, str) and lens == "logit"):
        return None
    if isinstance(lens, str) and lens == "tuned":
        found = load_tuned_lens(model)
        if found is None:
            raise ResidualError(f"no tuned lens is shipped for {getattr(model, 'name', type(model).__name__)}: "
                                "train one with train_tuned_lens(model, corpus_ids) and pass it as lens=")
        return found
    if not isinstance(lens, TunedLens):
        raise ResidualError(f"lens must be None, 'logit', 'tuned' or a TunedLens; got {lens!r:.60}")
    lens.check(model)
    return lens


def translate_at(lens, boundary: int, resid: torch.Tensor) -> torch.Tensor:
    """The tuned lens's translator at one ``boundary`` applied to a residual ``(..., D)``:
    ``h + h A_b^T + b_b`` (as :meth:`TunedLens.translate_layers`), the identity at the last boundary ``L``."""
    if boundary >= lens.n_layer:
        return resid
    x = resid.to(lens.A.dtype)
    return x + x @ lens.A[boundary].T + lens.b[boundary]


def lens_name(lens) -> str:
    """``'logit'`` for the logit lens, ``'tuned'`` for a tuned lens (for reports)."""
    return "logit" if lens is None or lens == "logit" else "tuned"


class EarlyExitModel:
    """The first ``layer`` blocks of ``target`` read out by a lens; see the module docstring.

    ``forward(ids (B, T))`` and ``step(ids (B, t), cache)`` return logits ``(B, T or t, V)`` float32 computed from the
    residual stream after ``layer`` blocks; ``new_cache`` gives a cache of the target's kind holding only those
    layers. ``config`` and ``tokenizer`` are the target's. Inference only (no gradients, no capture).
    """

    supports_capture = False

    def __init__(self, target, layer: int, lens=None):
        self.target = target
        self.layer = _check_layer(target, layer)
        self.lens = _resolve_lens(target, lens)
        self._layout = layout_of(target)
        self._head = head_of(target)
        self.config = target.config
        self.tokenizer = getattr(target, "tokenizer", None)
        n_layer = self._layout.n_layer
        self.name = f"{getattr(target, 'name', type(target).__name__)}[exit {self.layer}/{n_layer}, " \
                    f"{lens_name(self.lens)} lens]"
        self._tiny = self._layout.kind == "tinygpt"
        self._np_part = self._np_full = None  # TinyGPT's NumPy step truncated to `layer` layers, and its source

    # -- the interface ----------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return _device(self.target)

    @property
    def n_layer(self) -> int:
        """Blocks of the target (the draft runs :attr:`layer` of them)."""
        return self._layout.n_layer

    def parameters(self):
        """The target's own parameter tensors that the draft uses (blocks after the exit excluded), then the lens's."""
        later = {id(p) for b in self._layout.blocks[self.layer:] for p in b.parameters()}
        seen = set()
        for p in self._layout.root.parameters():
            if id(p) not in later and id(p) not in seen:
                seen.add(id(p))
                yield p
        if isinstance(self.lens, torch.nn.Module):
            yield from self.lens.parameters()

    @torch.no_grad()
    def forward(self, ids, capture: bool = False) -> LMOutput:
        """ids ``(B, T)`` -> logits ``(B, T, V)`` of the lens after :attr:`layer` blocks."""
        self._no_capture(capture)
        ids = self._ids(ids)
        return LMOutput(self._readout(self._run(ids, None)))

    __call__ = forward

    def new_cache(self, batch_size: int = 1, max_len: int | None = None):
        """An empty cache of the target's kind for the :attr:`layer` layers that run: a :class:`KVCache` of
        ``layer`` layers for TinyGPT, an ``HFCache`` (whose ``DynamicCache`` fills only those layers) for HF."""
        if not self._tiny:
            return self.target.new_cache(batch_size, max_len)
        c = self.config
        max_len = max_len or c.block_size
        if self.target.wpe is not None and max_len > c.block_size:
            raise ModelError(f"learned positions stop at {c.block_size}; max_len {max_len} is too long")
        w = self.target.wte.weight
        return KVCache(self.layer, batch_size, c.n_head, c.head_dim, max_len, dtype=w.dtype, device=w.device)

    @torch.no_grad()
    def step(self, ids, cache, capture: bool = False) -> LMOutput:
        """Feed new tokens ``(B, t)`` through ``cache`` (from :meth:`new_cache`): logits ``(B, t, V)``."""
        self._no_capture(capture)
        ids = self._ids(ids)
        if self._tiny and isinstance(cache, KVCache) and cache.k.size(0) < self.layer:
            raise ModelError(f"this cache holds {cache.k.size(0)} layers but the draft runs {self.layer}: "
                             "use the draft's new_cache()")
        fast = self._numpy_step(ids, cache)
        if fast is not None:
            return LMOutput(fast)
        return LMOutput(self._readout(self._run(ids, cache)))

    # -- the work -------------------------------------------------------------------------------------------------
    def _no_capture(self, capture):
        if capture:
            raise ResidualError("an early-exit draft does not capture attentions or residuals: use "
                                "residual_stack / run_with_cache on the full model")

    def _ids(self, ids) -> torch.Tensor:
        ids = as_batch(ids, self.device)
        check_ids(ids, self.config.vocab_size)
        return ids

    def _run(self, ids: torch.Tensor, cache) -> torch.Tensor:
        """The residual stream ``(B, T, D)`` leaving block ``layer - 1``; the later blocks never run."""
        box: dict = {}
        me = threading.get_ident()

        def stop(module, args, out):
            if threading.get_ident() != me:  # the target running in another thread meanwhile: leave it alone
                return None
            box["resid"] = _tensor_of(out)
            raise _Exited

        handle = self._layout.blocks[self.layer - 1].register_forward_hook(stop)
        try:
            if cache is None:
                self.target.forward(ids)
            else:
                self.target.step(ids, cache)
        except _Exited:
            pass
        finally:
            handle.remove()
        if "resid" not in box:  # cannot happen: every forward pass runs block layer - 1
            raise RuntimeError(f"block {self.layer - 1} did not run")
        if self._tiny and cache is not None:
            cache.advance(ids.size(1))  # TinyGPT advances its cache after the last block, which did not run
        return box["resid"]

    def _readout(self, resid: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, V)`` float32 of the residual ``(B, T, D)`` at boundary ``layer`` through the lens."""
        x = resid if self.lens is None else translate_at(self.lens, self.layer, resid)
        return self._head(x).float()

    def _numpy_step(self, ids: torch.Tensor, cache):
        """TinyGPT's NumPy decoding step on the first ``layer`` layers (logit lens only), or None when the target
        itself would take the torch path. It reuses the target's folded weight arrays: no copy of the weights."""
        if not self._tiny or self.lens is not None:
            return None
        full = self.target._numpy_step_for(ids, cache, False)
        if full is None:
            return None
        if self._np_full is not full:  # the target rebuilt its copies (weights changed): truncate the new ones
            part = copy.copy(full)
            part.layers = full.layers[: self.layer]
            part._masks = {}
            self._np_part, self._np_full = part, full
        return torch.from_numpy(self._np_part(ids.cpu().numpy(), cache))

    def __repr__(self) -> str:
        return f"EarlyExitModel({self.name!r})"


def early_exit(model, layer: int, lens=None) -> EarlyExitModel:
    """``model`` cut after ``layer`` blocks (``1..L``; ``L`` is the whole model) and read out by ``lens``: None or
    ``"logit"`` for the logit lens, ``"tuned"`` for the model's shipped tuned lens, or a
    :class:`~workbench.residual.tuned_lens.TunedLens` (its translator at boundary ``layer`` runs before the head).
    A layer outside ``1..L`` is an :class:`OutOfRangeError`; a lens trained for another model a
    :class:`~workbench.residual.errors.LensMismatchError`.

    The result is a model of the interface sharing the target's weights, so
    ``speculative_decode(model, early_exit(model, k), prompt, n, gamma, pipeline)`` is self-speculative decoding.
    """
    return EarlyExitModel(model, layer, lens)


def kv_cache_bytes(cache) -> int:
    """Bytes of keys and values a cache holds: preallocated for a :class:`KVCache`, filled so far for an HF cache."""
    if isinstance(cache, KVCache):
        return cache.k.numel() * cache.k.element_size() + cache.v.numel() * cache.v.element_size()
    pkv = getattr(cache, "pkv", cache)
    total = 0
    for lay in getattr(pkv, "layers", []):
        for t in (getattr(lay, "keys", None), getattr(lay, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


# -- the report: by exit layer, the lens's agreement next to self-speculative decoding ------------------------------

@dataclass
class ExitRow:
    """One exit layer. ``agreement``: fraction of the text's positions where the lens's top-1 at this boundary is the
    model's final top-1. ``acceptance``: accepted / verified drafts in greedy self-speculative decoding;
    ``tokens_per_call``: tokens per target call; ``step_ratio``: the draft's one-token cached step over the target's
    (what one draft call costs, measured apart from decoding); ``draft_cost``: speculative decoding's ``c``, the mean
    draft step over the mean verification call of ``gamma + 1`` tokens;
    ``wall_ratio``: speculative wall time / plain greedy wall time (below 1 is a speed-up); ``same_as_greedy``:
    the speculative tokens equal plain greedy decoding's (they must); ``cache_bytes``: the draft's KV cache."""

    layer: int
    agreement: float
    acceptance: float
    tokens_per_call: float
    step_ratio: float
    draft_cost: float
    wall_ratio: float
    same_as_greedy: bool
    cache_bytes: int


@dataclass
class ExitReport:
    """:func:`exit_report`'s result: one :class:`ExitRow` per exit layer, and the settings it was measured with.
    ``text_tokens``: tokens the agreement was measured on; ``target_cache_bytes``: the target's KV cache for the
    first prompt (the draft's is in each row); ``greedy_wall_s``: plain greedy decoding of all prompts (best time)."""

    model: str
    n_layer: int
    lens: str
    gamma: int
    max_new_tokens: int
    text_tokens: int
    greedy_wall_s: float
    target_cache_bytes: int
    rows: list[ExitRow] = field(default_factory=list)

    def table(self) -> str:
        """The rows as a fixed-width text table."""
        head = (f"{'exit':>4} {'agree':>6} {'accept':>6} {'tok/call':>8} {'step':>5} {'c':>5} {'wall':>5} {'cache':>6}"
                "  greedy-equal")
        lines = [f"{self.model}: {self.lens} lens, gamma {self.gamma}, {self.max_new_tokens} new tokens, "
                 f"agreement on {self.text_tokens} tokens", head]
        for r in self.rows:
            cache = r.cache_bytes / max(self.target_cache_bytes, 1)
            lines.append(f"{r.layer:>2}/{self.n_layer} {r.agreement:6.3f} {r.acceptance:6.3f} "
                         f"{r.tokens_per_call:8.2f} {r.step_ratio:5.2f} {r.draft_cost:5.2f} {r.wall_ratio:5.2f} "
                         f"{cache:6.2f}  {r.same_as_greedy}")
        return "\n".join(lines)


def text_ids(model, text_or_ids) -> torch.Tensor:
    """Text or ids of any length -> ``(1, N)`` ids on the model's device (not limited to the context, unlike
    :func:`~workbench.residual.run.encode`); empty input or an id outside the vocabulary is a :class:`ResidualError`."""
    if isinstance(text_or_ids, str):
        tok = getattr(model, "tokenizer", None)
        if not text_or_ids or tok is None:
            return encode(model, text_or_ids)  # its specific error
        text_or_ids = tok.encode(text_or_ids)
    if not isinstance(text_or_ids, torch.Tensor):
        text_or_ids = list(getattr(text_or_ids, "tolist", lambda: text_or_ids)())
    try:
        ids = as_batch(text_or_ids)
    except ModelError as e:
        raise ResidualError(str(e)) from None
    if ids.size(0) != 1 or ids.size(1) == 0:
        raise ResidualError(f"give one non-empty sequence, got ids of shape {tuple(ids.shape)}")
    vocab = model.config.vocab_size
    bad = (ids < 0) | (ids >= vocab)
    if bool(bad.any()):
        j = int(bad.nonzero()[0, 1])
        raise OutOfRangeError(f"token id {int(ids[0, j])} at position {j} is out of range [0, {vocab})")
    return ids.to(_device(model))


def lens_agreement(model, text_or_ids, layers, lens=None) -> dict[int, float]:
    """For each boundary ``k`` in ``layers``: the fraction of positions of the text where the lens's top-1 on the
    residual after ``k`` blocks equals the model's final top-1. A text longer than the context is read in
    consecutive windows of ``block_size`` tokens (each window a fresh context)."""
    lens = _resolve_lens(model, lens)
    head = head_of(model)
    ids = text_ids(model, text_or_ids)
    n = int(model.config.block_size)
    hits = {k: 0 for k in layers}
    with torch.no_grad():
        for s in range(0, ids.size(1), n):
            rs = residual_stack(model, ids[:, s:s + n])
            final = rs.logits.argmax(-1)
            for k in layers:
                x = rs.resid[k] if lens is None else translate_at(lens, k, rs.resid[k])
                hits[k] += int((head(x).argmax(-1) == final).sum())
    return {k: hits[k] / ids.size(1) for k in layers}


def _best_times(fns, repeats: int):
    """Each of ``fns`` run ``repeats`` times, interleaved (so a busy spell of a shared machine hits all alike):
    the best time of each, and each one's last result."""
    best, results = [math.inf] * len(fns), [None] * len(fns)
    for _ in range(max(1, repeats)):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            results[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best, results


def _steps(model, prompt: torch.Tensor, tokens: list[int]):
    """A function that feeds ``tokens`` one cached step at a time after ``prompt`` and returns the mean time of
    those steps (the prefill excluded)."""
    feed = [torch.tensor([[t]], device=prompt.device) for t in tokens]

    @torch.inference_mode()
    def run() -> float:
        cache = model.new_cache(1, max_len=prompt.size(1) + len(tokens))
        model.step(prompt, cache)
        t0 = time.perf_counter()
        for x in feed:
            model.step(x, cache)
        return (time.perf_counter() - t0) / max(len(feed), 1)

    return run


def exit_report(model, text_or_ids, layers=None, lens=None, max_new_tokens: int = 64, gamma: int = 4, *,
                prompt_tokens: int = 64, n_prompts: int = 1, repeats: int = 3) -> ExitReport:
    """Greedy self-speculative decoding by exit layer next to the lens's agreement rate on ``text_or_ids``.

    Agreement: every position of the text (see :func:`lens_agreement`). Decoding: ``n_prompts`` prompts, the text's
    consecutive pieces of ``prompt_tokens`` tokens, each continued by ``max_new_tokens`` at temperature 0 (so the
    output must equal plain greedy decoding, which ``same_as_greedy`` checks); acceptance and tokens per call are
    pooled over the prompts. Timings are the best of ``repeats`` runs, each speculative run interleaved with a plain
    greedy one (so a busy spell of a shared machine hits both): the wall ratio is summed speculative over summed
    greedy time, the step ratio compares one-token cached steps on the first prompt's greedy continuation.
    ``layers`` defaults to ``1..L`` (``L`` is the full model: acceptance 1, so its wall ratio is
    the cost of the speculative machinery itself).
    """
    from ..decoding import Pipeline, greedy_fast, speculative_decode

    ids = text_ids(model, text_or_ids)
    lens = _resolve_lens(model, lens)
    L = layout_of(model).n_layer
    layers = list(range(1, L + 1)) if layers is None else [_check_layer(model, k) for k in layers]
    room = int(model.config.block_size)
    for name, v, hi in (("max_new_tokens", max_new_tokens, room - 1), ("prompt_tokens", prompt_tokens, room - 1),
                        ("gamma", gamma, room), ("n_prompts", n_prompts, None)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (hi is not None and v > hi):
            raise ResidualError(f"{name} must be an int in 1..{hi if hi is not None else 'any'}, got {v!r}")
    if prompt_tokens + max_new_tokens > room:
        raise ResidualError(f"prompt_tokens + max_new_tokens = {prompt_tokens + max_new_tokens} exceed the context "
                            f"of {room} tokens")
    prompts = [ids[:, s:s + prompt_tokens] for s in range(0, ids.size(1), prompt_tokens)][:n_prompts]
    agree = lens_agreement(model, ids, layers, lens)
    wants = [[int(x) for x in greedy_fast(model, p, max_new_tokens)] for p in prompts]
    pipe = Pipeline.preset("hf", temperature=0.0)
    max_len = prompts[0].size(1) + max_new_tokens
    target_cache = model.new_cache(1, max_len=max_len)
    model.step(prompts[0], target_cache)
    report = ExitReport(getattr(model, "name", type(model).__name__), L, lens_name(lens), gamma, max_new_tokens,
                        ids.size(1), math.inf, kv_cache_bytes(target_cache))
    for k in layers:
        draft = early_exit(model, k, lens)
        wall = plain = 0.0
        acc = ver = toks = calls = 0
        costs, same = [], True
        for p, want in zip(prompts, wants):
            (t_plain, t_spec), (_, res) = _best_times(
                [lambda: greedy_fast(model, p, max_new_tokens),
                 lambda: speculative_decode(model, draft, p, max_new_tokens, gamma=gamma, pipeline=pipe, trace=False)],
                repeats)
            s = res.stats
            wall, plain = wall + t_spec, plain + t_plain
            acc, ver, toks, calls = acc + s.accepted, ver + s.verified, toks + s.tokens, calls + s.target_calls
            costs.append(float(s.c))
            same = same and res.tokens == want
        report.greedy_wall_s = min(report.greedy_wall_s, plain)
        # one-token steps of target and draft, interleaved: min over repeats of each run's mean step
        steps_t, steps_d = _steps(model, prompts[0], wants[0][:-1]), _steps(draft, prompts[0], wants[0][:-1])
        t_target = t_draft = math.inf
        for _ in range(max(1, repeats)):
            t_target, t_draft = min(t_target, steps_t()), min(t_draft, steps_d())
        dcache = draft.new_cache(1, max_len=max_len)
        draft.step(prompts[0], dcache)
        report.rows.append(ExitRow(k, agree[k], acc / ver if ver else float("nan"), toks / max(calls, 1),
                                   t_draft / t_target, sum(costs) / len(costs), wall / plain, same,
                                   kv_cache_bytes(dcache)))
    return report


__all__ = ["EarlyExitModel", "ExitReport", "ExitRow", "early_exit", "exit_report", "kv_cache_bytes",
           "lens_agreement", "lens_name", "text_ids", "translate_at"]
