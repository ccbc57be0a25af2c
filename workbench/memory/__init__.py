"""The memory lab: associative recall, in-context learning curves, the reversal curse and answer formats in
arithmetic, each a small experiment on tiny models over token-level synthetic tasks.

* :mod:`.tasks`: the token-level task generators (with loss masks: only answer tokens are trained and scored).
* :mod:`.trainer`: a masked training loop with progress, stop and checkpoint callbacks, and the model builder.
* :mod:`.recall`, :mod:`.icl`, :mod:`.reversal`, :mod:`.answer_format`: one experiment each, with a live small
  version and a loader of the shipped sweep (remade by ``python -m workbench.memory.make_sweeps``).

Lesson: ``notebooks/08_memory_and_icl.ipynb``.
"""
from .errors import MemoryLabError, ModelCapabilityError, SequenceTooLongError, ShippedSweepError, TaskRangeError

__all__ = ["MemoryLabError", "ModelCapabilityError", "SequenceTooLongError", "ShippedSweepError", "TaskRangeError"]
