"""Shared input checks: equal lengths, NaN rows dropped (with a warning), positive values, enough points.

Lesson: ``notebooks/04_scaling_laws.ipynb``.
"""
from __future__ import annotations

import warnings

import numpy as np

from .errors import (LengthMismatchError, NonFiniteError, NonPositiveError, ScalingError, ScalingWarning,
                     TooFewPointsError)


def clean_columns(columns: dict[str, object], n_params: int, *, positive: bool = True,
                  what: str = "fit") -> tuple[dict[str, np.ndarray], int]:
    """Return the columns as 1-D float arrays with NaN rows removed, and how many rows were removed.

    Raises a specific :class:`ScalingError` subclass for mismatched lengths, infinities, non-positive
    values (when ``positive``) and fewer remaining rows than ``n_params``.
    """
    arrays = {}
    for name, values in columns.items():
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ScalingError(f"{name} must be numeric: {exc}") from None
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise ScalingError(f"{name} must be one-dimensional, got shape {arr.shape}")
        arrays[name] = arr
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise LengthMismatchError(f"inputs have different lengths: {lengths}")
    nan_rows = np.zeros(next(iter(lengths.values())), dtype=bool)
    for arr in arrays.values():
        nan_rows |= np.isnan(arr)
    n_dropped = int(nan_rows.sum())
    if n_dropped:
        warnings.warn(f"{what}: dropped {n_dropped} row(s) containing NaN", ScalingWarning, stacklevel=3)
        arrays = {name: a[~nan_rows] for name, a in arrays.items()}
    for name, arr in arrays.items():
        if np.isinf(arr).any():
            raise NonFiniteError(f"{name} has {int(np.isinf(arr).sum())} infinite value(s)")
        if positive and (arr <= 0).any():
            bad = int((arr <= 0).sum())
            raise NonPositiveError(f"{name} must be > 0 (scaling laws are fitted in log space); "
                                   f"{bad} value(s) are <= 0, e.g. {arr[arr <= 0][0]!r}")
    n = len(next(iter(arrays.values())))
    if n < n_params:
        raise TooFewPointsError(f"{what} has {n_params} free parameters but only {n} usable point(s)")
    return arrays, n_dropped
