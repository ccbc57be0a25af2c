"""Compute-optimal allocation from a fitted ``L = E + A/N^alpha + B/D^beta`` under ``C = 6 N D``.

Minimising the law along ``D = C / (6 N)`` gives ``N*(C) = G (C/6)^a`` and ``D*(C) = (C/6)^b / G`` with
``a = beta/(alpha+beta)``, ``b = alpha/(alpha+beta)`` and ``G = (alpha A / (beta B))^(1/(alpha+beta))``
(Hoffmann et al. 2022, eq. 4).

Lesson: ``notebooks/04_scaling_laws.ipynb`` (2. The trap).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import NonPositiveError, ScalingError


@dataclass(frozen=True)
class Allocation:
    """Compute-optimal model size ``N_opt`` and tokens ``D_opt`` per budget ``C``, the ratio
    ``tokens_per_param = D_opt / N_opt`` and the loss the law predicts there."""

    C: np.ndarray
    N_opt: np.ndarray
    D_opt: np.ndarray
    tokens_per_param: np.ndarray
    loss: np.ndarray
    a: float
    b: float
    G: float


def _law(fit) -> tuple[float, float, float, float, float]:
    try:
        E, A, B, alpha, beta = (float(getattr(fit, k)) for k in ("E", "A", "B", "alpha", "beta"))
    except AttributeError:
        try:
            E, A, B, alpha, beta = (float(fit[k]) for k in ("E", "A", "B", "alpha", "beta"))
        except (KeyError, TypeError):
            raise ScalingError("need a fit (or mapping) with E, A, B, alpha, beta") from None
    if min(A, B, alpha, beta) <= 0:
        raise ScalingError(f"A, B, alpha, beta must be > 0 for a finite optimum, got "
                           f"A={A}, B={B}, alpha={alpha}, beta={beta}")
    return E, A, B, alpha, beta


def compute_optimal(fit, C) -> Allocation:
    """``N*(C)``, ``D*(C)``, tokens per parameter and predicted loss for budgets ``C`` (FLOP).

    ``fit`` is a :class:`~workbench.scaling.ChinchillaFit` or a mapping with E, A, B, alpha, beta.
    """
    E, A, B, alpha, beta = _law(fit)
    C = np.asarray(C, dtype=np.float64)
    if np.any(~(C > 0)):
        raise NonPositiveError("compute budgets must be > 0")
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    N_opt = G * (C / 6.0) ** a
    D_opt = (C / 6.0) ** b / G
    loss = E + A * N_opt ** -alpha + B * D_opt ** -beta
    return Allocation(C=C, N_opt=N_opt, D_opt=D_opt, tokens_per_param=D_opt / N_opt, loss=loss, a=a, b=b, G=G)


def tokens_per_parameter(fit, C) -> np.ndarray:
    """Compute-optimal ``D*/N*`` at budgets ``C``: a constant only when ``alpha == beta``."""
    return compute_optimal(fit, C).tokens_per_param
