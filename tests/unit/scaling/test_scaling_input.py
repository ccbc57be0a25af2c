"""Bad input: each kind raises its own error; NaN rows are dropped with a counted warning."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from workbench.scaling import (LengthMismatchError, NonFiniteError, NonPositiveError, ScalingError,
                               ScalingWarning, TooFewPointsError, compute_optimal, extrapolation_check,
                               fit_chinchilla, fit_isoflop, fit_overtraining, fit_power_law)

N = np.array([1e7, 3e7, 1e8, 3e8, 1e9, 3e9])
D = np.array([2e8, 6e8, 2e9, 6e9, 2e10, 6e10])
L = 1.7 + 400 * N ** -0.34 + 1200 * D ** -0.3


def test_fewer_points_than_parameters():
    with pytest.raises(TooFewPointsError, match="5 free parameters"):
        fit_chinchilla(N[:4], D[:4], L[:4])
    with pytest.raises(TooFewPointsError):
        fit_power_law(N[:2], L[:2])
    with pytest.raises(TooFewPointsError):
        fit_overtraining(N[:3], D[:3], L[:3])


@pytest.mark.parametrize("which", ["N", "D", "loss"])
@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_values(which, bad):
    cols = {"N": N.copy(), "D": D.copy(), "loss": L.copy()}
    cols[which][2] = bad
    with pytest.raises(NonPositiveError, match=which):
        fit_chinchilla(cols["N"], cols["D"], cols["loss"])


def test_mismatched_lengths():
    with pytest.raises(LengthMismatchError):
        fit_chinchilla(N, D[:-1], L)
    with pytest.raises(LengthMismatchError):
        fit_power_law(N, L[:-1])


def test_infinity_is_an_error_not_dropped():
    with pytest.raises(NonFiniteError):
        fit_chinchilla(N, D, np.where(np.arange(6) == 1, np.inf, L))


def test_nan_rows_are_dropped_with_a_count():
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(16, 22, 30))
    d = np.exp(rng.uniform(18, 24, 30))
    loss = 1.7 + 400 * n ** -0.34 + 1200 * d ** -0.3
    loss[[3, 11]] = np.nan
    n[20] = np.nan
    with pytest.warns(ScalingWarning, match="dropped 3 row"):
        f = fit_chinchilla(n, d, loss, grid="coarse")
    assert f.n_points == 27 and f.n_dropped == 3


def test_nan_that_leaves_too_few_points():
    loss = L.copy()
    loss[:2] = np.nan
    with pytest.warns(ScalingWarning), pytest.raises(TooFewPointsError):
        fit_chinchilla(N, D, loss)


def test_bad_options():
    for kwargs in ({"reduce": "median"}, {"delta": 0}, {"grid": "medium"}, {"grid": np.zeros((3, 4))},
                   {"bootstrap": -1}, {"confidence": 1.5}):
        with pytest.raises(ScalingError):
            fit_chinchilla(N, D, L, **kwargs)
    assert issubclass(ScalingError, ValueError)


def test_allocation_and_isoflop_and_extrapolation_reject_bad_input():
    with pytest.raises(NonPositiveError):
        compute_optimal({"E": 1.7, "A": 400, "B": 400, "alpha": 0.3, "beta": 0.3}, [1e20, -1.0])
    with pytest.raises(ScalingError):
        compute_optimal({"E": 1.7, "A": 400, "B": 400, "alpha": 0.0, "beta": 0.3}, [1e20])
    with pytest.raises(TooFewPointsError):
        fit_isoflop(N, 6 * N * D, L)                  # every run its own budget: no parabola anywhere
    with pytest.raises(TooFewPointsError):
        extrapolation_check(N, D, L, threshold=1.0)   # nothing left to fit on


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.0)), min_size=0,
                max_size=8),
       st.integers(0, 8))
def test_arbitrary_input_raises_scaling_error_or_fits(values, k):
    """Whatever numbers come in, the outcome is a ScalingError or a finite fit, never another exception."""
    y = np.array(values, dtype=float)
    x = np.logspace(1, 3, len(y))[: max(0, len(y) - (k % 2))]
    try:
        f = fit_power_law(x, y, grid="coarse")
    except ScalingError:
        return
    assert np.isfinite(f.objective) and f.n_points >= 3
