"""A :class:`Pipeline` applies logits processors in a chosen order; presets copy real engines' orders.

The order matters: ``min_p`` after ``temperature`` (HF, vLLM) judges the tempered distribution, ``min_p``
before it (llama.cpp, where temperature comes last) judges the raw one, so the kept sets differ.

>>> pipe = Pipeline.preset("hf", temperature=0.7, top_k=50, top_p=0.9)
>>> [s.name for s in pipe.stages]
['temperature', 'top_k', 'top_p']

Lesson: ``notebooks/03_decoding.ipynb`` (1. What the truncation rules keep).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from . import processors as P
from .processors import DecodingError

#: name -> (unchecked implementation, validator, needs ids); the pipeline validates parameters once at
#: construction and checks the logits once per call, then runs the implementations.
_STAGES = {
    "temperature": (P._temperature, P.validate_temperature, False),
    "top_k": (P._top_k, P.validate_top_k, False),
    "top_p": (P._top_p, P.validate_top_p, False),
    "min_p": (P._min_p, P.validate_min_p, False),
    "typical": (P._typical, P.validate_typical, False),
    "epsilon": (P._epsilon, P.validate_epsilon, False),
    "eta": (P._eta, lambda v: P.validate_epsilon(v, "eta epsilon"), False),
    "repetition_penalty": (P._repetition_penalty, P.validate_penalty, True),
    "no_repeat_ngram": (P._no_repeat_ngram, P.validate_ngram, True),
}
_TRUNCATING = {"top_k", "top_p", "min_p", "typical", "epsilon", "eta"}

#: Stage orders of the engines (only the stages each engine has):
#: HF ``generate`` (``_get_logits_processor``): penalties, then temperature, top-k, top-p, min-p, typical, epsilon, eta.
#: vLLM (V1 sampler): penalties, temperature, min-p, then top-k and top-p.
#: llama.cpp (default sampler chain): penalties, top-k, typical, top-p, min-p, then temperature last.
PRESETS: dict[str, tuple[str, ...]] = {
    "hf": ("repetition_penalty", "no_repeat_ngram", "temperature", "top_k", "top_p", "min_p", "typical",
           "epsilon", "eta"),
    "vllm": ("repetition_penalty", "temperature", "min_p", "top_k", "top_p"),
    "llamacpp": ("repetition_penalty", "top_k", "typical", "top_p", "min_p", "temperature"),
}


@dataclass(frozen=True)
class Stage:
    """One processor with its parameter, e.g. ``Stage("top_p", 0.9)``; validated on construction."""

    name: str
    value: float

    def __post_init__(self):
        if self.name not in _STAGES:
            raise DecodingError(f"unknown stage {self.name!r}; known: {sorted(_STAGES)}")
        object.__setattr__(self, "value", _STAGES[self.name][1](self.value))

    @property
    def needs_ids(self) -> bool:
        return _STAGES[self.name][2]

    def __call__(self, logits: torch.Tensor, ids=None, min_tokens_to_keep: int = 1) -> torch.Tensor:
        """Apply to logits ``(..., V)`` (assumed checked: see :func:`processors.check_logits`)."""
        fn = _STAGES[self.name][0]
        if self.needs_ids:
            if ids is None:
                raise DecodingError(f"stage {self.name} needs the token history (ids)")
            return fn(logits, ids, self.value)
        if self.name in _TRUNCATING:
            return fn(logits, self.value, min_tokens_to_keep)
        return fn(logits, self.value)

    def label(self) -> str:
        return f"{self.name}={self.value:g}"


class Pipeline:
    """Processors applied in order to logits ``(..., V)``; ``Pipeline([])`` is plain ancestral sampling.

    ``stages`` are :class:`Stage` objects or ``(name, value)`` pairs. ``temperature=0`` anywhere makes the
    pipeline greedy (see :func:`processors.temperature`).
    """

    def __init__(self, stages: Sequence[Stage | tuple] = (), min_tokens_to_keep: int = 1, name: str = "custom"):
        self.stages = tuple(s if isinstance(s, Stage) else Stage(*s) for s in stages)
        self.min_tokens_to_keep = P._keep_count(min_tokens_to_keep)
        self.name = name

    @classmethod
    def preset(cls, order: str = "hf", *, min_tokens_to_keep: int = 1, **params) -> "Pipeline":
        """Build a pipeline from keyword parameters in an engine's order (``"hf"``, ``"vllm"``, ``"llamacpp"``).

        Parameters left out (or None) are skipped. A parameter the engine does not have is an error.
        """
        if order not in PRESETS:
            raise DecodingError(f"unknown preset {order!r}; choose one of {sorted(PRESETS)}")
        params = {k: v for k, v in params.items() if v is not None}
        unknown = set(params) - set(_STAGES)
        if unknown:
            raise DecodingError(f"unknown parameters {sorted(unknown)}; known: {sorted(_STAGES)}")
        missing = set(params) - set(PRESETS[order])
        if missing:
            raise DecodingError(f"the {order} preset has no stage for {sorted(missing)}; its order is {PRESETS[order]}")
        return cls([Stage(n, params[n]) for n in PRESETS[order] if n in params], min_tokens_to_keep, name=order)

    def with_order(self, order: str) -> "Pipeline":
        """The same parameters in another preset's order."""
        return Pipeline.preset(order, min_tokens_to_keep=self.min_tokens_to_keep,
                               **{s.name: s.value for s in self.stages})

    @property
    def greedy(self) -> bool:
        return any(s.name == "temperature" and s.value == 0.0 for s in self.stages)

    @property
    def needs_ids(self) -> bool:
        return any(s.needs_ids for s in self.stages)

    def __call__(self, logits: torch.Tensor, ids=None) -> torch.Tensor:
        """Processed logits ``(..., V)``; removed tokens are -inf."""
        P.check_logits(logits)
        for s in self.stages:
            logits = s(logits, ids, self.min_tokens_to_keep)
        return logits

    def run(self, logits: torch.Tensor, ids=None) -> list[tuple[str, torch.Tensor]]:
        """Logits after every stage: ``[("raw", logits), (stage label, logits), ...]`` (for traces and widgets)."""
        P.check_logits(logits)
        out = [("raw", logits)]
        for s in self.stages:
            logits = s(logits, ids, self.min_tokens_to_keep)
            out.append((s.label(), logits))
        return out

    def probs(self, logits: torch.Tensor, ids=None) -> torch.Tensor:
        """The sampling distribution ``softmax(pipeline(logits))`` ``(..., V)``."""
        return self(logits, ids).softmax(dim=-1)

    def __repr__(self) -> str:
        return f"Pipeline[{self.name}]({', '.join(s.label() for s in self.stages)})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Pipeline) and self.stages == other.stages and \
            self.min_tokens_to_keep == other.min_tokens_to_keep

    def __hash__(self):
        return hash((self.stages, self.min_tokens_to_keep))


def as_pipeline(pipeline) -> Pipeline:
    """None -> plain sampling; a dict -> HF-order preset; a Pipeline stays."""
    if pipeline is None:
        return Pipeline([], name="plain")
    if isinstance(pipeline, Pipeline):
        return pipeline
    if isinstance(pipeline, dict):
        return Pipeline.preset("hf", **pipeline)
    raise DecodingError(f"pipeline must be a Pipeline, a dict of parameters or None, got {type(pipeline).__name__}")


__all__ = ["Stage", "Pipeline", "PRESETS", "as_pipeline"]
