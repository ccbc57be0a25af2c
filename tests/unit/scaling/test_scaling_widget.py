"""ScalingLab driven from Python: set controls, assert on the fit, the shown numbers and the data sources."""
import numpy as np
import pytest

from workbench.scaling import RunRecord, SweepStore, compute_optimal, fit_chinchilla, load_chinchilla

pytest.importorskip("ipywidgets")
from widgets import ScalingLab  # noqa: E402


@pytest.fixture(scope="module")
def lab():
    return ScalingLab()          # Chinchilla, 5 highest-loss rows dropped, coarse grid, 20 bootstrap refits


def test_default_lab_shows_the_chinchilla_replay(lab):
    assert repr(lab) == "ScalingLab(source='chinchilla')"
    assert len(lab.points_source.data["C"]) == 240
    f = lab.fit
    assert f.n_starts == 243 and f.reduce == "sum"
    assert abs(f.alpha - 0.347) <= 0.003 and abs(f.beta - 0.367) <= 0.004 and abs(f.E - 1.817) <= 0.005
    # the widget computes nothing itself: the same call in the core gives the same law
    d = load_chinchilla(5)
    core = fit_chinchilla(d.N, d.D, d.loss, grid="coarse")
    assert f.alpha == pytest.approx(core.alpha, rel=1e-9) and f.B == pytest.approx(core.B, rel=1e-9)
    assert "0.3473" in lab.params_view.value and "Besiroglu 2024" in lab.params_view.value
    # IsoFLOP: nine Hoffmann budgets, Approach 2's N* ~ C^0.51
    assert len(lab.iso_vertices.data["N"]) == 9 and len(lab.iso_curves.data["xs"]) == 9
    assert abs(lab.isoflop.a - 0.514) < 0.01
    assert len(lab.nopt_source.data["C"]) == 9


def test_budget_slider_reads_off_the_allocation(lab):
    lab.budget.value = 24.0
    r = lab.readout
    ref = compute_optimal(lab.fit, [1e24])
    assert r["C"] == pytest.approx(1e24)
    assert r["N_opt"] == pytest.approx(ref.N_opt[0], rel=1e-12)
    assert r["D_opt"] == pytest.approx(ref.D_opt[0], rel=1e-12)
    assert r["tokens_per_param"] == pytest.approx(r["D_opt"] / r["N_opt"], rel=1e-12)
    assert 6 * r["N_opt"] * r["D_opt"] == pytest.approx(1e24, rel=1e-9)
    assert r["loss"] == pytest.approx(float(lab.fit.predict(r["N_opt"], r["D_opt"])), rel=1e-12)
    lo, hi = r["N_opt_band"]
    assert lo < r["N_opt"] < hi and r["n_boot"] == 20
    assert f"{r['N_opt']:.3g}" in lab.budget_view.value
    assert lab.budget_source.data["C"] == [pytest.approx(1e24)]
    assert lab.budget_span.location == pytest.approx(1e24)
    lab.budget.value = 22.0
    assert lab.readout["N_opt"] < r["N_opt"] and lab.readout["loss"] > r["loss"]


def test_frontier_and_band_on_the_loss_figure(lab):
    fr = lab.frontier_source.data
    C, L, lo, hi = (np.asarray(fr[k]) for k in ("C", "loss", "lo", "hi"))
    assert len(C) > 50 and np.all(np.diff(L) < 0)          # more compute, lower optimal loss
    yr = lab.loss_figure.y_range                            # every run and the whole frontier are in view
    assert yr.start <= min(lab.points_source.data["loss"]) and yr.end >= max(lab.points_source.data["loss"])
    assert yr.start <= L.min()
    assert np.all(lo <= L + 1e-12) and np.all(L <= hi + 1e-12) and np.any(hi - lo > 0)
    # the frontier is the lower envelope of the law along fixed sizes
    for ys in lab.law_source.data["ys"]:
        assert np.all(np.asarray(ys) >= L - 1e-9)


