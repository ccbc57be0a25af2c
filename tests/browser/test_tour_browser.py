"""The tour in a real JupyterLab + headless Chromium: widgets render offline and the playground reacts to typing."""
import pytest

from .helpers import assert_no_widget_errors, colourful_pixels, open_and_run_all
from .conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def test_tour_runs_and_playground_reacts(page, lab_server):
    open_and_run_all(page, lab_server, "notebooks/00_tour.ipynb")
    playground = page.locator(".widget-vbox", has=page.locator(".widget-textarea textarea")).first
    chart = playground.locator("canvas").first
    chart.wait_for(state="visible", timeout=30_000)
    assert page.locator("canvas").count() >= 2  # the playground's chart and the loss curve
    assert_no_widget_errors(page)
    chart.scroll_into_view_if_needed()
    before = chart.screenshot()
    assert colourful_pixels(before) > 500, "the playground chart shows no bars"
    box = playground.locator(".widget-textarea textarea").first
    box.click()
    box.press("End")
    box.type(" class Foo(", delay=30)
    page.wait_for_timeout(2500)  # debounce + kernel round trip
    after = chart.screenshot()
    page.screenshot(path=str(ARTIFACTS / "00_tour.png"), full_page=False)
    assert before != after, "typing into the prompt did not change the chart"
    assert colourful_pixels(after) > 500
    assert_no_widget_errors(page)
    assert not [e for e in page.js_errors if "bokeh" in e.lower() or "widget" in e.lower()], page.js_errors
