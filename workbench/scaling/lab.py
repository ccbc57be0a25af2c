"""Headless helpers behind the Scaling-law lab: one data-source loader, the fitting choices as one call,
and bootstrap bands for the compute-optimal frontier.

The widget (``widgets.ScalingLab``) only draws what these return, so every number it shows can be
reproduced from a script::

    >>> from workbench.scaling.lab import load_source, fit_source, frontier
    >>> data = load_source("chinchilla", drop_highest=5)
    >>> fit = fit_source(data, grid="coarse", bootstrap=10)      # doctest: +SKIP
    >>> frontier(fit, [1e21, 1e23]).N_opt                        # doctest: +SKIP

Lesson: ``notebooks/04_scaling_laws.ipynb`` (7. The lab).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .allocation import compute_optimal
from .errors import ScalingError
from .fitters import fit_chinchilla
from .isoflop import HOFFMANN_BUDGETS

#: Data sources the lab can switch between: the two published replays, the shipped sweep, a user's store.
SOURCES = {
    "chinchilla": "Chinchilla (Hoffmann et al. 2022, digitised by Besiroglu et al. 2024)",
    "gadre": "Gadre et al. 2024 (trained on C4, C4 validation loss)",
    "tinygpt": "TinyGPT sweep shipped with the workbench (20 runs)",
    "store": "your own sweep store (a directory made by run_sweep, or a sweep CSV)",
}

#: Stopping rules: "strict" runs every start to convergence; "scipy defaults" is a plain loop of
#: ``scipy.optimize.minimize`` with its default tolerances, the set-up under which averaging stops early.
STOPPING = {"strict": dict(backend="batched", tol="strict"), "scipy defaults": dict(backend="scipy", tol="default")}


@dataclass(frozen=True)
class ScalingData:
    """Runs to fit: parameters ``N``, tokens ``D``, compute ``C = 6 N D``, final ``loss``.

    ``budgets`` are the nominal IsoFLOP budgets when the source has them (Chinchilla), else None (runs
    are grouped by compute gaps). ``n_dropped`` counts rows removed by the outlier rule, ``n_missing``
    rows without a loss.
    """

    source: str
    label: str
    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    loss: np.ndarray
    budgets: tuple | None
    n_dropped: int
    n_missing: int = 0

    def __len__(self) -> int:
        return len(self.loss)


def drop_highest_loss(loss, k: int) -> np.ndarray:
    """Boolean mask keeping all rows but the ``k`` with the highest loss (Besiroglu et al.'s rule: the
    five highest-loss Chinchilla points are small-compute outliers). Ties are broken by row order."""
    loss = np.asarray(loss, dtype=np.float64)
    if int(k) != k or not 0 <= k < len(loss):
        raise ScalingError(f"can drop between 0 and {len(loss) - 1} rows, got {k!r}")
    keep = np.zeros(len(loss), dtype=bool)
    keep[np.argsort(loss, kind="stable")[:len(loss) - int(k)]] = True
    return keep


#: Columns a sweep CSV needs: parameters, tokens, and the loss (the first of these loss columns present).
CSV_COLUMNS = ("N", "D")
CSV_LOSS_COLUMNS = ("val_loss", "loss")


def read_sweep_csv(path) -> dict:
    """N, D, C, loss of a sweep CSV: one row per run with columns ``N``, ``D`` and ``val_loss`` (as
    ``run_sweep`` writes it, the shipped sweep's format) or ``loss``; other columns are ignored. An empty
    loss cell (or "None", "nan") is a run without a loss. Every other problem is a specific
    :class:`ScalingError`: no such file, not text, empty, missing columns (named, with those found), a
    value that is not a number (row and column named)."""
    import csv

    p = Path(str(path).strip()).expanduser()
    if not p.exists():
        raise ScalingError(f"no file at {p}")
    if not p.is_file():
        raise ScalingError(f"{p} is not a file")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise ScalingError(f"{p.name} is not a text CSV (it is not UTF-8)") from None
    except csv.Error as e:
        raise ScalingError(f"{p.name} is not a readable CSV: {e}") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise ScalingError(f"{p.name} is empty: a sweep CSV needs a header row (N, D, val_loss) and one row per run")
    header = [c.strip() for c in rows[0]]
    loss_col = next((c for c in CSV_LOSS_COLUMNS if c in header), None)
    missing = [c for c in CSV_COLUMNS if c not in header] + ([] if loss_col else ["val_loss (or loss)"])
    if missing:
        found = ", ".join(repr(c) for c in header[:8]) + (", ..." if len(header) > 8 else "")
        raise ScalingError(f"{p.name} lacks the column(s) {', '.join(missing)}; it has {found}. A sweep CSV needs "
                           f"columns N (parameters), D (tokens) and val_loss or loss")
    if len(rows) == 1:
        raise ScalingError(f"{p.name} has a header but no runs")
    cols = {"N": header.index("N"), "D": header.index("D"), "loss": header.index(loss_col)}
    out = {k: np.empty(len(rows) - 1) for k in cols}
    for i, r in enumerate(rows[1:], start=2):
        for k, j in cols.items():
            cell = r[j].strip() if j < len(r) else ""
            name = loss_col if k == "loss" else k
            if k == "loss" and cell.lower() in ("", "none", "nan"):
                out[k][i - 2] = np.nan
                continue
            try:
                out[k][i - 2] = float(cell)
            except ValueError:
                what = "is empty" if cell == "" else f"has {cell[:20]!r}, which is not a number"
                raise ScalingError(f"{p.name}, line {i}: column {name} {what}") from None
    bad = [k for k in ("N", "D") if np.any(~np.isfinite(out[k]) | (out[k] <= 0))]
    if bad:
        k = bad[0]
        line = int(np.flatnonzero(~np.isfinite(out[k]) | (out[k] <= 0))[0]) + 2
        raise ScalingError(f"{p.name}, line {line}: column {k} must be a positive number, got {out[k][line - 2]!r}")
    out["C"] = 6.0 * out["N"] * out["D"]
    return out


def _store_arrays(path) -> dict:
    """N, D, C, loss of a sweep store directory or a sweep CSV; never creates anything on disk."""
    from .sweep import SweepResult, SweepStore

    if path is None or str(path).strip() == "":
        raise ScalingError("give the path of a sweep store (a directory made by run_sweep) or a sweep CSV")
    p = Path(str(path).strip()).expanduser()
    if p.suffix.lower() == ".csv" or p.is_file():
        return read_sweep_csv(p)
    if not p.exists():
        raise ScalingError(f"nothing at {p}: give a sweep store directory (made by run_sweep) or a sweep CSV")
    if not (p / "store.json").is_file():
        raise ScalingError(f"{p} is not a sweep store (no store.json) or a sweep CSV")
    try:
        records = SweepStore(p).all()
    except (ValueError, TypeError, KeyError) as e:   # a damaged run record (bad JSON, unknown fields)
        raise ScalingError(f"the sweep store at {p} has a run record that cannot be read: "
                           f"{type(e).__name__}: {e}") from None
    if not records:
        raise ScalingError(f"the sweep store at {p} holds no finished runs yet")
    return SweepResult(records=records).arrays()


def load_source(source: str, *, path=None, drop_highest: int = 0) -> ScalingData:
    """Load one of :data:`SOURCES` and apply the outlier rule (drop the ``drop_highest`` highest losses).

    For "chinchilla" this is exactly :func:`~workbench.scaling.load_chinchilla`; for "store" ``path`` is
    a sweep store directory or a sweep CSV. Rows without a loss are left out and counted.
    """
    from .replays import load_gadre, load_tinygpt_sweep

    if source == "chinchilla":
        from .replays import load_chinchilla

        d = load_chinchilla(drop_highest)
        return ScalingData(source, SOURCES[source], d.N, d.D, d.C, d.loss, tuple(HOFFMANN_BUDGETS), d.n_dropped)
    if source == "gadre":
        g = load_gadre("c4_original", "c4_val")
        cols = {"N": g.N, "D": g.D, "loss": g.loss}
    elif source == "tinygpt":
        cols = load_tinygpt_sweep().arrays()
    elif source == "store":
        cols = _store_arrays(path)
    else:
        raise ScalingError(f"source must be one of {sorted(SOURCES)}, got {source!r}")
    N, D, loss = (np.asarray(cols[k], dtype=np.float64) for k in ("N", "D", "loss"))
    ok = np.isfinite(loss) & np.isfinite(N) & np.isfinite(D)
    n_missing = int((~ok).sum())
    N, D, loss = N[ok], D[ok], loss[ok]
    keep = drop_highest_loss(loss, drop_highest)
    N, D, loss = N[keep], D[keep], loss[keep]
    return ScalingData(source, SOURCES[source], N, D, 6.0 * N * D, loss, None, int(drop_highest), n_missing)


def fit_source(data: ScalingData, *, reduce: str = "sum", delta: float = 1e-3, grid: str = "full",
               stopping: str = "strict", bootstrap: int = 0, seed: int = 0, progress=None):
    """:func:`~workbench.scaling.fit_chinchilla` on ``data`` with the lab's fitting choices.

    ``stopping`` is a key of :data:`STOPPING`. Bootstrap refits resample the rows of ``data`` (after the
    outlier rule) and are made with the same choices as the fit: reduce, delta and stopping rule; under
    "scipy defaults" each refit reruns the whole scipy loop over the same start grid, so the band around
    the averaging trap describes the trap (see :data:`~workbench.scaling.fitters.BOOTSTRAP_METHODS`).
    ``progress(done, total)`` is called as refits finish.
    """
    if stopping not in STOPPING:
        raise ScalingError(f"stopping must be one of {sorted(STOPPING)}, got {stopping!r}")
    return fit_chinchilla(data.N, data.D, data.loss, reduce=reduce, delta=delta, grid=grid,
                          bootstrap=bootstrap, seed=seed, progress=progress, **STOPPING[stopping])


@dataclass(frozen=True)
class Frontier:
    """The compute-optimal frontier at budgets ``C`` from a fit, with percentile bands over its bootstrap
    refits (``*_lo`` / ``*_hi``; equal to the point values when the fit has no bootstrap)."""

    C: np.ndarray
    N_opt: np.ndarray
    D_opt: np.ndarray
    loss: np.ndarray
    tokens_per_param: np.ndarray
    N_opt_lo: np.ndarray
    N_opt_hi: np.ndarray
    D_opt_lo: np.ndarray
    D_opt_hi: np.ndarray
    loss_lo: np.ndarray
    loss_hi: np.ndarray
    tpp_lo: np.ndarray
    tpp_hi: np.ndarray
    n_boot: int


def frontier(fit, C, confidence: float = 0.95) -> Frontier:
    """:func:`~workbench.scaling.compute_optimal` at budgets ``C``, plus bands from ``fit.bootstrap_params``.

    Bootstrap refits whose law has no finite optimum (a non-positive exponent or coefficient) are skipped.
    """
    C = np.atleast_1d(np.asarray(C, dtype=np.float64))
    best = compute_optimal(fit, C)
    samples = {"N": [], "D": [], "L": [], "T": []}
    boot = getattr(fit, "bootstrap_params", None)
    if boot is not None:
        for e, a, b, alpha, beta in np.asarray(boot):
            if not (alpha > 0 and beta > 0 and np.isfinite([e, a, b]).all()):
                continue
            al = compute_optimal({"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": alpha, "beta": beta}, C)
            samples["N"].append(al.N_opt)
            samples["D"].append(al.D_opt)
            samples["L"].append(al.loss)
            samples["T"].append(al.tokens_per_param)
    lo_q, hi_q = 50 * (1 - confidence), 50 * (1 + confidence)

    def band(key, point):
        if not samples[key]:
            return point.copy(), point.copy()
        s = np.stack(samples[key])
        return np.percentile(s, lo_q, axis=0), np.percentile(s, hi_q, axis=0)

    (nl, nh), (dl, dh), (ll, lh), (tl, th) = (band("N", best.N_opt), band("D", best.D_opt),
                                              band("L", best.loss), band("T", best.tokens_per_param))
    return Frontier(C=C, N_opt=best.N_opt, D_opt=best.D_opt, loss=best.loss, tokens_per_param=best.tokens_per_param,
                    N_opt_lo=nl, N_opt_hi=nh, D_opt_lo=dl, D_opt_hi=dh, loss_lo=ll, loss_hi=lh, tpp_lo=tl,
                    tpp_hi=th, n_boot=len(samples["N"]))


def size_curves(fit, sizes, C) -> dict:
    """The fitted law along fixed model sizes: ``{N: loss at D = C / (6 N)}`` for each size and budget."""
    C = np.asarray(C, dtype=np.float64)
    return {float(n): fit.predict(n, C / (6.0 * n)) for n in sizes}


def representative_sizes(N, k: int = 5) -> np.ndarray:
    """Up to ``k`` model sizes spread over the data's range (all distinct sizes when there are few)."""
    u = np.unique(np.asarray(N, dtype=np.float64))
    if len(u) <= k:
        return u
    q = np.quantile(np.log(u), np.linspace(0, 1, k))
    return np.unique(np.array([u[np.argmin(np.abs(np.log(u) - x))] for x in q]))
