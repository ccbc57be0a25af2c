"""The AttentionLab and the CheckpointScrubber in JupyterLab at 1,400 x 1,000 with the file browser open (issue 13,
items 4 and 8): no box overflows the notebook column, no description or button text is truncated, every bokeh
figure (colour bars and the top-keys labels included) draws inside the column. Screenshots go to artifacts/browser."""
import pytest

from .conftest import ARTIFACTS
from .helpers import assert_no_widget_errors, colourful_pixels, open_and_run_all
from .test_decoding_lab_browser import _write, measured_cell

pytestmark = pytest.mark.browser

LAB_CELL = """import widgets
from workbench.models import load_pretrained

widgets.load_bokeh()
model = load_pretrained("docs-byte")
text = "The attention lab shows where each token looks. " * 3
lab = widgets.AttentionLab(model, text, compare_text=text[:-2] + "!")
lab.select(1, 2)
lab.ablate_button.value = True
lab"""

SCRUB_CELL = """from workbench.attention import train_induction
from widgets.attention_lab import CheckpointScrubber

run = train_induction(steps=60, every=20, length=8, min_length=4, n_embd=32, batch_size=8)
CheckpointScrubber(run, layer=1, head=2, shift=1)"""


def test_attention_lab_and_scrubber_fit_the_column(page, lab_server):
    _write(lab_server, "attention_lab.ipynb", [LAB_CELL, SCRUB_CELL])
    open_and_run_all(page, lab_server, "attention_lab.ipynb", timeout_s=240)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").nth(1).locator("canvas").first.wait_for(
        state="visible", timeout=120_000)
    page.wait_for_timeout(2000)
    assert_no_widget_errors(page)
    for i, shot, n_figs in ((0, "attention_lab_layout.png", 7), (1, "checkpoint_scrubber.png", 2)):
        _, (left, right), shown = measured_cell(page, i, shot)
        assert len(shown) >= n_figs, len(shown)
        assert all(left - 1 <= b["x"] and b["x"] + b["width"] <= right + 1 for _, b in shown), (
            [(b["x"], b["width"]) for _, b in shown], right)
        assert colourful_pixels(shown[0][0].screenshot()) > 300
        for j, (c, _) in enumerate(shown):  # each figure on its own (the cell is taller than the window)
            c.screenshot(path=str(ARTIFACTS / shot.replace(".png", f"_fig{j}.png")))
