"""Models shipped with the workbench, trained by this project's own code (see ``python -m workbench.models.make_pretrained``)."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import load

PRETRAINED_DIR = Path(__file__).with_name("pretrained")


def available() -> list[str]:
    """Names of the shipped models."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").exists())


def load_pretrained(name: str, device=None):
    """Load a shipped model (with its tokenizer) offline, e.g. ``load_pretrained("docs-byte")``."""
    names = available()
    if name not in names:
        raise ValueError(f"no shipped model named {name!r}; available: {names}")
    return load(PRETRAINED_DIR / name, device=device)
