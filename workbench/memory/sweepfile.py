"""The shipped sweep files of the memory lab: ``sweeps/<name>.json`` = ``{"format", "version", "command",
"settings", "runs"}``, written atomically by :mod:`.make_sweeps` and checked on load."""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_bytes_atomic
from .errors import ShippedSweepError

VERSION = 1
COMMAND = "python -m workbench.memory.make_sweeps"


def write_sweep(path, name: str, settings: dict, runs: list) -> None:
    """Write one shipped sweep atomically (readers see the old file or the whole new one)."""
    doc = {"format": f"workbench.memory.{name}", "version": VERSION, "command": f"{COMMAND} {name}",
           "settings": settings, "runs": runs}
    write_bytes_atomic(Path(path), json.dumps(doc, indent=1, sort_keys=True).encode("utf-8"))


def read_sweep(path, name: str, run_fields: tuple) -> dict:
    """Load a shipped sweep and check its format, version, that it has settings with a ``cfg`` and that every run
    has ``run_fields``; :class:`ShippedSweepError` names what is wrong and the command that remakes it."""
    path = Path(path)
    remake = f"remake it with: {COMMAND} {name}"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShippedSweepError(f"no shipped sweep at {path}; {remake}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShippedSweepError(f"{path} is not a readable JSON sweep file ({exc}); {remake}") from None
    want = f"workbench.memory.{name}"
    if not isinstance(doc, dict) or doc.get("format") != want or doc.get("version") != VERSION:
        got = (doc.get("format"), doc.get("version")) if isinstance(doc, dict) else type(doc).__name__
        raise ShippedSweepError(f"{path} holds {got}, expected format {want!r} version {VERSION}; {remake}")
    runs, settings = doc.get("runs"), doc.get("settings")
    if not isinstance(runs, list) or not runs or not isinstance(settings, dict) or "cfg" not in settings:
        raise ShippedSweepError(f"{path} has no runs or no settings['cfg']; {remake}")
    for i, r in enumerate(runs):
        lack = [k for k in run_fields if not isinstance(r, dict) or k not in r]
        if lack:
            raise ShippedSweepError(f"{path} run {i} lacks {lack}; {remake}")
    return doc
