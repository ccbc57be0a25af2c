"""ResidualLab driven from Python: set traits, call the click handlers, assert that the figures' data sources hold the
core's numbers (lens, DLA, patching, input attribution, neurons), that bad input is a visible notice, and that every
view's export round-trips what it shows. On a TinyGPT, the shipped docs-byte and two HF families."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("jupyter_bokeh")

from workbench.models import GPTConfig, TinyGPT  # noqa: E402
from workbench.residual import lab as glue  # noqa: E402
from workbench.residual.lens import logit_lens  # noqa: E402
from workbench.tokenizers import ByteTokenizer  # noqa: E402
from widgets.residual_lab import TABS, ResidualLab  # noqa: E402

TEXT = "def f(x):\n    return x + 1"


def byte_model(seed: int = 0, n_layer: int = 2) -> TinyGPT:
    tok = ByteTokenizer()
    torch.manual_seed(seed)
    m = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=n_layer, n_head=2, n_embd=32, block_size=64,
                          pos="rope"), tokenizer=tok, name=f"t{seed}").eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)
    return m


@pytest.fixture(scope="module")
def tiny():
    return byte_model()


@pytest.fixture(scope="module")
def shipped():
    from workbench.models.pretrained import load_pretrained

    return load_pretrained("docs-byte").eval()


def _hf(family):
    from tests import hf_families as F

    return F.loaded(family)


@pytest.fixture
def lab(tiny, tmp_path):
    return ResidualLab(tiny, TEXT, clean="x = 1; y = x", corrupted="z = 1; y = z", answer="1", wrong="2",
                       debounce=0, export_dir=tmp_path, background=False)


# --- every model of the interface -----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["tiny", "shipped", "llama", "gpt2"])
def test_opens_and_every_tab_draws(which, tiny, shipped, tmp_path):
    model = {"tiny": tiny, "shipped": shipped}.get(which) or _hf(which)
    text = "def area(w, h):\n    return w * h"
    lab = ResidualLab(model, text, clean="a = 1; b = a", corrupted="c = 1; b = c", answer=" ", wrong="",
                      debounce=0, export_dir=tmp_path, background=False)
    r = logit_lens(model, text, k=max(5, lab.k))
    T, B = len(r.ids), len(r.boundaries)
    assert len(lab.lens_source.data["prob"]) == T * B
    np.testing.assert_allclose(lab.lens_source.data["prob"], r.top_probs[:, :, 0].reshape(-1), atol=1e-9)
    assert "error" not in lab.info.value and "#b00020" not in lab.info.value, lab.info.value
    for tab in TABS[1:]:
        lab.show_tab(tab)
        if tab == "patching":
            lab.run_patching()
            lab.wait_task(120)
        assert "#b00020" not in lab.info.value, (tab, lab.info.value)  # no error notice
    assert len(lab.dla_source.data["value"]) > 0
    assert len(lab.patch_source.data["effect"]) > 0
    assert len(lab.attr_source.data["score"]) == T
    assert len(lab.neuron_source.data["activation"]) > 0


# --- lens -----------------------------------------------------------------------------------------------------------
def test_lens_grid_shows_the_cores_numbers(lab, tiny):
    r = logit_lens(tiny, TEXT, k=max(5, lab.k))
    d = lab.lens_source.data
    T, B = len(r.ids), len(r.boundaries)
    assert d["boundary"] == [b for b in range(B) for _ in range(T)]
    assert d["position"] == list(range(T)) * B
    np.testing.assert_allclose(d["prob"], r.top_probs[:, :, 0].reshape(-1), atol=1e-12)
    np.testing.assert_allclose(d["kl"], r.kl.reshape(-1), atol=1e-12)
    np.testing.assert_allclose(d["entropy"], r.entropy.reshape(-1), atol=1e-12)
    assert d["top1"] == [glue.short_token(r.top_tokens[b][t][0], 4) for b in range(B) for t in range(T)]
    # hover: the top-5 of each cell
    assert d["top5"][0].count(",") == 4
    assert d["value"] == d["prob"]  # colour: probability
    lab.colour_by.value = "KL"
    np.testing.assert_allclose(lab.lens_source.data["value"], r.kl.reshape(-1), atol=1e-12)
    assert lab.lens_mapper.low == 0 and lab.lens_mapper.high == pytest.approx(r.kl.max())
    assert lab.lens_bar.title.startswith("KL")
    # the last boundary is the model itself: KL 0
    assert np.allclose(r.kl[-1], 0, atol=1e-9)


def test_clicking_a_cell_fills_the_topk_bars(lab, tiny):
    r = logit_lens(tiny, TEXT, k=max(5, lab.k))
    T = len(r.ids)
    i = 1 * T + 7  # boundary 1, position 7
    lab._on_tap([i])
    assert lab.cell == (1, 7)
    ids, probs, toks = r.distribution(1, 7, lab.k)
    d = lab.topk_source.data
    assert d["id"] == ids.tolist()
    np.testing.assert_allclose(d["prob"], probs, atol=1e-12)
    assert len(d["token"]) == lab.k and list(lab.topk_figure.x_range.factors) == d["token"]
    assert "position 7" in lab.topk_figure.title.text
    lab.select_cell(0, 0)
    assert lab.lens_source.selected.indices == [0]
    with pytest.raises(IndexError):
        lab.select_cell(99, 0)


def test_tuned_toggle(tiny, tmp_path):
    from workbench.residual.tuned_lens import TunedLens

    lab = ResidualLab(tiny, TEXT, debounce=0, export_dir=tmp_path, background=False)
    assert lab.lens_kind.disabled and "none ships" in lab.lens_note.value  # no tuned lens for a random model
    lens = TunedLens.for_model(tiny)
    with torch.no_grad():
        for p in lens.parameters():
            p.normal_(0, 0.05)
    lab = ResidualLab(tiny, TEXT, lens=lens, debounce=0, export_dir=tmp_path, background=False)
    assert not lab.lens_kind.disabled and lab.lens_note.value == ""
    lab.lens_kind.value = "tuned"
    r = logit_lens(tiny, TEXT, k=max(5, lab.k), lens=lens)
    assert lab.lens_result.kind == "tuned" and lab.lens_figure.title.text.startswith("tuned lens")
    np.testing.assert_allclose(lab.lens_source.data["prob"], r.top_probs[:, :, 0].reshape(-1), atol=1e-12)
    lab.lens_kind.value = "logit"
    assert lab.lens_result.kind == "logit"


def test_shipped_model_has_a_tuned_lens_or_says_why(shipped, tmp_path):
    from workbench.residual.tuned_lens import load_tuned_lens

    lab = ResidualLab(shipped, TEXT, debounce=0, export_dir=tmp_path, background=False)
    assert lab.lens_kind.disabled == (load_tuned_lens(shipped) is None)


# --- direct logit attribution ---------------------------------------------------------------------------------------
def test_dla_bars_equal_the_core(lab, tiny):
    from workbench.residual.dla import direct_logit_attribution

    lab.show_tab("direct attribution")
    r = logit_lens(tiny, TEXT)
    a = direct_logit_attribution(tiny, TEXT, int(r.final_ids[-1]))  # default target: the model's top prediction
    d = lab.dla_source.data
    assert d["label"] == list(a.labels)
    np.testing.assert_allclose(d["value"], a.values, atol=1e-12)
    lab.target.value = "x"
    lab.contrast.value = "1"
    a = direct_logit_attribution(tiny, TEXT, "x", contrast="1")
    np.testing.assert_allclose(lab.dla_source.data["value"], a.values, atol=1e-12)
    assert "minus" in lab.dla_figure.title.text
    assert set(lab.dla_source.data["colour"]) <= {"#2166ac", "#b2182b"}
    # the key: one swatch per colour shown, grouped by the bars' own "effect" column (also in the PNG redraw)
    from bokeh.models import Legend

    from widgets.export import _Drawer, _grouped_legend

    (key,) = [x for x in lab.dla_figure.above if isinstance(x, Legend)]
    assert key.items[0].label.field == "effect" and key.items[0].renderers == [lab._dla_bars]
    d = lab.dla_source.data
    assert {(c, e) for c, e in zip(d["colour"], d["effect"])} == \
        {("#2166ac", "raises the target"), ("#b2182b", "lowers it")}
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        labels = [label for label, _ in _grouped_legend(_Drawer(lab.dla_figure, ax), key.items[0])]
    finally:
        plt.close(fig)
    assert sorted(labels) == ["lowers it", "raises the target"]


# --- patching -------------------------------------------------------------------------------------------------------
def test_patching_heat_map_equals_the_core(lab, tiny):
    from workbench.residual.patching import activation_patching

    lab.show_tab("patching")
    lab.run_patching()
    res = activation_patching(tiny, "x = 1; y = x", "z = 1; y = z", "1", wrong="2", what="resid_pre",
                              direction="denoise")
    d = lab.patch_source.data
    L, C = res.effect.shape
    np.testing.assert_allclose(np.array(d["effect"]).reshape(L, C), res.effect, atol=1e-9)
    assert lab.progress.value == lab.progress.max > 0  # progress reached the end
    lab.what.value = "heads"
    lab.run_patching()
    res = activation_patching(tiny, "x = 1; y = x", "z = 1; y = z", "1", wrong="2", what="heads")
    shown = np.array(lab.patch_source.data["effect"]).reshape(res.effect.shape)
    np.testing.assert_allclose(shown, res.effect, atol=1e-9)
    assert lab.patch_figure.below[0].axis_label == "head"
    assert list(lab.patch_figure.below[0].ticker.ticks) == list(range(res.effect.shape[1]))


def test_patching_runs_in_the_background_and_stops(lab, monkeypatch):
    import workbench.residual.patching as patching

    gate, seen = threading.Event(), []
    real = patching.activation_patching

    def gated(*a, progress=None, **kw):
        gate.wait(10)
        return real(*a, progress=lambda d, t: (seen.append((d, t)), progress(d, t)), **kw)

    monkeypatch.setattr(patching, "activation_patching", gated)
    lab.show_tab("patching")
    task = lab.run_patching(background=True)
    assert task is not None and lab.busy and lab.patch_button.description == "Stop"
    assert lab.run_patching(background=True) is None  # never a second run
    lab.colour_by.value = "KL"  # the other views still react while patching runs
    np.testing.assert_allclose(lab.lens_source.data["value"], lab.lens_source.data["kl"])
    lab.patch_button.click()  # Stop
    gate.set()
    assert lab.wait_task(60)
    assert task.outcome == "stopped" and "stopped" in lab.info.value
    assert lab.patch_button.description == "patch" and not lab.busy
    # a full background run: progress is posted, the map is drawn
    task = lab.run_patching(background=True)
    assert lab.wait_task(120) and task.outcome == "done"
    assert seen and lab.progress.value == seen[-1][0] and lab.patch_result is not None


def test_prompts_of_different_lengths_are_a_notice(lab):
    lab.show_tab("patching")
    lab.corrupted.value = "zz = 1; y = zz"
    lab.run_patching()
    msg = lab.info.value
    assert "#b00020" in msg and "12" in msg and "14" in msg, msg  # both token counts named
    assert lab.patch_source.data["effect"] == []
    lab.corrupted.value = "z = 1; y = z"
    lab.run_patching()
    assert lab.patch_result is not None and "#b00020" not in lab.info.value


# --- input attribution ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gradient x input", "integrated gradients", "occlusion"])
def test_attribution_shades_with_the_cores_scores(lab, tiny, method):
    import workbench.residual.input_attribution as ia

    lab.show_tab("input attribution")
    lab.method.value = method
    fn = getattr(ia, {"gradient x input": "gradient_x_input", "integrated gradients": "integrated_gradients",
                      "occlusion": "occlusion"}[method])
    kw = {"baseline": " "} if method == "integrated gradients" else {}
    a = fn(tiny, TEXT, **kw)
    d = lab.attr_source.data
    np.testing.assert_allclose(d["score"], a.scores, atol=1e-6)
    if method == "integrated gradients":  # a space baseline: the completeness the notice reports holds
        assert lab.ig_baseline() == tiny.tokenizer.encode(" ")[0]
        assert abs(a.completeness_gap) < 1e-2 * max(1.0, abs(a.output - a.baseline_output))
        assert "completeness" in lab.info.value
    assert d["position"] == list(range(len(a.ids)))
    lo, hi = glue.signed_range(a.scores)
    assert (lab.attr_mapper.low, lab.attr_mapper.high) == (lo, hi)


# --- neurons --------------------------------------------------------------------------------------------------------
def test_neuron_tab_lists_the_cores_snippets(lab, tiny):
    from workbench.residual.neurons import top_activations

    lab.show_tab("neurons")
    lab.layer.value, lab.neuron.value = 1, 5
    res = top_activations(tiny, 1, 5, lab.corpus, k=lab.k)
    d = lab.neuron_source.data
    assert sorted(set(d["y"])) == list(range(len(res.snippets)))
    for r, s in enumerate(res.snippets):
        rows = [j for j, y in enumerate(d["y"]) if y == r]
        acts = np.asarray(s.activations, dtype=float)
        shown = [d["activation"][j] for j in rows]
        assert max(shown) == pytest.approx(float(s.max_activation))  # the peak is always in view
        assert all(any(abs(v - a) < 1e-12 for a in acts) for v in shown)


# --- bad input ------------------------------------------------------------------------------------------------------
def test_bad_inputs_are_visible_notices_and_the_widget_recovers(lab):
    lab.text.value = ""
    assert "#b00020" in lab.info.value and "empty" in lab.info.value
    assert lab.lens_source.data["prob"] == [] and "no data" in lab.lens_figure.title.text
    lab.text.value = TEXT
    assert "#b00020" not in lab.info.value and len(lab.lens_source.data["prob"]) > 0

    lab.show_tab("direct attribution")
    lab.target.value = "xyz"  # three bytes: not one token
    assert "#b00020" in lab.info.value and "xyz" in lab.info.value
    assert lab.dla_source.data["value"] == []
    lab.target.value = "y"
    assert "#b00020" not in lab.info.value and len(lab.dla_source.data["value"]) > 0

    lab.show_tab("neurons")
    lab.neuron.value = 10 ** 6
    assert "#b00020" in lab.info.value and "out of range" in lab.info.value
    lab.neuron.value = 3
    assert "#b00020" not in lab.info.value


def test_hf_target_without_text_is_a_notice(tmp_path):
    from tests.hf_families import TOKENIZER_VOCAB

    model = _hf("llama")
    lab = ResidualLab(model, "def f(x): return x", debounce=0, export_dir=tmp_path, background=False,
                      tab="direct attribution")
    lab.target.value = "a long phrase of several tokens"
    assert "#b00020" in lab.info.value
    lab.show_tab("input attribution")
    lab.attr_target.value = "several tokens here"
    assert "#b00020" in lab.info.value
    assert TOKENIZER_VOCAB < model.config.vocab_size  # padded ids exist and are never the default target
    lab.attr_target.value = ""
    assert "#b00020" not in lab.info.value


# --- export ---------------------------------------------------------------------------------------------------------
def _run_tab(lab, tab):
    lab.show_tab(tab)
    if tab == "patching":
        lab.run_patching()


@pytest.mark.parametrize("tab", TABS)
def test_export_round_trips_every_view(lab, tab, tmp_path):
    _run_tab(lab, tab)
    main = {"lens": "lens_source", "direct attribution": "dla_source", "patching": "patch_source",
            "input attribution": "attr_source", "neurons": "neuron_source"}[tab]
    col = {"lens": "prob", "direct attribution": "value", "patching": "effect", "input attribution": "score",
           "neurons": "activation"}[tab]
    shown = np.asarray(getattr(lab, main).data[col], dtype=float)
    assert shown.size
    png = lab.export_png(tmp_path / f"{tab}.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    npz = np.load(lab.export_data(tmp_path / f"{tab}.npz"))
    np.testing.assert_array_equal(npz[f"{main}.{col}"], shown)
    meta = json.loads(str(npz["meta.json"]))
    assert meta["state"]["tab"] == tab and meta["state"]["result"] is not None
    assert all(k.split(".")[0] in (main, "topk_source", "meta") for k in npz.files)  # only this tab's tables
    doc = json.loads(lab.export_data(tmp_path / f"{tab}.json").read_text())
    np.testing.assert_array_equal(np.asarray(doc["tables"][main][col], dtype=float), shown)
    csv = lab.export_data(tmp_path / f"{tab}.csv").read_text().splitlines()
    assert col in csv[0].split(",") and len(csv) == shown.size + 1


def test_export_before_patching_says_nothing_to_export(lab, tmp_path):
    lab.show_tab("patching")
    with pytest.raises(ValueError, match="nothing to export"):
        lab.export_data(tmp_path / "x.npz")
    assert "nothing to export" in lab.info.value
