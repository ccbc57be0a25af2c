"""The batched objective and optimiser against their float64 / scipy references."""
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from scipy.optimize import minimize

from workbench.scaling import fit_chinchilla, fit_power_law, chinchilla_grid
from workbench.scaling import ScalingError
from workbench.scaling._core import (BatchedObjective, LawSpec, batched_lbfgs, huber, huber_inplace, multistart,
                                     objective_numpy)


def _toy(n=40, seed=0):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    L = (1.7 + 400 * N ** -0.34 + 1200 * D ** -0.3) * np.exp(rng.normal(0, 0.01, n))
    return N, D, L


def _spec(N, D):
    return LawSpec(np.stack([np.log(N), np.log(D)]), (0, 1), 2)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-2, 3), min_size=3, max_size=3), st.floats(0.05, 1.5), st.floats(0.05, 1.5),
       st.sampled_from([1e-3, 1e-2, 0.5]))
@example([1.453125, 0.0, 0.0], 1.5, 1.5, 1e-3)  # a flat spot found by hypothesis: gradient ~1e-11
def test_gradient_matches_finite_differences(logs, alpha, beta, delta):
    N, D, L = _toy()
    spec, ly = _spec(N, D), np.log(L)
    p = np.array([logs[0], logs[1] + 5, logs[2] + 5, alpha, beta])
    f, g = objective_numpy(p, spec, ly, delta, 1.0)
    h = 1e-6                                        # central differences: Huber's curvature jumps at +-delta
    num = np.array([(objective_numpy(p + h * e, spec, ly, delta, 1.0)[0]
                     - objective_numpy(p - h * e, spec, ly, delta, 1.0)[0]) / (2 * h) for e in np.eye(5)])
    # central differences carry a rounding error of about eps |f| / h: where the gradient is that small
    # (a flat spot, e.g. every prediction far above the data in Huber's linear part) only that much is testable
    fd_noise = 10 * np.finfo(float).eps * abs(f) / h
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-4 * np.abs(g).max() + fd_noise)


def test_batched_objective_matches_reference_including_overflow_rows():
    N, D, L = _toy()
    spec, ly = _spec(N, D), np.log(L)
    starts = chinchilla_grid("coarse")
    # a row whose float32 fast path overflows (exp(200)) must fall back to float64, not report inf
    starts = np.vstack([starts, [-100.0, 100.0, 5.0, 0.0, 0.5]])
    fg = BatchedObjective(spec, ly, 1e-3, 1.0)
    f, g = fg(starts, np.arange(len(starts)))
    for i in list(range(0, len(starts), 17)) + [len(starts) - 1]:
        f_ref, g_ref = objective_numpy(starts[i], spec, ly, 1e-3, 1.0)
        assert np.isfinite(f[i])
        assert f[i] == pytest.approx(f_ref, rel=2e-5)
        np.testing.assert_allclose(g[i], g_ref, rtol=2e-3, atol=1e-6 * np.abs(g_ref).max())


def test_batched_lbfgs_solves_independent_problems():
    """Rows are separate problems (shifted, scaled Rosenbrock): each must reach its own minimum."""
    rng = np.random.default_rng(3)
    B = 64
    shift = rng.normal(0, 1, (B, 2))
    scale = rng.uniform(1, 50, B)

    def fg(x, rows):
        u, v = x[:, 0] - shift[rows, 0], x[:, 1] - shift[rows, 1]
        f = (1 - u) ** 2 + scale[rows] * (v - u * u) ** 2
        g = np.stack([-2 * (1 - u) - 4 * scale[rows] * u * (v - u * u), 2 * scale[rows] * (v - u * u)], 1)
        return f, g

    res = batched_lbfgs(fg, rng.normal(0, 2, (B, 2)), ftol=1e-15, gtol=1e-10, max_iter=2000)
    np.testing.assert_allclose(res.x, shift + 1.0, atol=1e-4)
    assert np.all(res.status < 3)


def test_batched_and_scipy_loop_agree_on_a_grid():
    N, D, L = _toy(60, seed=5)
    starts = chinchilla_grid("full")[::90]          # 50 starts
    a = fit_chinchilla(N, D, L, grid=starts, backend="batched")
    b = fit_chinchilla(N, D, L, grid=starts, backend="scipy", tol="default")
    assert abs(a.objective - b.objective) < 1e-9
    for k in ("E", "alpha", "beta"):
        assert getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-3)


def test_recovers_known_law_from_noiseless_data():
    N, D, _ = _toy(80, seed=7)
    L = 1.7 + 400 * N ** -0.34 + 1200 * D ** -0.3
    f = fit_chinchilla(N, D, L, grid="coarse")
    assert f.objective < 1e-12
    assert f.alpha == pytest.approx(0.34, rel=1e-3) and f.beta == pytest.approx(0.3, rel=1e-3)
    assert f.E == pytest.approx(1.7, rel=1e-3) and f.A == pytest.approx(400, rel=2e-2)


def test_power_law_recovery_and_agreement_with_scipy():
    x = np.logspace(15, 21, 30)
    rng = np.random.default_rng(0)
    y = (2.0 + 1e4 * x ** -0.25) * np.exp(rng.normal(0, 0.002, x.size))
    f = fit_power_law(x, y)
    assert f.alpha == pytest.approx(0.25, abs=0.01) and f.E == pytest.approx(2.0, abs=0.02)
    spec = LawSpec(np.log(x)[None], (0,), 1)
    ref = min((minimize(objective_numpy, s, args=(spec, np.log(y), 1e-3, 1.0), jac=True, method="L-BFGS-B",
                        options={"ftol": 1e-15, "gtol": 1e-13, "maxiter": 20000}).fun
               for s in [(0.5, 8.0, 0.2), (0.0, 10.0, 0.5), (1.0, 5.0, 0.1)]))
    assert f.objective <= ref + 1e-12
    assert f.predict(1e30) == pytest.approx(f.E + f.A * 1e-30 ** f.alpha)


def test_multistart_rejects_unknown_options():
    N, D, L = _toy()
    spec = _spec(N, D)
    with pytest.raises(ScalingError, match="backend"):
        multistart(spec, np.log(L), 1e-3, 1.0, chinchilla_grid("coarse"), backend="gpu")
    with pytest.raises(ScalingError, match="needs backend='scipy'"):
        multistart(spec, np.log(L), 1e-3, 1.0, chinchilla_grid("coarse"), tol="default")
    with pytest.raises(ScalingError, match="tol must be"):
        multistart(spec, np.log(L), 1e-3, 1.0, chinchilla_grid("coarse"), tol="loose")


def test_huber_is_the_textbook_loss():
    """r^2 / 2 within delta of zero, delta (|r| - delta / 2) outside; the in-place form returns the slope."""
    delta = 1e-3
    r = np.linspace(-5e-3, 5e-3, 101)
    want = np.where(np.abs(r) <= delta, 0.5 * r ** 2, delta * (np.abs(r) - 0.5 * delta))
    np.testing.assert_allclose(huber(r, delta), want, rtol=1e-12, atol=1e-18)
    h = r.copy()
    np.testing.assert_array_equal(huber_inplace(h, delta), np.clip(r, -delta, delta))
    np.testing.assert_array_equal(h, huber(r, delta))
    assert huber(np.float32(2e-3), delta).dtype == np.float32 and huber(2e-3, delta) == pytest.approx(1.5e-6)
