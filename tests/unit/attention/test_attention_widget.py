"""AttentionLab driven from Python: set traits / tap tiles, assert on the bokeh data sources and bytes sent."""
import numpy as np
import pytest

from tests.factories import attention_gpt
from workbench.attention import AttentionProbe, dense, head_metrics, head_view, rollout

pytest.importorskip("jupyter_bokeh")
from widgets.attention_lab import AttentionLab  # noqa: E402

TEXT = "to be or not to be, that is the question; to be or not to be"


@pytest.fixture(scope="module")
def model():
    return attention_gpt("rope", n_layer=3, n_head=4, n_embd=64, block_size=128)


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
    assert lab.timings["select"] > 0  # timed for the bench; speed targets live in `python -m workbench.bench attention`
    # top keys of the query: heaviest first, labelled "position: 'token'" on the axis (one factor per bar)
    q = len(TEXT) - 1
    row = probe.probs(1, [2])[0, q].numpy()
    d = lab.keys_source.data
    assert d["query"] == [f"{q}: 'e'"] * lab.top_k
    top = np.argsort(-row, kind="stable")[: lab.top_k]
    assert d["position"] == top.tolist()
    np.testing.assert_allclose(d["weight"], row[top], atol=1e-6)
    assert d["key"] == [f"{j}: {lab.probe_tokens()[j]!r}" for j in top]
    assert list(lab.keys_figure.y_range.factors) == d["key"][::-1]  # the axis runs upwards: heaviest on top
    assert lab.keys_figure.x_range.end >= max(d["weight"])


def test_modes(lab, model):
    lab.select(2, 0)
    lab.mode.value = "rollout"
    np.testing.assert_allclose(lab.image_source.data["image"][0], rollout(AttentionProbe(model, TEXT))[2], atol=1e-5)
    lab.mode.value = "value-weighted"
    np.testing.assert_allclose(lab.image_source.data["image"][0].sum(-1), 1.0, atol=1e-5)
    assert "difference" not in lab.mode.options  # no second prompt: the mode is not offered
    lab.compare_text.value = TEXT.replace("question", "answerxx")
    assert "difference" in lab.mode.options
    lab.mode.value = "difference"
    img = lab.image_source.data["image"][0]
    cut = TEXT.index("question")
    np.testing.assert_allclose(img[:cut], 0.0, atol=1e-6)  # rows before the edit do not change
    assert np.abs(img[cut:]).max() > 1e-4
    assert lab.image_mapper.low == -lab.image_mapper.high


def test_ablation_toggle_changes_distribution(lab):
    lab.select(0, 1)
    # nothing ablated: no red bars (hidden, and no values), no "ablated" key, no red outline
    assert not lab._ablated_bars.visible and np.isnan(lab.dist_source.data["ablated"]).all()
    assert [i.label.value for i in lab.dist_legend.items] == ["clean"]
    assert set(lab.tile_source.data["ablated"]) == {None} and "ablated" not in lab.overview_figure.title.text
    lab.ablate_button.value = True
    assert lab._ablated_bars.visible
    assert [i.label.value for i in lab.dist_legend.items] == ["clean", "ablated: L0H1"]
    assert "red outline: ablated" in lab.overview_figure.title.text
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
    assert lab.ablated == set() and not lab._ablated_bars.visible


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


def shown(lab):
    """Pretend the browser shows every pane, so that later changes go out as patches (and are counted)."""
    for p in lab.panes + lab.compare_panes:
        p.refresh()
        p._view_count = 1
    return lab


def test_1024_tokens_sends_under_10_mb():
    m = attention_gpt("rope", n_layer=4, n_head=4, n_embd=64, block_size=256)
    text = "".join(chr(c) for c in np.random.default_rng(0).integers(97, 123, 1024))
    lab = AttentionLab(m, text, policy=dense(), debounce=0, max_side=512)
    assert lab.probe.T == 1024
    first = lab.first_display_bytes()
    assert first > 512 * 512 * 4 * 0.5  # the 512 x 512 float32 head image is in it (base64 or binary)
    assert first < 10 * 2**20
    shown(lab)
    before = lab.bytes_sent
    lab.select(3, 2)
    click = lab.bytes_sent - before
    assert lab.image_source.data["image"][0].shape == (512, 512)
    assert 512 * 512 * 4 <= click < 1.2 * 2**20  # one float32 image plus a little framing
    assert first + click < 10 * 2**20
    # the 200 ms click target is measured by `python -m workbench.bench attention` (printed against the target), not
    # asserted here: a timed assert fails by luck on a loaded machine


