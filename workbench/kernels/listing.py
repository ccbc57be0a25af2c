"""Code listings side by side, as HTML for a notebook (the kernel next to its torch reference).

JupyterLab styles tables in HTML outputs for numbers: cells are right-aligned, the table has a fixed
layout and ``<pre>`` wraps (``white-space: pre-wrap``), so a listing put in a ``<table>`` comes out
right-aligned and broken mid-word. These panes use no table: a wrapping flex row of boxes, each a
left-aligned monospace ``<pre>`` that never wraps and scrolls horizontally when a line is wider than
its box. Each pane asks for the width of its longest line, so two listings share a row when both fit
(in a notebook column of about 900 px) and stack, each shown whole, when they do not.

    >>> html = side_by_side_html([("kernel", "for (int j = 0; j < n; ++j)"), ("reference", "for j in range(n):")])
    >>> "white-space:pre;" in html and "<table" not in html
    True

Lesson: ``notebooks/05_gpu_kernels.ipynb`` (2. The fused attention kernel).
"""
from __future__ import annotations

import html as _html
from typing import Iterable

__all__ = ["side_by_side_html", "side_by_side", "PRE_STYLE"]

# Every property JupyterLab sets on `.jp-RenderedHTMLCommon pre` that would change the listing is set here
# inline, so the notebook's stylesheet cannot win.
PRE_STYLE = ("text-align:left;white-space:pre;overflow-wrap:normal;word-break:normal;word-wrap:normal;"
             "overflow-x:auto;overflow-y:hidden;max-width:100%;box-sizing:border-box;margin:0;padding:6px 8px;"
             "font-family:var(--jp-code-font-family, monospace);font-size:{size}px;line-height:1.35;tab-size:4;"
             "background:var(--jp-layout-color2, #f5f5f5);color:var(--jp-content-font-color1, #222);"
             "border-radius:3px")


def side_by_side_html(panes: Iterable[tuple[str, str]], *, font_size: int = 11, min_width: int | None = None) -> str:
    """HTML for code listings next to each other: ``panes`` is a sequence of ``(title, code)``.

    Titles and code are escaped. A pane's flex basis is ``min_width`` pixels, or by default the width of its
    longest line (about 0.6 em per monospace character), so panes that fit side by side share the row and wider
    ones wrap onto rows of their own. A pane never grows past the row, so the listing stays inside the notebook
    column; a line longer than the row scrolls horizontally instead of wrapping.
    """
    panes = list(panes)
    if not panes:
        raise ValueError("side_by_side_html needs at least one (title, code) pane")
    boxes = []
    for title, code in panes:
        code = str(code)
        if min_width is None:
            longest = max((len(line.expandtabs(4)) for line in code.splitlines()), default=0)
            basis = max(200, int(longest * 0.61 * font_size) + 24)
        else:
            basis = int(min_width)
        boxes.append(
            f"<div class='wb-listing-pane' style='flex:1 1 {basis}px;min-width:0;max-width:100%;"
            "text-align:left'>"
            "<div style='font-weight:bold;margin:0 0 4px 0;text-align:left;"
            f"font-family:var(--jp-ui-font-family, sans-serif)'>{_html.escape(str(title))}</div>"
            f"<pre style='{PRE_STYLE.format(size=int(font_size))}'>{_html.escape(code, quote=False)}</pre>"
            "</div>")
    return ("<div class='wb-listing' style='display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start;"
            "width:100%;max-width:100%;box-sizing:border-box;text-align:left'>" + "".join(boxes) + "</div>")


def side_by_side(panes: Iterable[tuple[str, str]], **kwargs):
    """:func:`side_by_side_html` wrapped as an ``IPython.display.HTML`` object, ready to display in a notebook."""
    from IPython.display import HTML

    return HTML(side_by_side_html(panes, **kwargs))
