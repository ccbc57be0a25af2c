"""ScalingLab (issue 13 items 2, 3, 11): bands around the trap, bad sweep-store input, colour keys, ticks, modes."""
import html
import logging
import warnings

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
from bokeh.embed import json_item  # noqa: E402
from bokeh.models import ColorBar, Legend  # noqa: E402

from widgets import ScalingLab  # noqa: E402
from widgets.scaling_lab import FIG_WIDTH, log_ticks, tick_label, tick_labels  # noqa: E402
from workbench.scaling import RunRecord, SweepStore, fit_chinchilla  # noqa: E402
from workbench.scaling.fitters import BOOTSTRAP_METHODS  # noqa: E402
from workbench.scaling.replays import SWEEP_CSV  # noqa: E402


def _good_csv(path):
    """A minimal sweep CSV (N, D, loss) from a known law."""
    lines = ["N,D,loss"]
    for n in (1e3, 3e3, 1e4, 3e4, 1e5):
        for d in (1e5, 3e5, 1e6, 3e6):
            lines.append(f"{n:g},{d:g},{1.5 + 30 / n ** 0.3 + 200 / d ** 0.35!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_trap_in_the_lab_lies_inside_a_band_made_of_trap_refits():
    w = ScalingLab(bootstrap=10)
    strict_alpha_band = w.fit.ci["alpha"]
    w.reduce.value = "mean"
    w.stopping.value = "scipy defaults"
    f = w.fit
    assert f.reduce == "mean" and f.tol == "default" and f.bootstrap_method == BOOTSTRAP_METHODS["default"]
    assert f.ci["alpha"] != strict_alpha_band and f.ci["alpha"][0] <= f.alpha <= f.ci["alpha"][1]
    # a band refit is this very procedure on a resample (refitted by hand here)
    d, r = w.data, f.bootstrap_rows[4]
    by_hand = fit_chinchilla(d.N[r], d.D[r], d.loss[r], reduce="mean", grid="coarse", backend="scipy", tol="default")
    np.testing.assert_allclose(f.bootstrap_params[4], [np.log(by_hand.E), np.log(by_hand.A), np.log(by_hand.B),
                                                       by_hand.alpha, by_hand.beta], rtol=1e-12)
    # every number shown lies inside its own band: the frontier, the N* line, the budget read-out
    fr = w.frontier_source.data
    assert np.all(np.asarray(fr["lo"]) <= np.asarray(fr["loss"])) and np.all(np.asarray(fr["loss"]) <= fr["hi"])
    nf = w.nopt_fit_source.data
    assert np.all(np.asarray(nf["lo"]) <= nf["approach3"]) and np.all(np.asarray(nf["approach3"]) <= nf["hi"])
    for k in ("N_opt", "D_opt", "loss"):
        lo, hi = w.readout[f"{k}_band"]
        assert lo <= w.readout[k] <= hi, k
    assert "10 refits with the same choices" in w.info.value


@pytest.fixture(scope="module")
def store_lab():
    return ScalingLab(source="store", bootstrap=0)


def _load(w, path):
    w.path.value = str(path)
    w.load_button.click()
    return w.info.value


def _assert_error_and_cleared(w, *needles):
    assert "#b00020" in w.info.value, w.info.value                    # shown as an error
    text = html.unescape(w.info.value)
    for n in needles:
        assert n in text, (n, text)
    assert w.fit is None and w.points_source.data["C"] == [] and w.frontier_source.data["C"] == []
    assert w.params_view.value == "" and w.budget_view.value == "" and w.budget.disabled
    assert "no data loaded" in w.loss_figure.title.text


@pytest.mark.parametrize("name, content, needles", [
    ("wrong.csv", "a,b\n1,2\n3,4\n", ["lacks the column(s) N, D, val_loss (or loss)", "'a', 'b'"]),
    ("empty.csv", "", ["empty.csv is empty"]),
    ("blank.csv", "\n\n  \n", ["blank.csv is empty"]),
    ("header.csv", "N,D,loss\n", ["header.csv has a header but no runs"]),
    ("text.csv", "N,D,loss\n1000,1e5,2.5\nlots,1e5,2.4\n", ["text.csv, line 3: column N has 'lots'"]),
    ("gap.csv", "N,D,val_loss\n1000,,2.5\n", ["gap.csv, line 2: column D is empty"]),
    ("neg.csv", "N,D,loss\n1000,1e5,2.5\n-3,1e5,2.4\n", ["neg.csv, line 3: column N must be a positive"]),
    ("binary.csv", b"\xff\xfe\x00\x01N,D", ["not a text CSV"]),
])
def test_bad_csv_ends_in_a_specific_notice_that_replaces_the_previous_one(store_lab, tmp_path, name, content,
                                                                         needles):
    w = store_lab
    _load(w, _good_csv(tmp_path / "good.csv"))                         # something good on screen first
    assert len(w.points_source.data["C"]) == 20 and "fitted 20 runs" in w.info.value
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    _load(w, p)
    _assert_error_and_cleared(w, *needles)
    assert "fitted" not in w.info.value
    before = w.info.value                                               # error after error: replaced, not kept
    _load(w, tmp_path / "missing.csv")
    _assert_error_and_cleared(w, "no file at", "missing.csv")
    assert w.info.value != before
    _load(w, tmp_path / "good.csv")                                     # recovery on the next good input
    assert len(w.points_source.data["C"]) == 20 and "fitted 20 runs" in w.info.value
    assert w.fit.alpha == pytest.approx(0.3, abs=2e-3) and not w.budget.disabled


def test_bad_store_directories_and_recovery(store_lab, tmp_path):
    w = store_lab
    (tmp_path / "plain").mkdir()
    _load(w, tmp_path / "plain")
    _assert_error_and_cleared(w, "is not a sweep store (no store.json)")
    _load(w, tmp_path / "nowhere")
    _assert_error_and_cleared(w, "nothing at")
    assert not (tmp_path / "nowhere").exists()
    store = SweepStore(tmp_path / "s")
    _load(w, tmp_path / "s")
    _assert_error_and_cleared(w, "holds no finished runs yet")
    (store.runs / "broken.json").write_text("{not json")
    _load(w, tmp_path / "s")
    _assert_error_and_cleared(w, "has a run record that cannot be read", "JSONDecodeError")
    (store.runs / "broken.json").unlink()
    for i, n in enumerate((1e3, 3e3, 1e4)):
        for j, d in enumerate((1e5, 1e6)):
            store.put(RunRecord(key=f"r{i}{j}", config={}, N=int(n), N_total=int(n), D=int(d), C=6 * n * d, steps=1,
                                batch_size=1, lr=1e-3, seed=0, train_loss=9.0, val_loss=2 + 10 / n ** 0.3 + 50 / d ** 0.3,
                                wall_s=0.1, corpus_id="x"))
    _load(w, tmp_path / "s")
    assert len(w.points_source.data["C"]) == 6 and "fitted 6 runs" in w.info.value
    w.drop_highest.value = 6                                            # outlier rule too large for 6 runs
    _assert_error_and_cleared(w, "can drop between 0 and 5 rows")
    w.drop_highest.value = 0
    assert w.fit is not None


def test_shipped_sweep_csv_loads_as_a_store(store_lab):
    _load(store_lab, SWEEP_CSV)
    assert len(store_lab.points_source.data["C"]) == 20


def test_unexpected_error_is_visible(monkeypatch, tmp_path):
    import widgets.scaling_lab as mod

    w = ScalingLab(source="store", bootstrap=0)
    monkeypatch.setattr(mod, "load_source", lambda *a, **k: {}["n_layer"])
    _load(w, _good_csv(tmp_path / "good.csv"))
    _assert_error_and_cleared(w, "unexpected KeyError", "n_layer")


def test_store_before_loading_is_empty_without_log_axis_warnings(caplog):
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")
        w = ScalingLab(source="tinygpt", bootstrap=0)
        w.source.value = "store"
        for fig in (w.loss_figure, w.iso_figure, w.nopt_figure):
            json_item(fig)                                              # serialised and validated by bokeh
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "give the path" in w.info.value
    for fig in (w.loss_figure, w.iso_figure, w.nopt_figure):
        assert "TinyGPT" not in fig.title.text and "no data loaded" in fig.title.text
        for rng in (fig.x_range, fig.y_range):
            assert 0 < rng.start < rng.end
    assert w.points_source.data["C"] == [] and w.law_source.data["xs"] == []
    assert not w.n_colorbar.visible and not w.budget_colorbar.visible
    assert not w.path.disabled and not w.load_button.disabled and w.budget.disabled


def test_source_switches_restore_the_default_outlier_rule_and_modes():
    w = ScalingLab(bootstrap=0)
    assert w.drop_highest.value == 5 and w.path.disabled and w.load_button.disabled
    w.drop_highest.value = 0
    for src in ("store", "gadre", "tinygpt"):
        w.source.value = src
        assert w.drop_highest.value == 0
        w.source.value = "chinchilla"
        assert w.drop_highest.value == 5 and len(w.points_source.data["C"]) == 240
        assert w.path.disabled and w.load_button.disabled and not w.budget.disabled


def test_colour_keys_legends_and_ticks():
    w = ScalingLab(source="tinygpt", bootstrap=0)
    N = np.asarray(w.points_source.data["N"])
    assert (w.n_mapper.low, w.n_mapper.high) == (N.min(), N.max()) and w.n_colorbar.visible
    for fig in (w.loss_figure, w.iso_figure, w.nopt_figure):
        assert fig.width <= FIG_WIDTH <= 880
        assert not [x for x in fig.center if isinstance(x, Legend)]     # no legend over the data
        legends = [x for x in fig.right if isinstance(x, Legend)]
        assert legends and all(lg.click_policy == "hide" for lg in legends)
    assert any(isinstance(x, ColorBar) and x is w.n_colorbar for x in w.loss_figure.right)
    # readable ticks on the TinyGPT sweep: few, short, distinct, never "3.000e+6"
    for fig in (w.loss_figure, w.nopt_figure):
        for ax in (fig.xaxis[0], fig.yaxis[0]):
            labels = list(ax.major_label_overrides.values())
            assert 2 <= len(labels) <= 8 and len(set(labels)) == len(labels)
            assert all(len(s) <= 5 and "+" not in s for s in labels), labels
            assert sum(len(s) for s in labels) * 8 < fig.width - 200      # room for every label at ~8 px a char
    c = ScalingLab(bootstrap=0)                                          # Chinchilla: nine budgets, one key
    budgets = sorted(c.iso_vertices.data["C"])
    assert len(budgets) == 9 and c.budget_colorbar.visible
    assert (c.c_mapper.low, c.c_mapper.high) == (budgets[0], budgets[-1])
    assert list(c.budget_colorbar.ticker.ticks) == budgets
    assert c.budget_colorbar.major_label_overrides[budgets[0]] == "6e18"
    assert c.iso_points.data["C"][0] in budgets                          # points coloured by their budget


def test_tick_helpers():
    assert [tick_label(v) for v in (2.5, 300, 4e4, 3e6, 1.2e9)] == ["2.5", "300", "40k", "3M", "1.2B"]
    assert tick_label(3e19, sci=True) == "3e19" and tick_label(1e21, sci=True) == "1e21"
    assert log_ticks(2.6e5, 4.2e6) == [3e5, 1e6, 3e6]                    # few decades: 1-3 mantissas
    assert log_ticks(1.7, 3.6) == [2.0, 3.0] and log_ticks(2.5, 3.6) == [2.5, 3.6]   # under a decade: the ends
    assert log_ticks(1e18, 1e26) == [1e18, 1e20, 1e22, 1e24, 1e26]      # many decades: every other one


def _one_format(labels) -> bool:
    """Every label sci-style (3e9) or every one suffix-style (100B, 3M, 300)."""
    sci = ["e" in s for s in labels]
    return all(sci) or not any(sci)


def test_each_axis_keeps_one_label_format_and_titles_keep_clear_of_the_toolbar():
    """Sibling of issue 13 item 11: the N* axis of Chinchilla read "1e8 ... 10B, 100B, 1e12"; one format per
    axis. The figures' titles (which carry the source's name) get the top row to themselves: toolbar below."""
    assert tick_labels([1e8, 1e10, 1e12]) == {1e8: "1e8", 1e10: "1e10", 1e12: "1e12"}
    assert tick_labels([1e6, 1e8, 1e10]) == {1e6: "1M", 1e8: "100M", 1e10: "10B"}
    assert tick_labels([3e19, 1e21], sci=True) == {3e19: "3e19", 1e21: "1e21"}
    for source in ("chinchilla", "tinygpt"):
        w = ScalingLab(source=source, bootstrap=0)
        for fig in (w.loss_figure, w.iso_figure, w.nopt_figure):
            assert fig.toolbar_location == "below", fig.title.text
            for ax in (fig.xaxis[0], fig.yaxis[0]):
                labels = [v for v in ax.major_label_overrides.values()]
                assert _one_format(labels), (fig.title.text, labels)  # (linear axes: bokeh's own labels)
        nopt = list(w.nopt_figure.yaxis[0].ticker.ticks)
        assert nopt and w.nopt_figure.yaxis[0].major_label_overrides
        if max(nopt) >= 1e12:  # the Chinchilla case: all sci
            assert all("e" in w.nopt_figure.yaxis[0].major_label_overrides[t] for t in nopt)
        assert _one_format(list(w.n_colorbar.major_label_overrides.values()))
    w.source.value = "store"  # the empty chart's N axes run 1e6..1e12: once "1M ... 100B, 1e12", now all sci
    for ax in (w.nopt_figure.yaxis[0], w.iso_figure.xaxis[0]):
        labels = list(ax.major_label_overrides.values())
        assert labels[-1] == "1e12" and all("e" in x for x in labels), labels


def test_controls_fit_a_900px_column():
    w = ScalingLab(bootstrap=0)
    for c in (w.source, w.path, w.drop_highest, w.reduce, w.delta, w.grid, w.stopping, w.bootstrap, w.budget):
        assert c.style.description_width == "initial", c.description
        width = c.layout.width
        assert width is None or int(width.rstrip("px")) <= 600


def test_notebook_charts_keys_outside_and_readable_ticks():
    from widgets.scaling_lab import sweep_chart, token_multiplier_chart
    from workbench.scaling import load_tinygpt_sweep

    sweep = load_tinygpt_sweep().arrays()
    fit = fit_chinchilla(sweep["N"], sweep["D"], sweep["loss"], grid="coarse")
    p = sweep_chart(sweep, fit)
    labels = list(p.xaxis[0].major_label_overrides.values())
    assert labels and all("e+" not in s and len(s) <= 5 for s in labels), labels
    (lg,) = [x for x in p.right if isinstance(x, Legend)]
    assert lg.click_policy == "hide" and len(lg.items) == len(np.unique(sweep["N"]))
    assert not [x for x in p.center if isinstance(x, Legend)]

    class Law:                                                          # any fit with predict(C, M)
        def predict(self, C, M):
            return 2 + np.log10(C) * 0 + 0.01 * np.asarray(M) ** 0.5

    q = token_multiplier_chart(Law())
    (lg,) = [x for x in q.right if isinstance(x, Legend)]
    assert [i.label.value for i in lg.items] == ["1e19 FLOP", "1e20 FLOP", "1e21 FLOP", "1e22 FLOP"]
    assert not [x for x in q.center if isinstance(x, Legend)]


def test_emergence_charts_key_their_band_outside_the_data():
    """Notebook 04's emergence grid: the shaded band has a key (and the mean line too), placed below the plot,
    never over the data; one figure per metric with the sweep's values; two per row fit a 900 px column."""
    from bokeh.models import VArea

    from widgets.scaling_lab import EMERGENCE_METRICS, emergence_charts
    from workbench.scaling import load_emergence

    em = load_emergence()
    figs = emergence_charts(em)
    assert [f.title.text for f in figs] == [t for _, t in EMERGENCE_METRICS] and 2 * figs[0].width <= 880
    N = [m["N"] for m in em["models"]]
    for f, (key, _) in zip(figs, EMERGENCE_METRICS):
        assert not [x for x in f.center if isinstance(x, Legend)]
        (lg,) = [x for x in f.below if isinstance(x, Legend)]
        labels = [i.label["value"] for i in lg.items]
        assert labels == ["mean over 3 seeds", "\u00b12 standard errors"]
        (band,) = [r for r in f.renderers if isinstance(r.glyph, VArea)]
        assert lg.items[1].renderers == [band]
        y = np.array([m[key] for m in em["models"]])
        s = np.array([m["sem"][key] for m in em["models"]])
        np.testing.assert_allclose(band.data_source.data["y2"] - band.data_source.data["y1"], 4 * s)
        np.testing.assert_allclose(band.data_source.data["x"], N)
        np.testing.assert_allclose((band.data_source.data["y2"] + band.data_source.data["y1"]) / 2, y)
        assert f.xaxis[0].major_label_overrides and all("+" not in v for v in f.xaxis[0].major_label_overrides.values())
