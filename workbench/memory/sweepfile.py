"""The shipped sweep files of the memory lab: ``sweeps/<name>.json`` = ``{"format", "version", "command",
"settings", "runs"}``, written atomically by :mod:`.make_sweeps` and checked on load (through
:mod:`workbench.sweepfile`, which the data lab's sweeps share)."""
from __future__ import annotations

from ..sweepfile import read_sweep_doc, write_sweep_doc
from .errors import ShippedSweepError

VERSION = 1
COMMAND = "python -m workbench.memory.make_sweeps"


def write_sweep(path, name: str, settings: dict, runs: list) -> None:
    """Write one shipped sweep atomically (readers see the old file or the whole new one)."""
    write_sweep_doc(path, f"workbench.memory.{name}", VERSION, f"{COMMAND} {name}", settings, runs)


def read_sweep(path, name: str, run_fields: tuple) -> dict:
    """Load a shipped sweep and check its format, version, that it has settings with a ``cfg`` and that every run
    has ``run_fields``; :class:`ShippedSweepError` names what is wrong and the command that remakes it."""
    return read_sweep_doc(path, f"workbench.memory.{name}", VERSION, f"{COMMAND} {name}", run_fields, ("cfg",),
                          error=ShippedSweepError)
