"""AttentionLab: an L x H overview of per-head metrics, one head in detail, comparison, ablation, export.

All numbers come from :mod:`workbench.attention`; this module only draws them. Every head view (the detail and
the three comparison panels) is ONE bokeh ``image`` glyph fed a downsampled ``(n, n)`` float32 array
(``workbench.attention.head_view``), so a head click sends at most ``max_side**2 * 4`` bytes for the detail plus
``3 * compare_side**2 * 4`` when comparing, whatever ``T`` is.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import ipywidgets as W
import numpy as np
from bokeh.models import (
    BasicTicker,
    ColorBar,
    ColumnDataSource,
    CustomJSHover,
    FactorRange,
    HoverTool,
    LinearColorMapper,
    Range1d,
    TapTool,
)
from bokeh.events import Tap
from bokeh.palettes import RdBu11, Viridis256
from bokeh.plotting import figure

from workbench.attention.view import probe_head_view
from workbench.attention import (
    AttentionError,
    AttentionProbe,
    IndexOutOfRangeError,
    METRICS,
    ablate_heads,
    head_metrics,
    head_view,
    rollout,
    save_png,
    to_rgb,
)

from .base import Debouncer, WorkbenchWidget, bokeh_pane, notice, set_notice

MODES = ("raw", "value-weighted", "rollout", "difference")
ROLLOUT_MAX_T = 1024


class ImagePanel:
    """One head view: a figure with ONE ``image`` glyph, its data source, label sources for the hover and a
    colour mapper. ``show`` draws a :class:`~workbench.attention.HeadView`."""

    LABEL_JS = "const i = Math.floor({v} / meta.data.f[0]); return src.data.{col}[i] ?? '';"

    def __init__(self, title: str = "", width: int = 460, height: int = 440, tools: str = "pan,wheel_zoom,reset",
                 toolbar_location: str | None = "above"):
        self.source = ColumnDataSource(dict(image=[np.zeros((1, 1), np.float32)], x=[0], y=[0], dw=[1], dh=[1]))
        self.qlab = ColumnDataSource(dict(q=[""]))
        self.klab = ColumnDataSource(dict(k=[""]))
        self.meta = ColumnDataSource(dict(q0=[0], f=[1]))
        self.mapper = LinearColorMapper(palette=Viridis256, low=0, high=1)
        fig = figure(width=width, height=height, title=title, toolbar_location=toolbar_location, tools=tools,
                     x_axis_label="key position", y_axis_label="query position",
                     x_range=Range1d(0, 1), y_range=Range1d(1, 0))
        self.glyph = fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.source,
                               color_mapper=self.mapper)
        js = self.LABEL_JS
        fig.add_tools(HoverTool(renderers=[self.glyph],
                                tooltips=[("query", "$y{q}"), ("key", "$x{k}"), ("weight", "@image{0.0000}")],
                                formatters={
                                    "$y": CustomJSHover(args=dict(src=self.qlab, meta=self.meta),
                                                        code=js.format(v="(value - meta.data.q0[0])", col="q")),
                                    "$x": CustomJSHover(args=dict(src=self.klab, meta=self.meta),
                                                        code=js.format(v="value", col="k")),
                                }))
        fig.add_layout(ColorBar(color_mapper=self.mapper, width=8), "right")
        self.figure = fig
        self.view = None

    def show(self, v, title: str, diverging: bool = False, high: float | None = None) -> None:
        """Draw ``v``; ``diverging``: red/blue around 0 (differences); ``high``: top of the colour scale."""
        self.view = v
        nq, nk = int(v.q_edges[-1] - v.q_edges[0]), int(v.k_edges[-1])
        if diverging:
            m = float(max(np.abs(v.image).max(), 1e-9)) if high is None else high
            self.mapper.update(palette=RdBu11[::-1], low=-m, high=m)
        else:
            m = float(max(v.image.max(), 1e-9)) if high is None else high
            self.mapper.update(palette=Viridis256, low=0.0, high=m)
        if self.qlab.data["q"] != v.q_labels:  # labels change with the text, not with the head
            self.qlab.data = dict(q=v.q_labels)
        if self.klab.data["k"] != v.k_labels:
            self.klab.data = dict(k=v.k_labels)
        meta = dict(q0=[int(v.q_edges[0])], f=[v.factor])
        if self.meta.data != meta:
            self.meta.data = meta
        self.source.data = dict(image=[v.image], x=[0], y=[int(v.q_edges[0])], dw=[nk], dh=[nq])
        self.figure.x_range.update(start=0, end=nk)
        self.figure.y_range.update(start=int(v.q_edges[0]) + nq, end=int(v.q_edges[0]))
        f = f", {v.factor}x{v.factor} blocks" if v.factor > 1 else ""
        self.figure.title.text = title + f


def _rgb(image: np.ndarray, diverging: bool, high: float | None = None) -> np.ndarray:
    """Viridis for patterns, white-centred red (+) / blue (-) for differences; ``(h, w, 3)`` uint8."""
    if not diverging:
        return to_rgb(image, 0.0, high)
    m = max(float(np.abs(image).max()), 1e-9) if high is None else high
    rgb = np.stack([np.clip(255 * (image / m), 0, 255), np.zeros_like(image), np.clip(-255 * (image / m), 0, 255)], -1)
    return (255 - rgb.max(-1, keepdims=True) + rgb).astype(np.uint8)


class AttentionLab(WorkbenchWidget):
    """Explore a model's attention on a text.

    * overview: tiles for every (layer, head) coloured by ``metric``; click a tile (or set ``layer``/``head``);
    * detail: the selected head as one image, hover shows query token, key token and weight; ``mode`` switches
      raw / value-weighted / rollout / difference: ``compare_text`` (a second prompt, same model) or
      ``compare_model`` (a second model or checkpoint of the same shape, same text) gives ``b - a``;
    * comparison: with a second prompt or model, a row shows the selected head for A and for B side by side
      (same colour scale, the current mode; raw in difference mode) and ``B - A`` on their common tokens, each
      one image of at most ``compare_side`` pixels a side; ``checkpoints={label: model}`` adds a "compare with"
      menu (two checkpoints of one run); :meth:`compare_with` switches B from Python;
    * line view: the top keys of the query chosen with the ``query`` slider or by tapping a row of the image;
    * ablation: "ablate head" toggles the selected head off and redraws the next-token distribution;
    * export: the current image as PNG and the data as .npz into ``export_dir``.
    """

    def __init__(self, model, text: str = "The attention lab shows where each token looks.", compare_text: str = "",
                 metric: str = "sink_mass", policy=None, max_side: int = 512, debounce: float = 0.3,
                 export_dir: str | Path = ".", top_k: int = 10, compare_model=None, compare_label: str | None = None,
                 compare_side: int = 256, checkpoints: dict | None = None):
        self.model, self.policy, self.max_side, self.top_k = model, policy, max_side, top_k
        self.checkpoints = dict(checkpoints or {})
        self.compare_model, self.compare_label, self.compare_side = compare_model, compare_label, compare_side
        self.export_dir = Path(export_dir)
        cfg = model.config
        self.L, self.H = cfg.n_layer, cfg.n_head
        self._summary = f"model={getattr(model, 'name', type(model).__name__)!r}, {self.L}x{self.H} heads"
        self.bytes_sent = 0  # bytes of every bokeh patch sent since construction (JSON + binary buffers)
        self.timings: dict[str, float] = {}
        self.ablated: set[tuple[int, int]] = set()
        self._quiet = False
        self._quiet_text = False
        self.probe = self.probe_b = None
        self.metrics = self.metrics_b = None
        self._rollouts: dict = {}
        self.view = None
        self.compare_views = None  # {"a", "b", "diff"}: HeadViews of the comparison row, or None

        # --- controls ---
        self.text = W.Textarea(value=text, layout=W.Layout(width="100%", height="60px"), description="text")
        self.compare_text = W.Textarea(value=compare_text, layout=W.Layout(width="100%", height="40px"),
                                       description="compare", placeholder="optional second prompt")
        self.metric = W.Dropdown(options=list(METRICS), value=metric, description="metric")
        #: B for a comparison of two checkpoints: "(none)" or a key of ``checkpoints``
        self.checkpoint = W.Dropdown(options=["(none)", *self.checkpoints], value="(none)", description="compare with",
                                     layout=W.Layout(display=None if self.checkpoints else "none"))
        self.mode = W.ToggleButtons(options=list(MODES), value="raw")
        self.layer = W.BoundedIntText(value=0, min=0, max=self.L - 1, description="layer",
                                      layout=W.Layout(width="150px"))
        self.head = W.BoundedIntText(value=0, min=0, max=self.H - 1, description="head",
                                     layout=W.Layout(width="150px"))
        self.query = W.IntSlider(value=0, min=0, max=0, description="query")
        self.ablate_button = W.ToggleButton(value=False, description="ablate head", icon="ban")
        # "Export PNG" draws every figure shown; "Export data" writes .npz (export_npz) or the sources as .json/.csv
        self.png_button = self.export_controls(formats=(".npz", ".json", ".csv"), default=".npz").children[0]
        self.npz_button = self.export_data_button
        self.info = notice()

        # --- figures ---
        self.tile_source = ColumnDataSource(dict(layer=[], head=[], value=[], text=[], ablated=[]))
        ov = figure(width=260, height=240, title="heads (click a tile)", toolbar_location=None,
                    x_range=Range1d(-0.5, self.H - 0.5), y_range=Range1d(self.L - 0.5, -0.5),
                    x_axis_label="head", y_axis_label="layer", tools="")
        self.tile_mapper = LinearColorMapper(palette=Viridis256, low=0, high=1)
        self._tiles = ov.rect(x="head", y="layer", width=0.95, height=0.95, source=self.tile_source,
                              fill_color={"field": "value", "transform": self.tile_mapper},
                              line_color="ablated", line_width=3,
                              nonselection_fill_alpha=1.0, nonselection_line_alpha=1.0)  # tiles stay readable
        ov.add_tools(TapTool(renderers=[self._tiles]),
                     HoverTool(renderers=[self._tiles], tooltips=[("head", "L@layer H@head"), ("value", "@text")]))
        ov.xaxis.ticker = BasicTicker(desired_num_ticks=self.H)
        ov.add_layout(ColorBar(color_mapper=self.tile_mapper, width=8), "right")
        self.overview_figure = ov

        self.detail = ImagePanel()
        self.image_source, self.qlab_source, self.klab_source = self.detail.source, self.detail.qlab, self.detail.klab
        self.meta_source, self.image_mapper = self.detail.meta, self.detail.mapper
        det = self.detail.figure
        det.add_tools(TapTool())
        det.on_event(Tap, self._on_image_tap)
        self.detail_figure = det

        self.line_source = ColumnDataSource(dict(x0=[], y0=[], x1=[], y1=[], alpha=[]))
        self.line_labels = ColumnDataSource(dict(x=[], y=[], text=[], align=[]))
        lv = figure(width=260, height=440, title="top keys of the query", toolbar_location=None, tools="",
                    x_range=Range1d(-0.9, 1.9), y_range=Range1d(top_k + 0.5, -1.5))
        lv.segment(x0="x0", y0="y0", x1="x1", y1="y1", line_alpha="alpha", line_width=3, color="#d62728",
                   source=self.line_source)
        lv.text(x="x", y="y", text="text", text_align="align", text_baseline="middle", text_font_size="11px",
                source=self.line_labels)
        lv.axis.visible = False
        lv.grid.visible = False
        self.line_figure = lv

        self.dist_source = ColumnDataSource(dict(label=[], base=[], ablated=[]))
        dist = figure(width=460, height=220, title="next-token probabilities (grey: clean, red: ablated)",
                      x_range=FactorRange(), toolbar_location=None, tools="")
        dist.vbar(x="label", top="base", width=0.8, source=self.dist_source, color="#bbbbbb")
        dist.vbar(x="label", top="ablated", width=0.4, source=self.dist_source, color="#d62728")
        dist.add_tools(HoverTool(tooltips=[("token", "@label"), ("clean", "@base{0.000}"), ("ablated", "@ablated{0.000}")]))
        self.dist_figure = dist

        # comparison row: A | B | B - A, one image glyph each
        self.compare_panels = {k: ImagePanel(width=330, height=320, toolbar_location=None, tools="")
                               for k in ("a", "b", "diff")}
        self.compare_sources = {k: p.source for k, p in self.compare_panels.items()}

        self.panes = [bokeh_pane(f) for f in (ov, det, lv, dist)]
        self.compare_panes = [bokeh_pane(self.compare_panels[k].figure) for k in ("a", "b", "diff")]
        self.compare_box = W.HBox(self.compare_panes, layout=W.Layout(display="none"))
        for p in self.panes + self.compare_panes:
            self._count_bytes(p)
        self.initial_bytes = sum(len(json.dumps(p.render_bundle)) for p in self.panes + self.compare_panes)

        # --- events ---
        self.tile_source.selected.on_change("indices", self._on_tap)
        self._debouncer = Debouncer(self.run, debounce)
        self.text.observe(lambda ch: self._debouncer.trigger(), names="value")
        self.compare_text.observe(lambda ch: None if self._quiet_text else self._debouncer.trigger(), names="value")
        self.checkpoint.observe(self._on_checkpoint, names="value")
        self.metric.observe(lambda ch: self._draw_tiles(), names="value")
        self.mode.observe(lambda ch: (self._draw_tiles(), self._draw_detail()), names="value")
        self.layer.observe(lambda ch: self._select(), names="value")
        self.head.observe(lambda ch: self._select(), names="value")
        self.query.observe(lambda ch: self._draw_lines(), names="value")
        self.ablate_button.observe(self._on_ablate, names="value")

        super().__init__(children=[
            self.text, W.HBox([self.compare_text, self.checkpoint], layout=W.Layout(width="100%")),
            W.HBox([self.metric, self.layer, self.head, self.ablate_button, self.export_controls()],
                   layout=W.Layout(flex_flow="row wrap")),
            self.mode, self.info,
            W.HBox([self.panes[0], self.panes[1], self.panes[2]]),
            self.panes[3],
            self.query,
            self.compare_box,
        ])
        self.run()

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

    @property
    def comparing(self) -> bool:
        return self.probe_b is not None

    @property
    def selected(self) -> tuple[int, int]:
        return int(self.layer.value), int(self.head.value)

    # --- computing --------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Recompute everything for the current text(s): one forward pass each, metrics one head at a time."""
        t0 = time.perf_counter()
        try:  # all or nothing: on a bad input the previous state stays drawn, with the error above it
            probe = AttentionProbe(self.model, self.text.value, policy=self.policy)
            metrics = head_metrics(probe)
            cmp = self.compare_text.value
            other = self.compare_model
            if other is not None and (other.config.n_layer, other.config.n_head) != (self.L, self.H):
                raise AttentionError(
                    f"compare_model must have the same layers x heads as the model ({self.L}x{self.H}), got "
                    f"{other.config.n_layer}x{other.config.n_head}")
            probe_b = metrics_b = None
            if cmp or other is not None:
                probe_b = AttentionProbe(other or self.model, cmp or self.text.value, policy=self.policy)
                metrics_b = head_metrics(probe_b)
        except AttentionError as e:
            set_notice(self.info, str(e), "error")
            return
        self.probe, self.metrics, self.probe_b, self.metrics_b = probe, metrics, probe_b, metrics_b
        self._rollouts = {}
        self.timings["run"] = time.perf_counter() - t0
        T = self.probe.T
        self.query.max = T - 1
        self.query.value = T - 1
        set_notice(self.info, f"{T} tokens; capture + metrics {self.timings['run'] * 1000:.0f} ms")
        self._draw_tiles()
        self._draw_detail()
        self._draw_dist()

    def _tile_values(self) -> np.ndarray:
        name = self.metric.value
        try:
            v = self.metrics.get(name)
            if self.metrics_b is not None and self.mode.value == "difference":
                v = self.metrics_b.get(name) - v
        except AttentionError:
            return np.full((self.L, self.H), np.nan)
        return v

    def _draw_tiles(self) -> None:
        if self.metrics is None:
            return
        v = self._tile_values()
        layers, heads = np.divmod(np.arange(self.L * self.H), self.H)
        flat = v.reshape(-1)
        finite = flat[np.isfinite(flat)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if self.mode.value == "difference" and self.metrics_b is not None:
            m = max(abs(lo), abs(hi), 1e-9)
            self.tile_mapper.update(palette=RdBu11[::-1], low=-m, high=m)
        else:
            self.tile_mapper.update(palette=Viridis256, low=min(lo, 0.0), high=max(hi, 1e-9))
        self.tile_source.data = dict(
            layer=layers.tolist(), head=heads.tolist(), value=np.nan_to_num(flat).tolist(),
            text=["n/a" if not np.isfinite(x) else f"{x:.3f}" for x in flat],
            ablated=["#d62728" if (int(a), int(b)) in self.ablated else None for a, b in zip(layers, heads)],
        )
        self.overview_figure.title.text = f"{self.metric.value} (click a tile)"

    def _mode_pattern(self, probe, mode: str, layer: int, head: int) -> np.ndarray:
        """One probe's ``(T, T)`` pattern of (layer, head) under ``mode`` (raw, value-weighted or rollout)."""
        if mode == "rollout":
            if probe.T > ROLLOUT_MAX_T:
                raise AttentionError(f"rollout is limited to {ROLLOUT_MAX_T} tokens (T^3 per layer)")
            if id(probe) not in self._rollouts:
                self._rollouts[id(probe)] = rollout(probe)
            return self._rollouts[id(probe)][layer]
        a = probe.probs(layer, [head])[0].numpy()
        if mode == "value-weighted":
            vn = probe.value_norms(layer, [head])
            if vn is None:
                raise AttentionError(f"value-weighted view unavailable: {probe.value_norm_error}")
            w = a * vn[0].numpy()[None, :]
            return w / np.maximum(w.sum(-1, keepdims=True), 1e-30)
        return a

    def pattern(self) -> tuple[np.ndarray, int]:
        """The selected head's ``(Tq, Tk)`` array for the current mode, and its first query position."""
        layer, head = self.selected
        mode = self.mode.value
        if mode == "difference":
            if self.probe_b is None:
                raise AttentionError("difference needs a second prompt in 'compare' (or a compare_model)")
            a = self._mode_pattern(self.probe, "raw", layer, head)
            b = self._mode_pattern(self.probe_b, "raw", layer, head)
            T = min(a.shape[0], b.shape[0])
            return b[:T, :T] - a[:T, :T], 0
        return self._mode_pattern(self.probe, mode, layer, head), 0

    def compare_patterns(self) -> dict[str, np.ndarray]:
        """A's and B's patterns of the selected head (current mode; raw in difference mode) and ``B - A`` on the
        first ``min(T_a, T_b)`` tokens."""
        if self.probe_b is None:
            raise AttentionError("comparison needs a second prompt in 'compare' (or a compare_model)")
        layer, head = self.selected
        mode = "raw" if self.mode.value == "difference" else self.mode.value
        a = self._mode_pattern(self.probe, mode, layer, head)
        b = self._mode_pattern(self.probe_b, mode, layer, head)
        T = min(a.shape[0], b.shape[0])
        return {"a": a, "b": b, "diff": b[:T, :T] - a[:T, :T]}

    def _probe_labels(self, probe) -> list[str]:
        from workbench.attention.capture import token_labels

        if getattr(probe, "_labels", None) is None:
            probe._labels = token_labels(probe.model, probe.ids.tolist())
        return probe._labels

    def _draw_compare(self) -> None:
        if self.probe_b is None:
            self.compare_views = None
            self.compare_box.layout.display = "none"
            return
        try:
            pats = self.compare_patterns()
        except AttentionError as e:
            set_notice(self.info, str(e), "warning")
            return
        la, lb = self._probe_labels(self.probe), self._probe_labels(self.probe_b)
        T = pats["diff"].shape[0]
        ld = [x if x == y else f"{x}|{y}" for x, y in zip(la[:T], lb[:T])]
        views = {k: head_view(pats[k], 0, lab, self.compare_side) for k, lab in (("a", la), ("b", lb), ("diff", ld))}
        layer, head = self.selected
        mode = "raw" if self.mode.value == "difference" else self.mode.value
        high = float(max(views["a"].image.max(), views["b"].image.max(), 1e-9))  # one scale for A and B
        self.compare_panels["a"].show(views["a"], f"A: {self._label_a()} L{layer}H{head} {mode}", high=high)
        self.compare_panels["b"].show(views["b"], f"B: {self._label_b()} L{layer}H{head} {mode}", high=high)
        self.compare_panels["diff"].show(views["diff"], f"B - A ({T} common tokens)", diverging=True)
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
        self._quiet_text = True
        try:
            self.compare_text.value = text or ""
        finally:
            self._quiet_text = False
        self.run()

    def _draw_detail(self) -> None:
        if self.probe is None:
            return
        t0 = time.perf_counter()
        try:
            v = self._detail_view()
        except AttentionError as e:
            set_notice(self.info, str(e), "warning")
            return
        self.view = v
        layer, head = self.selected
        self.detail.show(v, f"L{layer} H{head} {self.mode.value}", diverging=self.mode.value == "difference")
        self.timings["detail"] = time.perf_counter() - t0
        self._draw_lines()
        self._draw_compare()

    def _detail_view(self):
        """The selected head's image for the current mode. Raw and value-weighted views are built from blocks of
        query rows (:func:`~workbench.attention.view.probe_head_view`), never the whole ``(T, T)`` pattern;
        rollout and difference go through :meth:`pattern`."""
        mode = self.mode.value
        if mode in ("raw", "value-weighted"):
            layer, head = self.selected
            return probe_head_view(self.probe, layer, head, self.probe_tokens(), self.max_side,
                                   value_weighted=mode == "value-weighted")
        a, q0 = self.pattern()
        return head_view(a, q0, self.probe_tokens(), self.max_side)

    def probe_tokens(self) -> list[str]:
        return self._probe_labels(self.probe)

    def _draw_lines(self) -> None:
        if self.probe is None:
            return
        layer, head = self.selected
        qi = int(self.query.value)
        row = self.probe.probs(layer, [head], (qi, qi + 1))[0, 0].numpy()
        k = min(self.top_k, row.size)
        top = np.sort(np.argsort(row)[::-1][:k])
        toks = self.probe_tokens()
        ys = np.arange(k)
        qy = (k - 1) / 2
        self.line_source.data = dict(x0=[0.0] * k, y0=[qy] * k, x1=[1.0] * k, y1=ys.tolist(),
                                     alpha=(row[top] / max(row[top].max(), 1e-9)).tolist())
        self.line_labels.data = dict(
            x=[-0.05] + [1.05] * k, y=[qy] + ys.tolist(),
            text=[f"{qi}:{toks[qi]}"] + [f"{j}:{toks[j]} {row[j]:.2f}" for j in top],
            align=["right"] + ["left"] * k,
        )

    def _draw_dist(self) -> None:
        if self.probe is None:
            return
        if not self.ablated:  # the clean distribution is the probe's own last logits: no extra forward pass
            self.ablation = None
            base_lp = self.probe.logits_last.log_softmax(-1).cpu().numpy()
            r = None
        else:
            try:
                r = ablate_heads(self.model, self.probe.ids, sorted(self.ablated), k=self.top_k,
                                 policy=self.policy)
            except AttentionError as e:
                set_notice(self.info, str(e), "warning")
                return
            self.ablation = r
            base_lp = r.base
        order = np.argsort(base_lp)[::-1][: self.top_k]
        if self.ablated:
            order = np.unique(np.concatenate([order, [t[0] for t in r.top[:3]]]))
            order = order[np.argsort(base_lp[order])[::-1]]
        from workbench.attention.capture import token_labels

        labels, seen = [], set()
        for i, s in zip(order, token_labels(self.model, order.tolist())):
            s = s if s not in seen else f"{s}#{i}"
            seen.add(s)
            labels.append(s)
        self.dist_ids = order
        base = np.exp(base_lp[order])
        abl = np.exp(r.ablated[order]) if self.ablated else np.zeros_like(base)
        self.dist_figure.x_range.factors = labels
        self.dist_source.data = dict(label=labels, base=base.tolist(), ablated=abl.tolist())

    # --- events -----------------------------------------------------------------------------------------------
    def _on_tap(self, attr, old, new) -> None:
        if not new:
            return
        layer, head = divmod(int(new[0]), self.H)
        self.select(layer, head)

    def _on_image_tap(self, event) -> None:
        """A tap on the detail image picks the query row under it for the line view."""
        if self.probe is None or event.y is None:
            return
        q = int(np.clip(np.floor(event.y), 0, self.probe.T - 1))
        self.query.value = q

    def select(self, layer: int, head: int) -> None:
        """Select a head (what a tile click does)."""
        if not (0 <= layer < self.L and 0 <= head < self.H):
            raise IndexOutOfRangeError(f"no head L{layer} H{head} in a {self.L}x{self.H} model "
                                       f"(layers 0..{self.L - 1}, heads 0..{self.H - 1})")
        self._quiet = True
        try:
            self.layer.value, self.head.value = layer, head
        finally:
            self._quiet = False
        self._select()

    def _select(self) -> None:
        if self._quiet:
            return
        t0 = time.perf_counter()
        self.ablate_button.unobserve(self._on_ablate, names="value")
        self.ablate_button.value = self.selected in self.ablated
        self.ablate_button.observe(self._on_ablate, names="value")
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
        """The ``(h, w, 3)`` uint8 picture :meth:`export_png` writes (before pixel repetition) and its scale.

        ``detail``: the detail image (Viridis scaled to its max, or red/blue for differences). ``compare``: A, B
        and B - A side by side, each padded to the tallest with white and separated by 2 white columns; A and B
        share one scale."""
        if view == "detail":
            if self.view is None:
                raise AttentionError("nothing to export yet")
            img = self.view.image
            return _rgb(img, self.mode.value == "difference"), max(1, 256 // max(img.shape))
        if view != "compare":
            raise AttentionError(f"view must be 'detail' or 'compare', got {view!r}")
        if self.compare_views is None:
            raise AttentionError("no comparison to export: give a second prompt or compare_model")
        imgs = [self.compare_views[k].image for k in ("a", "b", "diff")]
        high = float(max(imgs[0].max(), imgs[1].max(), 1e-9))
        parts = [_rgb(imgs[0], False, high), _rgb(imgs[1], False, high), _rgb(imgs[2], True)]
        h = max(p.shape[0] for p in parts)
        gap = np.full((h, 2, 3), 255, np.uint8)
        padded = [np.concatenate([p, np.full((h - p.shape[0], p.shape[1], 3), 255, np.uint8)]) for p in parts]
        return np.concatenate([padded[0], gap, padded[1], gap, padded[2]], axis=1), max(1, 256 // h)

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
        """Exported with the data: text(s), the selected head, mode, ablations, tokens and every metric."""
        metrics = {} if self.metrics is None else {
            m: self.metrics.get(m) for m in METRICS if getattr(self.metrics, m, None) is not None}
        return {"text": self.text.value, "compare_text": self.compare_text.value, "layer": self.selected[0],
                "head": self.selected[1], "mode": self.mode.value, "metric": self.metric.value,
                "ablated": sorted(self.ablated), "tokens": self.probe_tokens() if self.probe is not None else [],
                "metrics": metrics}

    def export_npz(self, path: str | Path | None = None) -> Path:
        """Write the current view and every metric ``(L, H)`` to a .npz file."""
        if self.view is None:
            raise AttentionError("nothing to export yet")
        layer, head = self.selected
        path = Path(path) if path else self.export_dir / f"attention_L{layer}H{head}.npz"
        metrics = {f"metric_{m}": self.metrics.get(m) for m in METRICS if getattr(self.metrics, m) is not None}
        extra = {}
        if self.compare_views is not None:
            for k, v in self.compare_views.items():
                extra[f"compare_{k}"] = v.image
            extra["compare_ids"] = self.probe_b.ids.numpy()
            extra["compare_tokens"] = np.array(self._probe_labels(self.probe_b))
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

    A slider picks the checkpoint; the image shows head ``(layer, head)`` on the run's evaluation sequence and
    the line chart the induction score of every head against step, with the current step marked.
    """

    def __init__(self, run, layer: int | None = None, head: int | None = None, shift: int = 0):
        from workbench.attention import capture_attention, induction_score

        self.run = run
        best = run.best_head()
        self.layer_i = best[0] if layer is None else layer
        self.head_i = best[1] if head is None else head
        self.shift = shift
        #: the chosen head's (shifted) induction score at every checkpoint, ``(n,)``
        self.shifted = np.array([
            induction_score(capture_attention(run.model_at(i), run.eval_ids, layers=[self.layer_i],
                                              heads=[self.head_i], value_norms=False), shift=shift)[0, 0]
            for i in range(len(run.steps))]) if shift else run.induction[:, self.layer_i, self.head_i]
        self._summary = f"{len(run.steps)} checkpoints, head L{self.layer_i} H{self.head_i}"
        self._capture = capture_attention
        self.slider = W.SelectionSlider(options=[int(s) for s in run.steps], value=int(run.steps[-1]),
                                        description="step", continuous_update=False)
        T = len(run.eval_ids)
        self.image_source = ColumnDataSource(dict(image=[np.zeros((T, T), np.float32)]))
        img = figure(width=330, height=320, title="", x_range=Range1d(0, T), y_range=Range1d(T, 0),
                     toolbar_location=None, tools="", x_axis_label="key", y_axis_label="query")
        img.image(image="image", x=0, y=0, dw=T, dh=T, source=self.image_source,
                  color_mapper=LinearColorMapper(palette=Viridis256, low=0, high=1))
        self.image_figure = img
        L, H = run.induction.shape[1:]
        curves = figure(width=420, height=320, title="induction score per head", x_axis_label="step",
                        y_range=Range1d(0, 1.02), toolbar_location=None, tools="")
        colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
        for li in range(L):
            for hi in range(H):
                curves.line(run.steps, run.induction[:, li, hi], line_width=2 if li == L - 1 else 1,
                            color=colours[(li * H + hi) % len(colours)], legend_label=f"L{li}H{hi}",
                            line_dash="solid" if li == L - 1 else "dashed")
        curves.line(run.steps, np.clip(run.loss_second / max(run.loss_second[0], 1e-9), 0, 1), color="black",
                    line_width=2, legend_label="loss (repeat, scaled)")
        if shift:
            curves.line(run.steps, self.shifted, color="black", line_width=3, line_dash="dotdash",
                        legend_label=f"L{self.layer_i}H{self.head_i} shift {shift}")
        curves.legend.label_text_font_size = "8px"
        self.marker_source = ColumnDataSource(dict(x=[int(run.steps[-1])] * 2, y=[0, 1.02]))
        curves.line(x="x", y="y", source=self.marker_source, color="grey", line_dash="dotted")
        self.curve_figure = curves
        self.info = W.HTML()
        self.slider.observe(lambda ch: self.show(), names="value")
        super().__init__(children=[self.slider, self.info,
                                   W.HBox([bokeh_pane(self.image_figure), bokeh_pane(self.curve_figure)])])
        self.show()

    def show(self) -> None:
        """Draw the selected checkpoint."""
        i = list(self.run.steps).index(int(self.slider.value))
        cap = self._capture(self.run.model_at(i), self.run.eval_ids, layers=[self.layer_i], heads=[self.head_i],
                            value_norms=False)
        self.image_source.data = dict(image=[cap.probs[0, 0]])
        self.marker_source.data = dict(x=[int(self.slider.value)] * 2, y=[0, 1.02])
        score = self.run.induction[i, self.layer_i, self.head_i]
        self.image_figure.title.text = f"L{self.layer_i} H{self.head_i} at step {self.slider.value}"
        extra = f", shifted by {self.shift}: {self.shifted[i]:.3f}" if self.shift else ""
        self.info.value = (f"step {self.slider.value}: induction score of L{self.layer_i}H{self.head_i} "
                           f"{score:.3f}{extra}; loss on the repeated half {self.run.loss_second[i]:.3f} nats")
