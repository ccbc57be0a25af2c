"""Decoding: logits processors, pipelines, strategies on the KV cache, beam search, speculative decoding, traces.

Everything is written against the model interface of :mod:`workbench.models.interface` and returns dataclasses
(:mod:`workbench.decoding.trace`) that widgets draw.

Lesson: ``notebooks/03_decoding.ipynb``.
"""
from .processors import (
    DecodingError, check_logits, entropy_bits, epsilon, eta, kept_count, min_p, no_repeat_ngram,
    repetition_penalty, temperature, top_k, top_p, typical,
)
from .pipeline import PRESETS, Pipeline, Stage, as_pipeline
from .noise import NoiseStream, sample_with_noise
from .trace import (
    BeamHypothesis, BeamNode, BeamResult, DecodeTrace, DecodingResult, LookupRound, LookupStats, SpecRound,
    SpeculativeResult, SpeculativeStats, StageSnapshot, StepTrace,
)
from .strategies import (
    beam_search, diverse_beam_search, greedy, greedy_fast, prompt_lookup, sample, sample_batch, trace_step,
)
from .speculative import (
    expected_speedup, expected_tokens_per_call, speculative_decode, speculative_sample_batch, verify_drafts,
)
from .compare import Comparison, Strategy, compare, first_divergence

__all__ = [
    "DecodingError", "check_logits", "entropy_bits", "kept_count", "temperature", "top_k", "top_p", "min_p",
    "typical", "epsilon", "eta", "repetition_penalty", "no_repeat_ngram",
    "PRESETS", "Pipeline", "Stage", "as_pipeline", "NoiseStream", "sample_with_noise",
    "BeamHypothesis", "BeamNode", "BeamResult", "DecodeTrace", "DecodingResult", "LookupRound", "LookupStats",
    "SpecRound", "SpeculativeResult",
    "SpeculativeStats", "StageSnapshot", "StepTrace",
    "greedy", "greedy_fast", "sample", "sample_batch", "beam_search", "diverse_beam_search", "prompt_lookup",
    "trace_step",
    "speculative_decode", "speculative_sample_batch", "verify_drafts", "expected_tokens_per_call",
    "expected_speedup", "Comparison", "Strategy", "compare", "first_divergence",
]
