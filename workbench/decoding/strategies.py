"""Decoding strategies on the KV cache of the model interface.

* :func:`greedy` and :func:`sample` (ancestral sampling through any :class:`Pipeline`, with common random
  numbers from :class:`NoiseStream`); :func:`sample_batch` runs many sequences at once (Monte-Carlo checks).
* :func:`beam_search`: the same search as HF ``generate(num_beams=...)`` (top ``2 * num_beams`` candidates
  per step, finished hypotheses scored ``sum log p / length ** length_penalty``, ``early_stopping`` True /
  False / ``"never"``), so results can be compared with it; the whole tree is returned.
* :func:`diverse_beam_search`: Vijayakumar et al.'s groups with a Hamming diversity penalty.
* :func:`prompt_lookup`: greedy decoding with n-gram drafts copied from the context, verified in one call.

Every function takes a model, a prompt and ``max_new_tokens``. The prompt is either text (a ``str``, encoded with
the model's tokenizer, no BOS added) or token ids (a list, ``(T,)`` or ``(1, T)``); the prompt plus
``max_new_tokens`` must fit in the model's context (``config.block_size``), else :class:`DecodingError`.

**Ids without text.** A model may score more ids than its tokenizer can decode (a padded embedding, as in
Pythia, Qwen or Phi checkpoints). Results keep such ids as they are; their ``text`` shows each one as the
placeholder ``<id N>`` (:meth:`~workbench.tokenizers.base.Tokenizer.decode_with_placeholders`). Every function
takes ``mask_undecodable``: True removes those ids (logits set to ``-inf``) before any pipeline stage, as HF's
``suppress_tokens`` does, so they are never sampled, chosen or kept in a beam. The default is False: decoding
samples from the model's own distribution, exactly as HF ``generate`` does, so results stay comparable with
HF and with each other (speculative decoding's exactness, beam scores); a trained checkpoint gives its padding
ids almost no probability anyway, and where a random or small model does, the placeholders make it visible.

Lesson: ``notebooks/03_decoding.ipynb`` (2. The model and greedy's repetition loops; 3. Inside one sampled step; 4.
Beam search and diverse beam search).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from . import processors as P
from .fused import kernel_draw, resolve_draw
from .noise import NoiseStream, sample_with_noise
from .pipeline import Pipeline, as_pipeline
from .processors import DecodingError
from .trace import (
    BeamHypothesis, BeamNode, BeamResult, DecodeTrace, LookupRound, LookupStats, StageSnapshot, StepTrace,
)

LN2 = math.log(2.0)


# ------------------------------------------------------------------------------------------------ helpers
def model_device(model) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def encode_prompt(model, prompt):
    """Text -> ids with the model's tokenizer (no BOS added); ids (list, tuple, tensor, array) pass through."""
    if isinstance(prompt, str):
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            raise DecodingError("this model has no tokenizer, so a text prompt cannot be encoded: pass token ids")
        return tok.encode(prompt)
    if isinstance(prompt, (bytes, bytearray)):
        raise DecodingError("the prompt is bytes: pass text as a str (encoded with the model's tokenizer) or token ids")
    return prompt


