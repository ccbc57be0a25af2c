"""The attention lab's input errors: each bad input gets its own class (all are ``AttentionError``/``ValueError``)."""
from __future__ import annotations


class AttentionError(ValueError):
    """Base class of the attention lab's input errors."""


class EmptyInputError(AttentionError):
    """The text or id sequence is empty."""


class IndexOutOfRangeError(AttentionError, IndexError):
    """A layer, head, token or position index outside the model or the sequence."""


class ContextLengthError(AttentionError):
    """The sequence is longer than the model's context and no (usable) long-context policy was given."""


class CaptureNotSupportedError(AttentionError, TypeError):
    """The model cannot return attention probabilities."""


class BudgetExceededError(AttentionError, MemoryError):
    """The requested capture would exceed the memory budget."""


class PolicyError(AttentionError):
    """A long-context policy that is badly specified or does not fit the model."""
