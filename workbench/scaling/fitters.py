"""Parametric scaling-law fits: ``L = E + A x^-alpha`` and Chinchilla's ``L = E + A/N^alpha + B/D^beta``.

Both follow Hoffmann et al. 2022's Approach 3 as the replication by Besiroglu et al. 2024 pinned it down:
coefficients as logs (``E = exp(e)`` ...), the prediction as a log-sum-exp, a Huber(delta) loss on the
log residuals, *summed* over points (``reduce="mean"`` is there to show what averaging does), and L-BFGS
from a grid of starts. All starts run together (see :mod:`workbench.scaling._core`); the best ones are
polished by scipy. Bootstrap confidence intervals refit resamples of the rows.

Example::

    >>> from workbench.scaling import fit_chinchilla, load_chinchilla
    >>> d = load_chinchilla(drop_highest=5)
    >>> fit = fit_chinchilla(d.N, d.D, d.loss)            # doctest: +SKIP
    >>> round(fit.alpha, 3), round(fit.beta, 3)           # doctest: +SKIP
    (0.347, 0.367)

Lesson: ``notebooks/04_scaling_laws.ipynb`` (1. The Chinchilla replay; 2. The trap; 3. The outlier rule).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ._core import (LawSpec, batched_bootstrap, bootstrap_rows, huber, law_log_prediction, multistart,
                    multistart_bootstrap)
from ._validate import clean_columns
from .errors import ScalingError

#: Column order of a Chinchilla start grid (and of :attr:`ChinchillaFit.bootstrap_params`).
CHINCHILLA_PARAMS = ("e", "a", "b", "alpha", "beta")
#: Column order of a power-law start grid.
POWER_LAW_PARAMS = ("e", "a", "alpha")


#: Start values of each kind of parameter: log-space offset e, log-space coefficients (a, b), exponents.
GRID_AXES = {
    "full": (np.arange(-1, 1.01, 0.5), np.arange(0, 30, 5.0), np.arange(0, 2.01, 0.5)),
    "coarse": (np.array([-1.0, 0, 1]), np.array([0.0, 10, 20]), np.array([0.0, 1, 2])),
}


def _grid_axes(kind: str):
    """``(e, coefficients, exponents)`` start values of a named grid."""
    if not isinstance(kind, str) or kind not in GRID_AXES:
        raise ScalingError(f"grid must be 'full', 'coarse' or an array of starts, got {kind!r}")
    return GRID_AXES[kind]


def chinchilla_grid(kind: str = "full") -> np.ndarray:
    """Starting points ``(S, 5)`` in :data:`CHINCHILLA_PARAMS` order.

    "full" is Hoffmann et al.'s grid: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1},
    a, b in {0, 5, ..., 25}: 4,500 starts. "coarse" keeps alpha, beta in {0, 1, 2}, e in {-1, 0, 1}
    and a, b in {0, 10, 20}: 243 starts, for interactive use.
    """
    e, ab, ex = _grid_axes(kind)
    mesh = np.meshgrid(e, ab, ab, ex, ex, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def power_law_grid(kind: str = "full") -> np.ndarray:
    """Starting points ``(S, 3)`` in :data:`POWER_LAW_PARAMS` order (full: 150 starts, coarse: 27)."""
    e, a, ex = _grid_axes(kind)
    mesh = np.meshgrid(e, a, ex, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def _starts(grid, default_grid, n_params: int) -> tuple[np.ndarray, str]:
    if isinstance(grid, str):
        return default_grid(grid), grid
    starts = np.asarray(grid, dtype=np.float64)
    if starts.ndim != 2 or starts.shape[1] != n_params or len(starts) == 0:
        raise ScalingError(f"a custom grid must have shape (S, {n_params}), got {starts.shape}")
    if not np.isfinite(starts).all():
        raise ScalingError("a custom grid must be finite")
    return starts, "custom"


def _check_options(delta, reduce, bootstrap, confidence):
    if reduce not in ("sum", "mean"):
        raise ScalingError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    if not (np.isfinite(delta) and delta > 0):
        raise ScalingError(f"delta must be a positive number, got {delta!r}")
    if int(bootstrap) != bootstrap or bootstrap < 0:
        raise ScalingError(f"bootstrap must be a non-negative integer, got {bootstrap!r}")
    if not 0 < confidence < 1:
        raise ScalingError(f"confidence must be in (0, 1), got {confidence!r}")


def _intervals(samples: dict[str, np.ndarray], confidence: float) -> dict[str, tuple[float, float]]:
    lo, hi = 50 * (1 - confidence), 50 * (1 + confidence)
    return {k: (float(np.percentile(v, lo)), float(np.percentile(v, hi))) for k, v in samples.items()}


@dataclass(frozen=True)
class ChinchillaFit:
    """A fitted ``L(N, D) = E + A/N^alpha + B/D^beta`` and how it was obtained.

    ``objective`` is the minimised Huber objective (summed or averaged, per ``reduce``). ``ci`` maps each
    of E, A, B, alpha, beta, a, b to a (low, high) percentile bootstrap interval when ``bootstrap > 0``.
    ``a = beta/(alpha+beta)`` and ``b = alpha/(alpha+beta)`` are the compute-optimal exponents of
    ``N* ~ C^a`` and ``D* ~ C^b``.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    delta: float
    reduce: str
    grid: str
    n_points: int
    n_dropped: int
    n_starts: int
    n_converged: int
    backend: str
    tol: str
    seconds: float
    ci: dict | None = None
    bootstrap_params: np.ndarray | None = field(default=None, repr=False, compare=False)
    start_objectives: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: row indices of each bootstrap resample ``(n_boot, n_points)``, into the rows that were fitted
    bootstrap_rows: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: how the refits were made (one of :data:`BOOTSTRAP_METHODS`' values), None without a bootstrap
    bootstrap_method: str | None = None

    @property
    def params(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}

    @property
    def a(self) -> float:
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """``(alpha A / (beta B))^(1/(alpha+beta))``: ``N*(C) = G (C/6)^a``, ``D*(C) = (C/6)^b / G``."""
        return float((self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta)))

    def predict(self, N, D) -> np.ndarray:
        """Predicted loss at parameter counts ``N`` and token counts ``D``."""
        N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
        return self.E + self.A * N ** -self.alpha + self.B * D ** -self.beta