def prepare_prompt(model, prompt_ids, max_new_tokens, batch_ok: bool = False) -> torch.Tensor:
    """Validate the prompt (text or ids, see :func:`encode_prompt`) and the length budget; return the prompt as a
    ``(B, T)`` long tensor on the model's device."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise DecodingError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    prompt_ids = encode_prompt(model, prompt_ids)
    if isinstance(prompt_ids, torch.Tensor):
        ids = prompt_ids
    else:
        try:
            ids = torch.as_tensor(list(prompt_ids), dtype=torch.long)
        except (TypeError, ValueError, RuntimeError) as e:
            raise DecodingError(
                f"the prompt must be text (str) or integer token ids of shape (T,) or (1, T); got "
                f"{type(prompt_ids).__name__} that is neither ({e})"
            ) from None
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2 or ids.is_floating_point():
        raise DecodingError(f"prompt ids must be integers of shape (T,) or (B, T), got {tuple(ids.shape)} {ids.dtype}")
    if ids.size(1) == 0:
        raise DecodingError("the prompt is empty: give at least one token (e.g. a BOS or newline token)")
    if ids.size(0) != 1 and not batch_ok:
        raise DecodingError(f"this strategy decodes one prompt at a time, got a batch of {ids.size(0)}")
    V = model.config.vocab_size
    if bool((ids < 0).any()) or bool((ids >= V).any()):
        raise DecodingError(f"prompt ids must be in [0, {V}), got values in [{int(ids.min())}, {int(ids.max())}]")
    ctx = model.config.block_size
    if ids.size(1) + max_new_tokens > ctx:
        raise DecodingError(
            f"prompt of {ids.size(1)} tokens + max_new_tokens {max_new_tokens} = {ids.size(1) + max_new_tokens} "
            f"exceeds the model's context of {ctx} tokens: shorten the prompt or ask for fewer tokens"
        )
    return ids.long().to(model_device(model))


def _check_eos(model, eos_id):
    if eos_id is not None and not 0 <= int(eos_id) < model.config.vocab_size:
        raise DecodingError(f"eos_id {eos_id} is outside the vocabulary [0, {model.config.vocab_size})")


def _decode_text(model, ids) -> str | None:
    """The text of ``ids``, ids without text shown as ``<id N>``; None when the model has no tokenizer."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return None
    try:
        return tok.decode_with_placeholders([int(i) for i in ids])
    except Exception:  # a tokenizer outside this package's interface: the text view is optional
        return None


MASK_STAGE = "mask <id N>"


def undecodable_index(model, mask_undecodable: bool, V: int | None = None) -> torch.Tensor | None:
    """The ids ``(n,)`` to remove when ``mask_undecodable``: model ids its tokenizer cannot decode (padding ids
    past the tokenizer's vocabulary, unassigned ids). None when nothing is to be masked."""
    if not isinstance(mask_undecodable, bool):
        raise DecodingError(f"mask_undecodable must be True or False, got {mask_undecodable!r}")
    if not mask_undecodable:
        return None
    tok = getattr(model, "tokenizer", None)
    if tok is None or not hasattr(tok, "undecodable_ids"):
        raise DecodingError(
            "mask_undecodable=True needs the model's tokenizer to know which ids have text; this model has none "
            "(use mask_undecodable=False)"
        )
    V = model.config.vocab_size if V is None else V
    bad = tok.undecodable_ids(V)
    if not bad:
        return None
    if len(bad) >= V:
        raise DecodingError(f"none of the model's {V} ids has text in its tokenizer: nothing is left to decode")
    return torch.tensor(bad, dtype=torch.long, device=model_device(model))


