"""Sweeps of tiny models over sizes and token budgets, with a results store that survives interruption.

:func:`run_sweep` trains every (config, token budget) pair that the store does not already hold and
records ``(N, D, C, final train and validation loss, wall time, seed)``. Each finished run is written to
its own JSON file atomically (temporary file, fsync, ``os.replace``), so a crash or Ctrl-C leaves only
complete records behind, and re-running the same sweep skips them. Training runs in this process or on any
``concurrent.futures.Executor`` (a process pool, ``dask.distributed.Client.get_executor()``, Ray's
executor); results are written by the calling process as runs finish.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..atomic import write_bytes_atomic
from .errors import ScalingError, StoreVersionError

STORE_FORMAT = "workbench.scaling.sweep"
STORE_VERSION = 1


class SweepRunError(ScalingError):
    """One or more runs of a sweep raised; the finished runs are in the store, the failures listed here."""

    def __init__(self, failures: dict):
        self.failures = failures
        super().__init__(f"{len(failures)} run(s) failed: " +
                         "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:3]))


@dataclass(frozen=True)
class RunSpec:
    """Everything one training run needs; its :attr:`key` names the run in the store."""

    config: dict
    tokens: int
    batch_size: int
    lr: float
    seed: int
    corpus_id: str
    threads: int = 1
    #: What a custom ``trainer`` makes of the corpus for this run (a JSON-able dict, e.g. a data recipe of
    #: :mod:`workbench.datalab.recipes`); None for plain training. Part of the key only when set, so the
    #: keys of plain runs are unchanged.
    recipe: dict | None = None

    @property
    def key(self) -> str:
        fields = {"config": self.config, "tokens": self.tokens, "batch_size": self.batch_size,
                  "lr": self.lr, "seed": self.seed, "corpus": self.corpus_id}
        if self.recipe is not None:
            fields["recipe"] = self.recipe
        blob = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunRecord:
    """One finished run. ``N`` counts non-embedding parameters (Kaplan et al.'s convention), ``N_total``
    all of them; ``D`` is the tokens actually trained on (whole steps) and ``C = 6 N D``."""

    key: str
    config: dict
    N: int
    N_total: int
    D: int
    C: float
    steps: int
    batch_size: int
    lr: float
    seed: int
    train_loss: float
    val_loss: float | None
    wall_s: float
    corpus_id: str
    format_version: int = STORE_VERSION
    #: What a custom ``trainer`` measured beyond the losses (JSON-able: curves, per-domain losses...).
    extra: dict | None = None


@dataclass
class SweepResult:
    """All records of the sweep (finished before or now), in (config, budget) order, and what ran now."""

    records: list
    trained: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        """``N``, ``D``, ``C``, ``loss`` (validation, else train) as arrays, ready for the fitters."""
        loss = [r.val_loss if r.val_loss is not None else r.train_loss for r in self.records]
        return {"N": np.array([r.N for r in self.records], dtype=float),
                "D": np.array([r.D for r in self.records], dtype=float),
                "C": np.array([r.C for r in self.records], dtype=float), "loss": np.array(loss, dtype=float)}


class SweepStore:
    """A directory of run records: ``store.json`` (format and version) and ``runs/<key>.json``."""

    def __init__(self, path):
        self.path = Path(path)
        self.runs = self.path / "runs"
        meta = self.path / "store.json"
        if meta.exists():
            try:
                info = json.loads(meta.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise StoreVersionError(f"{meta} is not a sweep store header: {exc}") from None
            if info.get("format") != STORE_FORMAT or info.get("version") != STORE_VERSION:
                raise StoreVersionError(f"{self.path} was written as {info.get('format')!r} version "
                                        f"{info.get('version')!r}; this code reads {STORE_FORMAT!r} version "
                                        f"{STORE_VERSION}")
        else:
            self.runs.mkdir(parents=True, exist_ok=True)
            _atomic_write(meta, {"format": STORE_FORMAT, "version": STORE_VERSION})
        self.runs.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> RunRecord | None:
        p = self.runs / f"{key}.json"
        if not p.exists():
            return None
        data = json.loads(p.read_text())
        if data.get("format_version") != STORE_VERSION:
            raise StoreVersionError(f"{p} has format_version {data.get('format_version')!r}, "
                                    f"expected {STORE_VERSION}")
        return RunRecord(**data)

    def put(self, record: RunRecord) -> None:
        _atomic_write(self.runs / f"{record.key}.json", asdict(record))

    def all(self) -> list[RunRecord]:
        return [self.get(p.stem) for p in sorted(self.runs.glob("*.json"))]


def _atomic_write(path: Path, obj) -> None:
    """Write JSON to ``path`` so that readers see the old file or the whole new one, never a part."""
    write_bytes_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode("utf-8"))


def _corpus_ids(corpus):
    """Token ids (1-D int64 array) and a short fingerprint for a corpus name, text, or ids."""
    if isinstance(corpus, str):
        from workbench.data.corpus import EMBEDDED, load_corpus
        from workbench.tokenizers import ByteTokenizer

        text = load_corpus(corpus) if corpus in EMBEDDED or os.path.exists(corpus) else corpus
        ids = np.asarray(ByteTokenizer().encode(text), dtype=np.int64)
    else:
        ids = np.asarray(corpus, dtype=np.int64)
    if ids.ndim != 1 or ids.size < 16:
        raise ScalingError("corpus must give a 1-D sequence of at least 16 token ids")
    return ids, hashlib.sha256(ids.tobytes()).hexdigest()[:16]


def _count_params(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    emb = model.wte.weight.numel() + (model.wpe.weight.numel() if getattr(model, "wpe", None) is not None else 0)
    return total - emb, total


#: The architectures a sweep's default trainer builds, by the name a config dict carries (none: TinyGPT).
ARCHITECTURES = ("TinyGPT", "RecurrentLM")


def config_dict(config) -> dict:
    """A config as the dict a run's key is made from: a ``GPTConfig`` (or a plain dict) as its fields, as
    always; a ``RecurrentConfig`` as its fields plus ``"architecture": "RecurrentLM"``."""
    from workbench.models import RecurrentConfig

    if isinstance(config, RecurrentConfig):
        return {"architecture": "RecurrentLM", **asdict(config)}
    return asdict(config) if is_dataclass(config) else dict(config)


def build_model(config: dict):
    """The untrained model a config dict describes (see :func:`config_dict`), with torch's current seed."""
    from workbench.models import GPTConfig, RecurrentConfig, RecurrentLM, TinyGPT

    fields = dict(config)
    arch = fields.pop("architecture", "TinyGPT")
    if arch == "TinyGPT":
        return TinyGPT(GPTConfig(**fields))
    if arch == "RecurrentLM":
        return RecurrentLM(RecurrentConfig(**fields))
    raise ScalingError(f"unknown architecture {arch!r} in a sweep config; choose from {ARCHITECTURES}")


def train_one(spec: RunSpec, ids: np.ndarray, val_fraction: float = 0.1, progress: bool = False) -> RunRecord:
    """Train one model (TinyGPT, or RecurrentLM for a config that names it) as ``spec`` says and return its
    record; a top-level function so executors can ship it to other processes or machines. Deterministic for a
    given spec, corpus and thread count."""
    import torch

    from workbench.data.corpus import train_val_split
    from workbench.models import train

    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        torch.manual_seed(spec.seed)
        model = build_model(spec.config)
        cfg = model.config
        n, n_total = _count_params(model)
        train_ids, val_ids = train_val_split(torch.as_tensor(ids), val_fraction)
        steps = max(1, int(np.ceil(spec.tokens / (spec.batch_size * cfg.block_size))))
        t0 = time.perf_counter()
        hist = train(model, train_ids, steps=steps, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed,
                     val_ids=val_ids, progress=progress, desc=f"run {spec.key[:8]}")
        wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    D = steps * spec.batch_size * cfg.block_size
    return RunRecord(key=spec.key, config=spec.config, N=int(n), N_total=int(n_total), D=int(D),
                     C=6.0 * n * D, steps=steps, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed,
                     train_loss=float(hist.train_loss[-1]), val_loss=hist.final_val_loss, wall_s=wall,
                     corpus_id=spec.corpus_id)


def run_sweep(configs, token_budgets, corpus, store, executor=None, *, batch_size: int = 8,
              lr: float = 3e-3, seed: int = 0, threads: int = 1, progress: bool = True, recipes=None,
              trainer=None) -> SweepResult:
    """Train each config (a ``GPTConfig``, a ``RecurrentConfig`` or a dict of its fields) for each budget in
    ``token_budgets``.

    corpus: a corpus name (``"python-docs"``), a text, or a 1-D sequence of token ids (byte tokens for
    text). store: a directory (or :class:`SweepStore`). executor: None trains here one run after another;
    any ``concurrent.futures.Executor`` trains there. Finished runs already in the store are skipped. If
    some runs raise, the others still finish and are stored, then :class:`SweepRunError` is raised.

    recipes: optional list of JSON-able dicts; each (config, budget) pair then runs once per recipe (a recipe
    may name its own ``"seed"``), and ``trainer(spec, ids, progress=...)`` (a top-level function, so
    executors can ship it; default :func:`train_one`) reads ``spec.recipe`` to decide what to train on.
    """
    if not isinstance(store, SweepStore):
        store = SweepStore(store)
    budgets = [int(b) for b in token_budgets]
    if not budgets or min(budgets) < 1:
        raise ScalingError("token_budgets must be a non-empty list of positive token counts")
    cfgs = [config_dict(c) for c in configs]
    if not cfgs:
        raise ScalingError("configs must not be empty")
    ids, corpus_id = _corpus_ids(corpus)
    if recipes is not None:
        recipes = [dict(r) for r in recipes]
        if not recipes:
            raise ScalingError("recipes must be None or a non-empty list of dicts")
    trainer = train_one if trainer is None else trainer
    specs = [RunSpec(config=c, tokens=b, batch_size=batch_size, lr=lr, seed=int(r.get("seed", seed)) if r else seed,
                     corpus_id=corpus_id, threads=threads, recipe=r)
             for c in cfgs for b in budgets for r in (recipes if recipes is not None else [None])]
    done = {s.key: store.get(s.key) for s in specs}
    pending = [s for s in specs if done[s.key] is None]
    skipped = [s.key for s in specs if done[s.key] is not None]
    trained, failures = [], {}
    bar = tqdm(total=len(specs), initial=len(skipped), desc="sweep", disable=not progress)
    # (setting, call that returns its record): run here one by one, or collected from the executor as they finish
    if executor is None:
        outcomes = ((s, lambda s=s: trainer(s, ids, progress=progress)) for s in pending)
    else:
        futures = {executor.submit(trainer, s, ids): s for s in pending}
        outcomes = ((futures[fut], fut.result) for fut in as_completed(futures))
    for s, result in outcomes:
        try:
            rec = result()
        except Exception as exc:  # noqa: BLE001 - recorded and re-raised after the others finish
            failures[s.key] = repr(exc)
        else:
            store.put(rec)
            done[s.key] = rec
            trained.append(s.key)
        bar.update(1)
    bar.close()
    if failures:
        raise SweepRunError(failures)
    return SweepResult(records=[done[s.key] for s in specs], trained=trained, skipped=skipped)
