"""Two compact Playgrounds side by side (notebook 01's "sample from both" cell) in JupyterLab at 1,400 x 1,000 with
the file browser open: nothing overflows the notebook column, no button or description is truncated, sliders keep
a track, both charts draw (issue 13, item 1)."""
import json
import urllib.request

import pytest

from .conftest import ARTIFACTS
from .helpers import assert_no_widget_errors, colourful_pixels, open_and_run_all

pytestmark = pytest.mark.browser

CELL = """import widgets
from workbench.models import load_pretrained

widgets.load_bokeh()
model = load_pretrained("docs-byte")
prompt = "The for statement"
widgets.side_by_side(widgets.Playground(model, prompt=prompt, compact=True),
                     widgets.Playground(model, prompt=prompt, compact=True))"""

GEOMETRY = """() => {
    const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
    const out = nb.querySelector('.jp-OutputArea-output .widget-hbox');  // the side-by-side row
    const column = out.closest('.jp-OutputArea-output').getBoundingClientRect();
    const pgs = [...out.children];
    const r = e => e.getBoundingClientRect();
    const clipped = [...out.querySelectorAll('.widget-label, .widget-button, .widget-label-basic, button')]
        .filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.trim());
    return {
        sidebar: !!document.querySelector('.jp-FileBrowser:not(.lm-mod-hidden)'),
        column: [column.left, column.right],
        boxes: pgs.map(p => [r(p).left, r(p).right, r(p).top]),
        buttons: [...out.querySelectorAll('button')].filter(b => b.textContent.includes('Sample'))
            .map(b => [r(b).width, b.scrollWidth > b.clientWidth + 1]),
        tracks: [...out.querySelectorAll('.widget-slider .slider-container')].map(e => r(e).width),
        inputs: [...out.querySelectorAll('.widget-text input')].map(e => [r(e).left, r(e).right]),
        clipped,
    };
}"""


def _write_notebook(base_url: str, name: str) -> None:
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                         "language": "python"}},
          "cells": [{"cell_type": "code", "id": "pg", "metadata": {}, "execution_count": None, "outputs": [],
                     "source": CELL}]}
    body = json.dumps({"type": "notebook", "format": "json", "content": nb}).encode()
    req = urllib.request.Request(f"{base_url}/api/contents/{name}", data=body, method="PUT",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()


def test_two_compact_playgrounds_fit_side_by_side(page, lab_server):
    _write_notebook(lab_server, "side_by_side.ipynb")
    open_and_run_all(page, lab_server, "side_by_side.ipynb")
    page.locator(".jp-OutputArea-output canvas").nth(1).wait_for(state="visible", timeout=60_000)
    page.wait_for_timeout(1500)
    g = page.evaluate(GEOMETRY)
    page.screenshot(path=str(ARTIFACTS / "playground_side_by_side.png"), full_page=False)
    assert_no_widget_errors(page)
    assert g["sidebar"], "the file browser should be open (the narrow case)"
    left, right = g["column"]
    assert len(g["boxes"]) == 2
    for a, b, _ in g["boxes"]:
        assert left - 1 <= a and b <= right + 1, (g["boxes"], g["column"])
    assert abs(g["boxes"][0][2] - g["boxes"][1][2]) < 2, "two compact playgrounds should share a row at ~900 px"
    assert len(g["buttons"]) == 2 and all(w >= 90 and not cut for w, cut in g["buttons"]), g["buttons"]
    assert len(g["tracks"]) == 4 and min(g["tracks"]) > 120, g["tracks"]
    for a, b in g["inputs"]:
        assert left <= a and b <= right, g["inputs"]
    canvases = [c.bounding_box() for c in page.locator(".jp-OutputArea-output canvas").all()]  # inside shadow roots
    canvases = [c for c in canvases if c and c["width"] > 0]
    assert len(canvases) >= 2 and all(c["x"] + c["width"] <= right + 1 for c in canvases), canvases
    assert g["clipped"] == [], g["clipped"]
    for canvas in page.locator(".jp-OutputArea-output canvas").all()[:2]:
        assert colourful_pixels(canvas.screenshot()) > 300


LAB_CELL = """import widgets
from workbench.data import load_corpus
from workbench.tokenizers import BPETokenizer, ByteTokenizer

widgets.load_bokeh()
docs = load_corpus("python-docs")[:60_000]
bpe = BPETokenizer.train(docs, 512, progress=False)
r2l = BPETokenizer.train(docs, 512, pattern="gpt4", digits="r2l3", progress=False)
widgets.TokenizerLab([ByteTokenizer(), bpe, r2l], sample=docs[:400])"""

LAB_GEOMETRY = """() => {
    const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
    const out = nb.querySelector('.wbtok').closest('.jp-OutputArea-output');  // not the BokehJS loader's output
    const right = out.getBoundingClientRect().right;
    const r = e => e.getBoundingClientRect();
    const cols = [...out.querySelectorAll('.wbtok')].slice(0, 3).map(e => e.closest('.widget-vbox'));
    const spans = [...out.querySelectorAll('.wbtok span')];
    return {
        right,
        cols: cols.map(c => [r(c).left, r(c).right]),
        split: spans.filter(s => s.getClientRects().length > 1).map(s => s.textContent).slice(0, 5),
        over: [...out.querySelectorAll('.widget-box, .widget-html')].filter(e => r(e).right > right + 1).length,
        clipped: [...out.querySelectorAll('.widget-label, button')]
            .filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.trim()),
    };
}"""


def test_tokenizer_lab_columns_fit_with_a_gutter(page, lab_server):
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                         "language": "python"}},
          "cells": [{"cell_type": "code", "id": "lab", "metadata": {}, "execution_count": None, "outputs": [],
                     "source": LAB_CELL}]}
    body = json.dumps({"type": "notebook", "format": "json", "content": nb}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{lab_server}/api/contents/tokenizer_lab.ipynb", data=body,
                                                  method="PUT", headers={"Content-Type": "application/json"}),
                           timeout=30).read()
    open_and_run_all(page, lab_server, "tokenizer_lab.ipynb")
    page.locator(".jp-OutputArea-output .wbtok").first.wait_for(state="visible", timeout=60_000)
    page.wait_for_timeout(1500)
    g = page.evaluate(LAB_GEOMETRY)
    page.screenshot(path=str(ARTIFACTS / "tokenizer_lab.png"), full_page=False)
    assert_no_widget_errors(page)
    assert len(g["cols"]) == 3 and g["split"] == [] and g["over"] == 0, g
    for (_, a_right), (b_left, _) in zip(g["cols"], g["cols"][1:]):
        assert b_left >= a_right, g["cols"]  # columns never overlap
    assert g["clipped"] == [], g["clipped"]
