"""Checkpoints as a folder: ``model.safetensors`` + ``config.json`` + ``tokenizer.json``. Nothing is unpickled.

Saving writes a complete new folder beside the target and swaps it in with renames, so an interrupted save
never destroys the previous checkpoint. ``config.json`` records the SHA-256 of the weights, so a truncated or
tampered weights file is caught on load with a clear error. ``config.json`` also names the architecture
(``TinyGPT`` or ``RecurrentLM``), which decides the class :func:`load` builds; checkpoints written before that field
existed are TinyGPT's.

Lesson: ``notebooks/00_tour.ipynb``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..tokenizers import tokenizer_from_dict
from .config import GPTConfig
from .recurrent import RecurrentConfig, RecurrentLM
from .tinygpt import TinyGPT

FORMAT = "workbench-checkpoint"
VERSION = 1
WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"
#: The ``architecture`` field of config.json -> (config class, model class).
ARCHITECTURES = {"TinyGPT": (GPTConfig, TinyGPT), "RecurrentLM": (RecurrentConfig, RecurrentLM)}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, truncated, tampered, or written by an incompatible version."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _architecture_of(model) -> str:
    for arch, (_, cls) in ARCHITECTURES.items():
        if isinstance(model, cls):
            return arch
    raise TypeError(f"save() writes checkpoints of {' and '.join(ARCHITECTURES)} models, got {type(model).__name__}")


def save(model: TinyGPT | RecurrentLM, directory, *, dtype: torch.dtype | None = None,
         meta: dict | None = None) -> Path:
    """Save ``model`` (weights, config, tokenizer) to ``directory`` atomically; returns the path.

    ``dtype`` (e.g. ``torch.float16``) stores the weights in a smaller type; they load back as float32.
    """
    arch = _architecture_of(model)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype or v.dtype).contiguous().clone()
             for k, v in model.state_dict().items()
             if not (model.config.tied and k == "lm_head.weight")}
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        save_file(state, str(tmp / WEIGHTS))
        cfg = {
            "format": FORMAT, "version": VERSION, "architecture": arch, "name": model.name,
            "config": model.config.to_dict(), "weights_sha256": _sha256(tmp / WEIGHTS),
            "weights_dtype": str(dtype or next(iter(state.values())).dtype).replace("torch.", ""),
            "meta": meta or {},
        }
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2))
        if model.tokenizer is not None:
            (tmp / TOKENIZER).write_text(json.dumps(model.tokenizer.to_dict(), indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.rename(directory, old / "ckpt")
            os.rename(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_meta(directory) -> dict:
    """The parsed ``config.json`` of a checkpoint (validated format and version)."""
    directory = Path(directory)
    path = directory / CONFIG
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint folder at {directory}")
    if not path.exists():
        raise CheckpointError(f"{directory} has no {CONFIG}: not a workbench checkpoint")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the checkpoint is damaged") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a workbench checkpoint config (format {cfg.get('format')!r})")
    if cfg.get("version") != VERSION:
        raise CheckpointError(f"{path} has format version {cfg.get('version')}; this workbench reads version {VERSION}")
    return cfg


def load(directory, *, device=None, architecture: str | type | None = None) -> TinyGPT | RecurrentLM:
    """Load a checkpoint written by :func:`save`; weights are verified against their recorded SHA-256.

    The class built is the one ``config.json`` names. ``architecture`` (a name of :data:`ARCHITECTURES` or its
    model class), when given, is what the caller expects: a checkpoint of another architecture is then a
    :class:`CheckpointError` naming both, instead of a model of the wrong kind."""
    directory = Path(directory)
    cfg = read_meta(directory)
    arch = cfg.get("architecture", "TinyGPT")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{directory / CONFIG} names architecture {arch!r}; this workbench builds "
                              f"{sorted(ARCHITECTURES)}")
    if architecture is not None:
        want = architecture if isinstance(architecture, str) else getattr(architecture, "__name__", repr(architecture))
        if want not in ARCHITECTURES:
            raise CheckpointError(f"unknown architecture {want!r}; known: {sorted(ARCHITECTURES)}")
        if want != arch:
            raise CheckpointError(
                f"{directory} holds a {arch} checkpoint, not a {want}: the two architectures have different "
                f"weights and configs; load it without architecture= to get the {arch}")
    config_cls, model_cls = ARCHITECTURES[arch]
    wpath = directory / WEIGHTS
    if not wpath.exists():
        raise CheckpointError(f"{directory} has no {WEIGHTS}")
    if _sha256(wpath) != cfg.get("weights_sha256"):
        raise CheckpointError(
            f"{wpath} does not match the checksum in {CONFIG}: the file is truncated or was modified"
        )
    try:
        state = load_file(str(wpath))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {wpath}: {e}") from None
    try:
        config = config_cls.from_dict(cfg["config"])
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"bad {arch} config in {directory / CONFIG}: {e}") from None
    tok = None
    tpath = directory / TOKENIZER
    if tpath.exists():
        try:
            tok = tokenizer_from_dict(json.loads(tpath.read_text()))
        except (json.JSONDecodeError, ValueError) as e:
            raise CheckpointError(f"bad tokenizer file {tpath}: {e}") from None
    model = model_cls(config, tokenizer=tok, name=cfg.get("name", directory.name))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (config.tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit the {arch} config: missing {missing}, unexpected {unexpected}")
    model.meta = cfg.get("meta", {})
    return model.to(device).eval() if device else model.eval()
