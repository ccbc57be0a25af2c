"""Run 2 to 4 strategies on the same prompt and the same noise; report where their outputs first diverge.

Because sampling uses common random numbers (:mod:`workbench.decoding.noise`), two sampling pipelines with
the same seed pick the same token whenever the winner of the exponential race is the same under both
distributions: the first divergence is caused by the strategies, not by luck.

>>> from workbench.models import TinyGPT, GPTConfig
>>> m = TinyGPT(GPTConfig(vocab_size=16, n_layer=1, n_head=2, n_embd=16, block_size=32))
>>> c = compare(m, [1, 2, 3], [Strategy("greedy"), Strategy("sample", pipeline={"temperature": 1.0})], 8)
>>> len(c.tokens)
2

Lesson: ``notebooks/03_decoding.ipynb`` (6. Same prompt, same noise).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .pipeline import Pipeline, as_pipeline
from .processors import DecodingError

KINDS = ("greedy", "sample", "beam", "diverse_beam", "prompt_lookup", "speculative")


@dataclass
class Strategy:
    """A strategy to compare: ``kind`` is one of :data:`KINDS`; ``pipeline`` for sampling / speculative;
    ``params`` go to the strategy function (``num_beams``, ``gamma``, ...). ``name`` defaults to a label."""

    kind: str
    pipeline: Pipeline | dict | None = None
    params: dict = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise DecodingError(f"unknown strategy {self.kind!r}; choose one of {KINDS}")
        if self.pipeline is not None:
            self.pipeline = as_pipeline(self.pipeline)
        if self.name is None:
            extra = ", ".join(f"{k}={v}" for k, v in self.params.items())
            pipe = ", ".join(s.label() for s in self.pipeline.stages) if self.pipeline else ""
            inner = "; ".join(x for x in (pipe, extra) if x)
            self.name = f"{self.kind}({inner})" if inner else self.kind

    def run(self, model, prompt_ids, max_new_tokens: int, seed: int = 0, draft=None, mask_undecodable: bool = False):
        """Run on ``model`` (prompt as text or ids); returns ``(tokens, result)`` with the strategy's own result
        dataclass. ``mask_undecodable`` is passed on unless ``params`` sets it."""
        from . import speculative as S
        from . import strategies as St

        params = {"mask_undecodable": mask_undecodable, **self.params}
        if self.kind == "greedy":
            r = St.greedy(model, prompt_ids, max_new_tokens, **params)
            return r.tokens, r
        if self.kind == "sample":
            r = St.sample(model, prompt_ids, max_new_tokens, self.pipeline, seed, **params)
            return r.tokens, r
        if self.kind == "beam":
            r = St.beam_search(model, prompt_ids, max_new_tokens=max_new_tokens, pipeline=self.pipeline, **params)
            return r.tokens, r
        if self.kind == "diverse_beam":
            r = St.diverse_beam_search(model, prompt_ids, max_new_tokens=max_new_tokens, pipeline=self.pipeline,
                                       **params)
            return r.tokens, r
        if self.kind == "prompt_lookup":
            r = St.prompt_lookup(model, prompt_ids, max_new_tokens, **params)
            return r.tokens, r
        if draft is None:
            raise DecodingError("a speculative strategy needs a draft model: compare(..., draft=...)")
        r = S.speculative_decode(model, draft, prompt_ids, max_new_tokens, pipeline=self.pipeline, seed=seed,
                                 **params)
        return r.tokens, r


@dataclass
class Comparison:
    """Outputs of several strategies on one prompt and seed.

    ``first_divergence``: the first generated position where not all outputs agree (None if identical);
    ``pairwise[i][j]``: the same for strategies ``i`` and ``j``.
    """

    prompt: list[int]
    names: list[str]
    tokens: list[list[int]]
    texts: list[str | None]
    first_divergence: int | None
    pairwise: list[list[int | None]]
    results: list
    seed: int


def first_divergence(*seqs) -> int | None:
    """First index where the sequences differ (a shorter sequence differs where it ends); None if equal."""
    n = max(len(s) for s in seqs)
    for i in range(n):
        vals = {s[i] if i < len(s) else None for s in seqs}
        if len(vals) > 1:
            return i
    return None


def compare(model, prompt_ids, strategies, max_new_tokens: int, seed: int = 0, *, draft=None,
            mask_undecodable: bool = False) -> Comparison:
    """Run 2-4 :class:`Strategy` objects (or kind strings) on one prompt (text or ids) with one seed;
    ``mask_undecodable`` as in :func:`~workbench.decoding.sample`, for every strategy."""
    from .strategies import prepare_prompt

    strategies = [Strategy(s) if isinstance(s, str) else s for s in strategies]
    if not 2 <= len(strategies) <= 4:
        raise DecodingError(f"compare takes 2 to 4 strategies, got {len(strategies)}")
    if isinstance(prompt_ids, str):  # encode once, so every strategy sees the same ids
        prompt_ids = prepare_prompt(model, prompt_ids, max_new_tokens)[0].cpu()
    toks, results, texts = [], [], []
    for s in strategies:
        t, r = s.run(model, prompt_ids, max_new_tokens, seed, draft, mask_undecodable)
        toks.append(list(t))
        results.append(r)
        texts.append(getattr(r, "text", None))
    k = len(toks)
    pair = [[first_divergence(toks[i], toks[j]) if i != j else None for j in range(k)] for i in range(k)]
    prompt = results[0].prompt if hasattr(results[0], "prompt") else list(prompt_ids)
    return Comparison(list(prompt), [s.name for s in strategies], toks, texts, first_divergence(*toks), pair,
                      results, seed)


__all__ = ["Strategy", "Comparison", "compare", "first_divergence", "KINDS"]
