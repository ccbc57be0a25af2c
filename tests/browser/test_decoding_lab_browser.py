"""The DecodingLab in JupyterLab at 1,400 x 1,000 with the file browser open (issue 13, items 6-7): no box overflows
the notebook column, no description or button text is truncated, the compare list shows all 8 choices, the stage
chart and the beam tree at 40 tokens draw inside the column. Screenshots go to artifacts/browser."""
import json
import urllib.request

import pytest

from .conftest import ARTIFACTS
from .helpers import assert_no_widget_errors, colourful_pixels, open_and_run_all

pytestmark = pytest.mark.browser

STEP_CELL = """import widgets
from workbench.models import load_pretrained

widgets.load_bokeh()
model, draft = load_pretrained("docs-byte"), load_pretrained("docs-byte-draft")
lab = widgets.DecodingLab(model, draft, max_new_tokens=40)
lab.configure(top_k=20, top_p=0.9, min_p=0.05, typical=0.9)
lab.step(); lab.step()
lab"""

BEAM_CELL = """beam = widgets.DecodingLab(model, draft, strategy="beam", max_new_tokens=40)
beam.play()
beam"""

GEOMETRY = """(i) => {
    const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
    const out = [...[...nb.querySelectorAll('.jp-CodeCell')][i].querySelectorAll('.jp-OutputArea-output')]
        .find(o => o.querySelector('.widget-vbox'));  // not the BokehJS loader's output
    const column = out.getBoundingClientRect();
    const r = e => e.getBoundingClientRect();
    const visible = e => e.offsetParent && r(e).width > 0;
    return {
        sidebar: !!document.querySelector('.jp-FileBrowser:not(.lm-mod-hidden)'),
        column: [column.left, column.right],
        over: [...out.querySelectorAll('.widget-box, .widget-html, .widget-tab, .widget-inline-hbox, button')]
            .filter(visible).filter(e => r(e).right > column.right + 1)
            .map(e => e.className.slice(0, 60) + ' ' + Math.round(r(e).right)),
        clipped: [...out.querySelectorAll('.widget-label, .widget-button, button, .widget-label-basic')]
            .filter(visible).filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.trim()),
        select: [...out.querySelectorAll('select')].filter(s => s.multiple).map(s => [s.size, s.options.length,
            s.scrollHeight <= s.clientHeight + 1]),
        selects: [...out.querySelectorAll('select')].map(s => [s.multiple, s.size, s.options.length]),
    };
}"""


def measured_cell(page, i: int, shot: str):
    """Scroll code cell ``i`` into view, screenshot it to ``ARTIFACTS / shot`` and check its geometry: the file
    browser is open, no box passes the column, no text is cut. Returns (geometry, (left, right) of the column, the
    visible canvases with their bounding boxes)."""
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").nth(i)
    cell.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    g = page.evaluate(GEOMETRY, i)
    cell.screenshot(path=str(ARTIFACTS / shot))
    assert g["sidebar"], "the file browser should be open (the narrow case)"
    assert g["over"] == [], (g["over"], g["column"])
    assert g["clipped"] == [], g["clipped"]
    # bokeh draws in shadow roots, which Playwright's locators pierce; only the selected tab's figures have a size
    shown = [(c, c.bounding_box()) for c in cell.locator("canvas").all()]
    return g, tuple(g["column"]), [(c, b) for c, b in shown if b and b["width"] > 0]


def _write(base_url: str, name: str, cells) -> None:
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                         "language": "python"}},
          "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [],
                     "source": src} for i, src in enumerate(cells)]}
    body = json.dumps({"type": "notebook", "format": "json", "content": nb}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{base_url}/api/contents/{name}", data=body, method="PUT",
                                                  headers={"Content-Type": "application/json"}), timeout=30).read()


def test_decoding_lab_fits_the_column(page, lab_server):
    _write(lab_server, "decoding_lab.ipynb", [STEP_CELL, BEAM_CELL])
    open_and_run_all(page, lab_server, "decoding_lab.ipynb", timeout_s=240)
    page.locator(".jp-OutputArea-output canvas").nth(2).wait_for(state="visible", timeout=90_000)
    page.wait_for_timeout(2000)
    assert_no_widget_errors(page)
    for i, shot in ((0, "decoding_lab_step.png"), (1, "decoding_lab_beam.png")):
        g, (left, right), shown = measured_cell(page, i, shot)
        assert g["select"] == [[8, 8, True]], g["selects"]  # every compare choice visible, no scrolling
        assert shown and all(left - 1 <= b["x"] and b["x"] + b["width"] <= right + 1 for _, b in shown), (shown, right)
        assert colourful_pixels(shown[0][0].screenshot()) > 300