def test_outlier_rule_and_all_245_rows():
    w = ScalingLab(bootstrap=0)
    w.drop_highest.value = 0
    assert len(w.points_source.data["loss"]) == 245
    assert abs(w.fit.beta - 0.45) < 0.01                    # keeping all rows moves beta towards 0.45
    assert w.fit.ci is None and w.readout["n_boot"] == 0
    assert w.readout["N_opt_band"] == (w.readout["N_opt"], w.readout["N_opt"])


def test_delta_and_grid_controls_refit(monkeypatch):
    import widgets.scaling_lab as mod

    w = ScalingLab(bootstrap=0)
    seen = []
    real = mod.fit_source

    def spy(*args, **kwargs):
        seen.append((w.info.value, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, "fit_source", spy)
    w.grid.value = "full"
    notice, kwargs = seen[-1]
    assert "4,500 starts" in notice and "fitting" in notice        # the progress notice is up during the fit
    assert kwargs["grid"] == "full" and w.fit.n_starts == 4500 and "full grid" in w.params_view.value
    assert "fitted 240 runs" in w.info.value
    w.delta.value = 1e-1
    assert seen[-1][1]["delta"] == 0.1 and w.fit.delta == 0.1


def test_sum_vs_mean_trap_shows_in_the_parameters():
    w = ScalingLab(bootstrap=0)
    good_a = w.fit.a
    w.reduce.value = "mean"                                  # strict stopping: the same optimum
    assert w.fit.a == pytest.approx(good_a, abs=1e-4)
    w.stopping.value = "scipy defaults"                      # scipy's defaults: stops early near Hoffmann
    assert abs(w.fit.a - 0.45) < 0.01 and abs(good_a - 0.514) < 0.01
    assert "Hoffmann 2022" in w.params_view.value and "scipy defaults" in w.params_view.value


def test_source_switch_gadre_and_shipped_sweep():
    w = ScalingLab(bootstrap=0)
    w.source.value = "gadre"
    assert w.drop_highest.value == 0 and len(w.points_source.data["C"]) == 34
    assert repr(w) == "ScalingLab(source='gadre')"
    assert "Besiroglu" not in w.params_view.value
    w.source.value = "tinygpt"
    assert len(w.points_source.data["C"]) == 20
    assert w.isoflop is None and "IsoFLOP (Approach 2) not available" in w.info.value
    assert w.iso_points.data["N"] == [] and all(np.isnan(w.nopt_fit_source.data["approach2"]))
    assert len(w.law_source.data["ys"]) == 5                # one law curve per model size of the sweep
    assert w.readout["N_opt"] > 0


def _fake_store(path, law=(1.5, 30.0, 200.0, 0.3, 0.35)):
    E, A, B, al, be = law
    store = SweepStore(path)
    for i, n in enumerate((1e3, 3e3, 1e4, 3e4, 1e5)):
        for j, d in enumerate((1e5, 3e5, 1e6, 3e6)):
            store.put(RunRecord(key=f"run{i}{j}", config={"n_embd": i}, N=int(n), N_total=int(n), D=int(d),
                                C=6 * n * d, steps=1, batch_size=1, lr=1e-3, seed=0, train_loss=9.0,
                                val_loss=E + A / n ** al + B / d ** be, wall_s=0.1, corpus_id="x"))
    return store


def test_user_sweep_store(tmp_path):
    _fake_store(tmp_path / "mine")
    w = ScalingLab(bootstrap=0)
    w.source.value = "store"
    assert "give the path" in w.info.value and w.fit is None
    assert w.points_source.data["C"] == [] and w.params_view.value == ""
    missing = tmp_path / "nowhere"
    w.path.value = str(missing)
    w.load_button.click()
    assert "nothing at" in w.info.value and not missing.exists()          # nothing created on disk
    w.path.value = str(tmp_path / "mine")
    w.load_button.click()
    assert len(w.points_source.data["C"]) == 20
    f = w.fit                                                 # noiseless runs: the law comes back
    assert f.alpha == pytest.approx(0.3, abs=1e-3) and f.beta == pytest.approx(0.35, abs=1e-3)
    assert f.E == pytest.approx(1.5, abs=1e-3)
