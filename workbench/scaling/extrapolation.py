"""Extrapolation check: fit a law on the smaller runs, predict the held-out larger ones, report errors.

This is the test a scaling law exists to pass; in-sample residuals say little about it.

Lesson: ``notebooks/04_scaling_laws.ipynb`` (4. The workbench's own sweep; 5. Over-training).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import clean_columns
from .errors import ScalingError, TooFewPointsError


@dataclass(frozen=True)
class ExtrapolationCheck:
    """Which runs were held out, what the law fitted on the rest predicts for them, and the relative
    errors ``predicted / actual - 1``."""

    fit: object
    law: str
    by: str
    threshold: float
    train: np.ndarray          # boolean mask over the (NaN-free) runs
    N: np.ndarray
    D: np.ndarray
    actual: np.ndarray         # held-out losses
    predicted: np.ndarray
    rel_error: np.ndarray

    @property
    def mean_abs_rel_error(self) -> float:
        return float(np.mean(np.abs(self.rel_error)))

    @property
    def max_abs_rel_error(self) -> float:
        return float(np.max(np.abs(self.rel_error)))


def extrapolation_check(N, D, loss, *, by: str = "C", holdout: float = 0.2, threshold: float | None = None,
                        law: str = "chinchilla", **fit_kwargs) -> ExtrapolationCheck:
    """Fit on runs with ``by`` (``"C"`` = 6ND, ``"N"`` or ``"D"``) below a threshold, test on the rest.

    The threshold is ``threshold`` if given, else the value that holds out the top ``holdout`` fraction.
    ``law`` is "chinchilla" (:func:`fit_chinchilla`) or "overtraining" (:func:`fit_overtraining`);
    ``fit_kwargs`` go to the fitter.
    """
    from .fitters import fit_chinchilla
    from .overtraining import fit_overtraining

    fitters = {"chinchilla": fit_chinchilla, "overtraining": fit_overtraining}
    if law not in fitters:
        raise ScalingError(f"law must be one of {sorted(fitters)}, got {law!r}")
    if by not in ("C", "N", "D"):
        raise ScalingError(f"by must be 'C', 'N' or 'D', got {by!r}")
    cols, _ = clean_columns({"N": N, "D": D, "loss": loss}, 2, what="extrapolation_check")
    N, D, loss = cols["N"], cols["D"], cols["loss"]
    key = {"C": 6.0 * N * D, "N": N, "D": D}[by]
    if threshold is None:
        if not 0 < holdout < 1:
            raise ScalingError(f"holdout must be in (0, 1), got {holdout!r}")
        threshold = float(np.quantile(key, 1.0 - holdout))
    train = key < threshold
    if train.all() or not train.any():
        raise TooFewPointsError(f"threshold {threshold:g} on {by} leaves nothing to "
                                f"{'test' if train.all() else 'fit'}")
    fit = fitters[law](N[train], D[train], loss[train], **fit_kwargs)
    pred = fit.predict(N[~train], D[~train]) if law == "chinchilla" else fit.predict_ND(N[~train], D[~train])
    actual = loss[~train]
    return ExtrapolationCheck(fit=fit, law=law, by=by, threshold=float(threshold), train=train, N=N[~train],
                              D=D[~train], actual=actual, predicted=pred, rel_error=pred / actual - 1.0)
