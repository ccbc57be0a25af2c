"""AttentionLab: an L x H overview of per-head metrics, one head in detail, comparison, ablation, export; and the
CheckpointScrubber for the checkpoints of an induction run.

Every number drawn here comes from :mod:`workbench.attention.lab` (metrics, patterns, colour ranges, hover
labels, top keys, next-token distributions, PNG pictures); this module holds figures, controls and wiring only.
Every head view (the detail and the three comparison panels) is ONE bokeh ``image`` glyph fed a downsampled
``(n, n)`` float32 array, so a head click sends at most ``max_side**2 * 4`` bytes for the detail plus
``3 * compare_side**2 * 4`` when comparing, whatever ``T`` is.

Lesson: ``notebooks/02_attention.ipynb`` (2 · Induction heads form during training; 4 · The Attention lab).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import ipywidgets as W
import numpy as np
from bokeh.events import Tap
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    CustomJSHover,
    FactorRange,
    FixedTicker,
    HoverTool,
    Legend,
    LegendItem,
    LinearColorMapper,
    PrintfTickFormatter,
    Range1d,
    TapTool,
)
from bokeh.palettes import RdBu11, Viridis256
from bokeh.plotting import figure

from workbench.attention import METRICS, AttentionError, IndexOutOfRangeError, save_png
from workbench.attention import lab as core
from workbench.attention.lab import MODES, POLICY_CHOICES, POLICY_CONTROL, POLICY_LABELS, POLICY_USES, ROLLOUT_MAX_T

from .base import Debouncer, WorkbenchWidget, bokeh_pane, notice, set_notice

#: the width of a notebook column with the file browser open (DESIGN.md section 6)
COLUMN = 880
STYLE = {"description_width": "initial"}


def _set_ticks(axis, lo: float, hi: float, max_ticks: int = 8) -> None:
    """Whole-number ticks (layers, heads, positions, steps) on ``axis``."""
    axis.ticker = FixedTicker(ticks=core.integer_ticks(lo, hi, max_ticks))


def _colour_bar(mapper, title: str = "") -> ColorBar:
    return ColorBar(color_mapper=mapper, width=10, title=title or None, formatter=PrintfTickFormatter(format="%.2f"),
                    ticker=FixedTicker(ticks=[0.0, 1.0]), major_label_text_font_size="10px", padding=4)


def _apply_scale(mapper, bar, scale) -> None:
    """Show a :class:`~workbench.attention.lab.ColourScale`: the mapper's range, the bar's format and 5 ticks over
    exactly that range."""
    palette = RdBu11 if scale.diverging else Viridis256  # RdBu11 runs blue -> red: B - A > 0 is red, as in the PNG
    mapper.update(palette=palette, low=scale.low, high=scale.high)
    bar.formatter.format = scale.fmt
    bar.ticker.ticks = scale.ticks


class ImagePanel:
    """One head view: a figure with ONE ``image`` glyph, its data source, hover label sources (position and token
    of each row and column, from :func:`~workbench.attention.lab.position_labels`), a colour mapper and its colour
    bar. Cell ``(q, k)`` is centred on the whole numbers ``(k, q)``, so integer ticks name cells."""

    LABEL_JS = "const i = Math.floor(({v} + 0.5) / meta.data.f[0]); return src.data.{col}[i] ?? '';"

    def __init__(self, title: str = "", width: int = 460, height: int = 440, tools: str = "pan,wheel_zoom,reset",
                 toolbar_location: str | None = "above", value_name: str = "weight"):
        self.source = ColumnDataSource(dict(image=[], x=[], y=[], dw=[], dh=[]))
        self.qlab = ColumnDataSource(dict(q=[""]))
        self.klab = ColumnDataSource(dict(k=[""]))
        self.meta = ColumnDataSource(dict(q0=[0], f=[1]))
        self.mapper = LinearColorMapper(palette=Viridis256, low=0, high=1)
        fig = figure(width=width, height=height, title=title, toolbar_location=toolbar_location, tools=tools,
                     x_axis_label="key position", y_axis_label="query position",
                     x_range=Range1d(-0.5, 0.5), y_range=Range1d(0.5, -0.5))
        self.glyph = fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.source,
                               color_mapper=self.mapper)
        js = self.LABEL_JS
        self.hover = HoverTool(renderers=[self.glyph],
                               tooltips=[("query", "$y{q}"), ("key", "$x{k}"), (value_name, "@image{0.0000}")],
                               formatters={
                                   "$y": CustomJSHover(args=dict(src=self.qlab, meta=self.meta),
                                                       code=js.format(v="(value - meta.data.q0[0])", col="q")),
                                   "$x": CustomJSHover(args=dict(src=self.klab, meta=self.meta),
                                                       code=js.format(v="value", col="k")),
                               })
        fig.add_tools(self.hover)
        self.bar = _colour_bar(self.mapper, value_name)
        self.value_name = value_name
        fig.add_layout(self.bar, "right")
        self.figure = fig
        self.view = None
        self.scale = None

    def show(self, v, title: str, scale) -> None:
        """Draw the :class:`~workbench.attention.HeadView` ``v`` on the colour scale ``scale``."""
        self.view, self.scale = v, scale
        q0 = int(v.q_edges[0])
        nq, nk = int(v.q_edges[-1]) - q0, int(v.k_edges[-1])
        _apply_scale(self.mapper, self.bar, scale)
        self.bar.title = f"{self.value_name}: no difference" if scale.flat else self.value_name
        ql, kl = core.position_labels(v)
        if self.qlab.data["q"] != ql:  # labels change with the text, not with the head
            self.qlab.data = dict(q=ql)
        if self.klab.data["k"] != kl:
            self.klab.data = dict(k=kl)
        meta = dict(q0=[q0], f=[v.factor])
        if self.meta.data != meta:
            self.meta.data = meta
        self.source.data = dict(image=[v.image], x=[-0.5], y=[q0 - 0.5], dw=[nk], dh=[nq])
        self.figure.x_range.update(start=-0.5, end=nk - 0.5)
        self.figure.y_range.update(start=q0 + nq - 0.5, end=q0 - 0.5)
        _set_ticks(self.figure.xaxis[0], 0, nk - 1, 6)
        _set_ticks(self.figure.yaxis[0], q0, q0 + nq - 1, 8)
        f = f", {v.factor}x{v.factor} blocks" if v.factor > 1 else ""
        self.figure.title.text = title + f

    def clear(self, title: str) -> None:
        """No picture (after an error): an empty source and a title saying why."""
        self.view = self.scale = None
        self.source.data = dict(image=[], x=[], y=[], dw=[], dh=[])
        self.figure.title.text = title


class AttentionLab(WorkbenchWidget):
    """Explore a model's attention on a text.

    * overview: tiles for every (layer, head) coloured by ``metric`` (colour bar: the range of the values shown);
      click a tile (or set ``layer``/``head``);
    * detail: the selected head as one image; hover shows the query's and the key's position and token and the
      weight; ``mode`` switches raw / value-weighted / rollout / difference (only the modes that apply are
      offered: rollout up to 1,024 tokens, difference with a second prompt or model);
    * comparison: with a second prompt (``compare_text``) or model (``compare_model``, or the ``checkpoints`` menu),
      a row shows the selected head for A and for B (one colour scale) and ``B - A`` on their common tokens;
      :meth:`compare_with` switches B from Python;
    * top keys: the keys the query chosen with the ``query`` slider (or a tap on a row of the image) attends to;
    * ablation: "ablate head" toggles the selected head off; the chart shows the next-token distribution clean
      (grey) and, once a head is ablated, ablated (red);
    * long context: a text longer than the model's context needs a policy from the "long context" menu
      (dense, sliding window, lambda; ``policy=`` sets it);
    * export: "Export PNG" (every figure shown) and "Export data" (.npz, .json or .csv) into ``export_dir``.

    On any error the figures are cleared and the notice says what went wrong; the next good input redraws.
    """

    def __init__(self, model, text: str = "The attention lab shows where each token looks.", compare_text: str = "",
                 metric: str = "sink_mass", policy=None, max_side: int = 512, debounce: float = 0.3,
                 export_dir: str | Path = ".", top_k: int = 10, compare_model=None, compare_label: str | None = None,
                 compare_side: int = 256, checkpoints: dict | None = None):
        self.model, self.max_side, self.top_k = model, max_side, top_k
        self.checkpoints = dict(checkpoints or {})
        self.compare_model, self.compare_label, self.compare_side = compare_model, compare_label, compare_side
        self.export_dir = Path(export_dir)
        cfg = model.config
        self.L, self.H = cfg.n_layer, cfg.n_head
        self._summary = f"model={getattr(model, 'name', type(model).__name__)!r}, {self.L}x{self.H} heads"
        self.bytes_sent = 0  # bytes of every bokeh patch sent since construction (JSON + binary buffers)
        self.timings: dict[str, float] = {}
        self.ablated: set[tuple[int, int]] = set()
        self.data: core.LabData | None = None
        self.view = None
        self.compare_views = None  # {"a", "b", "diff"}: HeadViews of the comparison row, or None
        self.ablation = None
        self.next_view = None  # the core's NextTokens drawn in the chart
        self.key_view = None  # the core's TopKeys drawn in the top-keys panel
        self.tiles = None  # the core's Tiles drawn in the overview

        # --- controls ---
        self.text = W.Textarea(value=text, layout=W.Layout(width="auto", align_self="stretch", height="60px"),
                               description="text")
        self.compare_text = W.Textarea(value=compare_text, layout=W.Layout(flex="1 1 auto", height="40px"),
                                       description="compare", placeholder="optional second prompt")
        self.metric = W.Dropdown(options=list(METRICS), value=metric, description="metric", style=STYLE,
                                 layout=W.Layout(width="210px"))
        #: B for a comparison of two checkpoints: "(none)" or a key of ``checkpoints``
        self.checkpoint = W.Dropdown(options=["(none)", *self.checkpoints], value="(none)", description="compare with",
                                     style=STYLE, layout=W.Layout(display=None if self.checkpoints else "none",
                                                                  flex="0 0 auto"))
        self.mode = W.ToggleButtons(options=list(MODES), value="raw", style={"button_width": "auto"},
                                    tooltip="rollout: up to 1,024 tokens; difference: with a second prompt or model")
        self.layer = W.BoundedIntText(value=0, min=0, max=self.L - 1, description="layer", style=STYLE,
                                      layout=W.Layout(width="110px"))
        self.head = W.BoundedIntText(value=0, min=0, max=self.H - 1, description="head", style=STYLE,
                                     layout=W.Layout(width="110px"))
        self.query = W.IntSlider(value=0, min=0, max=0, description="query position (top keys)", style=STYLE,
                                 layout=W.Layout(width="auto", flex="1 1 auto", min_width="320px"),
                                 continuous_update=False)
        self.ablate_button = W.ToggleButton(value=False, description="ablate head", icon="ban",
                                            layout=W.Layout(width="auto", flex="0 0 auto"))
        choice, window, n_global, policy_note = core.policy_choice(policy)
        #: the long-context policy for texts over the model's context (the messages name this control)
        self.policy_kind = W.Dropdown(options=[(POLICY_LABELS[c], c) for c in POLICY_CHOICES], value=choice,
                                      description=POLICY_CONTROL, style=STYLE, layout=W.Layout(width="330px"))
        self.window = W.BoundedIntText(value=window, min=1, max=1 << 20, description="window", style=STYLE,
                                       layout=W.Layout(width="150px"))
        self.n_global = W.BoundedIntText(value=n_global, min=1, max=1 << 20, description="first tokens kept",
                                         style=STYLE, layout=W.Layout(width="190px"))
        # "Export PNG" draws every figure shown; "Export data" writes .npz (export_npz) or the sources as .json/.csv
        export_box = self.export_controls(formats=(".npz", ".json", ".csv"), default=".npz")
        self.png_button, self.npz_button = self.export_png_button, self.export_data_button
        self.info = notice()

        # --- figures ---
        self.tile_source = ColumnDataSource(dict(layer=[], head=[], value=[], text=[], ablated=[]))
        ov = figure(width=300, height=270, title="click a tile", toolbar_location=None,
                    x_range=Range1d(-0.5, self.H - 0.5), y_range=Range1d(self.L - 0.5, -0.5),
                    x_axis_label="head", y_axis_label="layer", tools="")
        self.tile_mapper = LinearColorMapper(palette=Viridis256, low=0, high=1)
        self._tiles = ov.rect(x="head", y="layer", width=0.95, height=0.95, source=self.tile_source,
                              fill_color={"field": "value", "transform": self.tile_mapper},
                              line_color="ablated", line_width=3,
                              nonselection_fill_alpha=1.0, nonselection_line_alpha=1.0)  # tiles stay readable
        ov.add_tools(TapTool(renderers=[self._tiles]),
                     HoverTool(renderers=[self._tiles], tooltips=[("head", "L@layer H@head"), ("value", "@text")]))
        _set_ticks(ov.xaxis[0], 0, self.H - 1, 8)
        _set_ticks(ov.yaxis[0], 0, self.L - 1, 8)
        ov.grid.visible = False
        self.tile_bar = _colour_bar(self.tile_mapper, metric)
        ov.add_layout(self.tile_bar, "right")
        self.overview_figure = ov

        self.detail = ImagePanel(width=COLUMN - 310, height=470)
        self.image_source, self.qlab_source, self.klab_source = self.detail.source, self.detail.qlab, self.detail.klab
        self.meta_source, self.image_mapper = self.detail.meta, self.detail.mapper
        det = self.detail.figure
        det.add_tools(TapTool())
        det.on_event(Tap, self._on_image_tap)
        self.detail_figure = det

        # top keys of the query: one bar per key, labelled "position: 'token'" on the axis (never clipped)
        self.keys_source = ColumnDataSource(dict(key=[], position=[], weight=[], query=[]))
        kv = figure(width=330, height=300, title="top keys of the query", toolbar_location=None, tools="",
                    y_range=FactorRange(), x_range=Range1d(0, 1), x_axis_label="attention weight")
        kv.hbar(y="key", right="weight", height=0.7, source=self.keys_source, color="#1f77b4")  # red is "ablated"
        kv.add_tools(HoverTool(tooltips=[("query", "@query"), ("key", "@key"), ("weight", "@weight{0.0000}")]))
        kv.ygrid.visible = False
        kv.yaxis.major_label_text_font_size = "10px"
        self.keys_figure = kv

        self.dist_source = ColumnDataSource(dict(label=[], base=[], ablated=[]))
        dist = figure(width=COLUMN - 340, height=300, title="next-token probabilities at the last position",
                      x_range=FactorRange(), y_range=Range1d(0, 1), toolbar_location=None, tools="",
                      y_axis_label="probability")
        self._base_bars = dist.vbar(x="label", top="base", width=0.8, source=self.dist_source, color="#bbbbbb")
        self._ablated_bars = dist.vbar(x="label", top="ablated", width=0.4, source=self.dist_source, color="#d62728",
                                       visible=False)
        dist.add_tools(HoverTool(tooltips=[("token", "@label"), ("clean", "@base{0.000}"),
                                           ("ablated", "@ablated{0.000}")]))
        dist.xaxis.major_label_orientation = 0.8
        self.dist_legend = Legend(items=[LegendItem(label="clean", renderers=[self._base_bars])],
                                  click_policy="hide", label_text_font_size="10px")
        dist.add_layout(self.dist_legend, "right")
        self.dist_figure = dist

        # comparison row: A | B | B - A, one image glyph each
        side = (COLUMN - 10) // 3
        self.compare_panels = {k: ImagePanel(width=side, height=side, toolbar_location=None, tools="",
                                             value_name="B - A" if k == "diff" else "weight")
                               for k in ("a", "b", "diff")}
        self.compare_sources = {k: p.source for k, p in self.compare_panels.items()}

        self.panes = [bokeh_pane(f) for f in (ov, det, kv, dist)]
        self.compare_panes = [bokeh_pane(self.compare_panels[k].figure) for k in ("a", "b", "diff")]
        wrap = dict(flex_flow="row wrap", align_items="flex-start", width="100%")
        self.compare_box = W.HBox(self.compare_panes, layout=W.Layout(display="none", **wrap))
        for p in self.panes + self.compare_panes:
            self._count_bytes(p)
        self.initial_bytes = sum(len(json.dumps(p.render_bundle)) for p in self.panes + self.compare_panes)

        # --- events (every handler through _guarded: skipped while quietly(), errors become notices) ---
        self.tile_source.selected.on_change("indices", lambda attr, old, new: self._guarded(self._on_tap)(new))
        self._debouncer = Debouncer(self._guarded(self.run), debounce)
        trigger = self.reacting(lambda ch: self._debouncer.trigger())
        self.text.observe(trigger, names="value")
        self.compare_text.observe(trigger, names="value")
        self.checkpoint.observe(self._guarded(self._on_checkpoint), names="value")
        self.metric.observe(self._guarded(lambda ch: self._draw_tiles()), names="value")
        self.mode.observe(self._guarded(lambda ch: (self._draw_tiles(), self._draw_detail())), names="value")
        self.layer.observe(self._guarded(lambda ch: self._select()), names="value")
        self.head.observe(self._guarded(lambda ch: self._select()), names="value")
        self.query.observe(self._guarded(lambda ch: self._draw_keys()), names="value")
        self.ablate_button.observe(self._guarded(self._on_ablate), names="value")
        for w in (self.policy_kind, self.window, self.n_global):
            w.observe(self._guarded(self._on_policy), names="value")

        self.policy_row = W.HBox([self.policy_kind, self.window, self.n_global], layout=W.Layout(flex_flow="row wrap"))
        super().__init__(children=[
            self.text, W.HBox([self.compare_text, self.checkpoint], layout=W.Layout(width="auto", align_self="stretch")),
            W.HBox([self.metric, self.layer, self.head, self.ablate_button, export_box],
                   layout=W.Layout(flex_flow="row wrap", align_items="center")),
            self.policy_row,
            self.mode, self.info,
            W.HBox([self.panes[0], self.panes[1]], layout=W.Layout(**wrap)),
            self.query,
            W.HBox([self.panes[2], self.panes[3]], layout=W.Layout(**wrap)),
            self.compare_box,
        ], layout=W.Layout(max_width=f"{COLUMN + 20}px"))
        self._policy_controls()
        self.run()
        if policy_note and self.data is not None:
            set_notice(self.info, f"{policy_note}; {self._ready_text()}")

    # --- plumbing ---------------------------------------------------------------------------------------------
    def _count_bytes(self, pane):
        send = pane.send

        def counting(content, buffers=None):
            self.bytes_sent += len(json.dumps(content)) + sum(len(bytes(b)) for b in (buffers or []))
            return send(content, buffers)

        pane.send = counting

    def first_display_bytes(self) -> int:
        """Bytes the first display sends now: every pane's figure serialised with its current data (BokehPane
        re-serialises a figure changed before the browser shows it; see :mod:`widgets.base`)."""
        return sum(len(json.dumps(p._model_to_traits(p._model))) for p in self.panes + self.compare_panes)

    def _guarded(self, fn):
        """``fn`` for an observer: skipped while the lab sets its own controls (:meth:`quietly`); any exception
        clears the figures it would have drawn and becomes a visible notice (never a traceback in the log)."""
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - the student sees the message, not a log traceback
                self._fail(e)
                return None

        return self.reacting(handler)

    def _fail(self, e: Exception, what: str = "all") -> None:
        """Show ``e`` and clear the figures that would be stale: everything (``"all"``) or the selected head's views
        (``"head"``)."""
        msg = str(e) if isinstance(e, AttentionError) else f"{type(e).__name__}: {e}"
        set_notice(self.info, msg, "error")
        why = "no data: see the message above"
        self.view = self.compare_views = self.key_view = None
        self.detail.clear(why)
        self.keys_source.data = dict(key=[], position=[], weight=[], query=[])
        self.keys_figure.y_range.factors = []
        self.keys_figure.title.text = why
        self.compare_box.layout.display = "none"
        for p in self.compare_panels.values():
            p.clear(why)
        if what == "head":
            return
        self.data = self.tiles = self.next_view = self.ablation = None
        self.tile_source.data = dict(layer=[], head=[], value=[], text=[], ablated=[])
        self.overview_figure.title.text = why
        self.dist_source.data = dict(label=[], base=[], ablated=[])
        self.dist_figure.x_range.factors = []
        self._ablated_bars.visible = False
        self.dist_figure.title.text = why

    # --- state ------------------------------------------------------------------------------------------------
    @property
    def probe(self):
        return None if self.data is None else self.data.probe

    @property
    def metrics(self):
        return None if self.data is None else self.data.metrics

    @property
    def probe_b(self):
        return None if self.data is None else self.data.probe_b

    @property
    def metrics_b(self):
        return None if self.data is None else self.data.metrics_b

    @property
    def comparing(self) -> bool:
        return self.probe_b is not None

    @property
    def selected(self) -> tuple[int, int]:
        return int(self.layer.value), int(self.head.value)

    @property
    def policy(self):
        """The long-context policy the controls choose (None: the model's own context)."""
        return core.make_policy(self.policy_kind.value, int(self.window.value), int(self.n_global.value))

    def _policy_controls(self) -> None:
        """The window and first-token boxes apply only to the policies that read them."""
        uses = POLICY_USES[self.policy_kind.value]
        self.window.disabled = "window" not in uses
        self.n_global.disabled = "n_global" not in uses

    def _on_policy(self, change) -> None:
        self._policy_controls()
        self.run()

    # --- computing --------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Recompute everything for the current text(s): one forward pass each, metrics blockwise. On an error the
        figures are cleared and the notice says why."""
        t0 = time.perf_counter()
        try:
            self.data = core.compute(self.model, self.text.value, self.compare_text.value, self.compare_model,
                                     self.policy)
        except Exception as e:  # noqa: BLE001 - AttentionError says what to do; anything else still becomes visible
            self._fail(e)
            return
        self.timings["run"] = time.perf_counter() - t0
        T = self.data.probe.T
        modes = core.available_modes(T, self.data.comparing)
        with self.quietly():
            self.query.max = T - 1
            self.query.value = T - 1
            if tuple(self.mode.options) != modes:
                value = self.mode.value if self.mode.value in modes else "raw"
                self.mode.options = list(modes)
                self.mode.value = value
        set_notice(self.info, self._ready_text())
        try:
            self._draw_tiles()
            self._draw_dist()
            self._draw_detail()
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def _ready_text(self) -> str:
        T = self.data.probe.T
        extra = []
        if T > ROLLOUT_MAX_T:
            extra.append(f"rollout is offered up to {ROLLOUT_MAX_T} tokens")
        if self.data.comparing:
            extra.append(f"B: {self._label_b()}, {self.data.probe_b.T} tokens")
        return (f"{T} tokens; capture + metrics {self.timings['run'] * 1000:.0f} ms"
                + "".join(f"; {x}" for x in extra))

    def _draw_tiles(self) -> None:
        if self.data is None:
            return
        tiles = core.tile_values(self.data, self.metric.value, self.mode.value == "difference")
        self.tiles = tiles
        layers, heads = np.divmod(np.arange(self.L * self.H), self.H)
        _apply_scale(self.tile_mapper, self.tile_bar, tiles.scale)
        self.tile_bar.title = (f"{self.metric.value} (B - A)" + (": no difference" if tiles.scale.flat else "")
                               if tiles.difference else self.metric.value)
        flat = tiles.values.reshape(-1)
        self.tile_source.data = dict(
            layer=layers.tolist(), head=heads.tolist(), value=np.where(np.isfinite(flat), flat, np.nan).tolist(),
            text=tiles.text,
            ablated=["#d62728" if (int(a), int(b)) in self.ablated else None for a, b in zip(layers, heads)],
        )
        title = "click a tile" + ("; red outline: ablated" if self.ablated else "")
        self.overview_figure.title.text = title
        if tiles.why:
            set_notice(self.info, tiles.why, "warning")

    def _draw_detail(self) -> None:
        if self.data is None:
            return
        t0 = time.perf_counter()
        layer, head = self.selected
        mode = self.mode.value
        try:
            v = core.detail_view(self.data, layer, head, mode, self.max_side)
        except AttentionError as e:  # e.g. no value vectors for this model: the head's views go, the tiles stay
            self._fail(e, "head")
            return
        self.view = v
        scale = core.view_scale(v, mode == "difference")
        self.detail.show(v, f"L{layer} H{head} {mode}" + (": no difference" if scale.flat else ""), scale)
        self.timings["detail"] = time.perf_counter() - t0
        self._draw_keys()
        self._draw_compare()

    def probe_tokens(self) -> list[str]:
        return self.data.tokens("a")

    def _draw_keys(self) -> None:
        if self.data is None:
            return
        layer, head = self.selected
        k = core.top_keys(self.data.probe, layer, head, int(self.query.value), self.top_k, self.data.tokens())
        self.key_view = k
        self.keys_figure.y_range.factors = list(k.labels)[::-1]  # a categorical y axis runs upwards: heaviest on top
        self.keys_figure.x_range.end = float(max(k.weights.max(), 1e-9)) * 1.05
        self.keys_source.data = dict(key=list(k.labels), position=k.positions.tolist(), weight=k.weights.tolist(),
                                     query=[k.query_label] * len(k.labels))
        self.keys_figure.title.text = f"top keys of query {k.query_label}, L{layer} H{head}"

    def _draw_dist(self) -> None:
        if self.data is None:
            return
        nt = core.next_tokens(self.model, self.data.probe, self.ablated, self.top_k, self.policy)
        self.next_view, self.ablation, self.dist_ids = nt, nt.result, nt.ids
        abl = nt.ablated is not None
        self.dist_figure.x_range.factors = nt.labels
        top = float(max(nt.base.max(), nt.ablated.max() if abl else 0.0, 1e-9))
        self.dist_figure.y_range.end = min(1.0, top * 1.1)
        self.dist_source.data = dict(label=nt.labels, base=nt.base.tolist(),
                                     ablated=nt.ablated.tolist() if abl else [float("nan")] * len(nt.labels))
        self._ablated_bars.visible = abl
        items = [LegendItem(label="clean", renderers=[self._base_bars])]
        if abl:
            heads = ", ".join(f"L{a}H{b}" for a, b in sorted(self.ablated))
            items.append(LegendItem(label=f"ablated: {heads}", renderers=[self._ablated_bars]))
        self.dist_legend.items = items
        self.dist_figure.title.text = "next-token probabilities at the last position"

    def _draw_compare(self) -> None:
        if self.data is None or not self.data.comparing:
            self.compare_views = None
            self.compare_box.layout.display = "none"
            return
        layer, head = self.selected
        views = core.compare_views(self.data, layer, head, self.mode.value, self.compare_side)
        scales = core.compare_scales(views)
        mode = "raw" if self.mode.value == "difference" else self.mode.value
        T = views["diff"].image.shape[0] * views["diff"].factor
        self.compare_panels["a"].show(views["a"], f"A: {self._label_a()} L{layer}H{head} {mode}", scales["a"])
        self.compare_panels["b"].show(views["b"], f"B: {self._label_b()} L{layer}H{head} {mode}", scales["b"])
        n = int(views["diff"].q_edges[-1])
        same = ": no difference" if scales["diff"].flat else ""
        self.compare_panels["diff"].show(views["diff"], f"B - A ({n} common tokens){same}", scales["diff"])
        self.compare_views = views
        self.compare_box.layout.display = "flex"

    def _label_a(self) -> str:
        return "text" if self.compare_model is None else getattr(self.model, "name", "model")

    def _label_b(self) -> str:
        if self.compare_label:
            return self.compare_label
        if self.compare_model is not None:
            return getattr(self.compare_model, "name", "model B")
        return "compare text"

    def _on_checkpoint(self, change) -> None:
        name = change["new"]
        if name == "(none)":
            self.compare_model = self.compare_label = None
        else:
            self.compare_model, self.compare_label = self.checkpoints[name], str(name)
        self.run()

    def compare_with(self, model=None, text: str | None = None, label: str | None = None) -> None:
        """Compare with another model or checkpoint (same layers x heads) and/or another prompt, then redraw.
        ``compare_with()`` with no arguments ends the comparison."""
        self.compare_model, self.compare_label = model, label
        with self.quietly():
            self.compare_text.value = text or ""
        self.run()

    # --- events -----------------------------------------------------------------------------------------------
    def _on_tap(self, new) -> None:
        if not new:
            return
        layer, head = divmod(int(new[0]), self.H)
        self.select(layer, head)

    def _on_image_tap(self, event) -> None:
        """A tap on the detail image picks the query row under it for the top-keys panel."""
        if self.data is None or event.y is None:
            return
        q = int(np.clip(np.floor(event.y + 0.5), 0, self.data.probe.T - 1))  # cell q spans [q - 0.5, q + 0.5)
        self.query.value = q

    def select(self, layer: int, head: int) -> None:
        """Select a head (what a tile click does)."""
        if not (0 <= layer < self.L and 0 <= head < self.H):
            raise IndexOutOfRangeError(f"no head L{layer} H{head} in a {self.L}x{self.H} model "
                                       f"(layers 0..{self.L - 1}, heads 0..{self.H - 1})")
        with self.quietly():
            self.layer.value, self.head.value = layer, head
        self._guarded(self._select)()

    def _select(self) -> None:
        t0 = time.perf_counter()
        with self.quietly():
            self.ablate_button.value = self.selected in self.ablated
        self._draw_detail()
        self.timings["select"] = time.perf_counter() - t0

    def _on_ablate(self, change) -> None:
        if change["new"]:
            self.ablated.add(self.selected)
        else:
            self.ablated.discard(self.selected)
        self._draw_tiles()
        self._draw_dist()

    # --- export -----------------------------------------------------------------------------------------------
    def png_rgb(self, view: str = "detail") -> tuple[np.ndarray, int]:
        """The ``(h, w, 3)`` uint8 picture :meth:`export_png` writes (before pixel repetition) and its scale:
        :func:`workbench.attention.lab.detail_picture` or :func:`~workbench.attention.lab.compare_picture`."""
        if view == "detail":
            if self.view is None:
                raise AttentionError("nothing to export yet")
            return core.detail_picture(self.view, self.mode.value == "difference")
        if view != "compare":
            raise AttentionError(f"view must be 'detail' or 'compare', got {view!r}")
        if self.compare_views is None:
            raise AttentionError("no comparison to export: give a second prompt or compare_model")
        return core.compare_picture(self.compare_views)

    def export_png(self, path: str | Path | None = None, view: str = "detail") -> Path:
        """Write the current detail image (``view="detail"``), the comparison row (``"compare"``) pixel for pixel as
        a PNG, or every figure the lab shows with axes and colour bars (``"widget"``, what "Export PNG" does)."""
        if view == "widget":
            return self.export_view_png(path)
        rgb, scale = self.png_rgb(view)
        layer, head = self.selected
        name = self.mode.value if view == "detail" else "compare"
        path = Path(path) if path else self.export_dir / f"attention_L{layer}H{head}_{name}.png"
        save_png(path, rgb, scale=scale)
        set_notice(self.info, f"saved {path}")
        return path

    def export_data(self, path: str | Path | None = None, table: str | None = None) -> Path:
        """``.npz``: :meth:`export_npz` (the view's image, edges, tokens and every metric); ``.json``/``.csv``: the
        data sources and :meth:`export_state` (see :meth:`WorkbenchWidget.export_data`)."""
        if path is not None and Path(path).suffix.lower() == ".npz":
            return self.export_npz(path)
        return super().export_data(path, table)

    def export_state(self) -> dict:
        """Exported with the data: text(s), the selected head, mode, policy, ablations, tokens and every metric."""
        metrics = {} if self.metrics is None else {
            m: self.metrics.get(m) for m in METRICS if getattr(self.metrics, m, None) is not None}
        return {"text": self.text.value, "compare_text": self.compare_text.value, "layer": self.selected[0],
                "head": self.selected[1], "mode": self.mode.value, "metric": self.metric.value,
                "policy": str(self.policy) if self.policy is not None else None,
                "ablated": sorted(self.ablated), "tokens": self.probe_tokens() if self.data is not None else [],
                "metrics": metrics}

    def export_npz(self, path: str | Path | None = None) -> Path:
        """Write the current view and every metric ``(L, H)`` to a .npz file."""
        if self.view is None or self.data is None:
            raise AttentionError("nothing to export yet")
        layer, head = self.selected
        path = Path(path) if path else self.export_dir / f"attention_L{layer}H{head}.npz"
        metrics = {f"metric_{m}": self.metrics.get(m) for m in METRICS if getattr(self.metrics, m) is not None}
        extra = {}
        if self.compare_views is not None:
            for k, v in self.compare_views.items():
                extra[f"compare_{k}"] = v.image
            extra["compare_ids"] = self.probe_b.ids.numpy()
            extra["compare_tokens"] = np.array(self.data.tokens("b"))
            if self.metrics_b is not None:
                extra.update({f"compare_metric_{m}": self.metrics_b.get(m) for m in METRICS
                              if getattr(self.metrics_b, m) is not None})
        np.savez(path, image=self.view.image, q_edges=self.view.q_edges, k_edges=self.view.k_edges,
                 ids=self.probe.ids.cpu().numpy(), tokens=np.array(self.probe_tokens()), layer=layer, head=head,
                 mode=self.mode.value, **metrics, **extra)
        set_notice(self.info, f"saved {path}")
        return path


class CheckpointScrubber(WorkbenchWidget):
    """Scrub through the checkpoints of :func:`workbench.attention.induction.train_induction`.

    A slider picks the checkpoint; the image shows head ``(layer, head)`` on the run's evaluation sequence (colour
    bar: 0 to the largest weight shown) and the chart the induction score of every head against step, with the
    current step marked. The chart's legend sits outside the plot (click an entry to hide its line); "Export PNG"
    and "Export data" write what is shown into ``export_dir``. Numbers come from :mod:`workbench.attention.lab`.
    """

    COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf"]

    def __init__(self, run, layer: int | None = None, head: int | None = None, shift: int = 0,
                 export_dir: str | Path | None = None):
        self.run = run
        best = run.best_head()
        self.layer_i = best[0] if layer is None else layer
        self.head_i = best[1] if head is None else head
        self.shift = shift
        if export_dir is not None:
            self.export_dir = Path(export_dir)
        #: the chosen head's (shifted) induction score at every checkpoint, ``(n,)``
        self.shifted = core.induction_curve(run, self.layer_i, self.head_i, shift)
        self._summary = f"{len(run.steps)} checkpoints, head L{self.layer_i} H{self.head_i}"
        steps = [int(s) for s in run.steps]
        self.slider = W.SelectionSlider(options=steps, value=steps[-1], description="step", style=STYLE,
                                        continuous_update=False, layout=W.Layout(width="420px"))
        T = len(run.eval_ids)
        self.image_source = ColumnDataSource(dict(image=[np.zeros((T, T), np.float32)]))
        self.image_mapper = LinearColorMapper(palette=Viridis256, low=0, high=1)
        img = figure(width=330, height=330, title="", x_range=Range1d(-0.5, T - 0.5), y_range=Range1d(T - 0.5, -0.5),
                     toolbar_location=None, tools="", x_axis_label="key position", y_axis_label="query position")
        img.image(image="image", x=-0.5, y=-0.5, dw=T, dh=T, source=self.image_source, color_mapper=self.image_mapper)
        _set_ticks(img.xaxis[0], 0, T - 1, 6)
        _set_ticks(img.yaxis[0], 0, T - 1, 8)
        self.image_bar = _colour_bar(self.image_mapper, "weight")
        img.add_layout(self.image_bar, "right")
        self.image_figure = img

        L, H = run.induction.shape[1:]
        pad = max(1, (steps[-1] - steps[0]) // 40)  # the step marker stays off the frame at the first and last step
        curves = figure(width=540, height=330, title="induction score per head", x_axis_label="step",
                        y_axis_label="score", x_range=Range1d(steps[0] - pad, steps[-1] + pad), y_range=Range1d(0, 1.02),
                        toolbar_location=None, tools="")
        _set_ticks(curves.xaxis[0], steps[0], steps[-1], 6)
        items = []
        self.curve_sources = {}
        for li in range(L):
            for hi in range(H):
                src = ColumnDataSource(dict(step=steps, score=np.asarray(run.induction[:, li, hi]).tolist()))
                self.curve_sources[f"L{li}H{hi}"] = src
                r = curves.line("step", "score", source=src, line_width=2 if li == L - 1 else 1,
                                color=self.COLOURS[(li * H + hi) % len(self.COLOURS)],
                                line_dash="solid" if li == L - 1 else "dashed")
                items.append(LegendItem(label=f"L{li}H{hi}", renderers=[r]))
        self.loss_source = ColumnDataSource(dict(step=steps, loss=core.scaled_loss(run).tolist()))
        r = curves.line("step", "loss", source=self.loss_source, color="black", line_width=2)
        items.append(LegendItem(label="loss (repeat, scaled)", renderers=[r]))
        if shift:
            self.shift_source = ColumnDataSource(dict(step=steps, score=self.shifted.tolist()))
            r = curves.line("step", "score", source=self.shift_source, color="black", line_width=3,
                            line_dash="dotdash")
            items.append(LegendItem(label=f"L{self.layer_i}H{self.head_i} shift {shift}", renderers=[r]))
        #: outside the plot, right of it: never over the curves (the phase change) or the step marker
        self.legend = Legend(items=items, click_policy="hide", label_text_font_size="9px", glyph_height=10,
                             spacing=0, padding=4, margin=4)
        curves.add_layout(self.legend, "right")
        self.marker_source = ColumnDataSource(dict(x=[steps[-1]] * 2, y=[0, 1.02]))
        self.marker = curves.line(x="x", y="y", source=self.marker_source, color="grey", line_width=2,
                                  line_dash="dotted")  # drawn last: on top of every curve
        self.curve_figure = curves
        self.info = notice()
        self.slider.observe(self.reacting(lambda ch: self.show()), names="value")
        wrap = dict(flex_flow="row wrap", align_items="flex-start", width="100%")
        super().__init__(children=[
            W.HBox([self.slider, self.export_controls()], layout=W.Layout(flex_flow="row wrap", align_items="center")),
            self.info,
            W.HBox([bokeh_pane(self.image_figure), bokeh_pane(self.curve_figure)], layout=W.Layout(**wrap)),
        ], layout=W.Layout(max_width=f"{COLUMN + 20}px"))
        self.show()

    def show(self) -> None:
        """Draw the selected checkpoint (an error clears the image and says why)."""
        step = int(self.slider.value)
        i = [int(s) for s in self.run.steps].index(step)
        try:
            pattern = core.checkpoint_pattern(self.run, i, self.layer_i, self.head_i)
        except Exception as e:  # noqa: BLE001 - visible, never a traceback in the log
            self.image_source.data = dict(image=[])
            self.image_figure.title.text = "no picture: see the message above"
            set_notice(self.info, f"{type(e).__name__}: {e}", "error")
            return
        _apply_scale(self.image_mapper, self.image_bar, core.colour_scale(pattern))
        self.image_source.data = dict(image=[pattern])
        self.marker_source.data = dict(x=[step] * 2, y=[0, 1.02])
        score = self.run.induction[i, self.layer_i, self.head_i]
        self.image_figure.title.text = f"L{self.layer_i} H{self.head_i} at step {step}"
        extra = f", shifted by {self.shift}: {self.shifted[i]:.3f}" if self.shift else ""
        set_notice(self.info, f"step {step}: induction score of L{self.layer_i}H{self.head_i} {score:.3f}{extra}; "
                              f"loss on the repeated half {self.run.loss_second[i]:.3f} nats")

    def export_state(self) -> dict:
        """Exported with the data: the step shown, the head, the shift and the run's steps."""
        return {"step": int(self.slider.value), "layer": self.layer_i, "head": self.head_i, "shift": self.shift,
                "steps": [int(s) for s in self.run.steps]}
