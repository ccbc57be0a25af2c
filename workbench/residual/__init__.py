"""Residual-stream lab core: what the residual stream holds layer by layer, and which component caused a prediction.

One module per idea: :mod:`.run` (run_with_cache, the model's own head), :mod:`.lens` (logit lens),
:mod:`.tuned_lens`, :mod:`.dla` (direct logit attribution), :mod:`.patching` (activation patching),
:mod:`.input_attribution`, :mod:`.probes` (probes and neurons), :mod:`.early_exit` (self-speculative drafts).
"""
from .errors import LengthMismatchError, LensMismatchError, OutOfRangeError, ResidualError
from .run import Head, ResidualStack, encode, head_of, residual_stack, run_with_cache, unembed_residual

__all__ = ["Head", "LengthMismatchError", "LensMismatchError", "OutOfRangeError", "ResidualError", "ResidualStack",
           "encode", "head_of", "residual_stack", "run_with_cache", "unembed_residual"]

from .lens import LensResult, lens_kl_by_layer, lens_logits, logit_lens  # noqa: E402
from .tuned_lens import TunedLens, load_tuned_lens, model_hash, train_tuned_lens  # noqa: E402

__all__ += ["LensResult", "lens_kl_by_layer", "lens_logits", "logit_lens",
            "TunedLens", "load_tuned_lens", "model_hash", "train_tuned_lens"]

from .early_exit import EarlyExitModel, ExitReport, ExitRow, early_exit, exit_report  # noqa: E402

__all__ += ["EarlyExitModel", "ExitReport", "ExitRow", "early_exit", "exit_report"]

from .input_attribution import (InputAttribution, TargetTokenError, attribute, attribute_generation,  # noqa: E402
                                gradient_x_input, integrated_gradients, occlusion)
from .labellers import LABELLERS, Labeller, in_string_literal, is_digit, next_is_digit  # noqa: E402
from .neurons import NeuronActivations, Snippet, mlp_width, neuron_activations, top_activations  # noqa: E402
from .probes import ProbeLabelError, ProbeResult, probe  # noqa: E402

__all__ += ["InputAttribution", "TargetTokenError", "attribute", "attribute_generation", "gradient_x_input",
            "integrated_gradients", "occlusion", "LABELLERS", "Labeller", "in_string_literal", "is_digit",
            "next_is_digit", "NeuronActivations", "Snippet", "mlp_width", "neuron_activations", "top_activations",
            "ProbeLabelError", "ProbeResult", "probe"]

from .dla import Attribution, direct_logit_attribution  # noqa: E402
from .linear_norm import FrozenNorm, freeze, post_attention_norms  # noqa: E402
from .patching import LogitDiffMetric, PatchResult, activation_patching, logit_diff_metric  # noqa: E402

__all__ += ["Attribution", "direct_logit_attribution", "FrozenNorm", "freeze", "post_attention_norms",
            "LogitDiffMetric", "PatchResult", "activation_patching", "logit_diff_metric"]
