"""Figures of the data lab's compression tab: bits per byte of models against general compressors, and a text
shaded by what each of its tokens cost the model-driven coder.

Compute lives in :mod:`workbench.datalab` (:func:`~workbench.datalab.baselines.compression_table`,
:func:`~workbench.datalab.compress.compress_report`); these functions only draw its results as bokeh figures
(about 860 px wide, a key for every colour, legends outside the data).
"""
from __future__ import annotations

from bokeh.models import (
    ColorBar, ColumnDataSource, FactorRange, HoverTool, Legend, LegendItem, LinearColorMapper,
)
from bokeh.palettes import Category10_10, Oranges256
from bokeh.core.properties import value
from bokeh.plotting import figure

from workbench.datalab.baselines import CompressionTable
from workbench.datalab.compress import CompressionResult, compress_report
from workbench.datalab.errors import SettingError, UnsupportedInputError

WIDTH = 860
_HEAT = list(reversed(Oranges256))[16:]  # light (cheap tokens) to dark (expensive ones)


def chart_source(table: CompressionTable) -> dict:
    """The columns the bar chart draws: one bar per (corpus, method)."""
    if not isinstance(table, CompressionTable) or not table.rows:
        raise UnsupportedInputError("give a CompressionTable with at least one row (see compression_table)")
    methods = table.methods
    colour = {m: Category10_10[i % 10] for i, m in enumerate(methods)}
    rows = table.rows
    return {
        "x": [(r.corpus, r.method) for r in rows],
        "method": [r.method for r in rows],
        "corpus": [r.corpus for r in rows],
        "kind": [r.kind for r in rows],
        "bpb": [r.bits_per_byte for r in rows],
        "label": [f"{r.bits_per_byte:.2f}" for r in rows],
        "size": [r.size for r in rows],
        "n_bytes": [r.n_bytes for r in rows],
        "ideal": [r.ideal_bpb if r.ideal_bpb is not None else float("nan") for r in rows],
        "val": [r.val_bpb if r.val_bpb is not None else float("nan") for r in rows],
        "colour": [colour[r.method] for r in rows],
    }


def compression_chart(table: CompressionTable, width: int = WIDTH, height: int = 360):
    """Grouped bars: bits per byte of every method (colour, keyed in a legend right of the plot) on every corpus
    (groups). Lower is better; 8 is no compression. Hover for sizes and, for models, the ideal and the
    training-time validation loss."""
    data = chart_source(table)
    src = ColumnDataSource(data)
    fig = figure(x_range=FactorRange(*data["x"]), width=width, height=height, title="Bits per byte (lower is better)",
                 y_axis_label="bits per byte", toolbar_location="above", tools="save,reset")
    bars = fig.vbar(x="x", top="bpb", width=0.85, source=src, fill_color="colour", line_color="white")
    fig.text(x="x", y="bpb", text="label", source=src, text_font_size="9px", text_align="center",
             text_baseline="bottom", y_offset=-1)
    fig.y_range.start = 0
    fig.y_range.end = max(data["bpb"]) * 1.12
    fig.xaxis.major_label_orientation = 0.9
    fig.xaxis.major_label_text_font_size = "9px"
    fig.xgrid.grid_line_color = None
    items, seen = [], set()
    for i, m in enumerate(data["method"]):
        if m not in seen:
            seen.add(m)
            items.append(LegendItem(label=m, renderers=[bars], index=i))
    fig.add_layout(Legend(items=items, title="method", label_text_font_size="10px"), "right")
    fig.add_tools(HoverTool(renderers=[bars], tooltips=[
        ("method", "@method"), ("corpus", "@corpus"), ("bits/byte", "@bpb{0.000}"), ("size", "@size bytes"),
        ("of", "@n_bytes bytes"), ("model loss (ideal)", "@ideal{0.000}"), ("validation loss", "@val{0.000}")]))
    return fig