def test_1024_tokens_comparison_stays_under_10_mb():
    m = attention_gpt("rope", n_layer=4, n_head=4, n_embd=64, block_size=256)
    rng = np.random.default_rng(0)
    text = "".join(chr(c) for c in rng.integers(97, 123, 1024))
    lab = AttentionLab(m, text, compare_text=text[:700] + "X" + text[701:], policy=dense(), debounce=0)
    assert [v.image.shape for v in lab.compare_views.values()] == [(256, 256)] * 3
    first = lab.first_display_bytes()
    shown(lab)
    before = lab.bytes_sent
    lab.select(2, 1)
    click = lab.bytes_sent - before
    assert (512 * 512 + 3 * 256 * 256) * 4 <= click < 2.2 * 2**20
    assert first + click < 10 * 2**20


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

    other = attention_gpt("rope", n_layer=3, n_head=4, n_embd=64, block_size=128, seed=5)
    lab = AttentionLab(model, TEXT, debounce=0, compare_model=other)
    lab.select(1, 3)
    lab.mode.value = "difference"
    expect = AttentionProbe(other, TEXT).probs(1, [3])[0].numpy() - AttentionProbe(model, TEXT).probs(1, [3])[0].numpy()
    np.testing.assert_allclose(lab.image_source.data["image"][0], expect, atol=1e-6)
    diff_tiles = np.array(lab.tile_source.data["value"]).reshape(3, 4)
    np.testing.assert_allclose(diff_tiles, head_metrics(AttentionProbe(other, TEXT)).sink_mass
                               - head_metrics(AttentionProbe(model, TEXT)).sink_mass, atol=1e-6)
    lab.mode.value = "raw"
    lab._on_image_tap(Tap(lab.detail_figure, x=3.0, y=17.4))  # cell q is centred on q: [q - 0.5, q + 0.5)
    assert lab.query.value == 17
    assert lab.keys_source.data["query"][0] == f"17: {lab.probe_tokens()[17]!r}"
    lab._on_image_tap(Tap(lab.detail_figure, x=3.0, y=17.6))
    assert lab.query.value == 18


def test_comparison_shows_both_prompts_side_by_side_and_their_difference(model):
    b_text = TEXT.replace("question", "answerxx")
    lab = AttentionLab(model, TEXT, compare_text=b_text, debounce=0)
    assert lab.comparing and lab.compare_box.layout.display == "flex"
    lab.select(1, 3)
    pa = AttentionProbe(model, TEXT).probs(1, [3])[0].numpy()
    pb = AttentionProbe(model, b_text).probs(1, [3])[0].numpy()
    src = lab.compare_sources
    for k in ("a", "b", "diff"):
        assert len(src[k].data["image"]) == 1  # one raster glyph per view
    np.testing.assert_allclose(src["a"].data["image"][0], pa, atol=1e-6)
    np.testing.assert_allclose(src["b"].data["image"][0], pb, atol=1e-6)
    np.testing.assert_allclose(src["diff"].data["image"][0], pb - pa, atol=1e-6)
    cut = TEXT.index("question")
    assert np.abs(pb - pa)[cut:].max() > 1e-3
    # A and B share one colour scale; the difference is centred on 0
    pa_m, pb_m, d_m = (lab.compare_panels[k].mapper for k in ("a", "b", "diff"))
    assert pa_m.high == pb_m.high == pytest.approx(max(pa.max(), pb.max()), abs=1e-6) and pa_m.low == 0
    assert d_m.low == -d_m.high == pytest.approx(-np.abs(pb - pa).max(), abs=1e-6)
    # hover labels: position and B's own token; the difference names both where they differ
    assert lab.compare_panels["b"].klab.data["k"][cut] == f"{cut}: 'a'"
    assert lab.compare_panels["diff"].klab.data["k"][cut] == f"{cut}: 'q|a'"
    assert lab.compare_panels["diff"].qlab.data["q"][0] == "0: 't'"
    assert "B: compare text L1H3 raw" == lab.compare_panels["b"].figure.title.text
    # the comparison follows the mode (value-weighted), and shows raw patterns in difference mode
    lab.mode.value = "value-weighted"
    wa = pa * AttentionProbe(model, TEXT).value_norms(1, [3])[0].numpy()
    np.testing.assert_allclose(src["a"].data["image"][0], wa / wa.sum(-1, keepdims=True), atol=1e-6)
    lab.mode.value = "difference"
    np.testing.assert_allclose(src["a"].data["image"][0], pa, atol=1e-6)
    np.testing.assert_allclose(lab.image_source.data["image"][0], pb - pa, atol=1e-6)


def test_comparison_of_different_lengths_diffs_the_common_prefix(model):
    lab = AttentionLab(model, TEXT, compare_text=TEXT[:30] + "!?", debounce=0)
    lab.select(0, 2)
    a, b, d = (lab.compare_sources[k].data["image"][0] for k in ("a", "b", "diff"))
    assert a.shape == (len(TEXT), len(TEXT)) and b.shape == (32, 32) and d.shape == (32, 32)
    np.testing.assert_allclose(d[:30], 0.0, atol=1e-6)  # causal: rows before the edit are equal
    np.testing.assert_allclose(d, b - a[:32, :32], atol=1e-6)
    assert lab.compare_panels["diff"].figure.title.text == "B - A (32 common tokens)"


