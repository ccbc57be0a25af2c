"""Allocation, Approach 2, the over-training law and the extrapolation check."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import minimize_scalar

from workbench.scaling import (BESIROGLU_2024, HOFFMANN_BUDGETS, compute_optimal, extrapolation_check,
                               fit_isoflop, fit_overtraining, group_budgets, load_gadre, tokens_per_parameter)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.1, 0.8), st.floats(0.1, 0.8), st.floats(10, 1e4), st.floats(10, 1e4), st.floats(17, 25))
def test_closed_form_allocation_is_the_numerical_optimum(alpha, beta, A, B, log10C):
    law = {"E": 1.5, "A": A, "B": B, "alpha": alpha, "beta": beta}
    C = 10.0 ** log10C
    alloc = compute_optimal(law, [C])

    def loss_at(logN):
        n = np.exp(logN)
        return A * n ** -alpha + B * (C / (6 * n)) ** -beta

    ref = minimize_scalar(loss_at, bounds=(np.log(alloc.N_opt[0]) - 20, np.log(alloc.N_opt[0]) + 20),
                          method="bounded", options={"xatol": 1e-10})
    assert np.log(alloc.N_opt[0]) == pytest.approx(ref.x, abs=1e-3)
    assert 6 * alloc.N_opt[0] * alloc.D_opt[0] == pytest.approx(C, rel=1e-9)
    assert alloc.loss[0] == pytest.approx(1.5 + ref.fun, rel=1e-9)


def test_tokens_per_parameter_at_chinchilla_scale():
    # Chinchilla: 70B parameters on 1.4T tokens, C ~ 5.76e23. The replication's law puts the optimum
    # near 20 tokens per parameter; D*/N* ~ C^(b - a), which shrinks slowly here since alpha < beta.
    tpp = tokens_per_parameter(BESIROGLU_2024, [5.76e21, 5.76e23])
    assert 15 < tpp[1] < 25
    al, be = BESIROGLU_2024["alpha"], BESIROGLU_2024["beta"]
    assert tpp[1] / tpp[0] == pytest.approx(100.0 ** ((al - be) / (al + be)), rel=1e-12)
    alloc = compute_optimal(BESIROGLU_2024, [5.76e23])
    assert 5e10 < alloc.N_opt[0] < 1e11


def test_isoflop_recovers_exponent_of_a_known_law():
    law = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}
    Ns, Cs, Ls = [], [], []
    for C in np.logspace(18, 22, 9):
        centre = compute_optimal(law, [C]).N_opt[0]
        for N in centre * np.logspace(-0.6, 0.6, 9):
            D = C / (6 * N)
            Ns.append(N), Cs.append(C), Ls.append(law["E"] + law["A"] * N ** -0.35 + law["B"] * D ** -0.37)
    iso = fit_isoflop(Ns, Cs, Ls)
    assert len(iso.profiles) == 9 and not iso.skipped
    assert iso.a == pytest.approx(0.37 / 0.72, abs=0.005)
    assert iso.a + iso.b == pytest.approx(1.0, abs=1e-9)
    assert iso.N_opt_at(1e20) == pytest.approx(compute_optimal(law, [1e20]).N_opt[0], rel=0.05)


def test_group_budgets():
    C = np.array([1e19, 1.05e19, 3e19, 2.9e19, 5e21])
    assert group_budgets(C).tolist() == [0, 0, 1, 1, 2]
    assert group_budgets(C, budgets=[1e19, 3e19], window_dex=0.05).tolist() == [0, 0, 1, 1, -1]


def test_approach_2_on_the_replay_agrees_with_approach_3(chinchilla240, chinchilla_fit):
    d = chinchilla240
    iso = fit_isoflop(d.N, d.C, d.loss, budgets=HOFFMANN_BUDGETS, window_dex=0.06)
    assert len(iso.profiles) >= 8
    assert iso.a == pytest.approx(chinchilla_fit.a, abs=0.02)       # both ~0.51 (Hoffmann's A2: 0.49)


@pytest.fixture(scope="module")
def gadre_rpj():
    return load_gadre("rpj", "c4_val")


def test_overtraining_law_predicts_gadre_large_runs(gadre_rpj):
    """Fit on models up to 411M parameters; predict the 1.4B model at M=640 and the 6.9B at M=20."""
    g = gadre_rpj
    small = g.N < 1e9
    fit = fit_overtraining(g.N[small], g.D[small], g.loss[small])
    assert 0 < fit.eta < 1 and fit.E < g.loss.min()
    big = ~small
    rel = fit.predict_ND(g.N[big], g.D[big]) / g.loss[big] - 1
    overtrained = (g.M[big] == 640)
    assert overtrained.sum() == 1
    assert abs(rel[overtrained][0]) < 0.007          # Gadre et al. report ~0.7% for this run
    assert np.all(np.abs(rel) < 0.01)
    C, M = 6 * g.N * g.D, g.M
    np.testing.assert_allclose(fit.predict(C, M), fit.predict_ND(g.N, g.D), rtol=1e-12)


def test_extrapolation_check_on_gadre(gadre_rpj):
    g = gadre_rpj
    chk = extrapolation_check(g.N, g.D, g.loss, by="N", threshold=1e9, law="overtraining")
    assert chk.train.sum() == 32 and len(chk.actual) == 3
    np.testing.assert_allclose(chk.rel_error, chk.predicted / chk.actual - 1)
    assert chk.max_abs_rel_error < 0.01


def test_extrapolation_check_chinchilla_law_on_replay(chinchilla240):
    d = chinchilla240
    chk = extrapolation_check(d.N, d.D, d.loss, by="C", holdout=0.2, grid="coarse")
    assert len(chk.actual) == pytest.approx(48, abs=2)
    assert chk.mean_abs_rel_error < 0.02             # the law extrapolates half a decade within ~2%
    assert chk.fit.n_points == chk.train.sum()
