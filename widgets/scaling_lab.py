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
"""
from __future__ import annotations

import html
import time

import ipywidgets as W
import numpy as np
from bokeh.models import ColumnDataSource, HoverTool, Legend, LegendItem, Range1d, Span
from bokeh.palettes import Viridis256
from bokeh.plotting import figure

from workbench.scaling import BESIROGLU_2024, HOFFMANN_2022, ScalingError, fit_isoflop
from workbench.scaling.lab import (SOURCES, STOPPING, fit_source, frontier, load_source, representative_sizes,
                                   size_curves)

from .base import WorkbenchWidget, bokeh_pane, notice, set_notice

SIZE_COLORS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#c8a800", "#e07b00", "#b00020"]
DEFAULT_DROP = {"chinchilla": 5, "gadre": 0, "tinygpt": 0, "store": 0}


def _colors(values) -> list[str]:
    """Viridis colours by log value (presentation only)."""
    v = np.log10(np.asarray(values, dtype=float))
    span = np.ptp(v) if len(v) else 0.0
    idx = np.zeros(len(v), dtype=int) if span == 0 else ((v - v.min()) / span * 255).astype(int)
    return [Viridis256[i] for i in idx]


def _fmt(x: float) -> str:
    return f"{x:.4g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.3g}"


class ScalingLab(WorkbenchWidget):
    """Fit ``L = E + A/N^alpha + B/D^beta`` to a data source and read off compute-optimal allocations.

    Controls (public ipywidgets): ``source``, ``path`` (+ ``load_button``) for a sweep store, ``drop_highest``
    (outlier rule), ``reduce``, ``delta``, ``grid``, ``stopping``, ``bootstrap``, ``budget`` (log10 FLOP).
    State: ``data`` (a :class:`~workbench.scaling.lab.ScalingData`), ``fit``, ``isoflop`` (None when the runs
    have no usable IsoFLOP budgets), ``readout`` (the numbers shown for the budget). Data sources behind the
    figures: ``points_source``, ``law_source``, ``frontier_source``, ``budget_source``, ``iso_points``,
    ``iso_curves``, ``iso_law``, ``iso_vertices``, ``nopt_source``, ``nopt_fit_source``.
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
        self._quiet = False

        # --- controls ---
        self.source = W.Dropdown(options=[(v, k) for k, v in SOURCES.items()], value=source, description="data",
                                 layout=W.Layout(width="520px"))
        self.path = W.Text(value=path, placeholder="path to a sweep store directory or sweep CSV",
                           description="store", layout=W.Layout(width="420px"))
        self.load_button = W.Button(description="load store", icon="folder-open")
        self.drop_highest = W.IntSlider(value=DEFAULT_DROP.get(source, 0), min=0, max=10,
                                        description="drop top-k loss", continuous_update=False,
                                        style={"description_width": "initial"})
        self.reduce = W.ToggleButtons(options=["sum", "mean"], value="sum", description="reduce")
        self.delta = W.Dropdown(options=[1e-4, 1e-3, 1e-2, 1e-1], value=1e-3, description="Huber delta")
        self.grid = W.ToggleButtons(options=[("full (4,500 starts)", "full"), ("coarse (243)", "coarse")],
                                    value=grid, description="start grid")
        self.stopping = W.Dropdown(options=list(STOPPING), value="strict", description="stopping")
        self.bootstrap = W.IntSlider(value=bootstrap, min=0, max=100, step=10, description="bootstrap",
                                     continuous_update=False)
        self.budget = W.FloatSlider(value=23.0, min=18.0, max=26.0, step=0.1, description="log10 C (FLOP)",
                                    continuous_update=True, style={"description_width": "initial"},
                                    layout=W.Layout(width="520px"))
        self.info = notice()
        self.params_view = W.HTML()
        self.budget_view = W.HTML()

        # --- figures ---
        self.points_source = ColumnDataSource(dict(C=[], loss=[], N=[], D=[], color=[]))
        self.law_source = ColumnDataSource(dict(xs=[], ys=[], color=[], label=[]))
        self.frontier_source = ColumnDataSource(dict(C=[], loss=[], lo=[], hi=[]))
        self.budget_source = ColumnDataSource(dict(C=[], loss=[]))
        lf = figure(width=820, height=380, x_axis_type="log", y_axis_type="log", title="loss vs compute",
                    y_range=Range1d(1.0, 10.0),
                    x_axis_label="compute C = 6ND (FLOP)", y_axis_label="final loss", tools="pan,wheel_zoom,reset",
                    toolbar_location="above")
        band = lf.varea(x="C", y1="lo", y2="hi", source=self.frontier_source, color="#ff7f0e", alpha=0.25)
        pts = lf.scatter("C", "loss", source=self.points_source, color="color", size=6, alpha=0.8)
        laws = lf.multi_line("xs", "ys", source=self.law_source, color="color", line_width=1.5, line_dash="dashed")
        fr = lf.line("C", "loss", source=self.frontier_source, color="#ff7f0e", line_width=3)
        lf.scatter("C", "loss", source=self.budget_source, marker="star", size=16, color="#d62728")
        self.budget_span = Span(location=1e23, dimension="height", line_color="#d62728", line_dash="dotted")
        lf.add_layout(self.budget_span)
        lf.add_tools(HoverTool(renderers=[pts], tooltips=[("N", "@N{0.00a}"), ("D", "@D{0.00a}"),
                                                          ("C", "@C{0.00e}"), ("loss", "@loss{0.000}")]))
        lf.add_layout(Legend(items=[LegendItem(label="runs (colour: N)", renderers=[pts]),
                                    LegendItem(label="law at fixed N", renderers=[laws]),
                                    LegendItem(label="compute-optimal frontier", renderers=[fr]),
                                    LegendItem(label="bootstrap band", renderers=[band])]), "right")
        self.loss_figure = lf

        self.iso_points = ColumnDataSource(dict(N=[], loss=[], color=[], C=[]))
        self.iso_curves = ColumnDataSource(dict(xs=[], ys=[], color=[]))
        self.iso_law = ColumnDataSource(dict(xs=[], ys=[], color=[]))
        self.iso_vertices = ColumnDataSource(dict(N=[], loss=[], C=[]))
        isf = figure(width=640, height=320, x_axis_type="log", title="IsoFLOP profiles",
                     x_axis_label="parameters N", y_axis_label="final loss", tools="pan,wheel_zoom,reset",
                     toolbar_location="above")
        ip = isf.scatter("N", "loss", source=self.iso_points, color="color", size=6)
        ic = isf.multi_line("xs", "ys", source=self.iso_curves, color="color", line_width=2)
        il = isf.multi_line("xs", "ys", source=self.iso_law, color="color", line_width=1, line_dash="dashed")
        iv = isf.scatter("N", "loss", source=self.iso_vertices, marker="x", size=12, color="black", line_width=2)
        isf.add_tools(HoverTool(renderers=[ip], tooltips=[("budget", "@C{0.0e}"), ("N", "@N{0.00a}"),
                                                          ("loss", "@loss{0.000}")]))
        isf.add_layout(Legend(items=[LegendItem(label="runs", renderers=[ip]),
                                     LegendItem(label="Approach 2 parabola", renderers=[ic]),
                                     LegendItem(label="fitted law", renderers=[il]),
                                     LegendItem(label="parabola minimum", renderers=[iv])], location="top_right"))
        self.iso_figure = isf

        self.nopt_source = ColumnDataSource(dict(C=[], N_opt=[]))
        self.nopt_fit_source = ColumnDataSource(dict(C=[], approach2=[], approach3=[], lo=[], hi=[]))
        nf = figure(width=640, height=280, x_axis_type="log", y_axis_type="log", title="compute-optimal N*",
                    x_axis_label="compute C (FLOP)", y_axis_label="N*", tools="pan,wheel_zoom,reset",
                    toolbar_location="above")
        nb = nf.varea(x="C", y1="lo", y2="hi", source=self.nopt_fit_source, color="#ff7f0e", alpha=0.25)
        n3 = nf.line("C", "approach3", source=self.nopt_fit_source, color="#ff7f0e", line_width=3)
        n2 = nf.line("C", "approach2", source=self.nopt_fit_source, color="black", line_dash="dashed", line_width=2)
        nv = nf.scatter("C", "N_opt", source=self.nopt_source, marker="x", size=12, color="black", line_width=2)
        nf.add_layout(Legend(items=[LegendItem(label="Approach 3 (fitted law)", renderers=[n3]),
                                    LegendItem(label="bootstrap band", renderers=[nb]),
                                    LegendItem(label="Approach 2 (IsoFLOP minima)", renderers=[nv]),
                                    LegendItem(label="Approach 2 power law", renderers=[n2])],
                             location="top_left"))
        self.nopt_figure = nf

        self._loss_pane = bokeh_pane(lf)
        self._iso_pane = bokeh_pane(isf)
        self._nopt_pane = bokeh_pane(nf)

        # --- wiring ---
        self.source.observe(self._on_source, names="value")
        self.load_button.on_click(lambda b: self.reload())
        self.drop_highest.observe(self._on_data_control, names="value")
        for w in (self.reduce, self.delta, self.grid, self.stopping, self.bootstrap):
            w.observe(self._on_fit_control, names="value")
        self.budget.observe(lambda ch: self.update_budget(), names="value")

        controls = W.VBox([
            W.HBox([self.source, self.drop_highest]),
            W.HBox([self.path, self.load_button, self.export_controls(default=".csv")],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.reduce, self.delta]),
            W.HBox([self.grid, self.stopping, self.bootstrap]),
        ])
        self.tabs = W.Tab(children=[self._loss_pane, self._iso_pane, self._nopt_pane])
        for i, t in enumerate(["loss vs compute", "IsoFLOP", "N* vs compute"]):
            self.tabs.set_title(i, t)
        super().__init__(children=[controls, self.info, W.HBox([self.params_view, W.VBox([self.budget,
                                                                                           self.budget_view])]),
                                   self.tabs])
        self.reload()

    # ------------------------------------------------------------------------------------------ core calls
    def _on_source(self, change):
        self._summary = f"source={change['new']!r}"
        self._quiet = True
        try:
            self.drop_highest.value = DEFAULT_DROP.get(change["new"], 0)
        finally:
            self._quiet = False
        self.reload()

    def _on_data_control(self, change):
        if not self._quiet:
            self.reload()

    def _on_fit_control(self, change):
        if not self._quiet:
            self.refit()

    def reload(self) -> None:
        """Load the chosen source with the outlier rule applied, then refit."""
        try:
            self.data = load_source(self.source.value, path=self.path.value, drop_highest=int(self.drop_highest.value))
        except (ScalingError, OSError) as e:
            self.data = self.fit = self.isoflop = self.front = None
            self.readout = {}
            set_notice(self.info, str(e), "error")
            self._clear()
            return
        lc = np.log10(self.data.C)
        lo, hi = float(np.floor(lc.min())), float(np.ceil(lc.max()) + 2)
        self._quiet = True
        try:  # widen first so the new value is always inside the range
            self.budget.min, self.budget.max = min(lo, self.budget.min), max(hi, self.budget.max)
            self.budget.value = round(float(lc.max()) + 1.0, 1)
            self.budget.min, self.budget.max = lo, hi
        finally:
            self._quiet = False
        self.refit()

    def refit(self) -> None:
        """Fit the law with the current choices (notice shown while it runs), IsoFLOP profiles, then redraw."""
        if self.data is None:
            return
        grid, stopping = self.grid.value, self.stopping.value
        what = "4,500 starts" if grid == "full" else "243 starts"
        slow = " (a plain scipy loop, one start at a time)" if stopping == "scipy defaults" else ""
        set_notice(self.info, f"fitting {len(self.data)} runs from {what}{slow}; bootstrap "
                              f"{self.bootstrap.value} refits ...", "warning")
        t0 = time.perf_counter()
        try:
            self.fit = fit_source(self.data, reduce=self.reduce.value, delta=float(self.delta.value), grid=grid,
                                  stopping=stopping, bootstrap=int(self.bootstrap.value), seed=self.seed)
        except ScalingError as e:
            self.fit = self.front = None
            set_notice(self.info, f"fit failed: {e}", "error")
            self._clear()
            return
        self.timings["fit"] = time.perf_counter() - t0
        try:
            self.isoflop = fit_isoflop(self.data.N, self.data.C, self.data.loss, budgets=self.data.budgets)
            iso_note = ""
        except ScalingError as e:
            self.isoflop = None
            iso_note = f" IsoFLOP (Approach 2) not available for these runs: {str(e).split(' (skipped')[0]}."
        f = self.fit
        msg = (f"fitted {f.n_points} runs ({self.data.n_dropped} highest-loss dropped) in "
               f"{self.timings['fit']:.1f} s; {f.n_converged} of {f.n_starts} starts converged.")
        set_notice(self.info, msg + iso_note, "warning" if iso_note else "info")
        self.render()

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
        for src in (self.points_source, self.law_source, self.frontier_source, self.budget_source, self.iso_points,
                    self.iso_curves, self.iso_law, self.iso_vertices, self.nopt_source, self.nopt_fit_source):
            src.data = {k: [] for k in src.data}
        self.params_view.value = ""
        self.budget_view.value = ""

    def render(self) -> None:
        """Redraw every view from ``data``, ``fit`` and ``isoflop``."""
        d, f = self.data, self.fit
        self.points_source.data = dict(C=d.C.tolist(), loss=d.loss.tolist(), N=d.N.tolist(), D=d.D.tolist(),
                                       color=_colors(d.N))
        lo, hi = np.log10(d.C.min()), float(self.budget.max)
        Cg = np.logspace(lo, hi, 120)
        sizes = representative_sizes(d.N, 5)
        curves = size_curves(f, sizes, Cg)
        self.law_source.data = dict(xs=[Cg.tolist()] * len(curves), ys=[v.tolist() for v in curves.values()],
                                    color=_colors(list(curves)) if len(curves) > 1 else [SIZE_COLORS[2]],
                                    label=[f"N={_fmt(n)}" for n in curves])
        try:
            self.front = frontier(f, Cg)
            self.frontier_source.data = dict(C=Cg.tolist(), loss=self.front.loss.tolist(),
                                             lo=self.front.loss_lo.tolist(), hi=self.front.loss_hi.tolist())
        except ScalingError:
            self.front = None
            self.frontier_source.data = dict(C=[], loss=[], lo=[], hi=[])
        self.loss_figure.title.text = f"loss vs compute: {d.label}"
        floor = min(d.loss.min(), self.front.loss_lo.min()) if self.front is not None else d.loss.min()
        self.loss_figure.y_range.start, self.loss_figure.y_range.end = 0.9 * floor, 1.15 * d.loss.max()
        self._render_iso()
        self._render_params()
        self.update_budget()

    def _render_iso(self):
        iso, f = self.isoflop, self.fit
        if iso is None:
            for src in (self.iso_points, self.iso_curves, self.iso_law, self.iso_vertices, self.nopt_source):
                src.data = {k: [] for k in src.data}
        else:
            cols = [SIZE_COLORS[i % len(SIZE_COLORS)] for i in range(len(iso.profiles))]
            pN, pL, pc, pC, xs, ys, lxs, lys = [], [], [], [], [], [], [], []
            for p, c in zip(iso.profiles, cols):
                pN += p.N.tolist()
                pL += p.loss.tolist()
                pc += [c] * len(p.N)
                pC += [p.C] * len(p.N)
                x = np.linspace(np.log10(p.N.min()), np.log10(p.N.max()), 40)
                xs.append((10 ** x).tolist())
                ys.append(np.polyval(p.coeffs, x).tolist())
                lxs.append((10 ** x).tolist())
                lys.append(f.predict(10 ** x, p.C / (6 * 10 ** x)).tolist())
            self.iso_points.data = dict(N=pN, loss=pL, color=pc, C=pC)
            self.iso_curves.data = dict(xs=xs, ys=ys, color=cols)
            self.iso_law.data = dict(xs=lxs, ys=lys, color=cols)
            self.iso_vertices.data = dict(N=[p.N_opt for p in iso.profiles], loss=[p.loss_opt for p in iso.profiles],
                                          C=[p.C for p in iso.profiles])
            self.nopt_source.data = dict(C=iso.C.tolist(), N_opt=iso.N_opt.tolist())
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
        iso = f"; Approach 2: N* ~ C^{self.isoflop.a:.3f}" if self.isoflop is not None else ""
        self.params_view.value = (f"<table>{head}</tr>{''.join(rows)}</table><small>objective {f.objective:.6g} "
                                  f"({f.reduce}, delta {f.delta:g}, {f.grid} grid, {self.stopping.value}); "
                                  f"N* ~ C^a, D* ~ C^b{iso}</small>")


__all__ = ["ScalingLab"]
