"""Shipped sweep files: one JSON document ``{"format", "version", "command", "settings", "runs"}`` per
precomputed experiment, written atomically and checked on load.

The labs that ship sweeps (the data lab, ``workbench.datalab.recipes``; the memory lab,
``workbench.memory.sweepfile``) name their own format, version and remake command and raise their own
``ShippedSweepError``; this module is the reading and writing they share.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "demo.json"
>>> write_sweep_doc(p, "workbench.demo", 1, "python -m demo", {"cfg": {}}, [{"loss": 1.5}])
>>> read_sweep_doc(p, "workbench.demo", 1, "python -m demo", ("loss",), ("cfg",))["runs"]
[{'loss': 1.5}]
>>> read_sweep_doc(p, "workbench.demo", 2, "python -m demo", ())  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: ... holds ('workbench.demo', 1), expected format 'workbench.demo' version 2; remake it with: python -m demo
"""
from __future__ import annotations

import json
from pathlib import Path

from .atomic import write_bytes_atomic


def write_sweep_doc(path, fmt: str, version: int, command: str, settings: dict, runs: list) -> None:
    """Write one shipped sweep as indented, key-sorted JSON, atomically (readers see the old file or the whole
    new one). ``command`` is what remakes it; ``runs`` is a list of per-run dicts."""
    doc = {"format": fmt, "version": version, "command": command, "settings": settings, "runs": runs}
    write_bytes_atomic(Path(path), json.dumps(doc, indent=1, sort_keys=True).encode("utf-8"))


def read_sweep_doc(path, fmt: str, version: int, command: str, run_fields: tuple = (), settings_fields: tuple = (),
                   error: type[Exception] = ValueError) -> dict:
    """Load a shipped sweep and check it: readable JSON, ``format == fmt`` and ``version == version``, a non-empty
    list of runs, a settings dict holding ``settings_fields``, and every run a dict holding ``run_fields``.

    Any failure raises ``error`` (the lab's own ``ShippedSweepError``) naming the file, what is wrong and
    ``remake it with: <command>``. Returns the whole document.
    """
    path = Path(path)
    remake = f"remake it with: {command}"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"no shipped sweep at {path}; {remake}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path} is not a readable JSON sweep file ({exc}); {remake}") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt or doc.get("version") != version:
        got = (doc.get("format"), doc.get("version")) if isinstance(doc, dict) else type(doc).__name__
        raise error(f"{path} holds {got}, expected format {fmt!r} version {version}; {remake}")
    runs, settings = doc.get("runs"), doc.get("settings")
    if not isinstance(runs, list) or not runs or not isinstance(settings, dict):
        raise error(f"{path} has no runs or no settings; {remake}")
    missing = [k for k in settings_fields if k not in settings]
    if missing:
        raise error(f"{path} settings lack {missing}; {remake}")
    for i, r in enumerate(runs):
        lack = [k for k in run_fields if not isinstance(r, dict) or k not in r]
        if lack:
            raise error(f"{path} run {i} lacks {lack}; {remake}")
    return doc