def test_comparison_of_two_checkpoints_and_switching_it_off(model):
    other = attention_gpt("rope", n_layer=3, n_head=4, n_embd=64, block_size=128, seed=5)
    lab = AttentionLab(model, TEXT, debounce=0)
    assert not lab.comparing and lab.compare_box.layout.display == "none" and lab.compare_views is None
    lab.compare_with(model=other, label="step 500")
    lab.select(2, 1)
    pa = AttentionProbe(model, TEXT).probs(2, [1])[0].numpy()
    pb = AttentionProbe(other, TEXT).probs(2, [1])[0].numpy()
    np.testing.assert_allclose(lab.compare_sources["a"].data["image"][0], pa, atol=1e-6)
    np.testing.assert_allclose(lab.compare_sources["b"].data["image"][0], pb, atol=1e-6)
    np.testing.assert_allclose(lab.compare_sources["diff"].data["image"][0], pb - pa, atol=1e-6)
    assert lab.compare_panels["b"].figure.title.text == "B: step 500 L2H1 raw"
    assert lab.compare_box.layout.display == "flex"
    lab.compare_with()
    assert not lab.comparing and lab.compare_views is None and lab.compare_box.layout.display == "none"
    with pytest.raises(Exception, match="no comparison"):
        lab.export_png(view="compare")


def read_png(path):
    """Decode an 8-bit RGB PNG written with filter 0 on every row -> (h, w, 3) uint8."""
    import struct
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        n, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if tag == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_png_and_npz_exports_hold_exactly_the_views(model, tmp_path):
    from workbench.attention import to_rgb

    b_text = TEXT[:-3] + "xyz"
    lab = AttentionLab(model, TEXT, compare_text=b_text, debounce=0, export_dir=tmp_path)
    lab.select(1, 0)
    img = lab.image_source.data["image"][0]
    scale = 256 // img.shape[0]
    px = read_png(lab.export_png())
    np.testing.assert_array_equal(px, to_rgb(img).repeat(scale, 0).repeat(scale, 1))
    # the comparison strip: A | 2 white columns | B | 2 white | B - A, A and B on one scale
    strip = read_png(lab.export_png(view="compare"))
    a, b, d = (lab.compare_views[k].image for k in ("a", "b", "diff"))
    high = max(a.max(), b.max())
    T = a.shape[0]
    s = 256 // T
    np.testing.assert_array_equal(strip[::s, ::s][:, :T], to_rgb(a, 0.0, high))
    np.testing.assert_array_equal(strip[::s, ::s][:, T + 2:2 * T + 2], to_rgb(b, 0.0, high))
    assert (strip[::s, ::s][:, T:T + 2] == 255).all()
    dd = strip[::s, ::s][:, 2 * T + 4:]
    assert (dd[d == 0] == 255).all()  # unchanged cells are white
    i, j = np.unravel_index(np.argmax(d), d.shape)
    assert d[i, j] > 0 and tuple(dd[i, j]) == (255, 0, 0)  # the largest increase is pure red
    assert strip.shape == (T * s, (3 * T + 4) * s, 3)
    npz = np.load(lab.export_npz())
    for k in ("a", "b", "diff"):
        np.testing.assert_array_equal(npz[f"compare_{k}"], lab.compare_sources[k].data["image"][0])
    assert npz["compare_ids"].tolist() == list(b_text.encode())
    np.testing.assert_allclose(npz["compare_metric_sink_mass"], head_metrics(AttentionProbe(model, b_text)).sink_mass)
    assert str(npz["mode"]) == "raw" and int(npz["layer"]) == 1 and int(npz["head"]) == 0
    with pytest.raises(Exception, match="view must be"):
        lab.export_png(view="everything")


def test_value_weighted_view_for_an_hf_model():
    transformers = pytest.importorskip("transformers")
    import torch

    from workbench.models.hf_adapter import from_hf
    from workbench.tokenizers import ByteTokenizer

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    hf = from_hf(transformers.LlamaForCausalLM(cfg).eval(), ByteTokenizer())
    lab = AttentionLab(hf, TEXT, debounce=0)
    lab.select(1, 3)
    lab.mode.value = "value-weighted"
    probe = AttentionProbe(hf, TEXT)
    w = probe.probs(1, [3])[0].numpy() * probe.value_norms(1, [3])[0].numpy()[None]
    np.testing.assert_allclose(lab.image_source.data["image"][0], w / w.sum(-1, keepdims=True), atol=1e-6)
    assert np.isfinite(np.array(lab.tile_source.data["value"])).all()
    lab.metric.value = "value_sink_mass"
    np.testing.assert_allclose(np.array(lab.tile_source.data["value"]).reshape(2, 4),
                               head_metrics(probe).value_sink_mass, atol=1e-6)


