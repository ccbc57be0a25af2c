"""Issue 13 items 4 and 8 and the shared widget conventions, for the AttentionLab and the CheckpointScrubber:
colour bars show the range of the data they describe, integer layer/head/position/step ticks, legends off the
data, no red "ablated" bars before an ablation, a long-context control named by the message, old figures cleared
under an error (and redrawn on the next good input), hover with positions and tokens, a 900 px column, controls
that do not apply disabled, the base's quietly()/reacting() instead of ad-hoc flags, export buttons."""
import numpy as np
import pytest
from bokeh.models import FixedTicker, Legend

from tests.factories import attention_gpt
from workbench.attention import AttentionProbe, head_metrics, sliding_window, streaming
from workbench.attention import lab as core

pytest.importorskip("jupyter_bokeh")
from widgets.attention_lab import COLUMN, AttentionLab, CheckpointScrubber  # noqa: E402

TEXT = "to be or not to be, that is the question; to be or not to be"


@pytest.fixture(scope="module")
def model():
    return attention_gpt("rope", n_layer=3, n_head=4, n_embd=64, block_size=96)


@pytest.fixture
def lab(model, tmp_path):
    return AttentionLab(model, TEXT, debounce=0, export_dir=tmp_path)


def ticks(axis):
    assert isinstance(axis.ticker, FixedTicker)
    t = list(axis.ticker.ticks)
    assert t and all(float(x).is_integer() for x in t)
    return t


def bar_range(bar):
    return bar.ticker.ticks[0], bar.ticker.ticks[-1]


def test_tile_colour_bar_is_the_range_of_the_tiles_even_for_tiny_differences(model):
    """A compare text that differs in its last character moves the metrics by about 1e-3: the bar says so."""
    lab = AttentionLab(model, TEXT, compare_text=TEXT[:-1] + "!", debounce=0)
    lab.metric.value = "entropy"
    lab.mode.value = "difference"
    want = head_metrics(AttentionProbe(model, TEXT[:-1] + "!")).entropy - head_metrics(AttentionProbe(model, TEXT)).entropy
    shown = np.array(lab.tile_source.data["value"]).reshape(3, 4)
    np.testing.assert_allclose(shown, want, atol=1e-6)
    m = np.abs(want).max()
    assert m < 0.05  # small differences ...
    assert lab.tile_mapper.low == pytest.approx(-m, rel=1e-5) and lab.tile_mapper.high == pytest.approx(m, rel=1e-5)
    assert bar_range(lab.tile_bar) == pytest.approx((-m, m), rel=1e-5)  # ... and a bar of exactly that range
    labels = [lab.tile_bar.formatter.format % t for t in lab.tile_bar.ticker.ticks]
    assert len(set(labels)) == 5 and all(len(x) <= 8 for x in labels)  # distinct, short, no "e-3" to clip
    assert lab.tile_bar.title == "entropy (B - A)"
    assert lab.tile_mapper.palette[-1] == "#67001f"  # B - A > 0 is red, as in the exported PNG
    lab.mode.value = "raw"
    raw = np.array(lab.tile_source.data["value"])
    assert bar_range(lab.tile_bar) == pytest.approx((0.0, raw.max()), rel=1e-6) and lab.tile_bar.title == "entropy"


def test_head_image_colour_bars_are_the_range_of_the_image(lab):
    lab.select(2, 1)
    img = lab.image_source.data["image"][0]
    assert (lab.image_mapper.low, lab.image_mapper.high) == pytest.approx((0.0, img.max()))
    assert bar_range(lab.detail.bar) == pytest.approx((0.0, img.max()))
    lab.compare_text.value = TEXT[:-1] + "!"
    d = lab.compare_sources["diff"].data["image"][0]
    p = lab.compare_panels["diff"]
    assert bar_range(p.bar) == pytest.approx((-np.abs(d).max(), np.abs(d).max()), rel=1e-5)


def test_integer_ticks_on_layers_heads_and_positions(lab):
    assert ticks(lab.overview_figure.yaxis[0]) == [0, 1, 2] and ticks(lab.overview_figure.xaxis[0]) == [0, 1, 2, 3]
    T = len(TEXT)
    assert max(ticks(lab.detail_figure.xaxis[0])) <= T - 1 and max(ticks(lab.detail_figure.yaxis[0])) <= T - 1
    # cells are centred on whole positions, so a tick names a cell
    assert (lab.detail_figure.x_range.start, lab.detail_figure.x_range.end) == (-0.5, T - 0.5)