@dataclass(frozen=True)
class PowerLawFit:
    """A fitted ``L(x) = E + A x^-alpha``; ``ci`` as in :class:`ChinchillaFit`."""

    E: float
    A: float
    alpha: float
    objective: float
    delta: float
    reduce: str
    n_points: int
    n_dropped: int
    n_starts: int
    seconds: float
    ci: dict | None = None
    bootstrap_params: np.ndarray | None = field(default=None, repr=False, compare=False)
    bootstrap_rows: np.ndarray | None = field(default=None, repr=False, compare=False)
    bootstrap_method: str | None = None

    @property
    def params(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "alpha": self.alpha}

    def predict(self, x) -> np.ndarray:
        return self.E + self.A * np.asarray(x, dtype=np.float64) ** -self.alpha


#: How bootstrap refits are made, by stopping rule (``tol``): see :func:`_fit`.
BOOTSTRAP_METHODS = {
    "strict": "each resample refitted to convergence (same reduce, delta and rows; batched L-BFGS from the "
              "fit's polished end points, which reaches the resample's strict multistart optimum)",
    "default": "each resample refitted exactly as the fit was made (same reduce, delta, start grid, scipy "
               "L-BFGS-B loop and scipy's default stopping rule)",
}


def _fit(spec, log_y, *, delta, reduce, starts, bootstrap, seed, backend, tol, progress=None):
    """The fit and its bootstrap refits, always made with the fit's own choices.

    Rows of the resamples come from :func:`~workbench.scaling._core.bootstrap_rows` (same seed, same
    draws). With a strict stopping rule a fit is the converged optimum, whatever its starting point, so
    the refits start from the fit's end points in one batch (fast). With scipy's default stopping rule
    where a fit ends depends on its path (averaging the loss stops it early), so every resample reruns
    the very same multistart: same starts, backend and tolerances (one full fit per refit).
    """
    norm = 1.0 if reduce == "sum" else float(len(log_y))
    ms = multistart(spec, log_y, delta, norm, starts, backend=backend, tol=tol)
    boot = rows = None
    if bootstrap:
        rows = bootstrap_rows(len(log_y), int(bootstrap), seed)
        if tol == "strict":
            boot = batched_bootstrap(spec, log_y, delta, reduce, ms.candidates, rows)
            if progress is not None:
                progress(len(rows), len(rows))
        else:
            boot = multistart_bootstrap(spec, log_y, delta, reduce, starts, rows, backend=backend, tol=tol,
                                        progress=progress)
    return ms, boot, rows