def layout_tokens(result: CompressionResult, tokenizer, columns: int = 96) -> dict:
    """Token boxes laid out like the text: ``x``/``y`` (left edge, line), ``w`` (characters), the token's text
    (newlines and tabs shown as symbols, bytes that are part of a character as ``\\xhh``), its bits, its bytes
    and bits per byte. A newline in a token starts a new line after it; a line wraps at ``columns`` characters."""
    cols = {k: [] for k in ("x", "y", "w", "text", "bits", "nbytes", "bpb", "index")}
    x = y = 0
    for i, (tid, bits, nb) in enumerate(zip(result.token_ids, result.token_bits.tolist(), result.token_nbytes)):
        try:
            raw = tokenizer.token_bytes(tid)
        except ValueError:
            raw = b""
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:  # part of a character (a byte model's token): show the bytes
            s = "".join(f"\\x{b:02x}" for b in raw)
        shown = s.replace("\n", "\u21b5").replace("\t", "\u2192").replace("\r", "\u240d") or "\u00b7"
        w = max(len(shown), 1)
        if x + w > columns and x > 0:
            x, y = 0, y + 1
        for k, v in (("x", x), ("y", y), ("w", w), ("text", shown), ("bits", bits), ("nbytes", nb),
                     ("bpb", bits / nb if nb else float("nan")), ("index", i)):
            cols[k].append(v)
        x += w
        if "\n" in s:
            x, y = 0, y + 1
    return cols


def code_length_view(model, text, *, max_bytes: int = 4096, columns: int = 96, width: int = WIDTH,
                     result: CompressionResult | None = None):
    """``text`` (str or bytes) shaded token by token by ``-log2 p``, the bits the model-driven coder spends on it
    (darker: more bits); a colour bar keys the shading over the range of these tokens; hover for the numbers.
    Codes the text with :func:`compress_report` unless ``result`` (of the same text) is given."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if not isinstance(data, (bytes, bytearray)):
        raise UnsupportedInputError(f"text must be str or bytes, got {type(text).__name__}")
    if len(data) > max_bytes:
        raise SettingError(f"the text has {len(data)} bytes; the view draws at most max_bytes={max_bytes} "
                           "(cut the text, or raise max_bytes)")
    if result is None:
        result = compress_report(model, bytes(data))
    cols = layout_tokens(result, model.tokenizer, columns)
    n_lines = (max(cols["y"]) + 1) if cols["y"] else 1
    cols["x_mid"] = [x + w / 2 for x, w in zip(cols["x"], cols["w"])]
    cols["y_mid"] = [-y for y in cols["y"]]
    hi = max(cols["bits"], default=1.0)
    mapper = LinearColorMapper(palette=_HEAT, low=0.0, high=max(hi, 1e-6))
    src = ColumnDataSource(cols)
    height = min(60 + 18 * n_lines, 900)
    fig = figure(width=width, height=height, x_range=(-0.5, columns + 0.5), y_range=(-n_lines + 0.5, 0.5),
                 title=f"{getattr(model, 'name', '')}: {result.ideal_bits_per_byte:.3f} bits/byte "
                       f"({result.ideal_bits / 8:.0f} bytes ideal, blob {len(result.blob)} bytes, "
                       f"{result.n_bytes} bytes in)",
                 toolbar_location=None, tools="")
    boxes = fig.rect(x="x_mid", y="y_mid", width="w", height=0.92, source=src,
                     fill_color={"field": "bits", "transform": mapper}, line_color=None)
    fig.text(x="x", y="y_mid", text="text", source=src, text_font=value("monospace"), text_font_size="13px",
             text_baseline="middle", text_color="black")
    fig.axis.visible = False
    fig.grid.visible = False
    fig.add_layout(ColorBar(color_mapper=mapper, title="bits (-log2 p)", width=12, label_standoff=4), "right")
    fig.add_tools(HoverTool(renderers=[boxes], tooltips=[
        ("token", "@text"), ("#", "@index"), ("bits", "@bits{0.00}"), ("bytes", "@nbytes"),
        ("bits/byte", "@bpb{0.00}")]))
    return fig
