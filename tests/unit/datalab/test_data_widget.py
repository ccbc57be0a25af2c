"""DataLab driven from Python on the shipped docs-byte: every tab's figure sources hold the core's numbers, live runs
go through the background machinery (progress, Stop, one at a time), every bad input of the issue is a visible
notice after which the widget keeps working, and every tab's export round-trips what it shows."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("jupyter_bokeh")

from workbench.datalab import lab as glue  # noqa: E402
from workbench.datalab.baselines import baseline_rows  # noqa: E402
from workbench.datalab.compress import compress_report  # noqa: E402
from workbench.datalab.distill import load_distill  # noqa: E402
from workbench.datalab.mixing import load_mixing  # noqa: E402
from workbench.datalab.selection import load_selection, select_score_range  # noqa: E402
from workbench.datalab.traps import load_traps  # noqa: E402
from widgets.data_lab import TABS, DataLab  # noqa: E402

TEXT = "for item in items:\n    print(item)\n"


@pytest.fixture(scope="module")
def shipped():
    from workbench.models import load_pretrained

    return load_pretrained("docs-byte").eval()


@pytest.fixture(scope="module")
def lab(shipped, tmp_path_factory):
    return DataLab(shipped, text=TEXT, steps=2, export_dir=tmp_path_factory.mktemp("exports"), background=False)


def _notice(lab) -> str:
    return lab.info.value


def _ok(lab) -> bool:
    return "#b00020" not in lab.info.value and lab.info.value != ""


# --- compression ----------------------------------------------------------------------------------------------------
def test_compression_tab_shows_the_core_numbers(lab, shipped):
    lab.show_tab("compression")
    lab.text.value = TEXT
    lab.compress_button.click()
    data = TEXT.encode()
    res = compress_report(shipped, data)
    src = lab.coder_source.data
    assert src["size"][0] == len(res.blob) and src["bpb"][0] == pytest.approx(res.bits_per_byte)
    assert src["bpb"][1] == pytest.approx(res.ideal_bits_per_byte)
    base = {r.method: r.size for r in baseline_rows(data)}
    assert dict(zip(src["method"][2:], src["size"][2:])) == base
    np.testing.assert_allclose(lab.heat_source.data["bits"], res.token_bits)
    assert lab.blob.value == glue.blob_to_text(res.blob)
    lab.decompress_button.click()
    assert lab.decoded == data and "identical" in lab.round_trip.value


def test_bad_blobs_are_notices_and_the_tab_recovers(lab, shipped):
    from tests.factories import byte_gpt

    lab.show_tab("compression")
    lab.text.value = TEXT
    lab.compress_button.click()
    good = glue.blob_from_text(lab.blob.value)
    other = byte_gpt(3)
    from workbench.datalab.compress import compress

    cases = {"truncated": good[:-5], "corrupt": good[:-3] + bytes([good[-3] ^ 0xFF]) + good[-2:],
             "another model": compress(other, TEXT.encode())}
    words = {"truncated": "truncated", "corrupt": "", "another model": "model"}
    for name, blob in cases.items():
        lab.blob.value = glue.blob_to_text(blob)
        lab.decompress_button.click()
        assert lab.error.startswith("compression:"), (name, _notice(lab))
        assert words[name] in lab.error, (name, lab.error)
        assert lab.decoded is None
    lab.blob.value = "not base64 !!"
    lab.decompress_button.click()
    assert "base64" in lab.error
    lab.text.value = ""
    lab.compress_button.click()
    assert "empty" in lab.error
    lab.text.value = TEXT                      # recovers
    lab.compress_button.click()
    lab.decompress_button.click()
    assert not lab.error and lab.decoded == TEXT.encode()


# --- selection ------------------------------------------------------------------------------------------------------
def test_selection_histogram_and_band(lab):
    lab.show_tab("selection")
    sel = load_selection()
    assert sum(lab.hist_source.data["count"]) == len(sel.scores)
    lo, hi = float(np.quantile(sel.scores, 0.4)), float(np.quantile(sel.scores, 0.7))
    lab.band.value = (lo, hi)
    lo, hi = lab.band.value
    n = len(select_score_range(sel.scores, lo, hi))
    assert f"keeps {n} of {len(sel.scores)}" in lab.band_note.value
    curves = dict(zip(lab.selection_source.data["label"], lab.selection_source.data["ys"]))
    for i, b in enumerate(sel.bands):
        label = f"shipped: {b} band" if b != "random" else "shipped: random third"
        np.testing.assert_allclose(curves[label], sel.curves[i].mean(0))
    lab.band.value = (lab.band.min, lab.band.min + 0.05)   # below every score
    assert "outside the scores' range" in lab.error
    lab.train_button.click()                                 # refused up front, nothing runs
    assert lab.task is None or not lab.busy
    assert "outside" in lab.error
    lab.band.value = (lo, hi)
    assert not lab.error


def test_selection_trains_in_the_background_with_progress_and_stop(lab):
    lab.show_tab("selection")
    sel = load_selection()
    lo, hi = float(np.quantile(sel.scores, 0.5)), float(sel.scores.max())
    lab.band.value = (lo, hi)
    lab.steps.value = 2
    n_before = len(lab.selection_source.data["label"])
    task = lab.run_selection(background=True)
    assert task is not None and lab.train_button.description == "Stop"
    assert lab.run_selection(background=True) is None          # one run at a time
    assert lab.wait_task(120)
    assert lab.train_button.description == "train on band" and lab.progress.bar_style == "success"
    assert lab.progress.value == lab.progress.max == 4
    run = lab.live_runs["selection"][-1]
    labels = lab.selection_source.data["label"]
    assert len(labels) == n_before + 2
    ys = dict(zip(labels, lab.selection_source.data["ys"]))
    assert ys[labels[-2]] == run["band"]["val_loss"] and ys[labels[-1]] == run["random"]["val_loss"]
    assert run["n_chunks"] == len(select_score_range(sel.scores, *lab.band.value))
    # Stop: a long run ends at the next step, the button comes back, the curves shown stay
    lab.steps.value = 500
    shown = list(labels)
    lab.run_selection(background=True)
    lab.train_button.click()                                   # reads Stop: stops
    assert lab.wait_task(120)
    assert lab.train_button.description == "train on band" and not lab.train_button.disabled
    assert "stopped" in _notice(lab)
    assert [x for x in lab.selection_source.data["label"]][:len(shown)] == shown
    lab.steps.value = 2


# --- mixing ---------------------------------------------------------------------------------------------------------
def test_mixing_law_and_slider(lab):
    lab.show_tab("mixing")
    mix = load_mixing()
    for j in range(len(mix.domains)):
        np.testing.assert_allclose(lab.law_source.data["ys"][j], mix.grid_loss[:, j])
    lab.share.value = 0.3
    r = np.array([0.3, 0.7])
    assert lab.mix_prediction == pytest.approx({d: f.predict(r[None])[0] for d, f in zip(mix.domains, mix.fits)})
    assert lab.share_span.location == pytest.approx(0.3) and lab.proportions.value == "0.30, 0.70"
    lab.proportions.value = "0.5, 0.6"
    assert "sum to 1" in lab.error
    lab.proportions.value = "0.8, 0.2"
    assert not lab.error and lab.share.value == pytest.approx(0.8)


# --- distillation and traps -----------------------------------------------------------------------------------------
def test_distillation_curves_and_teacher_with_another_tokenizer(lab):
    lab.show_tab("distillation")
    d = load_distill()
    ys = dict(zip(lab.distill_source.data["label"], lab.distill_source.data["ys"]))
    for i, a in enumerate(d.arms):
        np.testing.assert_allclose(ys[f"shipped: {a}"], d.curves[i].mean(0))
    lab.teacher.value = "docs-bpe"
    lab.distill_button.click()
    assert "tokenizer" in lab.error and not lab.busy
    lab.teacher.value = "docs-byte-draft"
    lab.distill_button.click()
    assert lab.wait_task(120) and not lab.error
    run = lab.live_runs["distillation"][-1]
    assert lab.distill_source.data["ys"][-1] == run["val_loss"] and len(run["steps"]) >= 1


def test_traps_points_and_a_trap_longer_than_the_context(lab):
    lab.show_tab("traps")
    t = load_traps()
    src = lab.trap_source.data
    draft = [a for a, k in zip(src["auc"], src["kind"]) if k == "shipped, vs docs-byte-draft"]
    clean = [a for a, k in zip(src["auc"], src["kind"]) if k == "shipped, vs micro model without traps"]
    np.testing.assert_allclose(draft, t.auc_mean)
    np.testing.assert_allclose(clean, np.nanmean(t.auc_clean, 1))
    np.testing.assert_allclose(lab.p_source.data["p_value"], t.p_mean)
    lab.trap_len.value = 65
    lab.trap_button.click()
    assert "longer than the model's context" in lab.error and not lab.busy
    lab.trap_len.value, lab.copies.value = 48, 5
    lab.trap_button.click()
    assert lab.wait_task(120) and not lab.error
    src = lab.trap_source.data
    assert src["kind"][-1] == "live, vs docs-byte-draft" and src["copies"][-1] == 5
    assert src["auc"][-1] == lab.live_runs["traps"][-1]["auc"]
    assert lab.p_source.data["p_value"][-1] == lab.live_runs["traps"][-1]["p_value"]
    assert "5" in lab.auc_figure.x_range.factors


# --- export ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tab", TABS)
def test_every_tab_exports_png_and_data(lab, tab, tmp_path):
    lab.show_tab(tab)
    if tab == "compression":
        lab.text.value = TEXT
        lab.compress_button.click()
    png = lab.export_png(tmp_path / f"{tab}.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = lab.export_data(tmp_path / f"{tab}.json")
    doc = json.loads(path.read_text())
    assert doc["state"]["tab"] == tab
    tables = lab.export_tables()
    assert set(doc["tables"]) == set(lab._TAB_TABLES[tab]) == set(tables)
    for name, cols in tables.items():
        for col, vals in cols.items():
            got = doc["tables"][name][col]
            want = json.loads(json.dumps(vals, default=lambda o: o.tolist()))
            if col in ("bits", "bpb", "size", "loss", "auc", "p_value", "count", "final"):
                np.testing.assert_allclose(np.array(got, dtype=float), np.array(want, dtype=float))
            else:
                assert got == want or col in ("xs", "ys"), (tab, name, col)
