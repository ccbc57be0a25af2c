"""Tokenizers: a shared interface, a byte tokenizer, byte-level BPE (train, encode, trace),
pre-tokenization presets, HF interop and metrics.

Lesson: ``notebooks/01_tokenization.ipynb``.
"""
from .base import Tokenizer, TokenizerError, TokenSpan, printable, tokenizer_from_dict
from .byte import ByteTokenizer
from .bpe import BPETokenizer
from .bpe_train import MergeStep
from .byte_level import bytes_to_unicode
from .pretokenize import DIGIT_PATTERNS, GPT2_PATTERN, GPT4_PATTERN, PATTERNS, PreTokenizer
from .hf_interop import HFTokenizer, from_hf, to_hf
from .metrics import TokenStats, count_difference, measure
from .mixture import MixtureEstimate, infer_mixture

__all__ = [
    "Tokenizer",
    "TokenizerError",
    "TokenSpan",
    "ByteTokenizer",
    "BPETokenizer",
    "MergeStep",
    "PreTokenizer",
    "HFTokenizer",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "PATTERNS",
    "DIGIT_PATTERNS",
    "bytes_to_unicode",
    "from_hf",
    "to_hf",
    "measure",
    "count_difference",
    "TokenStats",
    "infer_mixture",
    "MixtureEstimate",
    "printable",
    "tokenizer_from_dict",
]
