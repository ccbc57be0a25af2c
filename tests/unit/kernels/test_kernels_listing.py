"""Side-by-side code listings (notebook 05's kernel next to its reference; issue 13 item 9): no table (JupyterLab
right-aligns table cells and wraps their <pre>), left-aligned monospace panes that never wrap and scroll sideways.
How they look in JupyterLab is checked in tests/browser/test_kernel_listing_browser.py."""
import re

import pytest

from workbench import kernels
from workbench.kernels.listing import side_by_side, side_by_side_html


def test_panes_are_escaped_left_aligned_unwrapped_and_scroll():
    code = 'if (a < b && c > d) { s = "x"; }'
    html = side_by_side_html([("kernel <cu>", code), ("reference", "for j in range(n):\n    pass")])
    assert "<table" not in html and "<td" not in html
    assert "kernel &lt;cu&gt;" in html
    assert 'if (a &lt; b &amp;&amp; c &gt; d) { s = "x"; }' in html  # the code, escaped, quotes kept readable
    pres = re.findall(r"<pre style='([^']*)'>", html)
    assert len(pres) == 2
    for style in pres:
        for rule in ("text-align:left", "white-space:pre;", "overflow-x:auto", "word-break:normal",
                     "overflow-wrap:normal", "monospace"):
            assert rule in style
    assert "flex-wrap:wrap" in html and "min-width:0" in html and "max-width:100%" in html


def test_a_quote_in_a_title_cannot_end_the_style_attribute():
    html = side_by_side_html([("it's", "x = 'a'")])
    assert "it&#x27;s" in html and "x = 'a'" in html
    assert html.count("style='") == html.count("<div") + html.count("<pre")


def test_the_notebook_listing_round_trips_the_source_lines():
    src = kernels.kernel_source("attention.cu")
    html = side_by_side_html([("CUDA kernel", src), ("torch reference", "pass")])
    body = re.search(r"<pre[^>]*>(.*?)</pre>", html, re.S).group(1)
    unescaped = body.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert unescaped == src  # every line intact: no inserted breaks


def test_needs_a_pane_and_displays_as_html():
    with pytest.raises(ValueError):
        side_by_side_html([])
    obj = side_by_side([("a", "b")], font_size=12)
    assert "font-size:12px" in obj.data and "<pre" in obj.data


def test_each_pane_asks_for_its_longest_line_or_the_given_width():
    narrow, wide = "x = 1", "y" * 100
    html = side_by_side_html([("a", narrow), ("b", wide)])
    bases = [int(b) for b in re.findall(r"flex:1 1 (\d+)px", html)]
    assert bases[0] == 200 and bases[1] >= 100 * 0.6 * 11  # short listings share a row; 100 columns ask for ~670 px
    assert re.findall(r"flex:1 1 (\d+)px", side_by_side_html([("a", narrow), ("b", wide)], min_width=380)) == \
        ["380", "380"]
