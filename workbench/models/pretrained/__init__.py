"""Models shipped with the workbench, trained by this project's own code (see ``python -m workbench.models.make_pretrained``),
and, opt-in, real checkpoints from the Hugging Face hub (see :mod:`workbench.models.zoo`).

This package is the folder that holds the shipped weights (one subfolder per model: ``config.json``,
``model.safetensors``, ``tokenizer.json``) and the code that lists and loads them. The public path is
``workbench.models.load_pretrained`` (and ``workbench.models.available``).

Lesson: ``notebooks/00_tour.ipynb`` (The shipped model), ``notebooks/01_tokenization.ipynb`` (5. Byte vs BPE
models), ``notebooks/03_decoding.ipynb`` (2. The model and greedy's repetition loops).
"""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import load

PRETRAINED_DIR = Path(__file__).parent


def available() -> list[str]:
    """Names of the shipped models."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").exists())


def load_pretrained(name: str, device=None, *, allow_download: bool | None = None, dtype=None,
                    revision: str | None = None, cache_dir=None):
    """Load a model by name, offline unless you allow downloads.

    - a shipped name, e.g. ``load_pretrained("docs-byte")``: offline and instant (``available()`` lists them);
    - a local folder written by ``save_pretrained`` (config.json plus ``*.safetensors``): through ``from_hf``;
    - a Hugging Face hub name, e.g. ``load_pretrained("EleutherAI/pythia-70m", allow_download=True)``: from the
      local HF cache when it is there (offline, no permission needed), else downloaded only when allowed by
      ``allow_download=True`` or the environment variable ``WORKBENCH_ALLOW_DOWNLOAD=1``: the size is printed
      first, only safetensors weights, config and tokenizer are fetched (progress bar), into the HF cache.

    ``dtype`` (``"float32"`` default, or ``"bfloat16"``) and ``revision``/``cache_dir`` apply to HF models only.
    Without permission a hub name raises ``zoo.DownloadNotAllowedError`` (a ``ValueError``) saying how to allow
    downloads and how to pass a local folder instead.
    """
    names = available()
    if name in names:
        return load(PRETRAINED_DIR / name, device=device)
    if Path(name).expanduser().is_dir():
        from ..hf_adapter import from_hf

        return from_hf(name, dtype=dtype, device=device)
    from .. import zoo

    shipped = f"no shipped model named {name!r} (available: {names}). "
    if not isinstance(name, str) or not zoo.looks_like_hub_name(name):
        raise ValueError(shipped + "Pass a shipped name, a local folder written by save_pretrained, or a "
                         "Hugging Face hub name such as 'EleutherAI/pythia-70m' with allow_download=True.")
    return zoo.load(name, allow_download=allow_download, revision=revision, cache_dir=cache_dir, dtype=dtype,
                    device=device, context=shipped)
