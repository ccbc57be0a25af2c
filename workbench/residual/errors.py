"""The residual-stream lab's input errors: each bad input gets its own class (all are ``ResidualError``/``ValueError``)."""
from __future__ import annotations


class ResidualError(ValueError):
    """Base class of the residual-stream lab's input errors."""


class OutOfRangeError(ResidualError, IndexError):
    """A layer, head, position, neuron or token id outside the model or the sequence."""


class LengthMismatchError(ResidualError):
    """Two prompts that must have the same number of tokens do not (the message gives both counts)."""


class LensMismatchError(ResidualError):
    """A tuned lens trained for another model (shapes or model hash differ)."""