def fit_chinchilla(N, D, loss, *, delta: float = 1e-3, reduce: str = "sum", grid="full",
                   bootstrap: int = 0, confidence: float = 0.95, seed: int = 0,
                   backend: str = "batched", tol: str = "strict", progress=None) -> ChinchillaFit:
    """Fit ``L = E + A/N^alpha + B/D^beta`` by Approach 3 (Hoffmann et al. 2022, Besiroglu et al. 2024).

    N, D, loss: parameters, training tokens and final loss per run (rows with a NaN are dropped with a
    warning). delta: Huber threshold on log residuals. reduce: "sum" (correct) or "mean" (the trap: with
    scipy's default tolerances the optimiser stops early). grid: "full" (4,500 starts), "coarse" (243) or
    an ``(S, 5)`` array in :data:`CHINCHILLA_PARAMS` order. bootstrap: number of row resamples refitted
    for percentile intervals at ``confidence``; every refit is made with the same choices as the fit
    (reduce, delta, rows, stopping rule; see :data:`BOOTSTRAP_METHODS`), and ``bootstrap_rows`` records
    the resamples. backend: "batched" (all starts at once, then polished by scipy) or "scipy" (a plain
    loop of ``scipy.optimize.minimize``); tol "default" (scipy backend only) keeps scipy's default
    stopping rule. progress: optional ``callable(done, total)`` called as bootstrap refits finish.
    """
    _check_options(delta, reduce, bootstrap, confidence)
    cols, n_dropped = clean_columns({"N": N, "D": D, "loss": loss}, 5, what="fit_chinchilla")
    starts, grid_name = _starts(grid, chinchilla_grid, 5)
    spec = LawSpec(np.stack([np.log(cols["N"]), np.log(cols["D"])]), (0, 1), 2)
    log_y = np.log(cols["loss"])
    t0 = time.perf_counter()
    ms, boot, rows = _fit(spec, log_y, delta=delta, reduce=reduce, starts=starts, bootstrap=bootstrap, seed=seed,
                          backend=backend, tol=tol, progress=progress)
    seconds = time.perf_counter() - t0
    e, a, b, alpha, beta = ms.x
    ci = None
    if boot is not None:
        bal, bbe = boot[:, 3], boot[:, 4]
        ci = _intervals({"E": np.exp(boot[:, 0]), "A": np.exp(boot[:, 1]), "B": np.exp(boot[:, 2]),
                         "alpha": bal, "beta": bbe, "a": bbe / (bal + bbe), "b": bal / (bal + bbe)},
                        confidence)
    return ChinchillaFit(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=float(alpha),
                         beta=float(beta), objective=ms.objective, delta=float(delta), reduce=reduce,
                         grid=grid_name, n_points=len(log_y), n_dropped=n_dropped, n_starts=len(starts),
                         n_converged=ms.n_converged, backend=backend, tol=tol, seconds=seconds, ci=ci,
                         bootstrap_params=boot, start_objectives=ms.start_objectives, bootstrap_rows=rows,
                         bootstrap_method=None if boot is None else BOOTSTRAP_METHODS[tol])


def fit_power_law(x, y, *, delta: float = 1e-3, reduce: str = "sum", grid="full", bootstrap: int = 0,
                  confidence: float = 0.95, seed: int = 0, backend: str = "batched",
                  tol: str = "strict", progress=None) -> PowerLawFit:
    """Fit ``y = E + A x^-alpha`` with a Huber(delta) loss on log residuals, from a grid of starts.

    Same machinery and options as :func:`fit_chinchilla`; grid "full" has 150 starts, "coarse" 27, or
    pass an ``(S, 3)`` array in :data:`POWER_LAW_PARAMS` order.
    """
    _check_options(delta, reduce, bootstrap, confidence)
    cols, n_dropped = clean_columns({"x": x, "y": y}, 3, what="fit_power_law")
    starts, _ = _starts(grid, power_law_grid, 3)
    spec = LawSpec(np.log(cols["x"])[None, :], (0,), 1)
    log_y = np.log(cols["y"])
    t0 = time.perf_counter()
    ms, boot, rows = _fit(spec, log_y, delta=delta, reduce=reduce, starts=starts, bootstrap=bootstrap, seed=seed,
                          backend=backend, tol=tol, progress=progress)
    seconds = time.perf_counter() - t0
    e, a, alpha = ms.x
    ci = None
    if boot is not None:
        ci = _intervals({"E": np.exp(boot[:, 0]), "A": np.exp(boot[:, 1]), "alpha": boot[:, 2]}, confidence)
    return PowerLawFit(E=float(np.exp(e)), A=float(np.exp(a)), alpha=float(alpha), objective=ms.objective,
                       delta=float(delta), reduce=reduce, n_points=len(log_y), n_dropped=n_dropped,
                       n_starts=len(starts), seconds=seconds, ci=ci, bootstrap_params=boot, bootstrap_rows=rows,
                       bootstrap_method=None if boot is None else BOOTSTRAP_METHODS[tol])


def huber_objective(params, N, D, loss, *, delta: float = 1e-3, reduce: str = "sum") -> float:
    """The Approach-3 objective at ``params`` = (e, a, b, alpha, beta): for checking a fit by hand."""
    spec = LawSpec(np.stack([np.log(np.asarray(N, float)), np.log(np.asarray(D, float))]), (0, 1), 2)
    r = law_log_prediction(np.asarray(params, float), spec) - np.log(np.asarray(loss, float))
    h = huber(r, delta)
    return float(h.sum() if reduce == "sum" else h.mean())
