"""Residual-stream lab core: what the residual stream holds layer by layer, and which component caused a prediction.

One module per idea: :mod:`.run` (run_with_cache, the model's own head), :mod:`.lens` (logit lens),
:mod:`.tuned_lens`, :mod:`.dla` (direct logit attribution), :mod:`.patching` (activation patching),
:mod:`.input_attribution`, :mod:`.probes` (probes and neurons), :mod:`.early_exit` (self-speculative drafts).
"""
from .errors import LengthMismatchError, LensMismatchError, OutOfRangeError, ResidualError
from .run import Head, ResidualStack, encode, head_of, residual_stack, run_with_cache, unembed_residual

__all__ = ["Head", "LengthMismatchError", "LensMismatchError", "OutOfRangeError", "ResidualError", "ResidualStack",
           "encode", "head_of", "residual_stack", "run_with_cache", "unembed_residual"]
