"""Tokenizers: a shared interface, a byte-level tokenizer, and (later) byte-level BPE."""
from .base import Tokenizer, TokenizerError, TokenSpan, printable, tokenizer_from_dict
from .byte import ByteTokenizer

__all__ = ["Tokenizer", "TokenizerError", "TokenSpan", "ByteTokenizer", "printable", "tokenizer_from_dict"]
