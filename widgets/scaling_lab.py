"""ScalingLab: fit a Chinchilla law to published or your own runs and see how the fitting choices move it.

All numbers come from :mod:`workbench.scaling` (``lab.load_source``, ``lab.fit_source``, ``lab.frontier``,
``fit_isoflop``, ``compute_optimal``); this module only draws them.

Views: loss against compute on log-log axes (runs coloured by model size, the fitted law along a few
sizes, the compute-optimal frontier with its bootstrap band, the chosen budget); IsoFLOP profiles (runs per
budget, Approach 2's parabolas and the fitted law along each budget); N* against compute (Approach 2's
vertices and power law, Approach 3's frontier with its band). A compute-budget slider reads off N*, D*,
predicted loss and tokens per parameter. Fitting choices: sum vs mean, Huber delta, the outlier rule (drop
the k highest-loss runs), full vs coarse start grid, the optimiser's stopping rule (strict, or scipy's
defaults: with "mean" that is the trap that lands near Hoffmann et al.'s published values) and the number
of bootstrap refits.

Lesson: ``notebooks/04_scaling_laws.ipynb`` (4. The workbench's own sweep; 5. Over-training; 6. Emergence under the
microscope; 7. The lab).
"""
from __future__ import annotations

import html
import time

import ipywidgets as W
import numpy as np
from bokeh.models import (ColorBar, ColumnDataSource, FixedTicker, HoverTool, Legend, LegendItem, LogColorMapper,
                          Range1d, Span)
from bokeh.palettes import Viridis256
from bokeh.plotting import figure

from workbench.scaling import BESIROGLU_2024, HOFFMANN_2022, ScalingError, fit_isoflop
from workbench.scaling.lab import (SOURCES, STOPPING, fit_source, frontier, load_source, representative_sizes,
                                   size_curves)

from .base import WorkbenchWidget, bokeh_pane, notice, set_notice

DEFAULT_DROP = {"chinchilla": 5, "gadre": 0, "tinygpt": 0, "store": 0}
#: widest figure: fits the ~900 px notebook column with the file browser open (DESIGN.md section 6)
FIG_WIDTH = 860
_WIDE = {"description_width": "initial"}


def _fmt(x: float) -> str:
    return f"{x:.4g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.3g}"


