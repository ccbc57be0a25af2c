"""Export from every lab, driven from Python: a PNG of what the widget shows (drawn without a browser) and the data
behind it (.json, .csv, .npz) compared with the widget's own data sources and core results; the buttons do the same
and say so in a visible notice; bad paths and empty views give specific notices."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("jupyter_bokeh")
pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (bokeh depends on pillow)

from widgets.export import ExportError, shown_layout  # noqa: E402
from workbench.tokenizers import ByteTokenizer  # noqa: E402
from tests.factories import byte_gpt  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models():
    return byte_gpt(0, 2), byte_gpt(1, 1)


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def assert_picture(path, lab, min_size=(300, 150)):
    """A decodable PNG of the layout's size (1.5 px per bokeh px, plus the header), with real content."""
    px = read_png(path)
    h, w, _ = px.shape
    lw, lh = shown_layout(lab).size
    assert w == round((lw + 20) * 1.5) and h > (lh + 20) * 1.5
    assert w >= min_size[0] and h >= min_size[1]
    assert px.std() > 20  # not blank
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50  # text, axes and glyphs, not a flat fill
    return px


def assert_saved_notice(lab, path, what):
    v = lab.info.value
    assert f"saved {what} to {path}" in v and 'download="' in v and "href=\"data:" in v


def load_json(path):
    return json.loads(Path(path).read_text())


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# -------------------------------------------------------------------------------------------------- Playground
def test_playground_png_and_data_round_trip(models, tmp_path):
    from widgets.playground import Playground

    pg = Playground(models[0], prompt="def f(x):", debounce=0)
    png = pg.export_png(tmp_path / "pg.png")
    px = assert_picture(png, pg)
    assert_saved_notice(pg, png, "PNG")
    assert (px[..., 0] < 120).sum() > 500  # the blue bars are there (#4C72B0)

    src = pg.source.data
    doc = load_json(pg.export_data(tmp_path / "pg.json"))
    assert doc["widget"] == "Playground" and doc["state"]["prompt"] == "def f(x):"
    assert doc["tables"]["source"]["prob"] == list(src["prob"]) and doc["tables"]["source"]["id"] == list(src["id"])
    rows = read_csv(pg.export_data(tmp_path / "pg.csv"))
    assert [r["label"] for r in rows] == list(src["label"])
    assert [float(r["prob"]) for r in rows] == list(src["prob"])  # exact: floats written as repr
    with np.load(pg.export_data(tmp_path / "pg.npz")) as z:
        np.testing.assert_array_equal(z["source.prob"], src["prob"])
        assert z["source.label"].tolist() == list(src["label"])
        assert json.loads(str(z["meta.json"]))["state"]["k"] == 10


def test_playground_buttons_bad_paths_and_empty_view(models, tmp_path):
    from widgets.playground import Playground

    pg = Playground(models[0], prompt="abc", debounce=0)
    pg.export_dir = tmp_path / "exports"
    pg.export_png_button.click()
    (png,) = (tmp_path / "exports").glob("playground-*.png")
    assert_picture(png, pg)
    assert_saved_notice(pg, png, "PNG")
    pg.export_format.value = ".csv"
    pg.export_data_button.click()
    (data,) = (tmp_path / "exports").glob("playground-*.csv")
    assert [float(r["prob"]) for r in read_csv(data)] == list(pg.source.data["prob"])

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot write .*not-a-folder"):
        pg.export_png(blocker / "x.png")
    assert "export failed: cannot write" in pg.info.value and "#b00020" in pg.info.value
    pg.export_dir = blocker / "exports"  # a button click never raises: the notice says why
    pg.export_data_button.click()
    assert "export failed: cannot write" in pg.info.value and "not-a-folder" in pg.info.value
    with pytest.raises(ExportError, match="unknown data format '.xlsx'"):
        pg.export_data(tmp_path / "x.xlsx")
    with pytest.raises(ExportError, match="needs a .png path"):
        pg.export_png(tmp_path / "x.jpg")

    pg.prompt.value = ""  # nothing shown yet
    with pytest.raises(ExportError, match="nothing to export yet"):
        pg.export_png(tmp_path / "empty.png")
    assert "nothing to export yet" in pg.info.value
    pg.export_png_button.click()
    assert "nothing to export yet" in pg.info.value and not (tmp_path / "empty.png").exists()


