"""The over-training law of Gadre et al. 2024: ``L(C, M) = E + (a M^eta + b M^-eta) C^-eta``.

``M = D / N`` is the token multiplier (20 is Chinchilla-optimal), ``C = 6 N D``. Expanding, the law is
``E + a (C/M)^-eta + b (C M)^-eta``: a log-sum-exp of three terms with one shared exponent, so it is
fitted with the same Huber-on-log-residuals multistart machinery as the Chinchilla law.

Lesson: ``notebooks/04_scaling_laws.ipynb`` (5. Over-training).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ._core import LawSpec, multistart
from ._validate import clean_columns
from .errors import ScalingError
from .fitters import _check_options

#: Column order of an over-training start grid.
OVERTRAINING_PARAMS = ("e", "log_a", "log_b", "eta")


def overtraining_grid(kind: str = "full") -> np.ndarray:
    """Starts ``(S, 4)``: e in {-1, ..., 1}, log a, log b in {0, 5, ..., 25}, eta in {0.05, 0.1, 0.2, 0.3,
    0.5} ("full", 900 starts), or a 3 x 3 x 3 x 3 subset ("coarse", 81)."""
    if kind == "full":
        e, ab, eta = np.arange(-1, 1.01, 0.5), np.arange(0, 30, 5.0), np.array([0.05, 0.1, 0.2, 0.3, 0.5])
    elif kind == "coarse":
        e, ab, eta = np.array([-1.0, 0, 1]), np.array([0.0, 10, 20]), np.array([0.1, 0.2, 0.5])
    else:
        raise ScalingError(f"grid must be 'full' or 'coarse', got {kind!r}")
    mesh = np.meshgrid(e, ab, ab, eta, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


@dataclass(frozen=True)
class OvertrainingFit:
    """A fitted over-training law; :meth:`predict` takes ``(C, M)``, :meth:`predict_ND` takes ``(N, D)``."""

    E: float
    a: float
    b: float
    eta: float
    objective: float
    delta: float
    reduce: str
    n_points: int
    n_dropped: int
    n_starts: int
    seconds: float
    start_objectives: np.ndarray | None = field(default=None, repr=False, compare=False)

    def predict(self, C, M) -> np.ndarray:
        C, M = np.asarray(C, dtype=np.float64), np.asarray(M, dtype=np.float64)
        return self.E + (self.a * M ** self.eta + self.b * M ** -self.eta) * C ** -self.eta

    def predict_ND(self, N, D) -> np.ndarray:
        N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
        return self.predict(6.0 * N * D, D / N)


def fit_overtraining(N, D, loss, *, delta: float = 1e-3, reduce: str = "sum", grid="full",
                     backend: str = "batched") -> OvertrainingFit:
    """Fit Gadre et al.'s law to runs with ``N`` parameters, ``D`` tokens and final ``loss``.

    Options as in :func:`~workbench.scaling.fit_chinchilla`; a custom grid is ``(S, 4)`` in
    :data:`OVERTRAINING_PARAMS` order.
    """
    _check_options(delta, reduce, 0, 0.5)
    cols, n_dropped = clean_columns({"N": N, "D": D, "loss": loss}, 4, what="fit_overtraining")
    if isinstance(grid, str):
        starts = overtraining_grid(grid)
    else:
        starts = np.asarray(grid, dtype=np.float64)
        if starts.ndim != 2 or starts.shape[1] != 4:
            raise ScalingError(f"a custom grid must have shape (S, 4), got {starts.shape}")
    logC = np.log(6.0 * cols["N"] * cols["D"])
    logM = np.log(cols["D"] / cols["N"])
    spec = LawSpec(np.stack([logC - logM, logC + logM]), (0, 0), 1)
    log_y = np.log(cols["loss"])
    norm = 1.0 if reduce == "sum" else float(len(log_y))
    t0 = time.perf_counter()
    ms = multistart(spec, log_y, delta, norm, starts, backend=backend)
    e, la, lb, eta = ms.x
    return OvertrainingFit(E=float(np.exp(e)), a=float(np.exp(la)), b=float(np.exp(lb)), eta=float(eta),
                           objective=ms.objective, delta=float(delta), reduce=reduce, n_points=len(log_y),
                           n_dropped=n_dropped, n_starts=len(starts), seconds=time.perf_counter() - t0,
                           start_objectives=ms.start_objectives)
