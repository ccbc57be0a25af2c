"""The scaling lab in a real JupyterLab + headless Chromium: it renders offline and a fitting choice refits."""
import pytest

from .conftest import ARTIFACTS
from .helpers import assert_no_widget_errors, colourful_pixels, open_and_run_all

pytestmark = pytest.mark.browser


def test_scaling_lab_renders_and_refits(page, lab_server):
    open_and_run_all(page, lab_server, "notebooks/04_scaling_laws.ipynb")
    assert_no_widget_errors(page)
    lab = page.locator(".jp-OutputArea-output", has=page.locator("button:has-text('load store')")).first
    lab.scroll_into_view_if_needed()
    canvas = lab.locator("canvas").first
    canvas.wait_for(state="visible", timeout=30_000)
    assert colourful_pixels(canvas.screenshot()) > 1000, "the loss-vs-compute chart is not drawn"
    assert "of 243 starts converged" in lab.inner_text()
    lab.locator("button:has-text('full (4,500 starts)')").click()
    page.wait_for_function(
        "el => el.innerText.includes('of 4500 starts converged') && el.innerText.includes('full grid')",
        arg=lab.element_handle(), timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "04_scaling.png"))
    assert_no_widget_errors(page)
    assert not page.js_errors, page.js_errors[:3]