# ------------------------------------------------------------------------------------------------ TokenizerLab
def test_tokenizer_lab_exports(tmp_path):
    from pydoc_data.topics import topics

    from widgets.tokenizer_lab import TokenizerLab
    from workbench.tokenizers import BPETokenizer, measure

    bpe = BPETokenizer.train("\n".join(topics[k] for k in sorted(topics)[:12])[:20_000], 300, progress=False)
    lab = TokenizerLab([ByteTokenizer(), bpe], text="the cat sat on the mat, 12345", debounce=0)
    png = lab.export_png(tmp_path / "tok.png")
    assert_picture(png, lab)
    doc = load_json(lab.export_data(tmp_path / "tok.json"))
    m = doc["tables"]["metrics_source"]
    assert m["name"] == lab.names and m["bytes_per_token"] == list(lab.metrics_source.data["bytes_per_token"])
    assert doc["tables"]["pairs_source"]["count"] == list(lab.pairs_source.data["count"])
    stats = doc["state"]["stats"]
    assert stats[lab.names[1]]["n_tokens"] == measure(bpe, lab.text.value).n_tokens
    seg = doc["state"]["segmentations"][lab.names[1]]
    assert [(s["id"], s["start"], s["end"]) for s in seg] == [(s.id, s.start, s.end) for s in bpe.spans(lab.text.value)]
    rows = read_csv(lab.export_data(tmp_path / "pairs.csv", table="pairs_source"))
    assert [int(r["count"]) for r in rows] == list(lab.pairs_source.data["count"])
    with pytest.raises(ExportError, match="no table 'nope'"):
        lab.export_data(tmp_path / "x.csv", table="nope")


# ------------------------------------------------------------------------------------------------- DecodingLab
def test_decoding_lab_exports_the_shown_tab(models, tmp_path):
    from widgets.decoding_lab import DecodingLab

    lab = DecodingLab(models[0], models[1], prompt="abc", max_new_tokens=8, debounce=0)
    lab.step()
    lab.step()
    step_png = assert_picture(lab.export_png(tmp_path / "step.png"), lab)
    doc = load_json(lab.export_data(tmp_path / "dec.json"))
    t = doc["tables"]["timeline_source"]
    assert t["entropy"] == list(lab.timeline_source.data["entropy"]) and t["step"] == [1, 2, 3]
    assert doc["tables"]["stage_source"]["prob"] == list(lab.stage_source.data["prob"])
    assert doc["state"]["result_type"] == type(lab.result).__name__ and doc["state"]["cursor"] == 3
    assert [s["chosen"] for s in doc["state"]["result"]["steps"]] == [s.chosen for s in lab.result.steps]

    lab.strategy.value = "beam"
    lab.play()
    assert lab.tabs.selected_index == 1
    beam_png = assert_picture(lab.export_png(tmp_path / "beam.png"), lab)
    assert beam_png.shape != step_png.shape  # only the selected tab is drawn
    with np.load(lab.export_data(tmp_path / "beam.npz")) as z:
        np.testing.assert_array_equal(z["beam_nodes.x"], lab.beam_nodes.data["x"])
        np.testing.assert_array_equal(z["beam_nodes.score"], lab.beam_nodes.data["score"])
    lab.export_format.value = ".json"
    lab.export_dir = tmp_path / "clicks"
    lab.export_data_button.click()
    (data,) = (tmp_path / "clicks").glob("decoding-lab-*.json")
    assert load_json(data)["tables"]["beam_edges"]["x1"] == list(lab.beam_edges.data["x1"])
    assert_saved_notice(lab, data, "data")


