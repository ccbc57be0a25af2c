"""ResidualLab: what the residual stream holds layer by layer, and which part of the model caused a prediction.

Five tabs, each a view of one core function of :mod:`workbench.residual` (this module only draws):

* **lens**: :func:`~workbench.residual.lens.logit_lens` as a boundaries x positions grid of top-1 tokens, coloured
  by probability, KL to the output or entropy; "logit" / "tuned" switches the lens (tuned: the model's shipped
  :func:`~workbench.residual.tuned_lens.load_tuned_lens`, or ``lens=``); hover a cell for the top-5, click it for
  the top-k bars;
* **direct attribution**: :func:`~workbench.residual.dla.direct_logit_attribution` of a target token (optionally
  minus a contrast token), one bar per component;
* **patching**: :func:`~workbench.residual.patching.activation_patching` of a clean and a corrupted prompt (same
  number of tokens) as a heat map, layers x positions or layers x heads, computed in a worker thread with a progress
  bar and a Stop button (:meth:`WorkbenchWidget.run_in_background`);
* **input attribution**: gradient x input, integrated gradients or occlusion
  (:mod:`~workbench.residual.input_attribution`) shading the prompt's tokens;
* **neurons**: :func:`~workbench.residual.neurons.top_activations`: the corpus snippets that excite one MLP neuron
  most, each token shaded by the neuron's activation.

"Export PNG" draws the tab shown; "Export data" writes that tab's tables (and the core result) as .npz, .json or
.csv. Every bad input (empty text, prompts of different lengths, a target the tokenizer cannot produce, a neuron out
of range) ends in a visible notice; the views it would have changed are cleared and say why.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

import ipywidgets as W
import numpy as np
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    FactorRange,
    FixedTicker,
    HoverTool,
    Legend,
    LegendItem,
    LinearAxis,
    LinearColorMapper,
    PrintfTickFormatter,
    Range1d,
    TapTool,
)
from bokeh.palettes import Blues256, Oranges256, RdBu11
from bokeh.plotting import figure

from workbench.residual import ResidualError
from workbench.residual import lab as glue

from .base import Debouncer, WorkbenchWidget, bokeh_pane, notice, set_notice

#: the width of a notebook column with the file browser open (DESIGN.md section 6)
COLUMN = 880
#: figures inside the tabs: the tab panel's padding and border leave about 860 px of the column
FIG_W = COLUMN - 50
STYLE = {"description_width": "initial"}
_WRAP = dict(layout=W.Layout(flex_flow="row wrap", align_items="center", width="100%"))
TABS = ("lens", "direct attribution", "patching", "input attribution", "neurons")
#: the positions the lens grid shows at once (pan sideways for the rest); the last ones are shown first
GRID_COLUMNS = 30
#: tokens per row of a shaded prompt
STRIP_ROW = 24
PATCH_WHAT = ("resid_pre", "attn_out", "mlp_out", "heads")
ATTRIBUTION_METHODS = {"gradient x input": "gradient_x_input", "integrated gradients": "integrated_gradients",
                       "occlusion": "occlusion"}
_POS, _NEG = "#2166ac", "#b2182b"   # the two ends of RdBu: positive blue, negative red (as the heat maps)


def _core(name: str):
    """A core module of :mod:`workbench.residual` (an ImportError becomes a ResidualError notice)."""
    try:
        return importlib.import_module(f"workbench.residual.{name}")
    except ImportError as e:
        raise ResidualError(f"workbench.residual.{name} is not available: {e}") from None


def _ticks(axis, lo, hi, max_ticks=8, labels: dict | None = None) -> None:
    axis.ticker = FixedTicker(ticks=glue.integer_ticks(lo, hi, max_ticks))
    axis.major_label_overrides = labels or {}


def _bar(mapper, title: str, fmt: str = "%.2f") -> ColorBar:
    return ColorBar(color_mapper=mapper, width=10, title=title, formatter=PrintfTickFormatter(format=fmt),
                    ticker=FixedTicker(ticks=[0.0, 1.0]), major_label_text_font_size="10px", padding=4,
                    title_text_font_size="10px", title_text_font_style="normal")


def _scale(mapper, bar, lo: float, hi: float, title: str, palette=None, n: int = 5) -> None:
    """The colour mapper's range and the colour bar's ticks over exactly the data's range."""
    if palette is not None:
        mapper.palette = palette
    mapper.update(low=lo, high=hi)
    ticks = np.linspace(lo, hi, n).tolist()
    span = max(abs(lo), abs(hi))
    bar.formatter.format = "%.2f" if span < 10 else "%.1f" if span < 100 else "%.0f"
    if span < 0.01:
        bar.formatter.format = "%.1e"
    bar.ticker.ticks = ticks
    bar.title = title


_LIGHT_BLUES = list(reversed(Blues256))[20:236]      # light (low) to dark (high)
_LIGHT_ORANGES = list(reversed(Oranges256))[20:236]
_DIVERGING = list(reversed(RdBu11))                   # red (negative) .. white .. blue (positive)


