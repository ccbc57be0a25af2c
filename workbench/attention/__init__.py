"""Attention lab core: capture, per-head metrics, attention variants / long context, interventions.

>>> from workbench.attention import capture_attention, head_metrics   # doctest: +SKIP
>>> cap = capture_attention(model, "The cat sat on the mat.")           # doctest: +SKIP
>>> head_metrics(cap).sink_mass                                         # doctest: +SKIP

Lesson: ``notebooks/02_attention.ipynb``.
"""
from .capture import AttentionCapture, AttentionProbe, capture_attention, capture_bytes
from .errors import (
    AttentionError,
    BudgetExceededError,
    CaptureNotSupportedError,
    ContextLengthError,
    EmptyInputError,
    IndexOutOfRangeError,
    PolicyError,
)
from .induction import InductionRun, train_induction
from .interventions import AblationResult, CaptureDiff, ablate_heads, ablated, ablation_scan, diff_captures
from .metrics import (
    METRICS,
    HeadMetrics,
    attention_by_offset,
    duplicate_token_score,
    entropy,
    head_metrics,
    induction_score,
    mean_distance,
    previous_token_score,
    repeated_random_ids,
    repeated_sequence_induction,
    rollout,
    sink_mass,
    value_sink_mass,
    value_weighted,
)
from .view import HeadView, bertviz_json_bytes, head_view, save_png, to_rgb
from .variants import (
    PerplexityResult,
    Policy,
    HFSinkCache,
    SinkCache,
    dense,
    lambda_mask,
    perplexity_vs_length,
    sliding_window,
    streaming,
    use_policy,
)

__all__ = [
    "AttentionCapture", "AttentionError", "AttentionProbe", "BudgetExceededError", "CaptureNotSupportedError",
    "ContextLengthError", "EmptyInputError", "IndexOutOfRangeError", "capture_attention", "capture_bytes",
    "InductionRun", "train_induction", "AblationResult", "CaptureDiff", "ablate_heads", "ablated", "ablation_scan", "diff_captures",
    "METRICS", "HeadMetrics", "attention_by_offset", "duplicate_token_score", "entropy", "head_metrics", "induction_score",
    "mean_distance", "previous_token_score", "repeated_random_ids", "repeated_sequence_induction", "rollout",
    "sink_mass", "value_sink_mass",
    "value_weighted",
    "PerplexityResult", "Policy", "PolicyError", "HFSinkCache", "SinkCache", "dense", "lambda_mask", "perplexity_vs_length",
    "sliding_window", "streaming", "use_policy",
    "HeadView", "bertviz_json_bytes", "head_view", "save_png", "to_rgb",
]