def test_hover_shows_positions_and_tokens(lab):
    toks = lab.probe_tokens()
    assert lab.qlab_source.data["q"][5] == f"5: {toks[5]!r}" and lab.klab_source.data["k"][0] == f"0: {toks[0]!r}"
    names = [t[0] for t in lab.detail.hover.tooltips]
    assert names == ["query", "key", "weight"]
    big = AttentionLab(lab.model, TEXT, debounce=0, max_side=16)
    assert big.qlab_source.data["q"][0] == "0-3 (4 tokens)"  # a block of a downsampled image says which positions


def test_no_ablated_bars_before_an_ablation(lab):
    assert not lab._ablated_bars.visible and np.isnan(lab.dist_source.data["ablated"]).all()
    assert [i.label.value for i in lab.dist_legend.items] == ["clean"]
    assert lab.dist_legend in lab.dist_figure.right  # the key sits outside the bars
    lab.select(1, 1)
    lab.ablate_button.value = True
    assert lab._ablated_bars.visible and np.isfinite(lab.dist_source.data["ablated"]).all()


def test_text_over_the_context_names_the_long_context_control_and_clears_the_figures(lab):
    assert lab.policy_kind.value == "none" and lab.window.disabled and lab.n_global.disabled
    lab.text.value = "ab" * 60  # 120 tokens, context 96
    msg = lab.info.value
    assert "120 tokens exceed the model&#x27;s context of 96" in msg and "long context" in msg
    assert "policy=" not in msg and lab.policy_kind.description == "long context"
    assert lab.tile_source.data["value"] == [] and lab.image_source.data["image"] == []
    assert lab.keys_source.data["key"] == [] and lab.dist_source.data["label"] == []
    lab.policy_kind.value = "sliding"  # the control the message names: recomputes at once
    assert not lab.window.disabled and lab.n_global.disabled
    lab.window.value = 8
    assert lab.probe.T == 120 and "error" not in lab.info.value.lower()
    img = lab.image_source.data["image"][0]
    assert img[119, :112].max() == 0 and img[119, 112:].sum() == pytest.approx(1.0, abs=1e-5)
    lab.policy_kind.value = "lambda"
    assert not lab.window.disabled and not lab.n_global.disabled
    img = lab.image_source.data["image"][0]
    assert img[119, : lab.n_global.value].sum() > 0 and img[119, 4:112].max() == 0
    lab.policy_kind.value = "dense"
    assert lab.window.disabled and lab.image_source.data["image"][0][119, :112].sum() > 0
    assert lab.export_state()["policy"] == "dense"


def test_policy_argument_sets_the_control(model):
    lab = AttentionLab(model, TEXT, policy=sliding_window(6), debounce=0)
    assert (lab.policy_kind.value, lab.window.value) == ("sliding", 6) and lab.policy == sliding_window(6)
    st = AttentionLab(model, TEXT, policy=streaming(2, 16), debounce=0)
    assert (st.policy_kind.value, st.window.value, st.n_global.value) == ("lambda", 16, 2)
    assert "StreamingLLM" in st.info.value


def test_any_error_in_a_callback_is_a_notice_that_clears_and_the_next_input_recovers(lab, monkeypatch):
    real = core.top_keys

    def broken(*a, **k):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(core, "top_keys", broken)
    lab.select(2, 2)
    assert "RuntimeError: planted failure" in lab.info.value
    assert lab.tile_source.data["value"] == [] and lab.image_source.data["image"] == []  # nothing stale
    monkeypatch.setattr(core, "top_keys", real)
    lab.text.value = TEXT + "!"
    assert "error" not in lab.info.value.lower() and len(lab.tile_source.data["value"]) == 12
    assert lab.selected == (2, 2) and lab.detail_figure.title.text.startswith("L2 H2")
    # a mode that fails for this head (value norms missing) clears the head's views, keeps the tiles
    monkeypatch.setattr(core, "detail_view", lambda *a, **k: (_ for _ in ()).throw(core.AttentionError("no W_O")))
    lab.mode.value = "value-weighted"
    assert "no W_O" in lab.info.value and lab.image_source.data["image"] == [] and lab.keys_source.data["key"] == []
    assert len(lab.tile_source.data["value"]) == 12


def test_difference_and_rollout_are_offered_only_where_they_apply(model):
    lab = AttentionLab(model, TEXT, debounce=0)
    assert list(lab.mode.options) == ["raw", "value-weighted", "rollout"]
    lab.compare_with(text=TEXT[::-1])
    assert "difference" in lab.mode.options
    lab.mode.value = "difference"
    lab.compare_with()  # the comparison ends: back to raw, never a difference of nothing
    assert lab.mode.value == "raw" and "difference" not in lab.mode.options
    assert lab.image_source.data["image"][0].min() >= 0


