"""AttentionLab driven from Python: set traits / tap tiles, assert on the bokeh data sources and bytes sent."""
import numpy as np
import pytest

from attn_helpers import tiny
from workbench.attention import AttentionProbe, dense, head_metrics, head_view, rollout

pytest.importorskip("jupyter_bokeh")
from widgets.attention_lab import AttentionLab  # noqa: E402

TEXT = "to be or not to be, that is the question; to be or not to be"


@pytest.fixture(scope="module")
def model():
    return tiny("rope", n_layer=3, n_head=4, n_embd=64, block_size=128)


@pytest.fixture
def lab(model, tmp_path):
    return AttentionLab(model, TEXT, debounce=0, export_dir=tmp_path)


def test_tiles_show_the_chosen_metric(lab, model):
    hm = head_metrics(AttentionProbe(model, TEXT))
    d = lab.tile_source.data
    assert len(d["value"]) == 12
    np.testing.assert_allclose(np.array(d["value"]).reshape(3, 4), hm.sink_mass, atol=1e-6)
    lab.metric.value = "previous_token"
    np.testing.assert_allclose(np.array(lab.tile_source.data["value"]).reshape(3, 4), hm.previous_token, atol=1e-6)
    assert repr(lab) == "AttentionLab(model='tinygpt', 3x4 heads)"


def test_tile_click_selects_head_and_updates_one_image(lab, model):
    lab.tile_source.selected.indices = [6]  # layer 1, head 2
    assert lab.selected == (1, 2)
    img = lab.image_source.data["image"]
    assert len(img) == 1  # one raster glyph, not a glyph per cell
    probe = AttentionProbe(model, TEXT)
    np.testing.assert_allclose(img[0], probe.probs(1, [2])[0].numpy(), atol=1e-6)
    assert lab.detail_figure.title.text.startswith("L1 H2 raw")
    assert lab.timings["select"] < 0.2
    # line view: the query's top keys, weights as alpha, labels carry the token
    q = len(TEXT) - 1
    row = probe.probs(1, [2])[0, q].numpy()
    assert lab.line_labels.data["text"][0] == f"{q}:e"
    assert max(lab.line_source.data["alpha"]) == 1.0
    assert len(lab.line_source.data["x0"]) == lab.top_k
    top = np.argsort(row)[::-1][0]
    assert any(t.startswith(f"{top}:") for t in lab.line_labels.data["text"][1:])


def test_modes(lab, model):
    lab.select(2, 0)
    lab.mode.value = "rollout"
    np.testing.assert_allclose(lab.image_source.data["image"][0], rollout(AttentionProbe(model, TEXT))[2], atol=1e-5)
    lab.mode.value = "value-weighted"
    np.testing.assert_allclose(lab.image_source.data["image"][0].sum(-1), 1.0, atol=1e-5)
    lab.mode.value = "difference"  # no second prompt: a warning, image unchanged
    assert "compare" in lab.info.value
    lab.compare_text.value = TEXT.replace("question", "answerxx")
    img = lab.image_source.data["image"][0]
    cut = TEXT.index("question")
    np.testing.assert_allclose(img[:cut], 0.0, atol=1e-6)  # rows before the edit do not change
    assert np.abs(img[cut:]).max() > 1e-4
    assert lab.image_mapper.low == -lab.image_mapper.high


def test_ablation_toggle_changes_distribution(lab):
    lab.select(0, 1)
    assert lab.dist_source.data["ablated"] == [0.0] * len(lab.dist_source.data["label"])
    lab.ablate_button.value = True
    assert lab.ablated == {(0, 1)}
    assert lab.tile_source.data["ablated"][1] == "#d62728"
    base, abl = np.array(lab.dist_source.data["base"]), np.array(lab.dist_source.data["ablated"])
    ids = lab.dist_ids
    np.testing.assert_allclose(base, np.exp(lab.ablation.base[ids]), atol=1e-6)
    np.testing.assert_allclose(abl, np.exp(lab.ablation.ablated[ids]), atol=1e-6)
    assert set(np.argsort(lab.ablation.base)[::-1][: lab.top_k]) <= set(ids.tolist())
    assert lab.ablation.top[0][0] in ids  # the most changed token is shown
    assert np.abs(base - abl).max() > 1e-5
    lab.select(2, 3)
    assert lab.ablate_button.value is False  # the button follows the selected head
    lab.select(0, 1)
    assert lab.ablate_button.value is True
    lab.ablate_button.value = False
    assert lab.ablated == set()


def test_bad_text_shows_error_not_exception(lab):
    lab.text.value = ""
    assert "empty" in lab.info.value


