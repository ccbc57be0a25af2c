"""Approach 2 of Hoffmann et al. 2022: a parabola per compute budget, then a power law through the minima.

For each IsoFLOP budget, loss is fitted as a quadratic in ``log10 N``; its vertex is that budget's
compute-optimal size ``N_opt``. A straight line through ``(log C, log N_opt)`` gives the exponent ``a`` of
``N_opt ~ C^a`` (and ``D_opt = C / (6 N_opt)`` gives ``b``).

Lesson: ``notebooks/04_scaling_laws.ipynb``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._validate import clean_columns
from .errors import ScalingError, TooFewPointsError

#: The nine IsoFLOP budgets of Hoffmann et al. 2022, Figure 3 (FLOP).
HOFFMANN_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)


@dataclass(frozen=True)
class IsoFLOPProfile:
    """One budget: its runs, the parabola ``loss = c2 x^2 + c1 x + c0`` in ``x = log10 N``, and its vertex."""

    C: float
    N: np.ndarray
    loss: np.ndarray
    coeffs: tuple
    N_opt: float
    D_opt: float
    loss_opt: float


@dataclass(frozen=True)
class IsoFLOPFit:
    """Per-budget optima and the fitted ``N_opt = k_N C^a``, ``D_opt = k_D C^b``.

    ``skipped`` lists ``(C, reason)`` for budgets without a usable parabola (too few runs, not convex,
    or the vertex outside the sizes tried, where the parabola would be extrapolating).
    """

    profiles: list
    C: np.ndarray
    N_opt: np.ndarray
    D_opt: np.ndarray
    a: float
    b: float
    k_N: float
    k_D: float
    skipped: list = field(default_factory=list)

    def N_opt_at(self, C) -> np.ndarray:
        return self.k_N * np.asarray(C, dtype=np.float64) ** self.a

    def D_opt_at(self, C) -> np.ndarray:
        return self.k_D * np.asarray(C, dtype=np.float64) ** self.b


def group_budgets(C, *, budgets=None, window_dex: float = 0.05, gap_dex: float = 0.1) -> np.ndarray:
    """Label each run with the index of its compute budget, or -1 for none.

    With ``budgets``, a run belongs to the nearest budget within ``window_dex`` decades. Without, sorted
    ``log10 C`` values are split wherever consecutive values are more than ``gap_dex`` apart.
    """
    lc = np.log10(np.asarray(C, dtype=np.float64))
    if budgets is not None:
        lb = np.log10(np.asarray(budgets, dtype=np.float64))
        dist = np.abs(lc[:, None] - lb[None, :])
        nearest = dist.argmin(1)
        return np.where(dist[np.arange(len(lc)), nearest] <= window_dex, nearest, -1)
    order = np.argsort(lc, kind="stable")
    labels = np.empty(len(lc), dtype=np.int64)
    labels[order] = np.concatenate([[0], np.cumsum(np.diff(lc[order]) > gap_dex)])
    return labels


def fit_isoflop(N, C, loss, *, budgets=None, window_dex: float = 0.05, gap_dex: float = 0.1,
                min_points: int = 3) -> IsoFLOPFit:
    """Approach 2 on runs ``(N, C, loss)``; see :func:`group_budgets` for how runs are grouped.

    A budget's ``C`` is its nominal value when ``budgets`` is given, else the geometric mean of its runs.
    Needs at least two usable budgets for the exponent.
    """
    cols, _ = clean_columns({"N": N, "C": C, "loss": loss}, min_points, what="fit_isoflop")
    N, C, loss = cols["N"], cols["C"], cols["loss"]
    labels = group_budgets(C, budgets=budgets, window_dex=window_dex, gap_dex=gap_dex)
    profiles, skipped = [], []
    for lab in np.unique(labels[labels >= 0]):
        m = labels == lab
        Cb = float(budgets[lab]) if budgets is not None else float(np.exp(np.log(C[m]).mean()))
        x, y = np.log10(N[m]), loss[m]
        if m.sum() < min_points or np.ptp(x) == 0:
            skipped.append((Cb, f"{int(m.sum())} run(s), need {min_points} distinct sizes"))
            continue
        c2, c1, c0 = np.polyfit(x, y, 2)
        if c2 <= 0:
            skipped.append((Cb, "parabola not convex"))
            continue
        xv = -c1 / (2 * c2)
        if not x.min() <= xv <= x.max():
            skipped.append((Cb, "vertex outside the sizes tried"))
            continue
        n_opt = 10.0 ** xv
        profiles.append(IsoFLOPProfile(C=Cb, N=N[m], loss=y, coeffs=(c2, c1, c0), N_opt=n_opt,
                                       D_opt=Cb / (6 * n_opt), loss_opt=c0 - c1 * c1 / (4 * c2)))
    if len(profiles) < 2:
        raise TooFewPointsError(f"need at least two usable IsoFLOP budgets, got {len(profiles)} "
                                f"(skipped: {skipped})")
    Cs = np.array([p.C for p in profiles])
    Ns = np.array([p.N_opt for p in profiles])
    Ds = np.array([p.D_opt for p in profiles])
    if np.ptp(np.log(Cs)) == 0:
        raise ScalingError("all usable budgets have the same compute")
    a, ln_kN = np.polyfit(np.log(Cs), np.log(Ns), 1)
    b, ln_kD = np.polyfit(np.log(Cs), np.log(Ds), 1)
    return IsoFLOPFit(profiles=profiles, C=Cs, N_opt=Ns, D_opt=Ds, a=float(a), b=float(b),
                      k_N=float(np.exp(ln_kN)), k_D=float(np.exp(ln_kD)), skipped=skipped)
