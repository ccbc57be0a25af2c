"""The attention lab's input errors: each bad input gets its own class (all are ``AttentionError``/``ValueError``).

Lesson: ``notebooks/02_attention.ipynb``.
"""
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


def check_index(name: str, i: int, n: int) -> None:
    """Raise :class:`IndexOutOfRangeError` unless ``0 <= i < n``; ``name`` is what is counted ("layer", "head").

    >>> check_index("head", 4, 4)
    Traceback (most recent call last):
    ...
    workbench.attention.errors.IndexOutOfRangeError: head 4 is out of range: the model has 4 heads (0..3)
    """
    if not 0 <= i < n:
        raise IndexOutOfRangeError(f"{name} {i} is out of range: the model has {n} {name}s (0..{n - 1})")


def check_layer_head(n_layer: int, n_head: int, layer: int, head: int) -> None:
    """Raise :class:`IndexOutOfRangeError` when ``(layer, head)`` is not in an ``n_layer x n_head`` model."""
    check_index("layer", layer, n_layer)
    check_index("head", head, n_head)
