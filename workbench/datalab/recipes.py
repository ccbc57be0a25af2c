"""Data recipes shared by the data-lab experiments: byte corpora, fixed-size chunks, the micro model, and the
sweep plumbing (one trainer for :func:`workbench.scaling.sweep.run_sweep`, shipped files written atomically and
validated on load).

Every experiment here trains the same micro model (:data:`MICRO_CONFIG`, about 60,000 non-embedding
parameters, 64-token context) on byte tokens with a BOS token at position 0 of every window, as the shipped
``docs-byte`` models were trained, so the shipped models can score, teach and serve as references without any
change of tokenizer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..sweepfile import read_sweep_doc, write_sweep_doc
from .errors import DataLabError

#: The micro model every experiment trains (a ``GPTConfig`` as a dict; vocabulary of the shipped byte models).
MICRO_CONFIG = {"vocab_size": 258, "n_layer": 2, "n_head": 2, "n_embd": 48, "block_size": 64, "pos": "rope"}
#: The BOS id of ``ByteTokenizer(bos=True)`` (256 bytes, ``<|endoftext|>``, then BOS).
BOS = 257
#: Where the shipped sweep files live.
SWEEP_DIR = Path(__file__).parent / "sweeps"


class ShippedSweepError(DataLabError):
    """A shipped sweep file that cannot be used: missing, not JSON, another format or version, or fields missing."""


def byte_tokenizer():
    """The tokenizer of the shipped byte models: bytes, ``<|endoftext|>``, and a BOS token (id 257)."""
    from workbench.tokenizers import ByteTokenizer

    return ByteTokenizer(bos=True)


@lru_cache(maxsize=8)
def corpus_split(name: str, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Byte ids (int64, no BOS) of an embedded corpus, split by ``train_val_split`` into (train, val).

    Cached per process: a sweep's runs in one worker load each corpus once. Do not modify the arrays.
    """
    from workbench.data import load_corpus, train_val_split

    ids = np.frombuffer(load_corpus(name).encode("utf-8"), dtype=np.uint8).astype(np.int64)
    train, val = train_val_split(ids, val_fraction)
    train.flags.writeable = False
    val.flags.writeable = False
    return train, val


def chunk(ids, length: int) -> np.ndarray:
    """Cut 1-D ids into consecutive chunks of ``length`` tokens, shape ``(len(ids) // length, length)``
    (the tail shorter than a chunk is dropped)."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise DataLabError(f"ids must be 1-D, got shape {ids.shape}")
    if not isinstance(length, (int, np.integer)) or length < 1:
        raise DataLabError(f"chunk length must be a positive int, got {length!r}")
    n = len(ids) // length
    if n == 0:
        raise DataLabError(f"{len(ids)} tokens make no chunk of {length}")
    return ids[: n * length].reshape(n, length)


def micro_model(config: dict | None = None, seed: int = 0):
    """A fresh TinyGPT of ``config`` (default :data:`MICRO_CONFIG`), initialised from ``seed``."""
    import torch

    from workbench.models import GPTConfig, TinyGPT

    torch.manual_seed(seed)
    return TinyGPT(GPTConfig(**(config or MICRO_CONFIG)))


def count_params(model) -> tuple[int, int]:
    """(non-embedding, all) parameters, Kaplan et al.'s convention as in the scaling sweeps."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.wte.weight.numel() + (model.wpe.weight.numel() if getattr(model, "wpe", None) is not None else 0)
    return total - emb, total


@dataclass(frozen=True)
class RunSettings:
    """How one experiment run trains: the micro model's config, steps, batch, learning rate and seed."""

    config: dict
    steps: int
    batch_size: int
    lr: float
    seed: int


