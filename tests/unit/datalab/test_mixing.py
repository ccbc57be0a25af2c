"""Mixing laws: proportions are checked, mixtures hold each domain's share, the fitter recovers a known law,
the optimum equals a brute-force search, and the shipped sweep loads with its held-out errors."""
import numpy as np
import pytest

from workbench.datalab.mixing import (ProportionError, check_proportions, chunk_counts, fit_mixing_law,
                                      load_mixing, mix_domains, mixing_from_runs, mixing_law, optimal_mixture)
from workbench.datalab.recipes import ShippedSweepError


@pytest.mark.parametrize("r", [[0.5, 0.4], [0.7, 0.4], [-0.1, 1.1], [0.5, np.nan]])
def test_proportions_not_on_the_simplex(r):
    with pytest.raises(ProportionError):
        check_proportions(r)


def test_chunk_counts_largest_remainder():
    assert chunk_counts([0.5, 0.25, 0.25], 10).tolist() == [5, 3, 2]       # 5, 2.5, 2.5: first tie wins
    assert chunk_counts([1 / 3, 1 / 3, 1 / 3], 10).sum() == 10


def test_mixture_holds_each_share():
    a, b = np.arange(10_000) % 7, 100 + np.arange(10_000) % 5      # two domains with disjoint ids
    mix = mix_domains([a, b], [0.3, 0.7], total_tokens=2000, chunk_len=20, seed=1)
    assert len(mix) == 2000 and (mix < 100).sum() == 600
    with pytest.raises(ProportionError, match="sum to 1"):
        mix_domains([a, b], [0.3, 0.6], 2000, 20)


@pytest.mark.parametrize("t", [[-2.0, 0.0], [-1.5, 0.8, 0.0]])
def test_fit_recovers_a_known_law(t):
    rng = np.random.default_rng(0)
    J = len(t)
    R = rng.dirichlet(np.ones(J), size=12)
    y = mixing_law(R, 1.7, 0.9, t)
    fit = fit_mixing_law(R, y)
    assert fit.c == pytest.approx(1.7, abs=1e-4) and fit.k == pytest.approx(0.9, abs=1e-4)
    assert np.allclose(fit.t, t, atol=1e-4) and fit.rmse < 1e-6
    held = rng.dirichlet(np.ones(J), size=5)
    assert np.allclose(fit.predict(held), mixing_law(held, 1.7, 0.9, t), atol=1e-6)


def test_optimum_equals_brute_force():
    from workbench.datalab.mixing import MixingLawFit

    f1 = MixingLawFit(1.0, 1.0, np.array([-3.0, 0.0]), 0.0)          # falls with the first domain's share
    f2 = MixingLawFit(1.2, 0.2, np.array([2.0, 0.0]), 0.0)           # rises with it
    r, v = optimal_mixture([f1, f2], [0.5, 0.5])
    g = np.linspace(0, 1, 100_001)
    brute = 0.5 * f1.predict(np.c_[g, 1 - g]) + 0.5 * f2.predict(np.c_[g, 1 - g])
    assert r[0] == pytest.approx(g[np.argmin(brute)], abs=1e-4) and v == pytest.approx(brute.min(), abs=1e-9)
    f3 = [MixingLawFit(1.0, 1.0, np.array(t), 0.0) for t in ([-2.0, 1.0, 0.0], [1.0, -2.0, 0.0], [0.5, 0.5, 0.0])]
    r3, v3 = optimal_mixture(f3, [1, 1, 1])
    s = np.array([(i / 200, j / 200, 1 - (i + j) / 200) for i in range(201) for j in range(201 - i)])
    brute3 = sum(f.predict(s) for f in f3)
    assert v3 <= brute3.min() + 1e-9 and np.allclose(r3.sum(), 1.0)


def test_too_few_fitted_points():
    runs = [{"proportions": [a, 1 - a], "seed": 0, "steps": [1], "domain_loss": [[2.0], [2.0]]} for a in (0, .5, 1)]
    with pytest.raises(Exception, match="need at least"):
        mixing_from_runs(runs, [[0.5, 0.5]])


def test_shipped_sweep_loads(tmp_path):
    res = load_mixing()
    assert res.heldout.sum() >= 3 and (~res.heldout).sum() >= 5
    for j in range(len(res.domains)):
        assert np.allclose(res.predicted[:, j], res.fits[j].predict(res.proportions))
    assert np.allclose(res.heldout_mae, np.abs(res.predicted - res.mean)[res.heldout].mean(0))
    assert np.isclose(res.optimum.sum(), 1.0) and np.all(res.optimum >= 0)
    target = res.grid_loss @ res.target_weights
    assert res.optimum_loss <= target.min() + 1e-9
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ShippedSweepError, match="not a readable JSON"):
        load_mixing(tmp_path / "m.json")
