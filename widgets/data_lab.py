"""DataLab: a language model as a compressor, and four experiments about the data a model is trained on.

Five tabs, each a view of core functions of :mod:`workbench.datalab` (this module only draws; glue in
:mod:`workbench.datalab.lab`):

* **compression**: paste text; each coder's size (the model-driven arithmetic coder of
  :func:`~workbench.datalab.compress.compress_report` against gzip, bz2, xz and zstd) and the model's per-token
  code lengths (``-log2 p``) as a heat over the text; the blob as base64, which "decompress" turns back into the
  text (or says why not: truncated, corrupted, made with another model);
* **selection**: the histogram of the shipped chunk perplexity scores (``docs-byte-draft``) with a score range;
  "train on band" trains the micro model on the chunks in the range and on as many random chunks (the baseline),
  in the background with a progress bar and Stop, and adds both loss curves beside the shipped bands';
* **mixing**: the fitted data mixing law of each domain along the docs share, the measured points (fitted and held
  out) and a proportion slider that reads the law's prediction;
* **distillation** and **traps**: curves of the shipped sweeps, and a button that adds a live run.

"Export PNG" draws the tab shown; "Export data" writes that tab's tables and core results. Every bad input ends in a
visible notice and the widget keeps working.
"""
from __future__ import annotations

import time
from pathlib import Path

import ipywidgets as W
import numpy as np
from bokeh.models import (
    BoxAnnotation, ColorBar, ColumnDataSource, FactorRange, HoverTool, Legend, LegendItem,
    LinearColorMapper, Span,
)
from bokeh.layouts import row
from bokeh.palettes import Category10_10, Oranges256
from bokeh.plotting import figure

from workbench.datalab import lab as glue
from workbench.datalab.errors import DataLabError

from .base import WorkbenchWidget, bokeh_pane, notice, set_notice

COLUMN = 880
FIG_W = COLUMN - 50
STYLE = {"description_width": "initial"}
_WRAP = dict(layout=W.Layout(flex_flow="row wrap", align_items="center", width="100%"))
TABS = ("compression", "selection", "mixing", "distillation", "traps")
_HEAT = list(reversed(Oranges256))[16:]
_KIND_COLOUR = {"language model": "#1f77b4", "general compressor": "#7f7f7f"}
TEACHERS = ("docs-byte", "docs-byte-draft", "docs-bpe")
HEAT_COLUMNS = 96
DEFAULT_TEXT = ("The for statement in Python differs a bit from what you may be used to in C or Pascal. Rather than "
                "always iterating over an arithmetic progression of numbers, or giving the user the ability to define "
                "both the iteration step and halting condition, Python's for statement iterates over the items of "
                "any sequence (a list or a string), in the order that they appear in the sequence.")


def _legend_right(fig, place: str = "right") -> Legend:
    """An empty legend to the right of the plot (:func:`_key` fills it from the data)."""
    leg = Legend(items=[], label_text_font_size="10px", spacing=1, padding=4)
    fig.add_layout(leg, place)
    return leg


_SWATCHES: dict = {}


def _key(fig, legend: Legend, entries, at=float("nan")) -> None:
    """The legend's items: one swatch per distinct ``(label, colour, glyph, dash)`` of ``entries`` (glyph: "line",
    or a marker such as "square", "circle", "triangle", "diamond"), drawn by empty renderers of their own so that
    every colour has its key in the browser and in the PNG export alike."""
    old = _SWATCHES.pop(legend.id, [])
    if old:
        fig.renderers = [r for r in fig.renderers if r not in old]
    items, made = [], []
    for label, colour, glyph, dash in dict.fromkeys(tuple(e) for e in entries):
        if glyph == "line":
            r = fig.line(x=[at], y=[float("nan")], line_color=colour, line_dash=dash, line_width=2)
        else:
            r = fig.scatter(x=[at], y=[float("nan")], marker=glyph, color=colour, size=9)
        made.append(r)
        items.append(LegendItem(label=label, renderers=[r]))
    _SWATCHES[legend.id] = made
    legend.items = items


