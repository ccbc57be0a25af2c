"""TokenizerLab spans in a real Chromium (plain HTML, no JupyterLab): in a narrow column no token is split across
lines (the issue's ``<0xC`` / ``3>``) and nothing overflows; the old ``word-break:break-all`` style did split."""
import pytest

from workbench.tokenizers import ByteTokenizer

pytestmark = pytest.mark.browser
TEXT = "Unicode too: café, naïve, 東京, 🙂 " * 6 + "    def add(a, b):\n        return a + b  # 1234567\n"

MEASURE = """(width) => {
    const box = document.querySelector('.wbtok');
    box.parentElement.style.width = width + 'px';
    const right = box.getBoundingClientRect().right;
    const spans = [...box.querySelectorAll('span')];
    return {n: spans.length,
            split: spans.filter(s => s.getClientRects().length > 1).map(s => s.textContent),
            over: spans.filter(s => s.getBoundingClientRect().right > right + 0.5).map(s => s.textContent)};
}"""


@pytest.fixture(scope="module")
def chromium(browser):
    return browser  # the session's Chromium (conftest): Playwright's sync API allows one driver per thread


def _measure(browser, html, width):
    page = browser.new_page(viewport={"width": 900, "height": 800})
    try:
        page.set_content(f"<div>{html}</div>")
        return page.evaluate(MEASURE, width)
    finally:
        page.close()


@pytest.mark.parametrize("width", [140, 213, 290])  # a quarter, a third of a 900 px column, and narrower
def test_no_token_breaks_across_lines(chromium, width):
    from widgets.tokenizer_lab import spans_html

    tok = ByteTokenizer()
    html = spans_html(TEXT.encode(), tok.spans(TEXT), tok=tok)
    got = _measure(chromium, html, width)
    assert got["n"] == len(TEXT.encode()) and got["split"] == [] and got["over"] == []
    # the old style breaks tokens at the edge: this check would have caught it
    old = html.replace("white-space:normal;overflow-wrap:normal", "white-space:pre-wrap;word-break:break-all")
    old = old.replace("display:inline-block;", "")
    assert _measure(chromium, old, width)["split"]