def apply_mask(logits: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """``logits`` ``(..., V)`` with the ids in ``index`` set to ``-inf`` (a copy; unchanged when index is None)."""
    if index is None:
        return logits
    return logits.index_fill(-1, index.to(logits.device), float("-inf"))


def _last_logits(out) -> torch.Tensor:
    return out.logits[:, -1, :].float()


def trace_step(logits: torch.Tensor, pipeline: Pipeline, ids=None, chosen: int | None = None, step: int = 0,
               top_n: int = 12, mask: torch.Tensor | None = None) -> StepTrace:
    """Trace one step: logits ``(V,)`` through every stage of ``pipeline``; ``chosen`` defaults to the arg-max
    of the final distribution. Candidates: the raw top ``top_n``, then any token in a later stage's top ``top_n``
    that is not among them yet (penalties re-rank), then the chosen token if still missing. ``mask`` (ids, from
    :func:`undecodable_index`) adds a first stage named :data:`MASK_STAGE` that removes them."""
    logits = logits.reshape(-1).float()
    hist = None if ids is None else torch.as_tensor(ids).reshape(-1)
    if mask is None:
        stages = pipeline.run(logits, hist)
    else:
        masked = apply_mask(logits, mask)
        stages = [("raw", logits), (MASK_STAGE, masked)] + pipeline.run(masked, hist)[1:]
    raw_probs = stages[0][1].softmax(-1)
    final = stages[-1][1]
    final_probs = final.softmax(-1)
    if chosen is None:
        chosen = int(final.argmax())
    k = min(top_n, raw_probs.numel())
    cand = torch.topk(raw_probs, k).indices.tolist()
    for _, lg in stages[1:]:  # a penalty stage can promote tokens from outside the raw top-n
        for t in torch.topk(lg, k).indices.tolist():
            if t not in cand and bool(torch.isfinite(lg[t])):
                cand.append(t)
    if chosen not in cand:
        cand.append(chosen)
    idx = torch.tensor(cand)
    snaps = [StageSnapshot(name, lg.softmax(-1)[idx].tolist(), int(P.kept_count(lg)), float(P.entropy_bits(lg)))
             for name, lg in stages]
    p_raw = float(raw_probs[chosen])
    return StepTrace(
        step=step, candidates=cand, stages=snaps, chosen=int(chosen), chosen_prob=float(final_probs[chosen]),
        kept=int(P.kept_count(final)), entropy=snaps[0].entropy, final_entropy=snaps[-1].entropy,
        surprisal=(-math.log(p_raw) / LN2) if p_raw > 0 else float("inf"),
    )


# -------------------------------------------------------------------------------------- greedy / sampling
@torch.inference_mode()
def sample(model, prompt_ids, max_new_tokens: int, pipeline=None, seed: int = 0, *, eos_id: int | None = None,
           trace: bool = True, top_n: int = 12, strategy: str | None = None, draw: str = "auto",
           mask_undecodable: bool = False) -> DecodeTrace:
    """Ancestral sampling through ``pipeline`` with noise from ``NoiseStream(seed)``; one model call per token.

    Token ``t`` (0-based after the prompt) is ``argmax(probs / E_t)`` with ``E_t`` the stream's exponential noise
    for position ``t``, so two pipelines run with the same seed share their randomness. A greedy pipeline
    (temperature 0) returns the arg-max. ``draw``: ``"auto"`` draws with the fused GPU sampling kernel when the
    logits are on CUDA with the CuPy back-end and the pipeline fits it (see :mod:`.fused`), ``"kernel"``
    always does (the kernels' reference on a CPU), ``"noise"`` never does. ``mask_undecodable`` removes ids
    the tokenizer cannot decode before the pipeline (see the module docstring; the trace shows it as a stage).
    ``prompt_ids`` may be text. Returns a :class:`DecodeTrace` (steps filled when ``trace``).
    """
    pipe = as_pipeline(pipeline)
    ids = prepare_prompt(model, prompt_ids, max_new_tokens)
    _check_eos(model, eos_id)
    mask = undecodable_index(model, mask_undecodable)
    noise = NoiseStream(seed)
    T = ids.size(1)
    cache = model.new_cache(1, max_len=T + max_new_tokens)
    seq = ids[0].tolist()
    out = DecodeTrace(strategy or ("greedy" if pipe.greedy else f"sample {pipe!r}"), list(seq), [], seed=seed)
    if max_new_tokens == 0:
        out.text = ""
        return out
    logits = _last_logits(model.step(ids, cache))
    out.target_calls = 1
    hist = ids if pipe.needs_ids else None
    V = logits.size(-1)
    greedy_pipe = pipe.greedy
    fused = resolve_draw(draw, pipe, logits.is_cuda)
    for t in range(max_new_tokens):
        live = apply_mask(logits, mask)
        if fused is not None:  # temperature, truncation and the draw in one kernel launch
            tok = int(kernel_draw(P.check_logits(live), fused, noise, t)[0])
        else:
            final = pipe(live, hist)
            if greedy_pipe:  # one finite entry left: no noise needed
                tok = int(final[0].argmax())
            else:
                tok = int(sample_with_noise(final.softmax(-1), noise.exponential(t, (1, V)))[0])
        if trace:
            out.steps.append(trace_step(logits[0], pipe, None if hist is None else hist[0], tok, t, top_n, mask))
        out.tokens.append(tok)
        if (eos_id is not None and tok == eos_id) or t == max_new_tokens - 1:
            break
        nxt = torch.tensor([[tok]], device=ids.device)
        if hist is not None:
            hist = torch.cat([hist, nxt], 1)
        logits = _last_logits(model.step(nxt, cache))
        out.target_calls += 1
    out.text = _decode_text(model, out.tokens)
    return out


def greedy(model, prompt_ids, max_new_tokens: int, *, eos_id: int | None = None, trace: bool = True,
           top_n: int = 12, mask_undecodable: bool = False) -> DecodeTrace:
    """Greedy decoding: the arg-max at every step (first index on exact ties); ``sample`` at temperature 0."""
    return sample(model, prompt_ids, max_new_tokens, Pipeline([("temperature", 0.0)], name="greedy"), 0,
                  eos_id=eos_id, trace=trace, top_n=top_n, strategy="greedy", mask_undecodable=mask_undecodable)


@torch.inference_mode()
def greedy_fast(model, prompt_ids, max_new_tokens: int, *, mask_undecodable: bool = False) -> list[int]:
    """Greedy tokens only, no tracing or per-step checks: the loop the benchmark times."""
    ids = prepare_prompt(model, prompt_ids, max_new_tokens)
    mask = undecodable_index(model, mask_undecodable)
    cache = model.new_cache(1, max_len=ids.size(1) + max_new_tokens)
    logits = apply_mask(model.step(ids, cache).logits[:, -1], mask)
    out = []
    for t in range(max_new_tokens):
        nxt = logits.argmax(-1, keepdim=True)
        out.append(nxt)
        if t < max_new_tokens - 1:
            logits = apply_mask(model.step(nxt, cache).logits[:, -1], mask)
    return torch.cat(out, 1)[0].tolist() if out else []


@torch.inference_mode()
def sample_batch(model, prompt_ids, max_new_tokens: int, num_samples: int, pipeline=None, seed: int = 0, *,
                 draw: str = "auto", mask_undecodable: bool = False) -> torch.Tensor:
    """``num_samples`` independent samples of one prompt, decoded together as a batch: ``(num_samples, n)``.

    Row ``b`` at position ``t`` uses row ``b`` of ``NoiseStream(seed).exponential(t, (num_samples, V))``, so row 0
    equals ``sample(..., seed=seed)``; ``draw`` and ``mask_undecodable`` as in :func:`sample` (the kernel's
    noise row 0 likewise).
    """
    pipe = as_pipeline(pipeline)
    ids = prepare_prompt(model, prompt_ids, max_new_tokens)
    mask = undecodable_index(model, mask_undecodable)
    if not isinstance(num_samples, int) or num_samples < 1:
        raise DecodingError(f"num_samples must be an int >= 1, got {num_samples!r}")
    B = num_samples
    noise = NoiseStream(seed)
    cache = model.new_cache(1, max_len=ids.size(1) + max_new_tokens)
    logits = apply_mask(_last_logits(model.step(ids, cache)), mask)
    cache.reorder(torch.zeros(B, dtype=torch.long, device=ids.device))
    logits = logits.expand(B, -1)
    hist = ids.expand(B, -1) if pipe.needs_ids else None
    V = logits.size(-1)
    fused = resolve_draw(draw, pipe, logits.is_cuda)
    toks = []
    for t in range(max_new_tokens):
        if fused is not None:
            tok = kernel_draw(P.check_logits(logits), fused, noise, t)[:, None]
        else:
            probs = pipe(logits, hist).softmax(-1)
            tok = sample_with_noise(probs, noise.exponential(t, (B, V)).to(probs.device))[:, None]
        toks.append(tok)
        if t < max_new_tokens - 1:
            if hist is not None:
                hist = torch.cat([hist, tok], 1)
            logits = apply_mask(_last_logits(model.step(tok, cache)), mask)
    return torch.cat(toks, 1) if toks else torch.zeros(B, 0, dtype=torch.long)


# ----------------------------------------------------------------------------------------------- beam search
def _validate_beam(num_beams, length_penalty, early_stopping, num_groups=1, diversity_penalty=0.0):
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise DecodingError(f"num_beams must be an int >= 1, got {num_beams!r}")
    lp = P._number("length_penalty", length_penalty)
    if early_stopping not in (True, False, "never"):
        raise DecodingError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise DecodingError(f"num_groups must be an int >= 1, got {num_groups!r}")
    if num_beams % num_groups:
        raise DecodingError(f"num_beams ({num_beams}) must be divisible by num_groups ({num_groups})")
    dp = P._number("diversity_penalty", diversity_penalty)
    if dp < 0:
        raise DecodingError(f"diversity_penalty must be >= 0, got {dp}")
    return lp, dp


class _BeamGroup:
    """The state of one group of ``k`` beams: live scores, tree nodes, finished hypotheses, stop flags.

    The step rule is HF's: take the top ``2k`` continuations of ``score + log p`` over all live beams; those that
    end (EOS or length limit) and rank among the first ``k`` may become hypotheses (score divided by
    ``length ** length_penalty``, best ``k`` kept); the best ``k`` that do not end stay live.
    """

    def __init__(self, k, group, root, lp, early_stopping, max_new_tokens, nodes):
        self.k, self.group, self.lp, self.es, self.max_new = k, group, lp, early_stopping, max_new_tokens
        self.scores = torch.full((k,), -1.0e9)
        self.scores[0] = 0.0
        self.node_of = [root] * k
        self.finished: list[tuple[float, int, float]] = []  # (score, node id, raw score)
        self.improvable = True
        self.done = False
        self.nodes = nodes

    def step(self, logp: torch.Tensor, step: int, eos_id, raw_logp: torch.Tensor):
        """logp ``(k, V)`` processed log-probs (diversity penalty included); returns (source beams, tokens) ``(k,)``."""
        k, V = self.k, logp.size(-1)
        total = (logp + self.scores[:, None]).reshape(-1)
        n_cand = min(2 * k, total.numel())
        cand_scores, cand_idx = torch.topk(total, n_cand)
        src, tok = cand_idx // V, cand_idx % V
        is_last = step + 1 >= self.max_new
        ends = (tok == eos_id) if eos_id is not None else torch.zeros(n_cand, dtype=torch.bool)
        if is_last:
            ends = torch.ones(n_cand, dtype=torch.bool)
        live_scores = cand_scores + ends.float() * -1.0e9
        keep = torch.topk(live_scores, min(k, n_cand)).indices
        # new tree nodes for every candidate
        ids = []
        for j in range(n_cand):
            b, t = int(src[j]), int(tok[j])
            ids.append(len(self.nodes))
            self.nodes.append(BeamNode(len(self.nodes), self.node_of[b], t, step, float(logp[b, t]),
                                       float(cand_scores[j]), "pruned", self.group, float(raw_logp[b, t])))
        if not self.done:
            full_before = len(self.finished) == k
            blocked = not self.improvable or (self.es is True and full_before)
            denom = float((step + 1) ** self.lp)
            for j in range(min(k, n_cand)):
                if bool(ends[j]):
                    self.nodes[ids[j]].status = "ended"
                    if not blocked:
                        score = float(cand_scores[j] / denom)
                        self.finished.append((score, ids[j], float(cand_scores[j])))
            self.finished.sort(key=lambda x: -x[0])
            for _, nid, _ in self.finished[k:]:
                self.nodes[nid].status = "ended"
            self.finished = self.finished[:k]
            for _, nid, _ in self.finished:
                self.nodes[nid].status = "finished"
        for j in keep.tolist():
            if not bool(ends[j]):
                self.nodes[ids[j]].status = "running"
        self.scores = live_scores[keep]
        self.node_of = [ids[j] for j in keep.tolist()]
        # stop rule (HF): can a live beam still beat the worst hypothesis? are all slots full (early stopping)?
        hyp_len = self.max_new if (self.es == "never" and self.lp > 0.0) else step + 1
        if len(self.finished) == k:
            best_possible = float(self.scores[0] / float(hyp_len ** self.lp))
            self.improvable = self.improvable and best_possible > min(f[0] for f in self.finished)
        open_beam = not (len(self.finished) == k and self.es is True)
        if not (self.improvable and open_beam and not bool(ends.all())):
            self.done = True
        return src[keep], tok[keep]


def _hypothesis(nodes, nid, score, raw, lp, group) -> BeamHypothesis:
    path = []
    while nodes[nid].parent is not None:
        path.append(nodes[nid])
        nid = nodes[nid].parent
    path.reverse()
    return BeamHypothesis(
        tokens=[n.token for n in path], score=score, raw_score=raw,
        transition_scores=[n.transition_score for n in path], logprob=float(sum(n.raw_logprob for n in path)),
        node_ids=[n.id for n in path], length_penalty=lp, group=group,
    )


@torch.inference_mode()
def diverse_beam_search(model, prompt_ids, num_beams: int = 4, max_new_tokens: int = 20, *, num_groups: int = 2,
                        diversity_penalty: float = 1.0, length_penalty: float = 1.0,
                        early_stopping: bool | str = False, eos_id: int | None = None, pipeline=None,
                        num_return_sequences: int | None = None, mask_undecodable: bool = False) -> BeamResult:
    """Diverse beam search (Vijayakumar et al.): ``num_groups`` groups of ``num_beams / num_groups`` beams.

    At each step the groups move in order; group ``g``'s log-probs are lowered by ``diversity_penalty`` times
    the number of beams of earlier groups that chose that token at this step (Hamming diversity), as HF's
    former ``HammingDiversityLogitsProcessor`` did. Scores accumulate the penalised log-probs (the augmented
    objective), so transition scores still sum to the raw score; ``logprob`` is the plain model log-prob.
    With ``num_groups == 1`` this is :func:`beam_search`. ``mask_undecodable`` as in :func:`beam_search`.
    """
    lp, dp = _validate_beam(num_beams, length_penalty, early_stopping, num_groups, diversity_penalty)
    pipe = as_pipeline(pipeline) if pipeline is not None else None
    ids = prepare_prompt(model, prompt_ids, max_new_tokens)
    _check_eos(model, eos_id)
    mask = undecodable_index(model, mask_undecodable)
    if max_new_tokens < 1:
        raise DecodingError("beam search needs max_new_tokens >= 1")
    T, dev = ids.size(1), ids.device
    k = num_beams // num_groups
    nodes = [BeamNode(0, None, None, -1, 0.0, 0.0, "root")]
    groups = [_BeamGroup(k, g, 0, lp, early_stopping, max_new_tokens, nodes) for g in range(num_groups)]
    cache = model.new_cache(1, max_len=T + max_new_tokens)
    logits = _last_logits(model.step(ids, cache))
    cache.reorder(torch.zeros(num_beams, dtype=torch.long, device=dev))
    logits = logits.expand(num_beams, -1)
    seqs = ids.expand(num_beams, -1)
    steps = 0
    for step in range(max_new_tokens):
        steps = step + 1
        P.check_logits(logits)
        raw = logits.log_softmax(-1)
        logp = pipe(raw, seqs) if pipe is not None else raw
        logp, raw = apply_mask(logp, mask).cpu(), raw.cpu()
        counts = torch.zeros(logp.size(-1))
        src_all, tok_all = [], []
        for g, grp in enumerate(groups):
            rows = slice(g * k, (g + 1) * k)
            lg = logp[rows] - dp * counts[None, :] if (dp and g) else logp[rows]
            src, tok = grp.step(lg, step, eos_id, raw[rows])
            src_all.append(src + g * k)
            tok_all.append(tok)
            counts += torch.bincount(tok, minlength=logp.size(-1)).float()
        if all(grp.done for grp in groups):
            break
        index = torch.cat(src_all).to(dev)
        toks = torch.cat(tok_all).to(dev)[:, None]
        cache.reorder(index)
        seqs = torch.cat([seqs.index_select(0, index), toks], 1)
        logits = _last_logits(model.step(toks, cache))
    hyps = []
    for grp in groups:
        hyps += [_hypothesis(nodes, nid, s, r, lp, grp.group) for s, nid, r in grp.finished]
    hyps.sort(key=lambda h: -h.score)
    n_ret = num_return_sequences or num_beams
    res = BeamResult(list(ids[0].tolist()), hyps[:n_ret], nodes, num_beams, lp, early_stopping, num_groups, dp, steps)
    res.text = _decode_text(model, res.best.tokens) if hyps else None
    return res


def beam_search(model, prompt_ids, num_beams: int = 4, max_new_tokens: int = 20, *, length_penalty: float = 1.0,
                early_stopping: bool | str = False, eos_id: int | None = None, pipeline=None,
                num_return_sequences: int | None = None, mask_undecodable: bool = False) -> BeamResult:
    """Beam search with HF ``generate`` semantics (``num_beams``, ``length_penalty``, ``early_stopping``).

    Hypotheses come best first with ``score = sum(transition_scores) / len ** length_penalty`` (``len`` counts
    generated tokens, EOS included). ``pipeline`` (e.g. ``no_repeat_ngram``) is applied to the log-softmax, as
    HF applies its processors in beam search. ``result.nodes`` is the whole tree, pruned candidates included.
    ``mask_undecodable`` sets the log-probs of ids without text to ``-inf`` after the pipeline, without
    renormalising: HF's ``generate(..., suppress_tokens=ids)`` does exactly this. ``prompt_ids`` may be text.
    """
    return diverse_beam_search(model, prompt_ids, num_beams, max_new_tokens, num_groups=1, diversity_penalty=0.0,
                               length_penalty=length_penalty, early_stopping=early_stopping, eos_id=eos_id,
                               pipeline=pipeline, num_return_sequences=num_return_sequences,
                               mask_undecodable=mask_undecodable)


# ------------------------------------------------------------------------------------- prompt lookup
def lookup_draft(seq: Sequence[int], max_ngram: int, num_pred: int) -> list[int]:
    """N-gram draft from the context: for ``n = max_ngram .. 1`` find the first earlier occurrence of the last
    ``n`` tokens and propose up to ``num_pred`` tokens that followed it (HF's prompt-lookup rule)."""
    L = len(seq)
    for n in range(min(max_ngram, L - 1), 0, -1):
        tail = list(seq[L - n:])
        for s in range(0, L - n):
            if list(seq[s:s + n]) == tail:
                start = s + n
                cont = list(seq[start:min(start + num_pred, L)])
                if cont:
                    return cont
    return []


@torch.inference_mode()
def prompt_lookup(model, prompt_ids, max_new_tokens: int, *, max_ngram: int = 2, num_pred: int = 10,
                  eos_id: int | None = None, mask_undecodable: bool = False) -> DecodeTrace:
    """Greedy decoding accelerated by copying: draft tokens that followed the current n-gram earlier in the
    context, check them all in one model call, keep the prefix that greedy decoding agrees with plus one
    token from the model. Output equals :func:`greedy` (up to float ties, and with the same
    ``mask_undecodable``); ``stats`` has calls and acceptance.
    """
    ids = prepare_prompt(model, prompt_ids, max_new_tokens)
    _check_eos(model, eos_id)
    mask = undecodable_index(model, mask_undecodable)
    if max_ngram < 1 or num_pred < 1:
        raise DecodingError(f"max_ngram and num_pred must be >= 1, got {max_ngram}, {num_pred}")
    T, dev = ids.size(1), ids.device
    seq = ids[0].tolist()
    out = DecodeTrace("prompt lookup", list(seq), [])
    if max_new_tokens == 0:
        return out
    cache = model.new_cache(1, max_len=T + max_new_tokens)
    logits = apply_mask(P.check_logits(_last_logits(model.step(ids, cache))), mask)
    calls, drafted, accepted = 1, 0, 0
    rounds = []
    nxt = int(logits[0].argmax())
    out.tokens.append(nxt)
    seq.append(nxt)
    while len(out.tokens) < max_new_tokens and not (eos_id is not None and out.tokens[-1] == eos_id):
        remaining = max_new_tokens - len(out.tokens)
        draft = lookup_draft(seq, max_ngram, num_pred)[: remaining - 1]
        feed = torch.tensor([[seq[-1]] + draft], device=dev)
        lg = apply_mask(P.check_logits(model.step(feed, cache).logits[0].float()), mask)  # (1 + d, V)
        calls += 1
        want = lg.argmax(-1).tolist()
        n = 0
        while n < len(draft) and draft[n] == want[n]:
            n += 1
        drafted += len(draft)
        accepted += n
        new = draft[:n] + [want[n]]
        cache.crop(cache.length - (len(draft) - n))
        rounds.append(LookupRound(draft, n))
        for t in new:
            out.tokens.append(t)
            seq.append(t)
            if eos_id is not None and t == eos_id:
                break
        if eos_id is not None and eos_id in new:
            break
    out.tokens = out.tokens[:max_new_tokens]
    out.target_calls = calls
    out.lookup = LookupStats(drafted, accepted, len(out.tokens) / calls, rounds)
    out.text = _decode_text(model, out.tokens)
    return out


__all__ = ["sample", "greedy", "greedy_fast", "sample_batch", "beam_search", "diverse_beam_search", "prompt_lookup",
           "trace_step", "lookup_draft", "prepare_prompt", "encode_prompt", "undecodable_index", "apply_mask",
           "MASK_STAGE"]
