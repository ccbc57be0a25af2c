"""The headless helpers behind ScalingLab: data sources, the outlier rule, frontier bands."""
import numpy as np
import pytest

from workbench.scaling import ScalingError, compute_optimal, fit_chinchilla, load_chinchilla, load_gadre
from workbench.scaling.lab import (drop_highest_loss, fit_source, frontier, load_source, representative_sizes,
                                   size_curves)


def test_drop_highest_loss_mask():
    keep = drop_highest_loss([3.0, 1.0, 5.0, 2.0, 5.0], 2)
    assert keep.tolist() == [True, True, False, True, False]
    assert drop_highest_loss([1.0, 2.0], 0).all()
    with pytest.raises(ScalingError):
        drop_highest_loss([1.0, 2.0], 2)


def test_chinchilla_source_is_the_replay():
    d, ref = load_source("chinchilla", drop_highest=5), load_chinchilla(5)
    np.testing.assert_array_equal(d.loss, ref.loss)
    np.testing.assert_array_equal(d.N, ref.N)
    assert d.budgets is not None and len(d.budgets) == 9


def test_other_sources_apply_the_rule_and_count_missing():
    g0, g3 = load_source("gadre"), load_source("gadre", drop_highest=3)
    assert len(g0) - len(g3) == 3 and g3.loss.max() <= np.sort(g0.loss)[-4]
    assert len(g0) + g0.n_missing == len(load_gadre())
    np.testing.assert_allclose(g0.C, 6 * g0.N * g0.D)
    t = load_source("tinygpt")
    assert len(t) == 20 and t.budgets is None
    with pytest.raises(ScalingError):
        load_source("nope")
    with pytest.raises(ScalingError):
        load_source("store", path="")


def test_fit_source_passes_the_choices():
    d = load_source("chinchilla", drop_highest=5)
    f = fit_source(d, grid="coarse", delta=1e-2, reduce="mean")
    ref = fit_chinchilla(d.N, d.D, d.loss, grid="coarse", delta=1e-2, reduce="mean")
    assert f.objective == pytest.approx(ref.objective, rel=1e-12) and f.reduce == "mean" and f.delta == 1e-2
    with pytest.raises(ScalingError):
        fit_source(d, stopping="sometimes")


def test_frontier_without_and_with_bootstrap():
    d = load_source("chinchilla", drop_highest=5)
    C = np.array([1e20, 1e22, 1e24])
    plain = frontier(fit_source(d, grid="coarse"), C)
    ref = compute_optimal(fit_source(d, grid="coarse"), C)
    np.testing.assert_allclose(plain.N_opt, ref.N_opt)
    np.testing.assert_array_equal(plain.N_opt_lo, plain.N_opt) and plain.n_boot == 0
    boot = frontier(fit_source(d, grid="coarse", bootstrap=20), C)
    assert boot.n_boot == 20
    assert np.all(boot.N_opt_lo < boot.N_opt) and np.all(boot.N_opt < boot.N_opt_hi)
    # bands widen as the budget moves away from the data (extrapolation is less certain)
    width = np.log(boot.N_opt_hi / boot.N_opt_lo)
    assert width[2] > width[1]


def test_size_curves_and_representative_sizes():
    f = {"E": 1.0, "A": 10.0, "B": 10.0, "alpha": 0.5, "beta": 0.5}

    class Law:
        def predict(self, N, D):
            return f["E"] + f["A"] * np.asarray(N) ** -0.5 + f["B"] * np.asarray(D) ** -0.5

    curves = size_curves(Law(), [100.0], np.array([600.0 * 100]))     # D = C / 6N = 100
    assert curves[100.0][0] == pytest.approx(3.0)
    assert representative_sizes([5, 5, 7]).tolist() == [5, 7]
    r = representative_sizes(np.logspace(3, 9, 50), 5)
    assert len(r) == 5 and r[0] == pytest.approx(1e3) and r[-1] == pytest.approx(1e9)
