"""Errors of the data lab. Every one is a :class:`DataLabError` (a ``ValueError``), so a caller can catch them all.

Each subclass names one kind of bad input; its message says what was wrong and what is allowed.
"""
from __future__ import annotations


class DataLabError(ValueError):
    """Bad input to a data-lab function (the base class of every error below)."""


class FrequencyError(DataLabError):
    """A frequency table the arithmetic coder cannot use: not integers, a zero or negative entry for a symbol
    that must be codable, or a total that is not the coder's fixed total."""


class SymbolError(DataLabError):
    """A symbol outside the alphabet of the frequency table it is coded with."""


class BlobError(DataLabError):
    """A compressed blob that cannot be decoded: not a blob of this format, truncated or corrupted."""


class TruncatedBlobError(BlobError):
    """The blob ends before its header or its coded data does."""


class CorruptBlobError(BlobError):
    """The blob's bytes were changed: a header field is impossible, or the decoded data fail the checksum."""


class ModelMismatchError(BlobError):
    """The blob was made with another model (or another tokenizer) than the one given to decode it."""


class MachineMismatchError(BlobError):
    """Same model, but this machine computes different quantised probabilities than the one that encoded the
    blob (another torch version, BLAS library or CPU code path): decoding would give garbage, so it is refused."""


class SettingError(DataLabError):
    """A setting outside its allowed range (a segment longer than the context, a batch size of 0, ...)."""


class UnsupportedInputError(DataLabError):
    """Data of the wrong type, or data that this model's tokenizer cannot represent losslessly."""