def train_recipe(spec, ids, progress: bool = False):
    """The ``trainer`` of :func:`~workbench.scaling.sweep.run_sweep` for the data-lab sweeps.

    ``spec.recipe["kind"]`` names the experiment (``selection``, ``mixing``, ``distill``, ``traps``); the rest of
    the recipe is its setting. The corpus ``ids`` given by ``run_sweep`` only fingerprint the sweep: each recipe
    builds its own training data from the embedded corpora (deterministically, so any worker builds the same).
    Returns a :class:`~workbench.scaling.sweep.RunRecord` whose ``extra`` holds the run's curves and measures.
    """
    import torch

    from workbench.scaling.sweep import RunRecord

    recipe = dict(spec.recipe or {})
    kind = recipe.pop("kind", None)
    recipe.pop("seed", None)
    steps = max(1, int(np.ceil(spec.tokens / (spec.batch_size * spec.config["block_size"]))))
    settings = RunSettings(config=spec.config, steps=steps, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed)
    if kind == "selection":
        from .selection import selection_run as run
    elif kind == "mixing":
        from .mixing import mixing_run as run
    elif kind == "distill":
        from .distill import distill_run as run
    elif kind == "traps":
        from .traps import trap_run as run
    else:
        raise DataLabError(f"unknown recipe kind {kind!r}: use 'selection', 'mixing', 'distill' or 'traps'")
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        t0 = time.perf_counter()
        extra = run(settings, **recipe)
        wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    extra["recipe"] = dict(spec.recipe)
    n, n_total = count_params(micro_model(spec.config))
    D = steps * spec.batch_size * spec.config["block_size"]
    return RunRecord(key=spec.key, config=spec.config, N=n, N_total=n_total, D=D, C=6.0 * n * D, steps=steps,
                     batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed, train_loss=extra["train_loss"][-1],
                     val_loss=extra["val_loss"][-1], wall_s=wall, corpus_id=spec.corpus_id, extra=extra)


def sweep_runs(recipes, *, store, steps: int, batch_size: int, lr: float, config: dict | None = None,
               executor=None, progress: bool = True):
    """Run ``recipes`` (dicts with ``kind``, ``seed`` and the experiment's setting) through ``run_sweep``,
    resumable in ``store``; returns the records in recipe order."""
    from workbench.scaling.sweep import run_sweep

    config = dict(config or MICRO_CONFIG)
    tokens = steps * batch_size * config["block_size"]
    res = run_sweep([config], [tokens], "python-docs", store, executor, batch_size=batch_size, lr=lr,
                    progress=progress, recipes=list(recipes), trainer=train_recipe)
    return res.records


def write_sweep_file(path, kind: str, settings: dict, runs: list, command: str) -> None:
    """Write a shipped sweep (``{"format", "version", "command", "settings", "runs"}``) atomically as JSON."""
    write_sweep_doc(path, f"workbench.datalab.{kind}", 1, command, settings, runs)


def read_sweep_file(path, kind: str, run_fields: tuple, settings_fields: tuple = ()) -> dict:
    """Load a shipped sweep file and check its format, version, settings and that every run has ``run_fields``.

    Raises :class:`ShippedSweepError` naming what is wrong and how to remake the file.
    """
    return read_sweep_doc(path, f"workbench.datalab.{kind}", 1, f"python -m workbench.datalab.make_sweeps {kind}",
                          run_fields, settings_fields, error=ShippedSweepError)


def mean_and_spread(values) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 1 (seeds) and the sample standard deviation (ddof=1; 0 with one seed)."""
    v = np.asarray(values, dtype=float)
    sd = v.std(axis=1, ddof=1) if v.shape[1] > 1 else np.zeros(v.shape[:1] + v.shape[2:])
    return v.mean(axis=1), sd


def index_runs(runs, key: str, what: str) -> tuple[list, list, dict]:
    """Index run dicts (each with ``key`` and ``seed``) by ``(run[key], seed)``: returns the ``key`` values and
    the seeds in first-seen order and the table; :class:`DataLabError` names every ``(value, seed)`` pair that no
    run covers (``what`` names the experiment in the message)."""
    rows, seeds, table = [], [], {}
    for r in runs:
        rows += [r[key]] if r[key] not in rows else []
        seeds += [r["seed"]] if r["seed"] not in seeds else []
        table[(r[key], r["seed"])] = r
    missing = [(v, s) for v in rows for s in seeds if (v, s) not in table]
    if missing:
        raise DataLabError(f"{what} runs missing for ({key}, seed) {missing}")
    return rows, seeds, table


def curves_by_seed(table: dict, rows, seeds) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From ``table[(row, seed)]["val_loss"]`` (one curve per run): the curves ``(rows, seeds, evaluations)``, the
    final losses ``(rows, seeds)``, and their mean and spread over seeds ``(rows,)`` (:func:`mean_and_spread`)."""
    curves = np.array([[table[(r, s)]["val_loss"] for s in seeds] for r in rows], dtype=float)
    final = curves[:, :, -1]
    mean, sd = mean_and_spread(final)
    return curves, final, mean, sd