class ResidualLab(WorkbenchWidget):
    """Look inside a model's residual stream: logit/tuned lens, direct logit attribution, activation patching,
    input attribution and MLP neurons, for any model of the workbench interface (TinyGPT, shipped models, ``from_hf``).

    ``text``: the prompt of the lens, attribution tabs; ``clean``/``corrupted``/``answer``/``wrong``: the patching
    tab's prompts and tokens; ``target``/``contrast``: the direct-attribution tokens (empty: the model's own top
    prediction); ``lens``: a :class:`~workbench.residual.tuned_lens.TunedLens` (default: the shipped one, if any);
    ``corpus``: text the neuron tab searches (default: a slice of the embedded docs corpus); ``background``: where
    patching runs (None: a worker thread in a notebook, at once in scripts and tests).
    """

    def __init__(self, model, text: str = "def area(width, height):\n    return width * height",
                 clean: str = "value = 1\nvalue = value + 1\nprint(val",
                 corrupted: str = "valid = 1\nvalid = valid + 1\nprint(val", answer: str = "u", wrong: str = "i",
                 target: str = "", contrast: str = "", lens=None,
                 corpus: str | None = None, layer: int = 0, neuron: int = 0, k: int = 10, debounce: float = 0.3,
                 export_dir: str | Path = "exports", background: bool | None = None, tab: str = "lens"):
        self.model = model
        self.export_dir = Path(export_dir)
        self.background = background
        self.k = k
        cfg = model.config
        self.L, self.H = int(cfg.n_layer), int(cfg.n_head)
        self._summary = f"model={getattr(model, 'name', type(model).__name__)!r}, {self.L} layers x {self.H} heads"
        self._corpus = corpus
        self.timings: dict[str, float] = {}
        self.lens_result = self.dla_result = self.patch_result = self.attr_result = self.neuron_result = None
        self.cell: tuple[int, int] | None = None
        self._stale = set(TABS)
        self._notes: dict[str, tuple[str, str]] = {}
        self.tuned = lens
        self.tuned_note = ""
        if self.tuned is None:
            try:
                self.tuned = _core("tuned_lens").load_tuned_lens(model)
            except Exception as e:  # noqa: BLE001 - no tuned lens is a note, never a broken widget
                self.tuned, self.tuned_note = None, f"tuned lens unavailable: {e}"
        if self.tuned is None and not self.tuned_note:
            self.tuned_note = ("tuned lens: none ships for this model (train one with "
                               "workbench.residual.tuned_lens.train_tuned_lens and pass lens=)")

        # --- controls shared by every tab ---
        self.text = W.Textarea(value=text, description="prompt", style=STYLE,
                               layout=W.Layout(width="auto", align_self="stretch", height="56px"))
        self.info = notice()

        # --- lens tab ---
        self.lens_kind = W.ToggleButtons(options=["logit", "tuned"], value="logit", description="lens",
                                         style={"button_width": "auto", **STYLE},
                                         disabled=self.tuned is None,
                                         tooltip="logit lens: the model's own final norm and unembedding at every "
                                                 "layer; tuned lens: a learned affine map per layer first")
        self.colour_by = W.ToggleButtons(options=list(glue.LENS_COLOURS), value="probability",
                                         description="colour", style={"button_width": "auto", **STYLE})
        self.lens_note = W.HTML()
        if self.tuned is None:
            set_notice(self.lens_note, self.tuned_note, "info")
        self.lens_source = ColumnDataSource(self._empty_lens())
        n_rows = self.L + 1
        self.lens_mapper = LinearColorMapper(palette=_LIGHT_BLUES, low=0, high=1)
        g = figure(width=FIG_W, height=110 + 30 * n_rows, title="", toolbar_location="below",
                   tools="xpan,reset", x_range=Range1d(-0.5, 0.5), y_range=Range1d(-0.5, n_rows - 0.5),
                   x_axis_label="position (the input token is written above the grid)",
                   y_axis_label="layer boundary")
        self._cells = g.rect(x="position", y="boundary", width=0.96, height=0.92, source=self.lens_source,
                             fill_color={"field": "value", "transform": self.lens_mapper}, line_color=None,
                             nonselection_fill_alpha=1.0, selection_line_color="#d62728", selection_line_width=2)
        labels = g.text(x="position", y="boundary", text="top1", source=self.lens_source, text_align="center",
                        text_baseline="middle", text_font_size="9px", text_color="ink")
        labels.nonselection_glyph = labels.glyph.clone()  # a clicked cell never fades the other cells' tokens
        g.add_tools(TapTool(renderers=[self._cells]),
                    HoverTool(renderers=[self._cells], tooltips=[
                        ("cell", "@boundary_name, position @position (input @input)"),
                        ("top-5", "@top5"), ("KL to output", "@kl{0.000} bits"), ("entropy", "@entropy{0.00} bits")]))
        self._input_axis = LinearAxis(axis_label=None, major_label_text_font_size="10px")
        g.add_layout(self._input_axis, "above")
        g.grid.visible = False
        self.lens_bar = _bar(self.lens_mapper, "top-1 probability")
        g.add_layout(self.lens_bar, "right")
        self.lens_figure = g
        self.topk_source = ColumnDataSource(dict(token=[], prob=[], id=[]))
        tk = figure(width=FIG_W, height=240, title="click a cell for its top-k", toolbar_location=None, tools="",
                    x_range=FactorRange(), y_range=Range1d(0, 1), y_axis_label="probability")
        tk.vbar(x="token", top="prob", width=0.8, source=self.topk_source, color=_POS)
        tk.add_tools(HoverTool(tooltips=[("token", "@token (id @id)"), ("probability", "@prob{0.0000}")]))
        tk.xgrid.visible = False
        self.topk_figure = tk
        self.lens_tab = W.VBox([W.HBox([self.lens_kind, self.colour_by], **_WRAP), self.lens_note,
                                bokeh_pane(g), bokeh_pane(tk)])

        # --- direct attribution tab ---
        self.target = W.Text(value=target, description="target token", style=STYLE, placeholder="top prediction",
                             layout=W.Layout(width="230px"))
        self.contrast = W.Text(value=contrast, description="minus token", style=STYLE, placeholder="(none)",
                               layout=W.Layout(width="220px"))
        self.position = W.IntText(value=-1, description="position", style=STYLE, layout=W.Layout(width="140px"),
                                  tooltip="the position whose next-token logit is attributed (-1: the last)")
        self.dla_source = ColumnDataSource(dict(label=[], value=[], colour=[], effect=[], kind=[], layer=[], head=[]))
        d = figure(width=FIG_W, height=300, title="", toolbar_location=None, tools="", x_range=FactorRange(),
                   y_axis_label="direct effect on the logit")
        self._dla_bars = d.vbar(x="label", top="value", width=0.8, color="colour", source=self.dla_source)
        d.add_tools(HoverTool(tooltips=[("component", "@label"), ("direct effect", "@value{0.0000}")]))
        d.xaxis.major_label_orientation = 1.2
        d.xaxis.major_label_text_font_size = "10px"
        d.xgrid.visible = False
        # the key groups the bars themselves by their "effect" column (one swatch per colour shown)
        d.add_layout(Legend(items=[LegendItem(label=dict(field="effect"), renderers=[self._dla_bars])],
                            orientation="horizontal", label_text_font_size="10px", padding=2, margin=2,
                            location="top_left"), "above")
        self.dla_figure = d
        self.dla_tab = W.VBox([W.HBox([self.target, self.contrast, self.position], **_WRAP), bokeh_pane(d)])

        # --- patching tab ---
        self.clean = W.Textarea(value=clean, description="clean", style=STYLE,
                                layout=W.Layout(width="auto", align_self="stretch", height="64px"))
        self.corrupted = W.Textarea(value=corrupted, description="corrupted", style=STYLE,
                                    layout=W.Layout(width="auto", align_self="stretch", height="64px"))
        self.answer = W.Text(value=answer, description="answer", style=STYLE, layout=W.Layout(width="150px"))
        self.wrong = W.Text(value=wrong, description="wrong", style=STYLE, layout=W.Layout(width="150px"),
                            placeholder="(none)")
        self.what = W.Dropdown(options=list(PATCH_WHAT), value="resid_pre", description="patch", style=STYLE,
                               layout=W.Layout(width="180px"))
        self.direction = W.ToggleButtons(options=["denoise", "noise"], value="denoise", style={"button_width": "auto"},
                                         tooltip="denoise: clean activations into the corrupted run; noise: the "
                                                 "other way round")
        self.patch_button = self.task_button("patch", self.run_patching, icon="play",
                                             tooltip="run activation patching (in the background; click again to "
                                                     "stop)")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="progress", style=STYLE,
                                      layout=W.Layout(width="320px", visibility="hidden"))
        self.patch_source = ColumnDataSource(dict(layer=[], col=[], effect=[], row_label=[], col_label=[]))
        self.patch_mapper = LinearColorMapper(palette=_DIVERGING, low=-1, high=1)
        p = figure(width=FIG_W, height=110 + 34 * self.L, title="click patch to run", toolbar_location="below",
                   tools="xpan,reset", x_range=Range1d(-0.5, 0.5), y_range=Range1d(-0.5, self.L - 0.5),
                   y_axis_label="layer")
        p.rect(x="col", y="layer", width=1, height=1, source=self.patch_source, line_color=None,
               fill_color={"field": "effect", "transform": self.patch_mapper})
        p.add_tools(HoverTool(tooltips=[("where", "@row_label, @col_label"), ("effect", "@effect{0.000}")]))
        p.grid.visible = False
        self._patch_top = LinearAxis(axis_label=None, major_label_text_font_size="10px")
        p.add_layout(self._patch_top, "above")
        self.patch_bar = _bar(self.patch_mapper, "effect")
        p.add_layout(self.patch_bar, "right")
        _ticks(p.yaxis[0], 0, self.L - 1)
        self.patch_figure = p
        self.patch_tab = W.VBox([self.clean, self.corrupted,
                                 W.HBox([self.answer, self.wrong, self.what, self.direction], **_WRAP),
                                 W.HBox([self.patch_button, self.progress], **_WRAP), bokeh_pane(p)])

        # --- input attribution tab ---
        self.method = W.ToggleButtons(options=list(ATTRIBUTION_METHODS), value="gradient x input",
                                      style={"button_width": "auto"})
        self.attr_target = W.Text(value="", description="target token", style=STYLE, placeholder="top prediction",
                                  layout=W.Layout(width="230px"))
        self.attr_source = ColumnDataSource(dict(x=[], y=[], token=[], score=[], position=[], ink=[]))
        self.attr_mapper = LinearColorMapper(palette=_DIVERGING, low=-1, high=1)
        self.attr_figure, self.attr_bar = self._strip_figure(self.attr_source, self.attr_mapper, "score",
                                                             "attribution to the predicted token")
        self.attr_tab = W.VBox([W.HBox([self.method, self.attr_target], **_WRAP), bokeh_pane(self.attr_figure)])

        # --- neurons tab ---
        self.layer = W.BoundedIntText(value=layer, min=0, max=self.L - 1, description="layer", style=STYLE,
                                      layout=W.Layout(width="120px"))
        self.neuron = W.IntText(value=neuron, description="neuron", style=STYLE, layout=W.Layout(width="150px"))
        self.neuron_note = W.HTML()
        self.neuron_source = ColumnDataSource(dict(x=[], y=[], token=[], activation=[], snippet=[], ink=[]))
        self.neuron_mapper = LinearColorMapper(palette=_LIGHT_ORANGES, low=0, high=1)
        self.neuron_figure, self.neuron_bar = self._strip_figure(
            self.neuron_source, self.neuron_mapper, "activation", "top-activating snippets", rows_axis="snippet")
        self.neuron_tab = W.VBox([W.HBox([self.layer, self.neuron, self.neuron_note], **_WRAP),
                                  bokeh_pane(self.neuron_figure)])

        self.tabs = W.Tab(children=[self.lens_tab, self.dla_tab, self.patch_tab, self.attr_tab, self.neuron_tab])
        for i, t in enumerate(TABS):
            self.tabs.set_title(i, t)
        self.tabs.selected_index = TABS.index(tab)

        # --- events: every handler through _guarded (skipped while quietly(); errors become notices) ---
        self._debouncer = Debouncer(self._guarded(self._on_text), debounce)
        self.text.observe(self.reacting(lambda ch: self._debouncer.trigger()), names="value")
        self.lens_kind.observe(self._guarded(lambda ch: self.run_lens()), names="value")
        self.colour_by.observe(self._guarded(lambda ch: self._draw_lens()), names="value")
        self.lens_source.selected.on_change("indices", lambda attr, old, new: self._guarded(self._on_tap)(new))
        for w in (self.target, self.contrast, self.position):
            w.observe(self._guarded(lambda ch: self.run_dla()), names="value")
        for w in (self.method, self.attr_target):
            w.observe(self._guarded(lambda ch: self.run_attribution()), names="value")
        for w in (self.layer, self.neuron):
            w.observe(self._guarded(lambda ch: self.run_neurons()), names="value")
        self.tabs.observe(self._guarded(lambda ch: self._refresh_tab()), names="selected_index")

        super().__init__(children=[self.text, W.HBox([self.export_controls(formats=(".npz", ".json", ".csv"),
                                                                           default=".npz")], **_WRAP),
                                   self.info, self.tabs],
                         layout=W.Layout(max_width=f"{COLUMN + 20}px"))
        self._refresh_tab()

    # --- plumbing -----------------------------------------------------------------------------------------------
    @staticmethod
    def _empty_lens() -> dict:
        return dict(boundary=[], position=[], boundary_name=[], input=[], top1=[], prob=[], kl=[], entropy=[],
                    value=[], top5=[], ink=[])

    def _strip_figure(self, source, mapper, value: str, title: str, rows_axis: str | None = None):
        f = figure(width=FIG_W, height=140, title=title, toolbar_location=None, tools="",
                   x_range=Range1d(-0.5, STRIP_ROW - 0.5), y_range=Range1d(0.5, -0.5))
        f.rect(x="x", y="y", width=0.96, height=0.9, source=source, line_color=None,
               fill_color={"field": value, "transform": mapper})
        f.text(x="x", y="y", text="token", source=source, text_align="center", text_baseline="middle",
               text_font_size="11px", text_color="ink")
        tips = [("token", "@token (position @position)"), (value, f"@{value}{{0.0000}}")]
        if rows_axis:
            tips = [("snippet", "@snippet"), ("token", "@token"), (value, f"@{value}{{0.0000}}")]
        f.add_tools(HoverTool(tooltips=tips))
        f.grid.visible = False
        f.xaxis.visible = False
        if not rows_axis:
            f.yaxis.visible = False
        else:
            f.yaxis.axis_label = "snippet (rank)"
        bar = _bar(mapper, value)
        f.add_layout(bar, "right")
        return f, bar

    def _guarded(self, fn):
        """``fn`` for an observer: skipped while the lab sets its own controls; any error becomes a visible notice."""
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - the student sees the message, not a log traceback
                self._fail(e, self.tab)
                return None

        return self.reacting(handler)

    @staticmethod
    def _message(e: Exception) -> str:
        return str(e) if isinstance(e, ResidualError) else f"{type(e).__name__}: {e}"

    def _fail(self, e: Exception, tab: str) -> None:
        """Show ``e`` in the notice and clear the view of ``tab`` (it would be stale), saying why in its title."""
        self._say(f"{tab}: {self._message(e)}", "error", tab)
        why = "no data: see the message above"
        if tab == "lens":
            self.lens_result, self.cell = None, None
            self.lens_source.data = self._empty_lens()
            self.lens_figure.title.text = why
            self.topk_source.data = dict(token=[], prob=[], id=[])
            self.topk_figure.x_range.factors = []
            self.topk_figure.title.text = why
        elif tab == "direct attribution":
            self.dla_result = None
            self.dla_source.data = dict(label=[], value=[], colour=[], effect=[], kind=[], layer=[], head=[])
            self.dla_figure.x_range.factors = []
            self.dla_figure.title.text = why
        elif tab == "patching":
            self.patch_result = None
            self.patch_source.data = dict(layer=[], col=[], effect=[], row_label=[], col_label=[])
            self.patch_figure.title.text = why
        elif tab == "input attribution":
            self.attr_result = None
            self.attr_source.data = dict(x=[], y=[], token=[], score=[], position=[], ink=[])
            self.attr_figure.title.text = why
        elif tab == "neurons":
            self.neuron_result = None
            self.neuron_source.data = dict(x=[], y=[], token=[], activation=[], snippet=[], ink=[])
            self.neuron_figure.title.text = why

    @property
    def tab(self) -> str:
        """The title of the tab shown."""
        return TABS[self.tabs.selected_index or 0]

    def show_tab(self, name: str) -> None:
        """Show the tab ``name`` (one of :data:`TABS`); it is computed if its inputs changed."""
        self.tabs.selected_index = TABS.index(name)

    def _on_text(self) -> None:
        self._stale |= {"lens", "direct attribution", "input attribution"}
        self._refresh_tab()

    def _refresh_tab(self) -> None:
        """Compute the tab shown if its inputs changed since it was drawn (others wait until they are shown)."""
        tab = self.tab
        if tab in self._notes:
            set_notice(self.info, *self._notes[tab])
        if tab not in self._stale:
            return
        self._stale.discard(tab)
        {"lens": self.run_lens, "direct attribution": self.run_dla, "patching": self._patch_ready,
         "input attribution": self.run_attribution, "neurons": self.run_neurons}[tab]()

    def _timed(self, name: str, t0: float) -> float:
        self.timings[name] = dt = time.perf_counter() - t0
        return dt

    def _ok(self, text: str, tab: str | None = None) -> None:
        self._say(text, "info", tab)

    def _say(self, text: str, kind: str = "info", tab: str | None = None) -> None:
        """Show ``text`` in the notice and remember it as the message of ``tab`` (shown again with the tab)."""
        tab = tab or self.tab
        self._notes[tab] = (text, kind)
        if tab == self.tab:
            set_notice(self.info, text, kind)

    # --- lens -----------------------------------------------------------------------------------------------------
    def run_lens(self) -> None:
        """Recompute the lens of the prompt (logit or tuned) and redraw the grid; the clicked cell stays selected."""
        t0 = time.perf_counter()
        try:
            lens = self.tuned if self.lens_kind.value == "tuned" else None
            self.lens_result = _core("lens").logit_lens(self.model, self.text.value, k=max(5, self.k), lens=lens)
        except Exception as e:  # noqa: BLE001
            self._fail(e, "lens")
            return
        dt = self._timed("lens", t0)
        T = len(self.lens_result.ids)
        self._draw_lens()
        self._ok(f"lens: {T} tokens, {self.L + 1} boundaries; {self.lens_result.kind} lens in {dt * 1000:.0f} ms",
                 tab="lens")
        b, t = self.cell if self.cell is not None else (self.L, T - 1)
        self.select_cell(min(b, self.L), min(t, T - 1))

    def _draw_lens(self) -> None:
        r = self.lens_result
        if r is None:
            return
        c = glue.lens_cells(r, self.colour_by.value, width=4)
        self.lens_cells = c
        palette = _LIGHT_BLUES if self.colour_by.value == "probability" else _LIGHT_ORANGES
        _scale(self.lens_mapper, self.lens_bar, c.low, c.high, c.title, palette)
        T = len(r.ids)
        g = self.lens_figure
        self.lens_source.data = dict(boundary=c.boundary, position=c.position, boundary_name=c.boundary_name,
                                     input=c.input, top1=c.top1, prob=c.prob, kl=c.kl, entropy=c.entropy,
                                     value=c.value, top5=c.top5, ink=c.ink)
        lo = max(0, T - GRID_COLUMNS)
        g.x_range.update(start=lo - 0.5, end=T - 0.5, bounds=(-0.5, T - 0.5))
        _ticks(g.below[0], 0, T - 1, 10)
        self._input_axis.ticker = FixedTicker(ticks=list(range(T)))
        self._input_axis.major_label_overrides = {t: glue.short_token(r.tokens[t], 4) for t in range(T)}
        names = {b: str(n) for b, n in enumerate(r.boundaries)}
        g.yaxis[0].ticker = FixedTicker(ticks=list(range(len(r.boundaries))))
        g.yaxis[0].major_label_overrides = names
        more = f"; positions {lo}..{T - 1} of 0..{T - 1} shown (drag sideways for the rest)" if lo else ""
        g.title.text = f"{r.kind} lens: top-1 next-token prediction at each layer boundary{more}"

    def _on_tap(self, new) -> None:
        if not new or self.lens_result is None:
            return
        i = int(new[0])
        self.select_cell(int(self.lens_source.data["boundary"][i]), int(self.lens_source.data["position"][i]))

    def select_cell(self, boundary: int, position: int) -> None:
        """Show the top-k distribution of one lens cell in the bars (what a click on the grid does)."""
        r = self.lens_result
        if r is None:
            return
        T = len(r.ids)
        if not (0 <= boundary < len(r.boundaries) and 0 <= position < T):
            raise _out_of_range(boundary, position, len(r.boundaries), T)
        ids, probs, tokens = r.distribution(boundary, position, self.k)
        ids, probs = np.asarray(ids).tolist(), np.asarray(probs, dtype=float).tolist()
        labels = [glue.short_token(s, 10) for s in tokens]
        seen: dict[str, int] = {}
        uniq = []
        for s in labels:  # a categorical axis needs distinct factors
            seen[s] = seen.get(s, 0) + 1
            uniq.append(s if seen[s] == 1 else f"{s} ({seen[s]})")
        self.cell = (boundary, position)
        self.topk_figure.x_range.factors = uniq
        self.topk_figure.y_range.end = min(1.0, max(probs + [1e-9]) * 1.15)
        self.topk_source.data = dict(token=uniq, prob=probs, id=ids)
        i = boundary * T + position
        with self.quietly():
            if list(self.lens_source.selected.indices) != [i]:
                self.lens_source.selected.indices = [i]
        self.topk_figure.title.text = (f"top {len(ids)} at {r.boundaries[boundary]}, position {position} "
                                       f"(after {glue.short_token(r.tokens[position], 12)!s}), {r.kind} lens")

    # --- direct logit attribution ---------------------------------------------------------------------------------
    def _target_arg(self, box: W.Text, what: str = "target"):
        """A token box's value for the core: the id of its text (which must be exactly one token; a tokenizer's
        ``<bos>`` is not counted), or None when empty."""
        if box.value == "":
            return None
        return _core("input_attribution").resolve_token(self.model, box.value, what)

    def run_dla(self) -> None:
        """Direct logit attribution of the target token (default: the model's top prediction) at ``position``."""
        t0 = time.perf_counter()
        try:
            target = self._target_arg(self.target)
            if target is None:
                target = self._top_prediction(int(self.position.value))
            a = _core("dla").direct_logit_attribution(self.model, self.text.value, target,
                                                      contrast=self._target_arg(self.contrast, "contrast"),
                                                      position=int(self.position.value))
        except Exception as e:  # noqa: BLE001
            self._fail(e, "direct attribution")
            return
        dt = self._timed("dla", t0)
        self.dla_result = a
        vals = np.asarray(a.values, dtype=float)
        keep = glue.top_components(vals, 48)
        labels = [str(a.labels[i]) for i in keep]
        v = vals[keep].tolist()
        self.dla_figure.x_range.factors = labels
        self.dla_source.data = dict(label=labels, value=v, colour=[_POS if x >= 0 else _NEG for x in v],
                                    effect=["raises the target" if x >= 0 else "lowers it" for x in v],
                                    kind=[str(a.kind[i]) for i in keep], layer=[int(a.layer[i]) for i in keep],
                                    head=[int(a.head[i]) for i in keep])
        from workbench.attention.capture import token_labels

        tgt = glue.short_token(token_labels(self.model, [a.target_id])[0], 12)
        vs = ""
        if a.contrast_id is not None:
            vs = f" minus {glue.short_token(token_labels(self.model, [a.contrast_id])[0], 12)}"
        part = f"; the {len(keep)} largest of {vals.size} shown" if len(keep) < vals.size else ""
        self.dla_figure.title.text = (f"direct effect on the logit of {tgt}{vs} at position {a.position}: "
                                      f"total {a.total:.3f}{part}")
        self._ok(f"direct attribution: {vals.size} components in {dt * 1000:.0f} ms", tab="direct attribution")

    def _top_prediction(self, position: int) -> int:
        """The model's own top next-token id at ``position`` (the default target), from the lens's final row."""
        r = self.lens_result
        if r is None or list(np.asarray(r.ids)) != list(self._ids()):
            r = self.lens_result = _core("lens").logit_lens(self.model, self.text.value, k=max(5, self.k),
                                                             lens=self.tuned if self.lens_kind.value == "tuned"
                                                             else None)
            self._stale.add("lens")
        return int(np.asarray(r.final_ids)[position])

    def _ids(self):
        return _core("run").encode(self.model, self.text.value)[0].tolist()

    # --- patching ---------------------------------------------------------------------------------------------------
    def _patch_ready(self) -> None:
        if self.patch_result is None:
            self.patch_figure.title.text = "click patch to run"
            self._say("patching: the clean and the corrupted prompt need the same number of tokens; click patch "
                      "(it runs in the background: the button reads Stop meanwhile)", tab="patching")

    def run_patching(self, background: bool | None = None):
        """Activation patching of the clean and corrupted prompts (in the background: progress bar, Stop); returns
        the :class:`~workbench.widgets.base.BackgroundTask` (None when one is running already)."""
        if self.busy:
            return None
        try:
            patching = _core("patching")
            args = dict(clean=self.clean.value, corrupted=self.corrupted.value,
                        answer=self._target_arg(self.answer, "answer"), wrong=self._target_arg(self.wrong, "wrong"),
                        what=self.what.value, direction=self.direction.value)
            if args["answer"] is None:
                raise ResidualError("patching needs an answer: the token the clean prompt should be followed by")
        except Exception as e:  # noqa: BLE001
            self._fail(e, "patching")
            return None
        self.progress.value, self.progress.max = 0, 1
        self.progress.layout.visibility = "visible"
        self.progress.bar_style = "info"
        head = f"patching {args['what']} ({args['direction']})"
        self._say(f"{head} ...", "warning", "patching")
        t0 = time.perf_counter()

        def progress(done, total):
            self.progress.max = max(int(total), 1)
            self.progress.value = int(done)
            stop = " (Stop keeps the previous map)" if self.patch_button.description == "Stop" else ""
            self._say(f"{head}: {done} of {total}{stop} ...", "warning", "patching")

        def work(tick):
            return patching.activation_patching(self.model, args["clean"], args["corrupted"], args["answer"],
                                                wrong=args["wrong"], what=args["what"], direction=args["direction"],
                                                progress=tick)

        def done(res):
            self._timed("patching", t0)
            self.progress.max = max(int(getattr(res, "total", 0) or np.size(res.effect)), 1)
            self.progress.value = self.progress.max
            self.progress.bar_style = "success"
            self._draw_patch(res)

        def failed(e):
            self.progress.bar_style = "danger"
            self._fail(e, "patching")

        def stopped():
            self.progress.bar_style = "warning"
            kept = "; the previous map stays" if self.patch_result is not None else ""
            self._say(f"patching stopped{kept}: click patch to run it again", "warning", "patching")

        return self.run_in_background(work, on_progress=progress, on_done=done, on_error=failed,
                                      on_stopped=stopped, background=background)

    def _draw_patch(self, res) -> None:
        self.patch_result = res
        eff = np.asarray(res.effect, dtype=float)
        L, C = eff.shape
        rows, cols = [str(x) for x in res.rows], [str(x) for x in res.cols]
        layer, col = np.divmod(np.arange(L * C), C)
        self.patch_source.data = dict(layer=layer.tolist(), col=col.tolist(), effect=eff.reshape(-1).tolist(),
                                      row_label=[rows[i] for i in layer], col_label=[cols[j] for j in col])
        lo, hi = glue.signed_range(eff)
        _scale(self.patch_mapper, self.patch_bar, lo, hi, res.metric_name if len(res.metric_name) < 28 else "effect")
        f = self.patch_figure
        heads = res.what == "heads"
        lo_c = 0 if heads else max(0, C - 40)
        f.x_range.update(start=lo_c - 0.5, end=C - 0.5, bounds=(-0.5, C - 0.5))
        f.y_range.update(start=-0.5, end=L - 0.5)
        f.below[0].axis_label = "head" if heads else "position (the clean prompt's token is written above)"
        _ticks(f.below[0], 0, C - 1, C if heads else 12)
        _ticks(f.yaxis[0], 0, L - 1, L, {i: rows[i] for i in range(L)})
        self._patch_top.visible = not heads
        if not heads:
            tc = list(getattr(res, "tokens_clean", None) or cols)
            tx = list(getattr(res, "tokens_corrupted", None) or tc)
            self._patch_top.ticker = FixedTicker(ticks=list(range(C)))
            self._patch_top.major_label_overrides = {
                j: glue.short_token(tc[j], 3) if tc[j] == tx[j] else
                f"{glue.short_token(tc[j], 2)}/{glue.short_token(tx[j], 2)}" for j in range(C)}
        more = f"; positions {lo_c}..{C - 1} shown (drag sideways)" if lo_c else ""
        f.title.text = (f"patching {res.what} ({res.direction}): {res.metric_name}, clean {res.clean_metric:.3f}, "
                        f"corrupted {res.corrupt_metric:.3f}{more}")
        self._ok(tab="patching", text=f"patching: {L} x {C} patches in {self.timings.get('patching', 0):.1f} s; "
                                      f"colour: "
                 f"{res.metric_name} (0: no change)")

    # --- input attribution -------------------------------------------------------------------------------------------
    def run_attribution(self) -> None:
        """Shade the prompt's tokens by their attribution to the target (default: the top prediction)."""
        t0 = time.perf_counter()
        try:
            core = _core("input_attribution")
            fn = getattr(core, ATTRIBUTION_METHODS[self.method.value])
            kw = {}
            if fn is core.integrated_gradients:
                kw["baseline"] = self.ig_baseline()
            a = fn(self.model, self.text.value, target=self._target_arg(self.attr_target), position=-1, **kw)
        except Exception as e:  # noqa: BLE001
            self._fail(e, "input attribution")
            return
        dt = self._timed("attribution", t0)
        self.attr_result = a
        scores = np.asarray(a.scores, dtype=float)
        x, y = glue.strip_cells(a.tokens, STRIP_ROW)
        lo, hi = glue.signed_range(scores)
        _scale(self.attr_mapper, self.attr_bar, lo, hi, "score")
        self.attr_source.data = dict(x=x, y=y, token=[glue.short_token(t, 5) for t in a.tokens],
                                     score=scores.tolist(), position=list(range(len(scores))),
                                     ink=glue.ink(scores, lo, hi, diverging=True))
        self._strip_size(self.attr_figure, max(y) + 1 if y else 1)
        from workbench.attention.capture import token_labels

        tgt = glue.short_token(token_labels(self.model, [a.target_id])[0], 12)
        self.attr_figure.title.text = (f"{self.method.value}: each token's share of log p({tgt}) "
                                       f"(blue raises it, red lowers it)")
        gap = "" if a.baseline_output is None else \
            f"; completeness: scores sum to {scores.sum():.3f}, the change from the baseline is " \
            f"{a.output - a.baseline_output:.3f} nats"
        self._ok(f"input attribution ({self.method.value}): {len(scores)} tokens in {dt * 1000:.0f} ms{gap}",
                 tab="input attribution")

    def ig_baseline(self):
        """The integrated-gradients baseline: the space token at every position where the tokenizer has one, else
        zero embeddings. From zero a pre-norm model without position embeddings (docs-byte, Llama) jumps near the
        baseline and 64 steps miss the jump (see :func:`workbench.residual.input_attribution.integrated_gradients`)."""
        try:
            return _core("input_attribution").resolve_token(self.model, " ", "baseline token")
        except Exception:  # noqa: BLE001 - no one-token space: fall back to zeros
            return "zeros"

    @staticmethod
    def _strip_size(f, n_rows: int) -> None:
        f.height = 70 + 28 * max(n_rows, 1)
        f.y_range.update(start=n_rows - 0.5, end=-0.5)

    # --- neurons ------------------------------------------------------------------------------------------------------
    @property
    def corpus(self) -> str:
        """The text the neuron tab searches (default: 6,000 characters of the embedded docs corpus)."""
        if self._corpus is None:
            from workbench.data import load_corpus

            docs = load_corpus("python-docs")
            self._corpus = docs[int(len(docs) * 0.9):][:6000]
        return self._corpus

    def run_neurons(self) -> None:
        """The corpus snippets that activate neuron ``neuron`` of layer ``layer``'s MLP most."""
        t0 = time.perf_counter()
        try:
            neurons = _core("neurons")
            width = int(neurons.mlp_width(self.model, int(self.layer.value)))
            self.neuron_note.value = f"<span style='color:#555'>layer {self.layer.value} has {width} neurons " \
                                     f"(0..{width - 1})</span>"
            res = neurons.top_activations(self.model, int(self.layer.value), int(self.neuron.value), self.corpus,
                                          k=self.k)
        except Exception as e:  # noqa: BLE001
            self._fail(e, "neurons")
            return
        dt = self._timed("neurons", t0)
        self.neuron_result = res
        xs, ys, toks, acts, names = [], [], [], [], []
        per = STRIP_ROW
        for r, s in enumerate(res.snippets):
            a = np.asarray(s.activations, dtype=float)
            start = max(0, min(int(s.center) - per // 2, len(s.tokens) - per))
            for j in range(start, min(len(s.tokens), start + per)):
                xs.append(j - start)
                ys.append(r)
                toks.append(glue.short_token(s.tokens[j], 5))
                acts.append(float(a[j]) if np.isfinite(a[j]) else float("nan"))
                names.append(f"#{r + 1}, peak {float(s.max_activation):.3f} at token {int(s.position)}")
        lo, hi = glue.value_range(acts, floor=min(0.0, float(np.nanmin(acts)) if acts else 0.0))
        _scale(self.neuron_mapper, self.neuron_bar, lo, hi, "activation")
        self.neuron_source.data = dict(x=xs, y=ys, token=toks, activation=acts, snippet=names,
                                       ink=glue.ink(acts, lo, hi))
        n = len(res.snippets)
        self._strip_size(self.neuron_figure, n)
        _ticks(self.neuron_figure.yaxis[0], 0, max(n - 1, 0), n, {r: f"#{r + 1}" for r in range(n)})
        self.neuron_figure.title.text = (f"layer {res.layer} neuron {res.neuron}: the {n} snippets it fires on most "
                                         f"(darker: stronger)")
        self._ok(f"neurons: {n} snippets from {getattr(res, 'n_tokens', 0):,} tokens of the corpus in "
                 f"{dt * 1000:.0f} ms", tab="neurons")

    # --- export -------------------------------------------------------------------------------------------------------
    _TAB_TABLES = {"lens": ("lens_source", "topk_source"), "direct attribution": ("dla_source",),
                   "patching": ("patch_source",), "input attribution": ("attr_source",),
                   "neurons": ("neuron_source",)}

    def export_tables(self) -> dict[str, dict[str, list]]:
        """The tables of the tab shown (what "Export data" writes; a CSV takes its first)."""
        keep = self._TAB_TABLES[self.tab]
        tables = super().export_tables()
        return {k: tables[k] for k in keep if k in tables}

    def export_state(self) -> dict:
        """Exported with the data: the tab, the prompt(s), the settings and the core result the tab shows."""
        tab = self.tab
        state = {"tab": tab, "text": self.text.value}
        if tab == "lens":
            state.update(lens=self.lens_kind.value, colour=self.colour_by.value, cell=self.cell,
                         result=self.lens_result)
        elif tab == "direct attribution":
            state.update(target=self.target.value, contrast=self.contrast.value, position=self.position.value,
                         result=self.dla_result)
        elif tab == "patching":
            state.update(clean=self.clean.value, corrupted=self.corrupted.value, answer=self.answer.value,
                         wrong=self.wrong.value, what=self.what.value, direction=self.direction.value,
                         result=self.patch_result)
        elif tab == "input attribution":
            state.update(method=self.method.value, target=self.attr_target.value, result=self.attr_result)
        else:
            state.update(layer=self.layer.value, neuron=self.neuron.value, result=self.neuron_result)
        return state


def _out_of_range(boundary: int, position: int, n_boundaries: int, T: int) -> Exception:
    from workbench.residual import OutOfRangeError

    return OutOfRangeError(f"no lens cell at boundary {boundary}, position {position}: boundaries "
                           f"0..{n_boundaries - 1}, positions 0..{T - 1}")