def _shown(tab: str):
    """A public action of the lab: any error becomes the tab's visible notice (the method returns None)."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def method(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - the student sees the message, not a traceback
                self._fail(e, tab)
                return None

        return method

    return wrap


def _curves(xs: list, ys: list, labels: list, colours: list, dashes: list) -> dict:
    return dict(xs=xs, ys=ys, label=labels, colour=colours, dash=dashes,
                final=[float(y[-1]) if len(y) else float("nan") for y in ys])


class DataLab(WorkbenchWidget):
    """The data lab: compression, selection, mixing, distillation and traps (see the module docstring).

    ``model``: the model of the compression tab (the shipped ``docs-byte`` in the lesson); ``text``: the text it
    compresses first; ``steps``: the steps of a live run (the shipped sweeps ran 250); ``background``: where live
    runs go (None: a worker thread in a notebook, at once in scripts and tests).
    """

    def __init__(self, model, text: str = DEFAULT_TEXT,
                 steps: int = 40, export_dir: str | Path = "exports", background: bool | None = None,
                 tab: str = "compression"):
        from workbench.datalab.distill import load_distill
        from workbench.datalab.mixing import load_mixing
        from workbench.datalab.selection import load_selection
        from workbench.datalab.traps import load_traps

        self.model = model
        self.export_dir = Path(export_dir)
        self.background = background
        self._summary = f"model={getattr(model, 'name', type(model).__name__)!r}"
        self._notes: dict[str, tuple[str, str]] = {}
        self.timings: dict[str, float] = {}
        self.compression_result = None
        self.coder_rows: list[dict] = []
        self.decoded: bytes | None = None
        self._curve_keys: dict = {}
        self.live_runs: dict[str, list] = {"selection": [], "distillation": [], "traps": []}
        self.selection = load_selection()
        self.mixing = load_mixing()
        self.distill = load_distill()
        self.traps = load_traps()

        self.info = notice()
        self.steps = W.BoundedIntText(value=steps, min=1, max=2000, description="live run steps", style=STYLE,
                                      layout=W.Layout(width="190px"),
                                      tooltip="steps of a live run (the shipped sweeps: 250 steps each)")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="progress", style=STYLE,
                                      layout=W.Layout(width="300px", visibility="hidden"))

        # --- compression ---------------------------------------------------------------------------------------
        self.text = W.Textarea(value=text, description="text", style=STYLE,
                               layout=W.Layout(width="auto", align_self="stretch", height="64px"))
        self.compress_button = W.Button(description="compress", icon="compress",
                                        layout=W.Layout(width="auto", min_width="110px"))
        self.blob = W.Textarea(value="", description="blob (base64)", style=STYLE,
                               layout=W.Layout(width="auto", align_self="stretch", height="48px"))
        self.decompress_button = W.Button(description="decompress", icon="expand",
                                          layout=W.Layout(width="auto", min_width="120px"))
        self.round_trip = W.HTML()
        self.coder_source = ColumnDataSource(dict(method=[], kind=[], size=[], bpb=[], label=[], colour=[]))
        c = figure(width=FIG_W, height=260, x_range=FactorRange(), title="bits per byte of this text (lower is better)",
                   y_axis_label="bits per byte", toolbar_location=None, tools="")
        self._coder_bars = c.vbar(x="method", top="bpb", width=0.7, source=self.coder_source, fill_color="colour",
                                  line_color="white")
        c.text(x="method", y="bpb", text="label", source=self.coder_source, text_font_size="10px",
               text_align="center", text_baseline="bottom")
        c.add_tools(HoverTool(tooltips=[("coder", "@method"), ("size", "@size{0.0} bytes"), ("bits/byte", "@bpb{0.000}")]))
        c.y_range.start = 0
        c.xgrid.visible = False
        c.xaxis.major_label_text_font_size = "10px"
        c.add_layout(Span(location=8, dimension="width", line_color="#999999", line_dash="dotted"))
        self._coder_key = _legend_right(c)
        self.coder_figure = c
        self.heat_source = ColumnDataSource(dict(x=[], y=[], w=[], text=[], bits=[], nbytes=[], bpb=[], index=[],
                                                 x_mid=[], y_mid=[]))
        self.heat_mapper = LinearColorMapper(palette=_HEAT, low=0, high=1)
        h = figure(width=FIG_W, height=120, x_range=(-0.5, HEAT_COLUMNS + 0.5), y_range=(-0.5, 0.5), title="",
                   toolbar_location=None, tools="")
        boxes = h.rect(x="x_mid", y="y_mid", width="w", height=0.92, source=self.heat_source, line_color=None,
                       fill_color={"field": "bits", "transform": self.heat_mapper})
        h.text(x="x", y="y_mid", text="text", source=self.heat_source, text_font="monospace", text_font_size="11px",
               text_baseline="middle", text_color="black")
        h.axis.visible = False
        h.grid.visible = False
        self.heat_bar = ColorBar(color_mapper=self.heat_mapper, title="bits (-log2 p)", width=12, label_standoff=4,
                                 title_text_font_size="10px", major_label_text_font_size="10px")
        h.add_layout(self.heat_bar, "right")
        h.add_tools(HoverTool(renderers=[boxes], tooltips=[("token", "@text"), ("#", "@index"), ("bits", "@bits{0.00}"),
                                                           ("bytes", "@nbytes")]))
        self.heat_figure = h
        self.compression_tab = W.VBox([self.text, W.HBox([self.compress_button], **_WRAP), bokeh_pane(c), bokeh_pane(h),
                                       self.blob, W.HBox([self.decompress_button, self.round_trip], **_WRAP)])

        # --- selection -----------------------------------------------------------------------------------------
        sc = self.selection.scores
        self.score_lo, self.score_hi = float(sc.min()), float(sc.max())
        q = np.quantile(sc, [1 / 3, 2 / 3])
        self.band = W.FloatRangeSlider(value=(float(q[1]), self.score_hi), min=round(self.score_lo - 0.5, 2),
                                       max=round(self.score_hi + 0.5, 2), step=0.01, readout_format=".2f",
                                       description="score range (nats/byte)", style=STYLE, continuous_update=False,
                                       layout=W.Layout(width="520px"))
        self.band_note = W.HTML()
        self.train_button = self.task_button("train on band", lambda: self.run_selection(), icon="play",
                                             tooltip="train the micro model on the chunks in the range and on as "
                                                     "many random chunks (in the background; click again to stop)")
        self.hist_source = ColumnDataSource(dict(left=[], right=[], count=[], colour=[], where=[]))
        hg = figure(width=FIG_W, height=230, title="chunk scores under docs-byte-draft (256-byte chunks of the "
                                                    "docs train split)",
                    x_axis_label="mean loss of the chunk (nats/byte)", y_axis_label="chunks", toolbar_location=None,
                    tools="")
        self._hist_bars = hg.quad(left="left", right="right", bottom=0, top="count", source=self.hist_source,
                                  fill_color="colour", line_color="white")
        hg.add_tools(HoverTool(tooltips=[("scores", "@left{0.00} .. @right{0.00}"), ("chunks", "@count")]))
        self.band_box = BoxAnnotation(left=self.band.value[0], right=self.band.value[1], fill_alpha=0.08,
                                      fill_color="#d62728")
        hg.add_layout(self.band_box)
        hg.y_range.start = 0
        self._hist_key = _legend_right(hg)
        self.hist_figure = hg
        self.selection_source = ColumnDataSource(_curves([], [], [], [], []))
        self.selection_figure = self._curve_figure("held-out loss while training on each band (shipped: 250 steps)",
                                                   self.selection_source)
        self.selection_tab = W.VBox([W.HBox([self.band, self.band_note], **_WRAP), bokeh_pane(hg),
                                     W.HBox([self.train_button, self.steps, self.progress], **_WRAP),
                                     bokeh_pane(self.selection_figure)])

        # --- mixing --------------------------------------------------------------------------------------------
        self.share = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, description="docs share", style=STYLE,
                                   readout_format=".2f", continuous_update=True, layout=W.Layout(width="380px"))
        self.proportions = W.Text(value="0.5, 0.5", description="proportions (docs, code)", style=STYLE,
                                  layout=W.Layout(width="300px"), continuous_update=False)
        self.mix_readout = W.HTML()
        self.law_source = ColumnDataSource(_curves([], [], [], [], []))
        self.mix_points = ColumnDataSource(dict(docs=[], loss=[], sd=[], predicted=[], domain=[], kind=[], colour=[],
                                                marker=[], key=[]))
        mf = figure(width=FIG_W, height=330, title="data mixing law per domain (lines: fitted law; points: measured)",
                    x_axis_label="share of docs in the training mixture (code gets the rest)",
                    y_axis_label="held-out loss (nats/byte)", toolbar_location=None, tools="")
        self._law_lines = mf.multi_line(xs="xs", ys="ys", source=self.law_source, line_color="colour", line_width=2)
        self._mix_dots = mf.scatter(x="docs", y="loss", source=self.mix_points, color="colour", marker="marker",
                                    size=9)
        mf.add_tools(HoverTool(tooltips=[("docs share", "@docs{0.00}"), ("domain", "@domain"),
                                         ("measured", "@loss{0.000}"), ("law", "@predicted{0.000}")]))
        self.share_span = Span(location=0.5, dimension="height", line_color="#d62728", line_dash="dashed")
        mf.add_layout(self.share_span)
        self._mix_key = _legend_right(mf)
        self.mixing_figure = mf
        self.mixing_tab = W.VBox([W.HBox([self.share, self.proportions], **_WRAP), self.mix_readout, bokeh_pane(mf)])

        # --- distillation --------------------------------------------------------------------------------------
        self.teacher = W.Dropdown(options=list(TEACHERS), value="docs-byte", description="teacher", style=STYLE,
                                  layout=W.Layout(width="220px"))
        self.alpha = W.BoundedFloatText(value=0.5, min=0.0, max=1.0, step=0.1, description="alpha", style=STYLE,
                                        layout=W.Layout(width="120px"),
                                        tooltip="weight of the teacher term (0: hard labels only)")
        self.distill_button = self.task_button("add live run", lambda: self.run_distill(), icon="plus",
                                               tooltip="train the micro model with this teacher for the live "
                                                       "steps (in the background; click again to stop)")
        self.distill_source = ColumnDataSource(_curves([], [], [], [], []))
        self.distill_figure = self._curve_figure("held-out loss of the student (shipped: 250 steps; grey: "
                                                 "the teachers' own loss)", self.distill_source)
        self.distill_tab = W.VBox([W.HBox([self.teacher, self.alpha], **_WRAP),
                                   W.HBox([self.distill_button, self.steps, self.progress], **_WRAP),
                                   bokeh_pane(self.distill_figure)])

        # --- traps ---------------------------------------------------------------------------------------------
        self.copies = W.BoundedIntText(value=100, min=0, max=1000, description="copies", style=STYLE,
                                       layout=W.Layout(width="140px"))
        self.trap_len = W.BoundedIntText(value=48, min=2, max=4096, description="trap length (bytes)", style=STYLE,
                                         layout=W.Layout(width="200px"))
        self.trap_button = self.task_button("add live run", lambda: self.run_trap(), icon="plus",
                                            tooltip="insert the traps, train the micro model for the live steps "
                                                    "and test membership (in the background; click again to stop)")
        self.trap_source = ColumnDataSource(dict(copies=[], x=[], auc=[], auc_sd=[], kind=[], colour=[], marker=[]))
        self.p_source = ColumnDataSource(dict(copies=[], x=[], p_value=[], kind=[], colour=[], marker=[]))
        ta = figure(width=370, height=300, title="membership AUC (traps vs non-members)",
                    x_axis_label="copies of each trap in training", y_axis_label="ROC AUC", toolbar_location=None,
                    tools="", y_range=(0.0, 1.05), x_range=FactorRange())
        self._auc_dots = ta.scatter(x="x", y="auc", source=self.trap_source, color="colour", marker="marker",
                                    size=9)
        ta.add_layout(Span(location=0.5, dimension="width", line_color="#999999", line_dash="dotted"))
        tp = figure(width=FIG_W - 375, height=300, title="exchangeability test p-value",
                    x_axis_label="copies of the benchmark in training", y_axis_label="p-value",
                    toolbar_location=None, tools="", y_range=(0.0, 1.05), x_range=FactorRange())
        self._p_dots = tp.scatter(x="x", y="p_value", source=self.p_source, color="colour", marker="marker",
                                  size=9)
        tp.add_layout(Span(location=0.05, dimension="width", line_color="#d62728", line_dash="dashed"))
        for f in (ta, tp):
            f.add_tools(HoverTool(tooltips=[("copies", "@copies"), ("AUC" if f is ta else "p-value",
                                                                     "@auc{0.000}" if f is ta else "@p_value{0.000}"),
                                            ("run", "@kind")]))
        self.auc_figure, self.p_figure = ta, tp
        self._auc_key = Legend(items=[], location="top_left", label_text_font_size="9px", spacing=0, padding=3,
                               background_fill_alpha=0.7)
        ta.add_layout(self._auc_key)
        self._p_key = _legend_right(tp)
        self.traps_tab = W.VBox([W.HBox([self.copies, self.trap_len], **_WRAP),
                                 W.HBox([self.trap_button, self.steps, self.progress], **_WRAP),
                                 bokeh_pane(row(ta, tp))])

        self.tabs = W.Tab(children=[self.compression_tab, self.selection_tab, self.mixing_tab, self.distill_tab,
                                    self.traps_tab])
        for i, t in enumerate(TABS):
            self.tabs.set_title(i, t)
        self.tabs.selected_index = TABS.index(tab)

        # --- events --------------------------------------------------------------------------------------------
        self.compress_button.on_click(self._guarded(lambda _: self.run_compression(), "compression"))
        self.decompress_button.on_click(self._guarded(lambda _: self.run_decompress(), "compression"))
        self.band.observe(self._guarded(lambda ch: self.draw_band(), "selection"), names="value")
        self.share.observe(self._guarded(lambda ch: self.set_share(self.share.value), "mixing"), names="value")
        self.proportions.observe(self._guarded(lambda ch: self.set_proportions(self.proportions.value), "mixing"),
                                 names="value")
        self.tabs.observe(lambda ch: self._show_note(), names="selected_index")

        super().__init__(children=[W.HBox([self.export_controls(formats=(".json", ".npz", ".csv"), default=".json")],
                                          **_WRAP), self.info, self.tabs],
                         layout=W.Layout(max_width=f"{COLUMN + 20}px"))
        for name, fn in (("compression", self.run_compression), ("selection", self.draw_selection),
                         ("mixing", self.draw_mixing), ("distillation", self.draw_distill), ("traps", self.draw_traps)):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a bad start is a notice, not a broken widget
                self._fail(e, name)
        self._show_note()

    # --- plumbing ------------------------------------------------------------------------------------------------
    def _curve_figure(self, title: str, source):
        f = figure(width=FIG_W, height=300, title=title, x_axis_label="training step",
                   y_axis_label="held-out loss (nats/byte)", toolbar_location=None, tools="")
        lines = f.multi_line(xs="xs", ys="ys", source=source, line_color="colour", line_dash="dash", line_width=2)
        f.add_tools(HoverTool(tooltips=[("run", "@label"), ("final loss", "@final{0.000}")]))
        self._curve_keys[id(source)] = (f, _legend_right(f))
        return f

    def _guarded(self, fn, tab: str):
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - the student sees the message, not a traceback
                self._fail(e, tab)
                return None

        return self.reacting(handler)

    @staticmethod
    def _message(e: Exception) -> str:
        return str(e) if isinstance(e, DataLabError) else f"{type(e).__name__}: {e}"

    def _fail(self, e: Exception, tab: str) -> None:
        self._say(f"{tab}: {self._message(e)}", "error", tab)

    @property
    def tab(self) -> str:
        return TABS[self.tabs.selected_index or 0]

    def show_tab(self, name: str) -> None:
        self.tabs.selected_index = TABS.index(name)

    def _show_note(self) -> None:
        text, kind = self._notes.get(self.tab, ("", "info"))
        set_notice(self.info, text, kind)

    def _say(self, text: str, kind: str = "info", tab: str | None = None) -> None:
        tab = tab or self.tab
        self._notes[tab] = (text, kind)
        if tab == self.tab:
            set_notice(self.info, text, kind)

    @property
    def error(self) -> str:
        """The message shown for the tab in view, when it is an error (else "")."""
        text, kind = self._notes.get(self.tab, ("", "info"))
        return text if kind == "error" else ""

    # --- compression ---------------------------------------------------------------------------------------------
    @_shown("compression")
    def run_compression(self) -> None:
        """Compress the text with the model and gzip/bz2/xz/zstd; redraw the bars, the heat and the blob."""
        from widgets.compression_view import layout_tokens

        data = self.text.value.encode("utf-8")
        if len(data) > 4096:
            raise DataLabError(f"the text has {len(data)} bytes; the tab codes at most 4,096 (cut it)")
        t0 = time.perf_counter()
        rows, res = glue.coder_sizes(self.model, data)
        self.timings["compression"] = time.perf_counter() - t0
        self.coder_rows, self.compression_result = rows, res
        self.coder_source.data = dict(method=[r["method"] for r in rows], kind=[r["kind"] for r in rows],
                                      size=[float(r["size"]) for r in rows], bpb=[float(r["bpb"]) for r in rows],
                                      label=[f"{r['bpb']:.2f}" for r in rows],
                                      colour=[_KIND_COLOUR[r["kind"]] for r in rows])
        self.coder_figure.x_range.factors = [r["method"] for r in rows]
        _key(self.coder_figure, self._coder_key, [(r["kind"], _KIND_COLOUR[r["kind"]], "square", "solid") for r in rows],
             at=rows[0]["method"])
        self.coder_figure.y_range.end = max(8.5, max(r["bpb"] for r in rows) * 1.15)
        cols = layout_tokens(res, self.model.tokenizer, HEAT_COLUMNS)
        cols["x_mid"] = [x + w / 2 for x, w in zip(cols["x"], cols["w"])]
        cols["y_mid"] = [-y for y in cols["y"]]
        n_lines = (max(cols["y"]) + 1) if cols["y"] else 1
        self.heat_source.data = cols
        self.heat_mapper.high = max(max(cols["bits"], default=1.0), 1e-6)
        self.heat_figure.y_range.start, self.heat_figure.y_range.end = -n_lines + 0.5, 0.5
        self.heat_figure.height = min(70 + 18 * n_lines, 700)
        self.heat_figure.title.text = (f"per-token code length: {res.ideal_bits_per_byte:.3f} bits/byte ideal, "
                                       f"blob {len(res.blob)} bytes for {res.n_bytes} bytes in")
        with self.quietly():
            self.blob.value = glue.blob_to_text(res.blob)
        self.round_trip.value = ""
        best = min((r for r in rows if r["kind"] == "general compressor"), key=lambda r: r["size"])
        self._say(f"compression: {res.n_bytes} bytes -> blob {len(res.blob)} bytes ({res.bits_per_byte:.2f} "
                  f"bits/byte; {res.header_bytes} of them header); best general compressor {best['method']} "
                  f"{best['size']} bytes", tab="compression")

    @_shown("compression")
    def run_decompress(self) -> bytes:
        """Decode the blob field with the model; a bad blob is a notice (the rest of the tab stays)."""
        from workbench.datalab.compress import decompress

        self.round_trip.value = ""
        self.decoded = None
        data = decompress(self.model, glue.blob_from_text(self.blob.value))
        self.decoded = data
        same = data == self.text.value.encode("utf-8")
        self.round_trip.value = (f"decoded {len(data)} bytes: "
                                 f"{'identical to the text above' if same else 'a different text'}")
        self._say(f"compression: decompressed {len(data)} bytes"
                  f"{' (the same as the text)' if same else ''}", tab="compression")
        return data

    # --- selection -----------------------------------------------------------------------------------------------
    def _band_values(self) -> tuple[float, float]:
        return float(self.band.value[0]), float(self.band.value[1])

    def draw_selection(self) -> None:
        r = self.selection
        colours = {b: Category10_10[i] for i, b in enumerate(r.bands)}
        xs, ys, labels, cols, dashes = [], [], [], [], []
        for i, b in enumerate(r.bands):
            xs.append([int(s) for s in r.steps])
            ys.append([float(v) for v in r.curves[i].mean(0)])
            labels.append(f"shipped: {b} band" if b != "random" else "shipped: random third")
            cols.append(colours[b])
            dashes.append("solid")
        for k, run in enumerate(self.live_runs["selection"]):
            for name, dash in (("band", "solid"), ("random", "dashed")):
                if name in run:
                    xs.append(run[name]["steps"])
                    ys.append(run[name]["val_loss"])
                    labels.append(f"live {k + 1}: {'scores %.2f-%.2f' % (run['low'], run['high']) if name == 'band' else 'random (same size)'}")
                    cols.append(Category10_10[(4 + k) % 10])
                    dashes.append(dash)
        self.selection_source.data = _curves(xs, ys, labels, cols, dashes)
        _key(*self._curve_keys[id(self.selection_source)], [(lab, c, "line", d) for lab, c, d in zip(labels, cols, dashes)])
        self.draw_band()

    def draw_band(self) -> None:
        """Redraw the histogram with the chosen score range; say how many chunks it keeps (or why none)."""
        from workbench.datalab.selection import select_score_range

        sc = self.selection.scores
        counts, edges = np.histogram(sc, bins=40)
        lo, hi = self._band_values()
        mid = (edges[:-1] + edges[1:]) / 2
        inside = (mid >= lo) & (mid <= hi)
        self.hist_source.data = dict(left=edges[:-1].tolist(), right=edges[1:].tolist(), count=counts.tolist(),
                                     colour=["#d62728" if i else "#9ecae1" for i in inside],
                                     where=["in the range" if i else "outside" for i in inside])
        _key(self.hist_figure, self._hist_key,
             [(w, c, "square", "solid") for w, c in zip(self.hist_source.data["where"], self.hist_source.data["colour"])])
        self.band_box.left, self.band_box.right = lo, hi
        try:
            idx = select_score_range(sc, lo, hi)
        except DataLabError:
            self.band_note.value = "&nbsp;&rarr; keeps no chunk"
            raise
        self.band_note.value = f"&nbsp;&rarr; keeps {len(idx)} of {len(sc)} chunks ({len(idx) / len(sc):.0%})"
        self._say(f"selection: {len(idx)} chunks score in [{lo:.2f}, {hi:.2f}]; shipped winner at 250 steps: "
                  f"{self.selection.winner} band", tab="selection")

    @_shown("selection")
    def run_selection(self, background: bool | None = None):
        """Train on the chosen band and on a random subset of the same size (background, progress, Stop)."""
        if self.busy:
            return None
        from workbench.datalab.selection import select_score_range

        lo, hi = self._band_values()
        steps = int(self.steps.value)
        select_score_range(self.selection.scores, lo, hi)
        scores = self.selection.scores

        def work(tick):
            return glue.train_band(scores, lo, hi, steps, progress=tick, should_stop=self._stop_requested)

        def done(run):
            self.live_runs["selection"].append(run)
            self.draw_selection()
            if run.get("stopped"):
                self._say("selection: stopped; the finished curves are kept", "warning", "selection")
            else:
                self._say(f"selection: trained {steps} steps on {run['n_chunks']} chunks in [{lo:.2f}, {hi:.2f}]: "
                          f"final loss {run['band']['val_loss'][-1]:.3f} vs random {run['random']['val_loss'][-1]:.3f}",
                          tab="selection")

        return self._start(work, done, "selection", background)

    def _stop_requested(self) -> bool:
        return self._task is not None and self._task.stop_requested

    def _start(self, work, done, tab: str, background: bool | None = None):
        self._task_button = {"selection": self.train_button, "distillation": self.distill_button,
                             "traps": self.trap_button}[tab]
        self.progress.value, self.progress.max = 0, 1
        self.progress.layout.visibility = "visible"
        self.progress.bar_style = "info"
        t0 = time.perf_counter()

        def progress(d, total):
            self.progress.max = max(int(total), 1)
            self.progress.value = int(d)

        def ok(res):
            self.timings[tab] = time.perf_counter() - t0
            self.progress.bar_style = "success"
            done(res)

        def failed(e):
            self.progress.bar_style = "danger"
            self._fail(e, tab)

        def stopped():
            self.progress.bar_style = "warning"
            self._say(f"{tab}: stopped; the previous curves stay", "warning", tab)

        self._say(f"{tab}: training in the background ({self.steps.value} steps) ...", "warning", tab)
        return self.run_in_background(work, on_progress=progress, on_done=ok, on_error=failed, on_stopped=stopped,
                                      background=background)

    # --- mixing --------------------------------------------------------------------------------------------------
    def draw_mixing(self) -> None:
        r = self.mixing
        colours = [Category10_10[i] for i in range(len(r.domains))]
        self.law_source.data = _curves([r.grid.tolist()] * len(r.domains),
                                       [r.grid_loss[:, j].tolist() for j in range(len(r.domains))],
                                       [f"law: {d} loss" for d in r.domains], colours, ["solid"] * len(r.domains))
        pts = {k: [] for k in ("docs", "loss", "sd", "predicted", "domain", "kind", "colour", "marker")}
        for i, p in enumerate(r.proportions):
            for j, d in enumerate(r.domains):
                for k, v in (("docs", float(p[0])), ("loss", float(r.mean[i, j])), ("sd", float(r.sd[i, j])),
                             ("predicted", float(r.predicted[i, j])), ("domain", d),
                             ("kind", "held out (not fitted)" if r.heldout[i] else "fitted"),
                             ("colour", colours[j]), ("marker", "triangle" if r.heldout[i] else "circle")):
                    pts[k].append(v)
        dots = pts["key"] = [f"{d}, {k}" for d, k in zip(pts["domain"], pts["kind"])]
        self.mix_points.data = pts
        _key(self.mixing_figure, self._mix_key,
             [(lab, c, "line", "solid") for lab, c in zip(self.law_source.data["label"], colours)]
             + [(k, c, m, "solid") for k, c, m in zip(dots, pts["colour"], pts["marker"])])
        self.set_share(self.share.value)

    def set_share(self, docs: float) -> None:
        """Move the slider's line to a docs share and read the law's prediction there."""
        self._read_law(np.array([float(docs), 1 - float(docs)]))
        with self.quietly():
            self.proportions.value = f"{float(docs):.2f}, {1 - float(docs):.2f}"

    @_shown("mixing")
    def set_proportions(self, text: str) -> None:
        """Typed proportions (docs, code): checked (they must sum to 1), then read like the slider."""
        r = glue.parse_proportions(text)
        with self.quietly():
            self.share.value = float(r[0])
        self._read_law(r)

    def _read_law(self, r: np.ndarray) -> None:
        m = self.mixing
        pred = [float(f.predict(r[None])[0]) for f in m.fits]
        self.share_span.location = float(r[0])
        target = float(np.dot(m.target_weights, pred))
        parts = ", ".join(f"{d} {v:.3f}" for d, v in zip(m.domains, pred))
        self.mix_readout.value = (f"law at docs {r[0]:.2f} / code {r[1]:.2f}: {parts} nats/byte (equal-weight "
                                  f"target {target:.3f}; the law's optimum docs {m.optimum[0]:.2f}, target "
                                  f"{m.optimum_loss:.3f})")
        self.mix_prediction = dict(zip(m.domains, pred))
        mae = ", ".join(f"{d} {v:.3f}" for d, v in zip(m.domains, m.heldout_mae))
        self._say(f"mixing: shipped sweep (250 steps), law fitted on {int((~m.heldout).sum())} mixtures; "
                  f"error on the held-out mixtures {mae} nats/byte", tab="mixing")

    # --- distillation --------------------------------------------------------------------------------------------
    def draw_distill(self) -> None:
        r = self.distill
        xs, ys, labels, cols, dashes = [], [], [], [], []
        steps = [int(s) for s in r.steps]
        for i, a in enumerate(r.arms):
            xs.append(steps)
            ys.append([float(v) for v in r.curves[i].mean(0)])
            labels.append(f"shipped: {a}")
            cols.append(Category10_10[i])
            dashes.append("solid")
        for k, (name, v) in enumerate(sorted(r.teacher_loss.items())):
            xs.append([steps[0], steps[-1]])
            ys.append([float(v), float(v)])
            labels.append(f"teacher {name} itself")
            cols.append("#555555" if k == 0 else "#aaaaaa")
            dashes.append("dashed")
        for k, run in enumerate(self.live_runs["distillation"]):
            xs.append(run["steps"])
            ys.append(run["val_loss"])
            labels.append(f"live {k + 1}: {run['label']}")
            cols.append(Category10_10[(4 + k) % 10])
            dashes.append("dotdash")
        self.distill_source.data = _curves(xs, ys, labels, cols, dashes)
        _key(*self._curve_keys[id(self.distill_source)], [(lab, c, "line", d) for lab, c, d in zip(labels, cols, dashes)])
        g = r.gain_over_hard()
        self._say("distillation: shipped sweep, final loss " + ", ".join(
            f"{a} {m:.3f}" for a, m in zip(r.arms, r.mean)) + f" (gain over hard labels: "
                  + ", ".join(f"{x:+.3f}" for x in g[1:]) + ")", tab="distillation")

    @_shown("distillation")
    def run_distill(self, background: bool | None = None):
        """A live distillation run from the chosen teacher (a teacher with another tokenizer is refused up front)."""
        from workbench.datalab.distill import distill_run, load_teachers

        if self.busy:
            self._say("distillation: another live run is going; wait or stop it", "warning", "distillation")
            return None
        name, alpha = self.teacher.value, float(self.alpha.value)
        load_teachers([name])  # TeacherMismatchError before any training
        st = glue.settings(int(self.steps.value))

        def work(tick):
            return distill_run(st, teachers=(name,) if alpha > 0 else (), alpha=alpha, temperature=2.0,
                               progress=tick, should_stop=self._stop_requested)

        def done(run):
            label = f"{name}, alpha {alpha:g}, {st.steps} steps" if alpha > 0 else f"hard labels, {st.steps} steps"
            self.live_runs["distillation"].append({"steps": list(run["steps"]), "val_loss": list(run["val_loss"]),
                                                   "label": label})
            self.draw_distill()
            self._say(f"distillation: live run ({label}) final loss {run['val_loss'][-1]:.3f}", tab="distillation")

        return self._start(work, done, "distillation", background)

    # --- traps ---------------------------------------------------------------------------------------------------
    def draw_traps(self) -> None:
        r = self.traps
        auc = {k: [] for k in ("copies", "auc", "auc_sd", "kind", "colour", "marker")}
        pv = {k: [] for k in ("copies", "p_value", "kind", "colour", "marker")}
        clean = np.nanmean(r.auc_clean, 1) if np.isfinite(r.auc_clean).any() else None
        for i, c in enumerate(r.copies):
            for k, v in (("copies", int(c)), ("auc", float(r.auc_mean[i])), ("auc_sd", float(r.auc_sd[i])),
                         ("kind", "shipped, vs docs-byte-draft"), ("colour", "#1f77b4"), ("marker", "circle")):
                auc[k].append(v)
            if clean is not None and np.isfinite(clean[i]):
                for k, v in (("copies", int(c)), ("auc", float(clean[i])), ("auc_sd", 0.0),
                             ("kind", "shipped, vs micro model without traps"), ("colour", "#2ca02c"),
                             ("marker", "square")):
                    auc[k].append(v)
            for k, v in (("copies", int(c)), ("p_value", float(r.p_mean[i])), ("kind", "shipped sweep (250 steps)"),
                         ("colour", "#1f77b4"), ("marker", "circle")):
                pv[k].append(v)
        for run in self.live_runs["traps"]:
            for k, v in (("copies", run["copies"]), ("auc", run["auc"]), ("auc_sd", 0.0),
                         ("kind", "live, vs docs-byte-draft"), ("colour", "#ff7f0e"), ("marker", "diamond")):
                auc[k].append(v)
            for k, v in (("copies", run["copies"]), ("p_value", run["p_value"]), ("kind", "live run"),
                         ("colour", "#ff7f0e"), ("marker", "diamond")):
                pv[k].append(v)
        auc["x"] = [str(c) for c in auc["copies"]]
        pv["x"] = [str(c) for c in pv["copies"]]
        factors = [str(c) for c in sorted(set(auc["copies"]))]
        for f in (self.auc_figure, self.p_figure):
            f.x_range.factors = factors
        self.trap_source.data = auc
        self.p_source.data = pv
        _key(self.auc_figure, self._auc_key, [(k, c, m, "solid") for k, c, m in zip(auc["kind"], auc["colour"],
                                                                                   auc["marker"])], at=factors[0])
        _key(self.p_figure, self._p_key, [(k, c, m, "solid") for k, c, m in zip(pv["kind"], pv["colour"],
                                                                               pv["marker"])], at=factors[0])
        self._say("traps: shipped sweep, AUC " + ", ".join(f"{int(c)}: {a:.2f}" for c, a in zip(r.copies, r.auc_mean))
                  + " by copies (vs docs-byte-draft)", tab="traps")

    @_shown("traps")
    def run_trap(self, background: bool | None = None):
        """A live trap run: traps inserted ``copies`` times; a trap longer than the context is refused up front."""
        from workbench.datalab.recipes import MICRO_CONFIG
        from workbench.datalab.traps import check_fits, reference_losses, trap_run, traps_from_runs

        if self.busy:
            self._say("traps: another live run is going; wait or stop it", "warning", "traps")
            return None
        L, c = int(self.trap_len.value), int(self.copies.value)
        check_fits(L, MICRO_CONFIG["block_size"])
        st = glue.settings(int(self.steps.value))

        def work(tick):
            run = trap_run(st, copies=c, trap_len=L, n_shuffles=19, progress=tick,
                           should_stop=self._stop_requested)
            res = traps_from_runs([{**run, "copies": c, "seed": 0}], *reference_losses(trap_len=L))
            return {"copies": c, "trap_len": L, "steps": st.steps, "auc": float(res.auc[0, 0]),
                    "p_value": float(res.p_value[0, 0]), "stopped": run["stopped"]}

        def done(run):
            self.live_runs["traps"].append(run)
            self.draw_traps()
            self._say(f"traps: live run ({c} copies of {L}-byte traps, {st.steps} steps): AUC {run['auc']:.2f}, "
                      f"p = {run['p_value']:.2f}", tab="traps")

        return self._start(work, done, "traps", background)

    # --- export ----------------------------------------------------------------------------------------------------
    _TAB_TABLES = {"compression": ("coder_source", "heat_source"), "selection": ("hist_source", "selection_source"),
                   "mixing": ("law_source", "mix_points"), "distillation": ("distill_source",),
                   "traps": ("trap_source", "p_source")}

    def export_tables(self) -> dict[str, dict[str, list]]:
        keep = self._TAB_TABLES[self.tab]
        tables = super().export_tables()
        return {k: tables[k] for k in keep if k in tables}

    def export_state(self) -> dict:
        tab = self.tab
        state = {"tab": tab}
        if tab == "compression":
            res = self.compression_result
            state.update(text=self.text.value, coders=self.coder_rows,
                         blob=None if res is None else glue.blob_to_text(res.blob),
                         ideal_bits=None if res is None else res.ideal_bits)
        elif tab == "selection":
            state.update(range=list(self._band_values()), live_runs=self.live_runs["selection"],
                         shipped_mean=dict(zip(self.selection.bands, self.selection.mean.tolist())))
        elif tab == "mixing":
            m = self.mixing
            state.update(docs_share=self.share.value, prediction=getattr(self, "mix_prediction", None),
                         fits=[vars(f) if hasattr(f, "__dict__") else f for f in m.fits],
                         optimum=m.optimum.tolist(), heldout_mae=m.heldout_mae.tolist())
        elif tab == "distillation":
            state.update(teacher_loss=self.distill.teacher_loss, live_runs=self.live_runs["distillation"],
                         shipped_mean=dict(zip(self.distill.arms, self.distill.mean.tolist())))
        else:
            state.update(live_runs=self.live_runs["traps"], copies=self.traps.copies.tolist(),
                         auc_mean=self.traps.auc_mean.tolist(), p_mean=self.traps.p_mean.tolist())
        return state
