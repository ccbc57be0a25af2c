"""A context manager that holds the forward hooks it registers and removes them all on exit."""
from __future__ import annotations


class HookedRecorder:
    """Base of the recorders that watch a model through hooks: subclasses register in ``__enter__`` and
    append each handle to ``self._hooks``; leaving the ``with`` block removes them, even after an error."""

    def __init__(self):
        self._hooks: list = []

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        return False