def test_value_weighted_view_says_why_when_a_family_has_no_layout(monkeypatch):
    """GPT-NeoX has a layout (value-weighted view works); a family whose attention bypasses transformers' attention
    interface gets a visible notice naming the model class and the missing part."""
    transformers = pytest.importorskip("transformers")
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.gpt_neox import modeling_gpt_neox

    from workbench.models.hf_adapter import from_hf
    from workbench.tokenizers import ByteTokenizer

    def neox():
        torch.manual_seed(0)
        cfg = transformers.GPTNeoXConfig(vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=128)
        return from_hf(transformers.GPTNeoXForCausalLM(cfg).eval(), ByteTokenizer())

    lab = AttentionLab(neox(), TEXT, debounce=0)
    lab.mode.value = "value-weighted"
    assert "unavailable" not in lab.info.value

    class Legacy:
        def get_interface(self, name, default):
            return default if name == "eager" else sdpa_attention_forward

    monkeypatch.setattr(modeling_gpt_neox, "ALL_ATTENTION_FUNCTIONS", Legacy())
    lab = AttentionLab(neox(), TEXT, debounce=0)
    lab.mode.value = "value-weighted"
    assert "GPTNeoXForCausalLM" in lab.info.value and "attention interface" in lab.info.value


def test_widget_bad_inputs_are_specific_messages(model):
    from workbench.attention import IndexOutOfRangeError

    lab = AttentionLab(model, TEXT, debounce=0)
    with pytest.raises(IndexOutOfRangeError, match="no head L3 H0 in a 3x4 model"):
        lab.select(3, 0)
    with pytest.raises(IndexOutOfRangeError, match="heads 0..3"):
        lab.select(0, 4)
    lab.text.value = "x" * 129  # context of 128, no long-context policy
    assert "exceed the model&#x27;s context of 128" in lab.info.value and "policy" in lab.info.value
    lab.text.value = TEXT
    lab.compare_with(text=TEXT[::-1])
    assert lab.comparing
    lab.compare_with(model=attention_gpt("rope", n_layer=2, n_head=4, n_embd=64, block_size=128))
    assert "same layers x heads as the model (3x4), got 2x4" in lab.info.value
    assert_cleared(lab)  # no stale figures under the error
    lab.compare_with(text="")  # an empty compare box means no comparison, not an error
    assert not lab.comparing and "tokens" in lab.info.value


def assert_cleared(lab):
    """Under an error nothing old stays drawn: no tiles, no head image, no keys, no bars, no comparison row."""
    assert lab.data is None and lab.view is None and lab.compare_views is None
    assert lab.tile_source.data["value"] == [] and lab.image_source.data["image"] == []
    assert lab.keys_source.data["key"] == [] and lab.dist_source.data["label"] == []
    assert lab.compare_box.layout.display == "none"
    assert "see the message" in lab.detail_figure.title.text and "see the message" in lab.overview_figure.title.text


def test_checkpoint_menu_compares_two_checkpoints(model):
    ck = {"seed 5": attention_gpt("rope", n_layer=3, n_head=4, n_embd=64, block_size=128, seed=5),
          "seed 6": attention_gpt("rope", n_layer=3, n_head=4, n_embd=64, block_size=128, seed=6)}
    lab = AttentionLab(model, TEXT, debounce=0, checkpoints=ck)
    assert list(lab.checkpoint.options) == ["(none)", "seed 5", "seed 6"] and not lab.comparing
    lab.select(0, 3)
    lab.checkpoint.value = "seed 6"
    pb = AttentionProbe(ck["seed 6"], TEXT).probs(0, [3])[0].numpy()
    pa = AttentionProbe(model, TEXT).probs(0, [3])[0].numpy()
    np.testing.assert_allclose(lab.compare_sources["b"].data["image"][0], pb, atol=1e-6)
    np.testing.assert_allclose(lab.compare_sources["diff"].data["image"][0], pb - pa, atol=1e-6)
    assert lab.compare_panels["b"].figure.title.text == "B: seed 6 L0H3 raw"
    lab.checkpoint.value = "(none)"
    assert not lab.comparing and lab.compare_box.layout.display == "none"
    assert AttentionLab(model, TEXT, debounce=0).checkpoint.layout.display == "none"  # no menu without checkpoints


def test_tiles_keep_their_colour_after_a_click(lab):
    lab.tile_source.selected.indices = [5]
    assert lab.selected == (1, 1)
    g, ng = lab._tiles.glyph, lab._tiles.nonselection_glyph
    assert ng.fill_alpha == g.fill_alpha == 1.0 and ng.line_alpha == 1.0  # unselected tiles are not faded