def test_own_control_updates_do_not_react(model, monkeypatch):
    lab = AttentionLab(model, TEXT, debounce=0)
    calls = []
    real = core.compute
    monkeypatch.setattr(core, "compute", lambda *a, **k: calls.append(1) or real(*a, **k))
    lab.compare_with(text=TEXT[::-1])  # sets compare_text quietly, then runs once
    assert len(calls) == 1
    lab.select(1, 3)  # sets layer and head quietly: one redraw of the head, no recompute
    assert len(calls) == 1 and lab.selected == (1, 3)
    assert not hasattr(lab, "_quiet") and not hasattr(lab, "_quiet_text")  # the base's quietly(), no ad-hoc flags


def test_fits_a_notebook_column(model):
    lab = AttentionLab(model, TEXT, compare_text=TEXT[::-1], debounce=0)
    figs = [lab.overview_figure, lab.detail_figure, lab.keys_figure, lab.dist_figure]
    assert lab.overview_figure.width + lab.detail_figure.width <= COLUMN
    assert lab.keys_figure.width + lab.dist_figure.width <= COLUMN
    assert sum(p.figure.width for p in lab.compare_panels.values()) <= COLUMN
    assert all(f.width <= COLUMN for f in figs)
    for w in (lab.metric, lab.layer, lab.head, lab.policy_kind, lab.window, lab.n_global, lab.query):
        assert w.style.description_width == "initial"  # never "temperat..."
    assert "wrap" in lab.compare_box.layout.flex_flow


# --- CheckpointScrubber (item 4) -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run():
    from workbench.attention import train_induction

    return train_induction(steps=20, every=10, length=8, min_length=4, n_embd=32, batch_size=8)


def test_scrubber_legend_is_outside_and_the_step_marker_on_top(run, tmp_path):
    sc = CheckpointScrubber(run, layer=1, head=2, shift=1, export_dir=tmp_path)
    curves = sc.curve_figure
    assert not [a for a in curves.center if isinstance(a, Legend)]  # nothing over the curves
    assert sc.legend in curves.right and sc.legend.click_policy == "hide"
    assert len(sc.legend.items) == 2 * 4 + 2  # every head, the loss, the shifted score
    assert curves.renderers[-1] is sc.marker  # drawn last: never behind a curve
    assert curves.x_range.start < 0 and curves.x_range.end > 20  # the marker at the first/last step is off the frame
    sc.slider.value = 10
    assert sc.marker_source.data["x"] == [10, 10]
    assert ticks(curves.xaxis[0]) == [0, 5, 10, 15, 20]
    T = len(run.eval_ids)
    assert max(ticks(sc.image_figure.xaxis[0])) <= T - 1
    img = sc.image_source.data["image"][0]
    assert (sc.image_mapper.low, sc.image_mapper.high) == pytest.approx((0.0, img.max()))
    assert sc.image_figure.width + curves.width <= COLUMN


def test_scrubber_exports(run, tmp_path):
    sc = CheckpointScrubber(run, export_dir=tmp_path)
    sc.export_png_button.click()
    (png,) = tmp_path.glob("checkpoint-scrubber-*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "saved PNG" in sc.info.value
    sc.export_data_button.click()
    (js,) = tmp_path.glob("checkpoint-scrubber-*.json")
    import json

    doc = json.loads(js.read_text())
    assert doc["state"]["step"] == int(run.steps[-1]) and doc["state"]["steps"] == [0, 10, 20]
    assert doc["tables"]["marker_source"]["x"] == [20, 20]
    assert len(doc["tables"]["curve_sources.L1H2"]["score"]) == 3


def test_identical_texts_give_a_flat_difference_bar_that_says_no_difference(model):
    """Same text in both boxes: B - A is all zeros; its bars show the tick 0 and a 'no difference' note, never the
    range of an earlier comparison (sibling of issue 13 item 8)."""
    lab = AttentionLab(model, TEXT, compare_text=TEXT[::-1], debounce=0)
    p = lab.compare_panels["diff"]
    assert bar_range(p.bar)[1] > 0.1 and p.bar.title == "B - A"
    lab.compare_text.value = TEXT
    assert np.abs(p.source.data["image"][0]).max() == 0
    assert p.bar.ticker.ticks == [0.0] and p.bar.title == "B - A: no difference"
    assert -1e-6 < p.mapper.low < 0 < p.mapper.high < 1e-6
    assert p.bar.formatter.format % 0.0 == "0" and "no difference" in p.figure.title.text
    lab.mode.value = "difference"
    assert lab.tile_bar.ticker.ticks == [0.0] and lab.tile_bar.title.endswith("(B - A): no difference")
    assert lab.detail.bar.ticker.ticks == [0.0] and "no difference" in lab.detail.figure.title.text
    lab.compare_text.value = TEXT[::-1]  # a real difference again: the full range and the plain title
    assert bar_range(p.bar)[1] > 0.1 and p.bar.title == "B - A" and "no difference" not in p.figure.title.text