# -------------------------------------------------------------------------------------------------- ScalingLab
def test_scaling_lab_exports(tmp_path):
    from widgets.scaling_lab import ScalingLab

    lab = ScalingLab(bootstrap=0)
    assert lab.export_format.value == ".csv"
    lab.export_dir = tmp_path
    lab.export_data_button.click()
    (path,) = tmp_path.glob("scaling-lab-*.csv")
    rows = read_csv(path)  # the runs on the loss figure, as drawn
    assert [float(r["C"]) for r in rows] == lab.data.C.tolist()
    assert [float(r["loss"]) for r in rows] == lab.data.loss.tolist()
    doc = load_json(lab.export_data(tmp_path / "fit.json"))
    assert doc["state"]["fit"]["params"] == pytest.approx(lab.fit.params, rel=0, abs=0)
    assert doc["state"]["readout"]["N_opt"] == lab.readout["N_opt"]
    assert doc["tables"]["frontier_source"]["loss"] == list(lab.frontier_source.data["loss"])
    png = lab.export_png(tmp_path / "loss.png")
    px = assert_picture(png, lab)
    assert (np.abs(px.astype(int) - [255, 127, 14]).sum(-1) < 40).sum() > 200  # the orange frontier


# ------------------------------------------------------------------------------------------------ AttentionLab
def test_attention_lab_exports(tmp_path):
    from tests.factories import attention_gpt

    from widgets.attention_lab import AttentionLab

    model = attention_gpt("rope", n_layer=2, n_head=2, n_embd=32, block_size=64)
    lab = AttentionLab(model, "to be or not to be", compare_text="to be or not to go", debounce=0,
                       export_dir=tmp_path)
    lab.export_png_button.click()  # the button draws the whole view (tiles, head, lines, distribution, A | B | B - A)
    (png,) = tmp_path.glob("attention-lab-*.png")
    assert_picture(png, lab, min_size=(1200, 1200))
    assert_saved_notice(lab, png, "PNG")
    calls = []
    lab.export_view_png = lambda path: calls.append(path) or path  # export_png(view="widget") is the same drawing
    assert lab.export_png(tmp_path / "w.png", view="widget") == tmp_path / "w.png" and calls == [tmp_path / "w.png"]
    lab.export_data_button.click()  # default .npz: export_npz's layout
    (npz,) = tmp_path.glob("attention-lab-*.npz")
    with np.load(npz) as z:
        np.testing.assert_array_equal(z["image"], lab.image_source.data["image"][0])
        np.testing.assert_array_equal(z["compare_diff"], lab.compare_sources["diff"].data["image"][0])
    doc = load_json(lab.export_data(tmp_path / "att.json"))
    assert doc["tables"]["tile_source"]["value"] == list(lab.tile_source.data["value"])
    np.testing.assert_allclose(doc["state"]["metrics"]["sink_mass"], lab.metrics.get("sink_mass"))
    assert doc["state"]["tokens"] == lab.probe_tokens()


def test_png_keeps_the_shown_range_tick_labels_and_an_axis_above():
    """The redraw shows what the browser shows: the visible x range (not every tick's position), tick-label overrides
    on both axes, and a second axis above the plot with its own labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bokeh.models import FixedTicker, LinearAxis, Range1d
    from bokeh.plotting import figure

    from widgets.export import _draw_figure

    f = figure(width=400, height=200, x_range=Range1d(9.5, 19.5), y_range=Range1d(-0.5, 2.5), title="t")
    f.rect(x=list(range(20)), y=[0] * 20, width=1, height=1)
    f.xaxis.ticker = FixedTicker(ticks=list(range(20)))
    f.yaxis.ticker = FixedTicker(ticks=[0, 1, 2])
    f.yaxis.major_label_overrides = {0: "embed", 1: "block 0", 2: "block 1"}
    top = LinearAxis(ticker=FixedTicker(ticks=list(range(20))), major_label_overrides={i: f"t{i}" for i in range(20)})
    f.add_layout(top, "above")
    mfig = plt.figure(figsize=(4, 2), dpi=100)
    try:
        ax = _draw_figure(mfig, f, 0, 0, 400, 200, 400, 200)
        mfig.canvas.draw()
        assert ax.get_xlim() == (9.5, 19.5)
        assert [t.get_text() for t in ax.get_yticklabels()] == ["embed", "block 0", "block 1"]
        secs = [c for c in ax.child_axes if c.xaxis.get_ticks_position() in ("top", "unknown")] or ax.child_axes
        labels = [t.get_text() for t in secs[0].get_xticklabels()]
        assert labels == [f"t{i}" for i in range(10, 20)]
    finally:
        plt.close(mfig)