def tick_label(v: float, sci: bool = False) -> str:
    """A short tick label: 2.5, 300, 40k, 3M, 1.2B, 5e21 (never ``3.000e+6``); ``sci``: 3e19, 1e21 for
    anything from 1e4 up (compute in FLOP)."""
    if not np.isfinite(v) or v <= 0:
        return ""
    if sci and v >= 1e4:
        m, e = f"{v:.1e}".split("e")
        return f"{float(m):g}e{int(e)}"
    for scale, suffix in ((1e12, "e12"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            if scale == 1e12:
                m, e = f"{v:.1e}".split("e")
                return f"{float(m):g}e{int(e)}"
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _sci_label(v: float) -> str:
    m, e = f"{v:.1e}".split("e")
    return f"{float(m):g}e{int(e)}"


def tick_labels(ticks, sci: bool = False) -> dict:
    """Labels for one axis's ticks in ONE format: short suffixes (300k, 3M, 100B) unless ``sci`` or a tick
    reaches 1e12 (where :func:`tick_label` switches to ``1e12``); then every tick from 1e4 up is ``3e9``-style, so
    an axis never mixes ``1e12`` with ``100B``."""
    ticks = [float(t) for t in ticks]
    sci = sci or any(np.isfinite(t) and t >= 1e12 for t in ticks)
    return {t: _sci_label(t) if sci and t >= 1e4 and np.isfinite(t) else tick_label(t) for t in ticks}


def log_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Tick positions for a log axis over ``[lo, hi]``: powers of ten (every k-th decade when there are many),
    or 1-2-5 / 1-9 mantissas when the axis spans few decades, at most about ``max_ticks`` of them."""
    lo, hi = float(min(lo, hi)), float(max(lo, hi))
    if not (lo > 0 and np.isfinite(hi)):
        return []
    e0, e1 = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
    for mants in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0, 7.0), tuple(range(1, 10))):
        ticks = [m * 10.0 ** e for e in range(e0, e1 + 1) for m in mants if lo <= m * 10.0 ** e <= hi * (1 + 1e-9)]
        if len(ticks) >= 3:
            break
    ticks = ticks if len(ticks) >= 2 else [lo, hi]
    if len(ticks) > max_ticks:                       # many decades: every k-th power of ten
        decades = [t for t in ticks if abs(np.log10(t) - round(np.log10(t))) < 1e-9]
        k = int(np.ceil(len(decades) / max_ticks))
        ticks = decades[::k]
    return ticks


def readable_log_axis(axis, lo: float, hi: float, max_ticks: int = 8, sci: bool = False) -> None:
    """Fixed ticks from :func:`log_ticks` with short labels (:func:`tick_label`) on a bokeh log axis or colour
    bar (no overlapping ``3.000e+6``)."""
    ticks = log_ticks(lo, hi, max_ticks)
    axis.ticker = FixedTicker(ticks=ticks, minor_ticks=[])
    axis.major_label_overrides = tick_labels(ticks, sci)


def _log_range(values, pad: float = 0.08, fallback=(1.0, 10.0)) -> tuple[float, float]:
    v = np.asarray([x for x in np.ravel(values) if np.isfinite(x) and x > 0], dtype=float)
    if not len(v):
        return fallback
    a, b = np.log10(v.min()), np.log10(v.max())
    span = max(b - a, 0.05)
    return 10 ** (a - pad * span), 10 ** (b + pad * span)


class ScalingLab(WorkbenchWidget):
    """Fit ``L = E + A/N^alpha + B/D^beta`` to a data source and read off compute-optimal allocations.

    Controls (public ipywidgets): ``source``, ``path`` (+ ``load_button``, enabled for "your own sweep store")
    for a sweep store, ``drop_highest`` (outlier rule; back to the source's default on every switch),
    ``reduce``, ``delta``, ``grid``, ``stopping``, ``bootstrap``, ``budget`` (log10 FLOP). State: ``data``
    (a :class:`~workbench.scaling.lab.ScalingData`), ``fit``, ``isoflop`` (None when the runs have no usable
    IsoFLOP budgets), ``readout`` (the numbers shown for the budget). Data sources behind the figures:
    ``points_source``, ``law_source``, ``frontier_source``, ``budget_source``, ``iso_points``, ``iso_curves``,
    ``iso_law``, ``iso_vertices``, ``nopt_source``, ``nopt_fit_source``. Colour keys: ``n_colorbar`` (runs and
    law curves by N), ``budget_colorbar`` (IsoFLOP budgets). Bootstrap bands always come from refits made
    with the fit's own choices (see :func:`workbench.scaling.lab.fit_source`).
    """

    def __init__(self, source: str = "chinchilla", *, path: str = "", grid: str = "coarse", bootstrap: int = 20,
                 seed: int = 0):
        self._summary = f"source={source!r}"
        self.data = None
        self.fit = None
        self.isoflop = None
        self.front = None
        self.readout: dict = {}
        self.timings: dict[str, float] = {}
        self.seed = seed

        # --- controls ---
        self.source = W.Dropdown(options=[(v, k) for k, v in SOURCES.items()], value=source, description="data",
                                 style=_WIDE, layout=W.Layout(width="540px"))
        self.path = W.Text(value=path, placeholder="path to a sweep store directory or sweep CSV",
                           description="store", style=_WIDE, layout=W.Layout(width="420px"))
        self.load_button = W.Button(description="load store", icon="folder-open", layout=W.Layout(width="120px"))
        self.drop_highest = W.IntSlider(value=DEFAULT_DROP.get(source, 0), min=0, max=10,
                                        description="drop top-k loss", continuous_update=False, style=_WIDE,
                                        layout=W.Layout(width="300px"))
        self.reduce = W.ToggleButtons(options=["sum", "mean"], value="sum", description="reduce", style=_WIDE)
        self.delta = W.Dropdown(options=[1e-4, 1e-3, 1e-2, 1e-1], value=1e-3, description="Huber delta",
                                style=_WIDE, layout=W.Layout(width="180px"))
        self.grid = W.ToggleButtons(options=[("full (4,500 starts)", "full"), ("coarse (243)", "coarse")],
                                    value=grid, description="start grid", style=_WIDE)
        self.stopping = W.Dropdown(options=list(STOPPING), value="strict", description="stopping", style=_WIDE,
                                   layout=W.Layout(width="220px"))
        self.bootstrap = W.IntSlider(value=bootstrap, min=0, max=100, step=10, description="bootstrap refits",
                                     continuous_update=False, style=_WIDE, layout=W.Layout(width="300px"))
        self.budget = W.FloatSlider(value=23.0, min=18.0, max=26.0, step=0.1, description="log10 C (FLOP)",
                                    continuous_update=True, style=_WIDE, layout=W.Layout(width="420px"))
        self.info = notice()
        # the fit runs as the widget's one long action: in a worker thread when slow (scipy defaults), with
        # progress in the notice; this button reads "Stop" meanwhile (a second click stops, never a second run)
        self.fit_button = self.task_button("refit", self.refit, icon="refresh",
                                           tooltip="fit again with the current choices")
        self._shown_choices: dict | None = None   # the choices of the fit on display (restored on Stop)
        self.params_view = W.HTML(layout=W.Layout(max_width="440px"))
        self.budget_view = W.HTML()

        # --- loss vs compute ---
        self.n_mapper = LogColorMapper(palette=Viridis256, low=1.0, high=10.0)
        n_color = {"field": "N", "transform": self.n_mapper}
        self.points_source = ColumnDataSource(dict(C=[], loss=[], N=[], D=[]))
        self.law_source = ColumnDataSource(dict(xs=[], ys=[], N=[], label=[]))
        self.frontier_source = ColumnDataSource(dict(C=[], loss=[], lo=[], hi=[]))
        self.budget_source = ColumnDataSource(dict(C=[], loss=[]))
        lf = figure(width=FIG_WIDTH, height=400, x_axis_type="log", y_axis_type="log", title="loss vs compute",
                    x_range=Range1d(1e18, 1e26), y_range=Range1d(1.0, 10.0),
                    x_axis_label="compute C = 6ND (FLOP)", y_axis_label="final loss", tools="pan,wheel_zoom,reset",
                    toolbar_location="below")  # the title (with the source's name) keeps the top row to itself
        band = lf.varea(x="C", y1="lo", y2="hi", source=self.frontier_source, color="#ff7f0e", alpha=0.25)
        pts = lf.scatter("C", "loss", source=self.points_source, color=n_color, size=6, alpha=0.8)
        laws = lf.multi_line("xs", "ys", source=self.law_source, color=n_color, line_width=1.5, line_dash="dashed")
        fr = lf.line("C", "loss", source=self.frontier_source, color="#ff7f0e", line_width=3)
        star = lf.scatter("C", "loss", source=self.budget_source, marker="star", size=16, color="#d62728")
        self.budget_span = Span(location=1e23, dimension="height", line_color="#d62728", line_dash="dotted")
        lf.add_layout(self.budget_span)
        lf.add_tools(HoverTool(renderers=[pts], tooltips=[("N", "@N{0.00a}"), ("D", "@D{0.00a}"),
                                                          ("C", "@C{0.00e}"), ("loss", "@loss{0.000}")]))
        self.loss_legend = Legend(items=[LegendItem(label="runs", renderers=[pts]),
                                         LegendItem(label="law at fixed N", renderers=[laws]),
                                         LegendItem(label="optimal frontier", renderers=[fr]),
                                         LegendItem(label="95% band", renderers=[band]),
                                         LegendItem(label="budget", renderers=[star])],
                                  click_policy="hide", label_text_font_size="11px")
        lf.add_layout(self.loss_legend, "right")
        self.n_colorbar = ColorBar(color_mapper=self.n_mapper, title="parameters N (runs, law curves)",
                                   width=12, major_label_text_font_size="10px", title_text_font_size="10px",
                                   title_standoff=6)
        lf.add_layout(self.n_colorbar, "right")
        self.loss_figure = lf

        # --- IsoFLOP ---
        self.c_mapper = LogColorMapper(palette=Viridis256, low=1.0, high=10.0)
        c_color = {"field": "C", "transform": self.c_mapper}
        self.iso_points = ColumnDataSource(dict(N=[], loss=[], C=[]))
        self.iso_curves = ColumnDataSource(dict(xs=[], ys=[], C=[]))
        self.iso_law = ColumnDataSource(dict(xs=[], ys=[], C=[]))
        self.iso_vertices = ColumnDataSource(dict(N=[], loss=[], C=[]))
        isf = figure(width=FIG_WIDTH, height=360, x_axis_type="log", title="IsoFLOP profiles",
                     x_range=Range1d(1e6, 1e12), y_range=Range1d(1.0, 10.0),
                     x_axis_label="parameters N", y_axis_label="final loss", tools="pan,wheel_zoom,reset",
                     toolbar_location="below")
        ip = isf.scatter("N", "loss", source=self.iso_points, color=c_color, size=6)
        ic = isf.multi_line("xs", "ys", source=self.iso_curves, color=c_color, line_width=2)
        il = isf.multi_line("xs", "ys", source=self.iso_law, color=c_color, line_width=1, line_dash="dashed")
        iv = isf.scatter("N", "loss", source=self.iso_vertices, marker="x", size=12, color="black", line_width=2)
        isf.add_tools(HoverTool(renderers=[ip], tooltips=[("budget", "@C{0.0e}"), ("N", "@N{0.00a}"),
                                                          ("loss", "@loss{0.000}")]))
        isf.add_layout(Legend(items=[LegendItem(label="runs", renderers=[ip]),
                                     LegendItem(label="Approach 2 parabola", renderers=[ic]),
                                     LegendItem(label="fitted law", renderers=[il]),
                                     LegendItem(label="parabola minimum", renderers=[iv])],
                              click_policy="hide", label_text_font_size="11px"), "right")
        self.budget_colorbar = ColorBar(color_mapper=self.c_mapper, title="budget C (FLOP)", width=12,
                                        major_label_text_font_size="10px", title_text_font_size="10px",
                                        title_standoff=6)
        isf.add_layout(self.budget_colorbar, "right")
        self.iso_figure = isf

        # --- N* vs compute ---
        self.nopt_source = ColumnDataSource(dict(C=[], N_opt=[]))
        self.nopt_fit_source = ColumnDataSource(dict(C=[], approach2=[], approach3=[], lo=[], hi=[]))
        nf = figure(width=FIG_WIDTH, height=340, x_axis_type="log", y_axis_type="log", title="compute-optimal N*",
                    x_range=Range1d(1e18, 1e26), y_range=Range1d(1e6, 1e12),
                    x_axis_label="compute C (FLOP)", y_axis_label="N*", tools="pan,wheel_zoom,reset",
                    toolbar_location="below")
        nb = nf.varea(x="C", y1="lo", y2="hi", source=self.nopt_fit_source, color="#ff7f0e", alpha=0.25)
        n3 = nf.line("C", "approach3", source=self.nopt_fit_source, color="#ff7f0e", line_width=3)
        n2 = nf.line("C", "approach2", source=self.nopt_fit_source, color="black", line_dash="dashed", line_width=2)
        nv = nf.scatter("C", "N_opt", source=self.nopt_source, marker="x", size=12, color="black", line_width=2)
        nf.add_layout(Legend(items=[LegendItem(label="Approach 3 (fitted law)", renderers=[n3]),
                                    LegendItem(label="95% band", renderers=[nb]),
                                    LegendItem(label="Approach 2 (IsoFLOP minima)", renderers=[nv]),
                                    LegendItem(label="Approach 2 power law", renderers=[n2])],
                             click_policy="hide", label_text_font_size="11px"), "right")
        self.nopt_figure = nf

        self._loss_pane = bokeh_pane(lf)
        self._iso_pane = bokeh_pane(isf)
        self._nopt_pane = bokeh_pane(nf)

        # --- wiring: one re-entrancy mechanism (WorkbenchWidget.quietly / reacting) ---
        self.source.observe(self.reacting(self._idle_only(self._on_source)), names="value")
        self.load_button.on_click(self.reacting(lambda b: self.reload()))
        self.drop_highest.observe(self.reacting(self._idle_only(lambda ch: self.reload())), names="value")
        for w in (self.reduce, self.delta, self.grid, self.stopping, self.bootstrap):
            w.observe(self.reacting(self._idle_only(lambda ch: self.refit())), names="value")
        self.budget.observe(self.reacting(lambda ch: self.update_budget()), names="value")

        wrap = W.Layout(flex_flow="row wrap", align_items="center")
        controls = W.VBox([
            W.HBox([self.source, self.drop_highest], layout=wrap),
            W.HBox([self.path, self.load_button, self.export_controls(default=".csv")], layout=wrap),
            W.HBox([self.reduce, self.delta], layout=wrap),
            W.HBox([self.grid, self.stopping, self.bootstrap, self.fit_button], layout=wrap),
        ])
        self.tabs = W.Tab(children=[self._loss_pane, self._iso_pane, self._nopt_pane])
        for i, t in enumerate(["loss vs compute", "IsoFLOP", "N* vs compute"]):
            self.tabs.set_title(i, t)
        super().__init__(children=[controls, self.info,
                                   W.HBox([self.params_view, W.VBox([self.budget, self.budget_view])],
                                          layout=W.Layout(flex_flow="row wrap", grid_gap="16px")),
                                   self.tabs], layout=W.Layout(max_width="900px"))
        self._set_mode()
        self.reload()

    # ------------------------------------------------------------------------------------------ core calls
    def _on_source(self, change):
        self._summary = f"source={change['new']!r}"
        with self.quietly():       # every switch starts from the new source's own outlier rule
            self.drop_highest.value = DEFAULT_DROP.get(change["new"], 0)
        self._set_mode()
        self.reload()

    _CHOICES = ("source", "path", "drop_highest", "reduce", "delta", "grid", "stopping", "bootstrap")

    def _set_mode(self) -> None:
        """Enable what applies to the current source and state: the store path only for a sweep store, the
        budget slider only with a fit; while a fit runs, the fitting choices are locked (the budget, tabs and
        exports keep working on the fit on display)."""
        busy = self.busy
        store = self.source.value == "store"
        self.path.disabled = self.load_button.disabled = not store or busy
        for k in ("source", "drop_highest", "reduce", "delta", "grid", "stopping", "bootstrap"):
            getattr(self, k).disabled = busy
        self.budget.disabled = self.fit is None
        if not busy:
            self.fit_button.disabled = self.data is None

    def _idle_only(self, fn):
        """An observer that runs only when no fit is running; a change made meanwhile (from code: the controls
        are disabled) is put back, so the controls always show the choices of a fit that exists or runs."""
        def handler(change):
            if self.busy:
                with self.quietly():
                    change["owner"].value = change["old"]
                return None
            return fn(change)

        return handler

    def _fail(self, prefix: str, e: Exception) -> None:
        """A visible, specific notice that replaces the previous one; nothing stale stays on the charts."""
        self.data = self.fit = self.isoflop = self.front = None
        self.readout = {}
        text = str(e) if isinstance(e, (ScalingError, OSError)) else f"unexpected {type(e).__name__}: {e}"
        set_notice(self.info, f"{prefix}{text}", "error")
        self._clear()
        self._set_mode()

    def reload(self) -> None:
        """Load the chosen source with the outlier rule applied, then refit (nothing while a fit runs)."""
        if self.busy:
            return
        try:
            data = load_source(self.source.value, path=self.path.value, drop_highest=int(self.drop_highest.value))
        except Exception as e:  # noqa: BLE001 - every bad input ends in a visible notice, never a traceback
            what = "cannot load the sweep store: " if self.source.value == "store" else "cannot load the data: "
            self._fail(what, e)
            return
        self.refit(data)

    def _adopt(self, data) -> None:
        """Show ``data``: the budget slider's range follows its compute range."""
        self.data = data
        lc = np.log10(self.data.C)
        lo, hi = float(np.floor(lc.min())), float(np.ceil(lc.max()) + 2)
        with self.quietly():  # widen first so the new value is always inside the range
            self.budget.min, self.budget.max = min(lo, self.budget.min), max(hi, self.budget.max)
            self.budget.value = round(float(lc.max()) + 1.0, 1)
            self.budget.min, self.budget.max = lo, hi

    def refit(self, data=None) -> None:
        """Fit the law to ``data`` (default: the data shown) with the current choices, IsoFLOP profiles, then
        redraw. With scipy's default stopping rule (one full multistart per bootstrap refit: tens of seconds)
        the fit runs in a worker thread (see :attr:`background`): the notice counts refits, ``fit_button``
        reads "Stop", and a stopped fit leaves the previous one on display, with its choices back in the
        controls. Nothing starts while a fit runs."""
        if self.busy:
            return
        data = self.data if data is None else data
        if data is None:
            return
        choices = {k: getattr(self, k).value for k in self._CHOICES}
        grid, stopping, n_boot = self.grid.value, self.stopping.value, int(self.bootstrap.value)
        what = "4,500 starts" if grid == "full" else "243 starts"
        slow = " (a plain scipy loop, one start at a time)" if stopping == "scipy defaults" else ""
        same = (f"; {n_boot} bootstrap refits with the same choices"
                + (" (each reruns the whole scipy loop)" if stopping == "scipy defaults" else "") if n_boot else "")
        head = f"fitting {len(data)} runs from {what}{slow}{same}"
        set_notice(self.info, head + " ...", "warning")

        slow = stopping == "scipy defaults"
        refits = [0, n_boot]

        def progress(done, total):
            refits[:] = [done, total]
            stop = " (Stop keeps the fit on display)" if self.fit_button.description == "Stop" else ""
            set_notice(self.info, f"{head}: refit {done} of {total}{stop} ...", "warning")

        def work(tick):
            fit = fit_source(data, reduce=choices["reduce"], delta=float(choices["delta"]), grid=grid,
                             stopping=stopping, bootstrap=n_boot, seed=self.seed, progress=tick if slow else None)
            try:
                iso, iso_note = fit_isoflop(data.N, data.C, data.loss, budgets=data.budgets), ""
            except ScalingError as e:
                iso = None
                iso_note = f" IsoFLOP (Approach 2) not available for these runs: {str(e).split(' (skipped')[0]}."
            return fit, iso, iso_note

        def failed(e):
            self._fail("fit failed: ", e)
            self._adopt(data)

        t0 = time.perf_counter()
        self.run_in_background(work, on_progress=progress, on_error=failed,
                               on_done=lambda r: self._show_fit(data, choices, *r, time.perf_counter() - t0),
                               on_stopped=lambda: self._stopped(refits), on_end=self._set_mode,
                               background=None if slow else False)
        self._set_mode()

    def _stopped(self, refits) -> None:
        """Stop: the fit on display stays, and the controls go back to its choices."""
        done, total = refits
        when = f" after {done} of {total} bootstrap refits" if total else ""
        if self._shown_choices is None or self.fit is None:
            set_notice(self.info, f"fit stopped{when}: no fit to show; click refit to run it again", "warning")
            return
        with self.quietly():
            for k, v in self._shown_choices.items():
                getattr(self, k).value = v
        self._summary = f"source={self.source.value!r}"
        set_notice(self.info, f"fit stopped{when}: the previous fit stays on display (its choices are back in "
                              "the controls); click refit to run it again", "warning")

    def _show_fit(self, data, choices, fit, iso, iso_note, seconds) -> None:
        self._adopt(data)
        self.fit, self.isoflop, self._shown_choices = fit, iso, choices
        self.timings["fit"] = seconds
        n_boot = int(choices["bootstrap"])
        f = self.fit
        band = (f"; 95% bands from {n_boot} refits with the same choices" if n_boot else "; no bootstrap band")
        msg = (f"fitted {f.n_points} runs ({self.data.n_dropped} highest-loss dropped"
               + (f", {self.data.n_missing} without a loss left out" if self.data.n_missing else "")
               + f") in {self.timings['fit']:.1f} s; {f.n_converged} of {f.n_starts} starts converged{band}.")
        set_notice(self.info, msg + iso_note, "warning" if iso_note else "info")
        self._set_mode()
        try:
            self.render()
        except Exception as e:  # noqa: BLE001
            self._fail("cannot draw this fit: ", e)

    def update_budget(self) -> None:
        """Read N*, D*, predicted loss and tokens per parameter off the fit at the slider's budget."""
        if self.fit is None:
            return
        C = 10.0 ** float(self.budget.value)
        try:
            fr = frontier(self.fit, [C])
        except ScalingError as e:
            self.readout = {}
            self.budget_view.value = f"<i>{html.escape(str(e))}</i>"
            return
        self.readout = {"C": C, "N_opt": float(fr.N_opt[0]), "D_opt": float(fr.D_opt[0]), "loss": float(fr.loss[0]),
                        "tokens_per_param": float(fr.tokens_per_param[0]),
                        "N_opt_band": (float(fr.N_opt_lo[0]), float(fr.N_opt_hi[0])),
                        "D_opt_band": (float(fr.D_opt_lo[0]), float(fr.D_opt_hi[0])),
                        "loss_band": (float(fr.loss_lo[0]), float(fr.loss_hi[0])),
                        "tokens_per_param_band": (float(fr.tpp_lo[0]), float(fr.tpp_hi[0])), "n_boot": fr.n_boot}
        r = self.readout

        def row(name, key):
            lo, hi = r[f"{key}_band"]
            band = f" [{_fmt(lo)}, {_fmt(hi)}]" if r["n_boot"] else ""
            return f"<tr><td>{name}</td><td><b>{_fmt(r[key])}</b>{band}</td></tr>"

        self.budget_view.value = (
            f"<table><tr><td>budget C</td><td><b>{C:.3g}</b> FLOP</td></tr>"
            + row("N* (parameters)", "N_opt") + row("D* (tokens)", "D_opt") + row("predicted loss", "loss")
            + row("tokens per parameter", "tokens_per_param") + "</table>"
            + (f"<small>95% bands over {r['n_boot']} bootstrap refits</small>" if r["n_boot"] else ""))
        self.budget_source.data = dict(C=[C], loss=[r["loss"]])
        self.budget_span.location = C

    def export_state(self) -> dict:
        """Exported with the data: the fitting choices, the fitted law (parameters, bootstrap intervals), the
        IsoFLOP fit and the budget read-out."""
        f = self.fit
        fit = None if f is None else {"params": f.params, "a": f.a, "b": f.b, "ci": f.ci, "objective": f.objective,
                                      "n_points": f.n_points, "n_starts": f.n_starts, "n_converged": f.n_converged}
        iso = None if self.isoflop is None else {"a": self.isoflop.a, "C": self.isoflop.C, "N_opt": self.isoflop.N_opt}
        choices = {k: getattr(self, k).value for k in ("source", "path", "drop_highest", "reduce", "delta", "grid",
                                                        "stopping", "bootstrap", "budget")}
        return {"choices": choices, "fit": fit, "isoflop": iso, "readout": self.readout}

    # -------------------------------------------------------------------------------------------- drawing
    def _clear(self):
        """Empty every view; titles say that nothing is loaded (never the previous source's name) and every
        log axis keeps a positive range (no log-axis warnings from empty data)."""
        for src in (self.points_source, self.law_source, self.frontier_source, self.budget_source, self.iso_points,
                    self.iso_curves, self.iso_law, self.iso_vertices, self.nopt_source, self.nopt_fit_source):
            src.data = {k: [] for k in src.data}
        self.params_view.value = ""
        self.budget_view.value = ""
        empty = ("no data loaded: give a sweep store or CSV and click load" if self.source.value == "store"
                 else "no data")
        self.loss_figure.title.text = f"loss vs compute: {empty}"
        self.iso_figure.title.text = f"IsoFLOP profiles: {empty}"
        self.nopt_figure.title.text = f"compute-optimal N*: {empty}"
        self._set_ranges(C=(1e18, 1e26), loss=(1.0, 10.0), N=(1e6, 1e12), iso_loss=(1.0, 10.0))
        self.n_mapper.low, self.n_mapper.high = 1e6, 1e12
        self.c_mapper.low, self.c_mapper.high = 1e18, 1e26
        self.n_colorbar.visible = self.budget_colorbar.visible = False

    def _set_ranges(self, *, C, loss, N, iso_loss, nopt=None):
        """Axis ranges and readable fixed ticks (no ``3.000e+6`` labels running into each other)."""
        lf, isf, nf = self.loss_figure, self.iso_figure, self.nopt_figure
        lf.x_range.start, lf.x_range.end = C
        lf.y_range.start, lf.y_range.end = loss
        isf.x_range.start, isf.x_range.end = N
        isf.y_range.start, isf.y_range.end = iso_loss
        nf.x_range.start, nf.x_range.end = C
        nf.y_range.start, nf.y_range.end = nopt or N
        readable_log_axis(lf.xaxis[0], *C, sci=True)
        readable_log_axis(lf.yaxis[0], *loss, max_ticks=6)
        readable_log_axis(isf.xaxis[0], *N)
        readable_log_axis(nf.xaxis[0], *C, sci=True)
        readable_log_axis(nf.yaxis[0], *(nopt or N), max_ticks=6)

    def render(self) -> None:
        """Redraw every view from ``data``, ``fit`` and ``isoflop``."""
        d, f = self.data, self.fit
        self.points_source.data = dict(C=d.C.tolist(), loss=d.loss.tolist(), N=d.N.tolist(), D=d.D.tolist())
        lo, hi = np.log10(d.C.min()), float(self.budget.max)
        Cg = np.logspace(lo, hi, 120)
        sizes = representative_sizes(d.N, 5)
        curves = size_curves(f, sizes, Cg)
        self.law_source.data = dict(xs=[Cg.tolist()] * len(curves), ys=[v.tolist() for v in curves.values()],
                                    N=list(curves), label=[f"N={_fmt(n)}" for n in curves])
        n_lo, n_hi = float(d.N.min()), float(d.N.max())
        self.n_mapper.low, self.n_mapper.high = (n_lo, n_hi) if n_hi > n_lo else (n_lo / 2, n_lo * 2)
        self.n_colorbar.visible = True
        readable_log_axis(self.n_colorbar, n_lo, n_hi, max_ticks=5)
        try:
            self.front = frontier(f, Cg)
            self.frontier_source.data = dict(C=Cg.tolist(), loss=self.front.loss.tolist(),
                                             lo=self.front.loss_lo.tolist(), hi=self.front.loss_hi.tolist())
        except ScalingError:
            self.front = None
            self.frontier_source.data = dict(C=[], loss=[], lo=[], hi=[])
        self.loss_figure.title.text = f"loss vs compute: {d.label}"
        floor = min(d.loss.min(), self.front.loss_lo.min()) if self.front is not None else d.loss.min()
        c_rng = (10 ** (lo - 0.1), 10 ** (hi + 0.05))
        iso_vals = [d.loss]
        if self.isoflop is not None:
            iso_vals = [np.concatenate([p.loss for p in self.isoflop.profiles])]
        nopt_vals = [d.N] + ([self.front.N_opt_lo, self.front.N_opt_hi] if self.front is not None else [])
        self._set_ranges(C=c_rng, loss=(0.9 * floor, 1.15 * d.loss.max()),
                         N=_log_range(d.N if self.isoflop is None else np.concatenate(
                             [p.N for p in self.isoflop.profiles])),
                         iso_loss=_log_range(iso_vals[0], pad=0.15),
                         nopt=_log_range(np.concatenate([np.ravel(v) for v in nopt_vals])))
        self.iso_figure.title.text = f"IsoFLOP profiles: {d.label}"
        self.nopt_figure.title.text = f"compute-optimal N*: {d.label}"
        self._render_iso()
        self._render_params()
        self.update_budget()

    def _render_iso(self):
        iso, f = self.isoflop, self.fit
        if iso is None:
            for src in (self.iso_points, self.iso_curves, self.iso_law, self.iso_vertices, self.nopt_source):
                src.data = {k: [] for k in src.data}
            self.budget_colorbar.visible = False
        else:
            pN, pL, pC, xs, ys, lxs, lys, cs = [], [], [], [], [], [], [], []
            for p in iso.profiles:
                pN += p.N.tolist()
                pL += p.loss.tolist()
                pC += [p.C] * len(p.N)
                x = np.linspace(np.log10(p.N.min()), np.log10(p.N.max()), 40)
                xs.append((10 ** x).tolist())
                ys.append(np.polyval(p.coeffs, x).tolist())
                lxs.append((10 ** x).tolist())
                lys.append(f.predict(10 ** x, p.C / (6 * 10 ** x)).tolist())
                cs.append(p.C)
            self.iso_points.data = dict(N=pN, loss=pL, C=pC)
            self.iso_curves.data = dict(xs=xs, ys=ys, C=cs)
            self.iso_law.data = dict(xs=lxs, ys=lys, C=cs)
            self.iso_vertices.data = dict(N=[p.N_opt for p in iso.profiles], loss=[p.loss_opt for p in iso.profiles],
                                          C=[p.C for p in iso.profiles])
            self.nopt_source.data = dict(C=iso.C.tolist(), N_opt=iso.N_opt.tolist())
            c_lo, c_hi = min(cs), max(cs)
            self.c_mapper.low, self.c_mapper.high = (c_lo, c_hi) if c_hi > c_lo else (c_lo / 2, c_lo * 2)
            self.budget_colorbar.visible = True
            ticks = sorted(cs) if len(cs) <= 9 else log_ticks(c_lo, c_hi, 6)
            self.budget_colorbar.ticker = FixedTicker(ticks=ticks, minor_ticks=[])
            self.budget_colorbar.major_label_overrides = {t: tick_label(t, sci=True) for t in ticks}
        if self.front is not None:
            Cg = self.front.C
            a2 = iso.N_opt_at(Cg).tolist() if iso is not None else [float("nan")] * len(Cg)
            self.nopt_fit_source.data = dict(C=Cg.tolist(), approach2=a2, approach3=self.front.N_opt.tolist(),
                                             lo=self.front.N_opt_lo.tolist(), hi=self.front.N_opt_hi.tolist())
        else:
            self.nopt_fit_source.data = dict(C=[], approach2=[], approach3=[], lo=[], hi=[])

    def _render_params(self):
        f = self.fit
        keys = ("E", "A", "B", "alpha", "beta", "a", "b")
        vals = {**f.params, "a": f.a, "b": f.b}
        refs = []
        if self.data.source == "chinchilla":
            refs = [("Besiroglu 2024", BESIROGLU_2024), ("Hoffmann 2022", HOFFMANN_2022)]
        head = "<tr><th></th><th>this fit</th><th>95% bootstrap</th>" + "".join(f"<th>{n}</th>" for n, _ in refs)
        rows = []
        for k in keys:
            ci = f.ci.get(k) if f.ci else None
            ci_s = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
            ref_cells = []
            for _, ref in refs:
                if k in ref:
                    ref_cells.append(_fmt(ref[k]))
                else:
                    al, be = ref["alpha"], ref["beta"]
                    ref_cells.append(_fmt(be / (al + be) if k == "a" else al / (al + be)))
            rows.append(f"<tr><td>{k}</td><td><b>{_fmt(vals[k])}</b></td><td>{ci_s}</td>"
                        + "".join(f"<td>{c}</td>" for c in ref_cells) + "</tr>")
        # non-breaking spaces: in the 440 px box a formula never splits across lines ("D* ~" / "C^b")
        iso = f"; Approach 2: N*&nbsp;~&nbsp;C^{self.isoflop.a:.3f}" if self.isoflop is not None else ""
        self.params_view.value = (f"<table>{head}</tr>{''.join(rows)}</table><small>objective {f.objective:.6g} "
                                  f"({f.reduce}, delta {f.delta:g}, {f.grid} grid, {self.stopping.value}); "
                                  f"N*&nbsp;~&nbsp;C^a, D*&nbsp;~&nbsp;C^b{iso}</small>")


_PALETTE = ["#440154", "#3b528b", "#21918c", "#5ec962", "#c8a800", "#e07b00", "#b00020"]


def sweep_chart(sweep: dict, fit, width: int = 760, height: int = 340):
    """Notebook 04's TinyGPT sweep chart: loss against tokens per model size (points) and ``fit``'s law
    (dashed), readable log ticks (300k, 1M, 3M), the legend outside the plot and click-to-hide."""
    N, D, loss = (np.asarray(sweep[k], dtype=float) for k in ("N", "D", "loss"))
    p = figure(width=width, height=height, x_axis_type="log", y_axis_type="log",
               title="TinyGPT sweep: loss vs tokens per size", x_axis_label="training tokens D",
               y_axis_label="validation loss (nats/byte)", x_range=Range1d(*_log_range(D)),
               y_range=Range1d(*_log_range(loss, pad=0.15)))
    Dg = np.logspace(np.log10(D.min()), np.log10(D.max()), 40)
    items = []
    for colour, n in zip(_PALETTE, np.unique(N)):
        m = N == n
        r1 = p.scatter(D[m], loss[m], color=colour, size=8)
        r2 = p.line(Dg, fit.predict(n, Dg), color=colour, line_dash="dashed")
        items.append(LegendItem(label=f"N = {tick_label(n)}", renderers=[r1, r2]))
    p.add_layout(Legend(items=items, click_policy="hide", title="size (dashed: fit)"), "right")
    readable_log_axis(p.xaxis[0], *_log_range(D))
    readable_log_axis(p.yaxis[0], *_log_range(loss, pad=0.15), max_ticks=6)
    return p


def token_multiplier_chart(fit, budgets=(1e19, 1e20, 1e21, 1e22), width: int = 760, height: int = 320):
    """Notebook 04's Gadre chart: an over-training fit's predicted loss against the token multiplier M = D/N
    at fixed compute budgets, with the legend outside the plot (the curves' rising ends stay visible)."""
    Mg = np.logspace(0.5, 3, 60)
    p = figure(width=width, height=height, x_axis_type="log", title="loss vs token multiplier at fixed compute",
               x_axis_label="M = D / N", y_axis_label="predicted C4 loss")
    items = [LegendItem(label=tick_label(Cb, sci=True) + " FLOP",
                        renderers=[p.line(Mg, fit.predict(Cb, Mg), color=c, line_width=2)])
             for c, Cb in zip(_PALETTE, budgets)]
    p.add_layout(Legend(items=items, click_policy="hide", title="budget C"), "right")
    readable_log_axis(p.xaxis[0], Mg[0], Mg[-1])
    return p


#: notebook 04's emergence metrics: key in the sweep's models, chart title
EMERGENCE_METRICS = (("exact_match", "exact match"), ("token_accuracy", "per-token accuracy"),
                     ("edit_distance", "token edit distance (lower is better)"),
                     ("answer_logprob", "log p(answer) (nats)"))


def emergence_charts(em: dict, width: int = 400, height: int = 270) -> list:
    """Notebook 04's emergence grid: one figure per metric of :func:`~workbench.scaling.load_emergence`'s
    sweep, the mean over seeds (line and points) and its +-2 standard-error band, each with a key below the
    plot (outside the data); readable log ticks on the parameter axis. Two per row fit a 900 px column:
    ``show(gridplot(emergence_charts(em), ncols=2))``."""
    models = em["models"]
    N = np.array([m["N"] for m in models], dtype=float)
    n_seeds = len(em.get("settings", {}).get("seeds", [])) or None
    seeds = f" over {n_seeds} seeds" if n_seeds else ""
    figs = []
    for key, title in EMERGENCE_METRICS:
        f = figure(width=width, height=height, x_axis_type="log", title=title, x_axis_label="non-embedding parameters",
                   toolbar_location=None, tools="")
        y = np.array([m[key] for m in models], dtype=float)
        sem = np.array([m["sem"][key] for m in models], dtype=float)
        band = f.varea(N, y - 2 * sem, y + 2 * sem, alpha=0.2)
        line = f.line(N, y, line_width=2)
        pts = f.scatter(N, y, size=7)
        f.add_layout(Legend(items=[LegendItem(label=f"mean{seeds}", renderers=[line, pts]),
                                   LegendItem(label="\u00b12 standard errors", renderers=[band])],
                            orientation="horizontal", click_policy="hide", label_text_font_size="10px",
                            padding=2, spacing=8, margin=4), "below")
        readable_log_axis(f.xaxis[0], *_log_range(N), max_ticks=5)
        figs.append(f)
    return figs


__all__ = ["ScalingLab", "sweep_chart", "token_multiplier_chart", "emergence_charts"]
