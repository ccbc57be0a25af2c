"""The attention lab in a real JupyterLab + headless Chromium: it renders offline and a tile click selects a head."""
import pytest

from .conftest import ARTIFACTS
from .helpers import assert_no_widget_errors, colourful_pixels, open_and_run_all

pytestmark = pytest.mark.browser


def test_attention_lab_tile_click_updates_the_detail(page, lab_server):
    open_and_run_all(page, lab_server, "notebooks/02_attention.ipynb")
    assert_no_widget_errors(page)
    lab = page.locator(".jp-OutputArea-output", has=page.locator("button:has-text('ablate head')")).first
    lab.scroll_into_view_if_needed()
    canvases = lab.locator("canvas")
    canvases.first.wait_for(state="visible", timeout=30_000)
    assert canvases.count() >= 2  # overview tiles and the head detail
    overview, detail = canvases.nth(0), canvases.nth(1)
    box = overview.bounding_box()
    before = detail.screenshot()
    assert colourful_pixels(overview.screenshot()) > 1000, "the head tiles are not drawn"
    assert colourful_pixels(before) > 1000, "the head detail image is not drawn"
    changed = False
    # Click a few spots of the tile grid until the selection moves to a different head.
    for fx, fy in ((0.25, 0.3), (0.75, 0.7), (0.3, 0.75), (0.7, 0.25)):
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_timeout(2000)
        if detail.screenshot() != before:
            changed = True
            break
    page.screenshot(path=str(ARTIFACTS / "02_attention.png"))
    assert changed, "clicking the head tiles did not change the detail view"
    assert_no_widget_errors(page)
