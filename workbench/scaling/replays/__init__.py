"""Published scaling data shipped with the package, with their provenance (``PROVENANCE.md`` here).

* :func:`load_chinchilla`: (N, D, loss) points digitised from Hoffmann et al. 2022, Fig. 4, by
  Besiroglu et al. 2024 (245 rows).
* :func:`load_gadre`: Gadre et al. 2024's over-training runs (104 models, several evaluation sets).
* :func:`load_tinygpt_sweep`: this project's own sweep of TinyGPT sizes and token budgets (remade by
  ``python -m workbench.scaling.make_sweep``; see ``TINYGPT_SWEEP.md``).

Lesson: ``notebooks/04_scaling_laws.ipynb`` (1. The Chinchilla replay; 3. The outlier rule).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ScalingError

HERE = Path(__file__).resolve().parent
CHINCHILLA_CSV = HERE / "chinchilla_svg_extracted.csv"
GADRE_CSV = HERE / "gadre2024_scaling_losses.csv"
SWEEP_CSV = HERE / "tinygpt_sweep.csv"

#: Besiroglu et al. 2024's refit on the 240 points kept (their reported estimates).
BESIROGLU_2024 = {"A": 482.01, "B": 2085.43, "E": 1.817, "alpha": 0.3478, "beta": 0.3658}
#: The same data fitted with a plain summed Huber loss (PROVENANCE.md: "about A 478, B 2143, ...").
BESIROGLU_2024_PLAIN_HUBER = {"A": 478.0, "B": 2143.0, "E": 1.817, "alpha": 0.3473, "beta": 0.3672}
#: Hoffmann et al. 2022's published Approach-3 estimates (rounded as in the paper's body).
HOFFMANN_2022 = {"A": 406.4, "B": 410.7, "E": 1.69, "alpha": 0.34, "beta": 0.28}


@dataclass(frozen=True)
class ChinchillaReplay:
    """Digitised Chinchilla runs: parameters ``N``, FLOP ``C``, tokens ``D = C / (6 N)``, final ``loss``."""

    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    loss: np.ndarray
    n_dropped: int

    def __len__(self) -> int:
        return len(self.loss)


@dataclass(frozen=True)
class GadreReplay:
    """Gadre et al. 2024 runs for one training set and one evaluation loss.

    ``N`` counts all parameters (``N_no_embed`` without embeddings), ``M = D / N`` is the token
    multiplier, ``C = 6 N D``.
    """

    name: np.ndarray
    N: np.ndarray
    N_no_embed: np.ndarray
    D: np.ndarray
    M: np.ndarray
    loss: np.ndarray
    dataset: str
    eval_set: str

    @property
    def C(self) -> np.ndarray:
        return 6.0 * self.N * self.D

    def __len__(self) -> int:
        return len(self.loss)


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_chinchilla(drop_highest: int = 5) -> ChinchillaReplay:
    """The 245 digitised points, minus the ``drop_highest`` highest-loss rows (5 in the replication).

    The dropped rows are the small-compute outliers Besiroglu et al. left out; keeping them all
    (``drop_highest=0``) pulls beta towards 0.45.
    """
    if int(drop_highest) != drop_highest or not 0 <= drop_highest < 245:
        raise ScalingError(f"drop_highest must be an integer in [0, 245), got {drop_highest!r}")
    rows = _read(CHINCHILLA_CSV)
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = np.sort(np.argsort(loss, kind="stable")[:len(loss) - int(drop_highest)])
    N, C, loss = N[keep], C[keep], loss[keep]
    return ChinchillaReplay(N=N, D=C / (6.0 * N), C=C, loss=loss, n_dropped=int(drop_highest))


GADRE_DATASETS = ("c4_original", "rpj", "rw_original")
GADRE_EVAL_SETS = ("c4_val", "openlm", "paloma_falcon-refinedweb", "paloma_redpajama")


def load_gadre(dataset: str = "c4_original", eval_set: str = "c4_val") -> GadreReplay:
    """Gadre et al.'s runs trained on ``dataset``, with the validation loss on ``eval_set``."""
    if dataset not in GADRE_DATASETS:
        raise ScalingError(f"dataset must be one of {GADRE_DATASETS}, got {dataset!r}")
    if eval_set not in GADRE_EVAL_SETS:
        raise ScalingError(f"eval_set must be one of {GADRE_EVAL_SETS}, got {eval_set!r}")
    rows = [r for r in _read(GADRE_CSV) if r["dataset"] == dataset]
    col = f"loss_{eval_set}"
    return GadreReplay(name=np.array([r["name"] for r in rows]),
                       N=np.array([float(r["N"]) for r in rows]),
                       N_no_embed=np.array([float(r["N_no_embed"]) for r in rows]),
                       D=np.array([float(r["D"]) for r in rows]), M=np.array([float(r["M"]) for r in rows]),
                       loss=np.array([float(r[col]) if r[col] != "" else np.nan for r in rows]),
                       dataset=dataset, eval_set=eval_set)


def load_tinygpt_sweep(path=None):
    """The shipped TinyGPT sweep as a :class:`~workbench.scaling.sweep.SweepResult` (``.arrays()`` gives
    N, D, C, loss for the fitters)."""
    from ..sweep import RunRecord, SweepResult

    path = Path(path) if path is not None else SWEEP_CSV
    if not path.exists():
        raise ScalingError(f"no sweep file at {path}; make it with python -m workbench.scaling.make_sweep")
    recs = []
    for r in _read(path):
        cfg = {"vocab_size": 257, "n_layer": int(r["n_layer"]), "n_head": int(r["n_head"]),
               "n_embd": int(r["n_embd"]), "block_size": int(r["block_size"])}
        recs.append(RunRecord(key=r["key"], config=cfg, N=int(r["N"]), N_total=int(r["N_total"]), D=int(r["D"]),
                              C=float(r["C"]), steps=int(r["steps"]), batch_size=int(r["batch_size"]),
                              lr=float(r["lr"]), seed=int(r["seed"]), train_loss=float(r["train_loss"]),
                              val_loss=float(r["val_loss"]) if r["val_loss"] not in ("", "None") else None,
                              wall_s=float(r["wall_s"]), corpus_id=r.get("corpus_id", "")))
    return SweepResult(records=recs)