def test_export(lab, tmp_path):
    lab.select(1, 1)
    png = lab.export_png()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    npz = np.load(lab.export_npz())
    np.testing.assert_array_equal(npz["image"], lab.image_source.data["image"][0])
    assert npz["metric_sink_mass"].shape == (3, 4)


def test_1024_tokens_sends_under_10_mb():
    m = tiny("rope", n_layer=4, n_head=4, n_embd=64, block_size=256)
    text = "".join(chr(c) for c in np.random.default_rng(0).integers(97, 123, 1024))
    lab = AttentionLab(m, text, policy=dense(), debounce=0, max_side=512)
    assert lab.probe.T == 1024
    first = lab.initial_bytes + lab.bytes_sent
    before = lab.bytes_sent
    lab.select(3, 2)
    click = lab.bytes_sent - before
    assert lab.image_source.data["image"][0].shape == (512, 512)
    assert first + click < 10 * 2**20
    assert click < 1.2 * 2**20
    assert lab.timings["select"] < 0.5  # generous on a shared CPU; typically ~50 ms


def test_head_view_downsampling_known_answer():
    a = np.zeros((4, 4))
    a[np.arange(4), np.arange(4)] = 1.0  # diagonal
    v = head_view(a, max_side=2)
    np.testing.assert_allclose(v.image, [[1.0, 0.0], [0.0, 1.0]])
    assert v.k_labels == ["0-1", "2-3"] and v.factor == 2
    v5 = head_view(np.tril(np.ones((5, 5))) / np.arange(1, 6)[:, None], max_side=2)
    assert v5.image.shape == (2, 2) and v5.factor == 3  # blocks [0, 3) and [3, 5): the short one averages 2 rows
    np.testing.assert_allclose(v5.image.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(v5.image[1], [np.mean([3 / 4, 3 / 5]), np.mean([1 / 4, 2 / 5])], atol=1e-6)
    np.testing.assert_allclose(v5.image[0], [1.0, 0.0], atol=1e-6)


def test_checkpoint_scrubber_and_induction_run():
    from workbench.attention import capture_attention, induction_score, train_induction
    from widgets.attention_lab import CheckpointScrubber

    run = train_induction(steps=20, every=10, length=8, min_length=4, n_embd=32, batch_size=8)
    assert run.steps.tolist() == [0, 10, 20] and run.induction.shape == (3, 2, 4)
    m1 = run.model_at(1)
    np.testing.assert_allclose(run.induction[1], induction_score(capture_attention(m1, run.eval_ids)), atol=1e-6)
    sc = CheckpointScrubber(run, layer=1, head=2, shift=1)
    sc.slider.value = 10
    np.testing.assert_allclose(sc.image_source.data["image"][0], capture_attention(m1, run.eval_ids).head(1, 2),
                               atol=1e-6)
    assert sc.marker_source.data["x"] == [10, 10]
    assert sc.shifted[1] == pytest.approx(induction_score(capture_attention(m1, run.eval_ids), shift=1)[1, 2])
    assert "step 10" in sc.info.value


def test_bertviz_size_exact_and_estimated():
    import json

    from workbench.attention import bertviz_json_bytes

    rng = np.random.default_rng(0)
    a = rng.random((2, 2, 64, 64)).astype(np.float32)
    a = np.tril(a)
    a /= a.sum(-1, keepdims=True)
    toks = [str(i) for i in range(64)]
    n, est = bertviz_json_bytes(a, toks)
    assert not est
    assert n == sum(len(json.dumps(a[i, j].tolist())) for i in range(2) for j in range(2)) \
        + len(json.dumps({"left_text": toks, "right_text": toks})) + 8
    m, est = bertviz_json_bytes(a, toks, sample_rows=16)
    assert est and abs(m - n) / n < 0.1


def test_compare_model_and_image_tap(model):
    from bokeh.events import Tap

    other = tiny("rope", n_layer=3, n_head=4, n_embd=64, block_size=128, seed=5)
    lab = AttentionLab(model, TEXT, debounce=0, compare_model=other)
    lab.select(1, 3)
    lab.mode.value = "difference"
    expect = AttentionProbe(other, TEXT).probs(1, [3])[0].numpy() - AttentionProbe(model, TEXT).probs(1, [3])[0].numpy()
    np.testing.assert_allclose(lab.image_source.data["image"][0], expect, atol=1e-6)
    diff_tiles = np.array(lab.tile_source.data["value"]).reshape(3, 4)
    np.testing.assert_allclose(diff_tiles, head_metrics(AttentionProbe(other, TEXT)).sink_mass
                               - head_metrics(AttentionProbe(model, TEXT)).sink_mass, atol=1e-6)
    lab.mode.value = "raw"
    lab._on_image_tap(Tap(lab.detail_figure, x=3.0, y=17.6))
    assert lab.query.value == 17
    assert lab.line_labels.data["text"][0].startswith("17:")
