"""Errors of the memory lab. Every one is a :class:`MemoryLabError` (a ``ValueError``), so a caller can catch them all.

Each subclass names one kind of bad input; its message says what was wrong and what is allowed.
"""
from __future__ import annotations


class MemoryLabError(ValueError):
    """Bad input to a memory-lab function (the base class of every error below)."""


class TaskRangeError(MemoryLabError):
    """A task setting out of range: number of key-value pairs, in-context examples, bits, facts, digits or
    training examples outside what the task's vocabulary and trained length allow."""


class SequenceTooLongError(MemoryLabError):
    """A sequence longer than the length the model (or task) was trained for."""


class ModelCapabilityError(MemoryLabError):
    """An experiment asked of a model that cannot do it (no residual capture for a probe, a vocabulary smaller than
    the task's, an unknown architecture or a state size the architecture does not have)."""


class ShippedSweepError(MemoryLabError):
    """A shipped sweep file that is missing, unreadable, of another format or version, or lacking fields."""
