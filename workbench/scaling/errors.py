"""Errors and warnings of the scaling-law code: one class per kind of bad input, all ``ValueError``s.

Lesson: ``notebooks/04_scaling_laws.ipynb``.
"""
from __future__ import annotations


class ScalingError(ValueError):
    """Bad input to a scaling-law function."""


class TooFewPointsError(ScalingError):
    """Fewer data points than the law has free parameters: the fit would be underdetermined."""


class NonPositiveError(ScalingError):
    """A parameter count, token count, compute or loss that is zero or negative (the laws live in log space)."""


class NonFiniteError(ScalingError):
    """An infinite value where a finite one is needed (NaNs are dropped with a warning instead)."""


class LengthMismatchError(ScalingError):
    """Input arrays that should describe the same runs have different lengths."""


class StoreVersionError(ScalingError):
    """A sweep results store written by an incompatible version of the format."""


class ScalingWarning(UserWarning):
    """Something was dropped or did not converge; the result is still usable."""
