"""MemoryLab: recall, in-context learning, reversal and answer format on tiny transformers and recurrent models.

Choose an experiment and one or both architectures; the upper figure shows the experiment's shipped sweep
(:func:`workbench.memory.lab.load_shipped`, thin lines) and, after a live run, the live models (thick lines, circles);
the lower figure shows training curves: the shipped sweep's (dashed grey-ish) and the live run's, which grow as its
checkpoints arrive. "Train" runs the small live version (:func:`workbench.memory.lab.run_live`) in a worker thread
with a progress bar; the same button reads "Stop" meanwhile (the kernel stays responsive). The sliders set the
number of key-value pairs (recall), the recurrent state size (recall, in-context learning), the number of in-context
examples and the training budget in steps; a slider that does not apply to the chosen experiment is disabled.

Every bad input (a value out of range, no architecture, an experiment a model cannot do, a missing shipped sweep)
ends in a visible notice and the widget keeps working. "Export PNG" draws both figures; "Export data" writes their
series (``main`` and ``curves`` tables: label, x, y) as .json, .csv or .npz.
"""
from __future__ import annotations

import queue
from pathlib import Path

import ipywidgets as W
from bokeh.layouts import column
from bokeh.core.properties import value
from bokeh.models import BasicTicker, ColumnDataSource, FixedTicker, Legend, LegendItem, NumeralTickFormatter
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from workbench.memory import MemoryLabError
from workbench.memory import lab as glue

from .base import Cancelled, WorkbenchWidget, bokeh_pane, notice, set_notice

COLUMN = 880
FIG_W = COLUMN - 50
STYLE = {"description_width": "initial"}
_WRAP = dict(layout=W.Layout(flex_flow="row wrap", align_items="center", width="100%"))
SLOTS = 10  # lines per figure (shipped + live)


def _figure(title: str, height: int, x_log: bool = False):
    f = figure(width=FIG_W, height=height, title=title, toolbar_location=None, x_axis_type="log" if x_log else "linear",
               tools="hover,pan,wheel_zoom,reset")
    f.hover.tooltips = [("", "@label"), ("x", "@x{0.[00]}"), ("y", "@y{0.000}")]
    srcs, items = [], []
    for i in range(SLOTS):
        src = ColumnDataSource({"x": [], "y": [], "label": []})
        r = f.line("x", "y", source=src, line_width=2, color=Category10_10[i % 10])
        c = f.scatter("x", "y", source=src, size=5, color=Category10_10[i % 10])
        srcs.append((src, r, c))
        items.append(LegendItem(label=value(""), renderers=[r, c], visible=False))
    f.xaxis.ticker = BasicTicker(min_interval=1)  # steps, pairs, examples: whole numbers
    legend = Legend(items=items, label_text_font_size="10px", spacing=1, padding=4, click_policy="hide")
    f.add_layout(legend, "right")
    f.yaxis.formatter = NumeralTickFormatter(format="0.[00]")
    return f, srcs, legend


class MemoryLab(WorkbenchWidget):
    """Associative recall, in-context learning curves, the reversal curse and answer formats, shipped sweep beside a
    live run.

    ``experiment``: one of ``"recall"``, ``"in-context learning"``, ``"reversal"``, ``"answer format"``; ``archs``:
    the architectures of a live run; ``pairs``, ``state_size``, ``examples``, ``steps``: the sliders' first values;
    ``sweep_dir``: where the shipped sweeps are (default: the package's); ``background``: where live runs go (None: a
    worker thread in a notebook, at once in scripts and tests).
    """

    def __init__(self, experiment: str = "recall", archs=("transformer", "recurrent"), pairs: int = 6,
                 state_size: int = 8, examples: int = 16, steps: int = 150, klass: str = "conjunction",
                 sweep_dir: str | Path | None = None, export_dir: str | Path = "exports",
                 background: bool | None = None):
        self.export_dir = Path(export_dir)
        self.background = background
        self.sweep_dir = Path(sweep_dir) if sweep_dir is not None else None
        self._summary = "recall, in-context learning, reversal, answer format"
        self.shipped_result = None
        self.live_result = None
        self.live_experiment = None
        self.live_curves: dict[str, tuple[list, list]] = {}
        self._reports: queue.Queue = queue.Queue()

        self.experiment = W.Dropdown(options=list(glue.EXPERIMENTS), value=experiment, description="experiment",
                                     style=STYLE, layout=W.Layout(width="260px"))
        self.arch_boxes = {a: W.Checkbox(value=a in archs, description=a, indent=False,
                                         layout=W.Layout(width="auto", margin="0 12px 0 0")) for a in glue.ARCHS}
        self.klass = W.Dropdown(options=["conjunction", "parity"], value=klass, description="function class",
                                style=STYLE, layout=W.Layout(width="240px"))
        sl = dict(style=STYLE, continuous_update=False, layout=W.Layout(width="270px"))
        self.pairs = W.IntSlider(value=pairs, min=1, max=32, description="key-value pairs", **sl)
        self.state_size = W.IntSlider(value=state_size, min=1, max=128, description="state size", **sl)
        self.examples = W.IntSlider(value=examples, min=1, max=160, description="in-context examples", **sl)
        self.steps = W.IntSlider(value=steps, min=10, max=3000, step=10, description="training steps", **sl)
        self.train_button = self.task_button("Train", self._start, tooltip="train the live models (Stop ends early)")
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="200px"))
        self.live_models: dict = {}
        wide = dict(width="auto", flex="0 0 auto")
        self.evaluate_button = W.Button(description="Evaluate at pairs", icon="check", layout=W.Layout(**wide),
                                        tooltip="score the live (or loaded) recall models at the slider's pairs")
        self.save_button = W.Button(description="Save models", icon="save", layout=W.Layout(**wide),
                                    tooltip="save the live recall models as checkpoints in export_dir")
        self.checkpoint_path = W.Text(value="", placeholder="checkpoint folder", description="checkpoint",
                                      style=STYLE, layout=W.Layout(width="300px"))
        self.load_as = W.Dropdown(options=list(glue.ARCHS), value="recurrent", description="as", style=STYLE,
                                  layout=W.Layout(width="150px"))
        self.load_button = W.Button(description="Load", icon="folder-open", layout=W.Layout(**wide),
                                    tooltip="load a checkpoint of this architecture for 'Evaluate'")
        self.evaluate_button.on_click(lambda _: self._guard(self.evaluate))
        self.save_button.on_click(lambda _: self._guard(self.save_models))
        self.load_button.on_click(lambda _: self._guard(lambda: self.load_checkpoint(self.checkpoint_path.value,
                                                                                      self.load_as.value)))
        self.info = notice()
        self.shipped_note = W.HTML()

        self.fig, self.main_slots, self.main_legend = _figure("shipped sweep", 300)
        self.curve_fig, self.curve_slots, self.curve_legend = _figure("training curves", 240)
        self.main = {f"s{i}": s for i, (s, _, _) in enumerate(self.main_slots)}
        self.curves = {f"s{i}": s for i, (s, _, _) in enumerate(self.curve_slots)}
        self.pane = bokeh_pane(column(self.fig, self.curve_fig))

        row1 = W.HBox([self.experiment, *self.arch_boxes.values(), self.klass], **_WRAP)
        row2 = W.HBox([self.pairs, self.state_size, self.examples, self.steps], **_WRAP)
        row3 = W.HBox([self.train_button, self.progress, self.export_controls()], **_WRAP)
        self.models_row = W.HBox([self.evaluate_button, self.save_button, self.checkpoint_path, self.load_as,
                                  self.load_button], **_WRAP)
        super().__init__(children=[row1, row2, row3, self.models_row, self.info, self.shipped_note, self.pane],
                         layout=W.Layout(width=f"{COLUMN}px", max_width="100%"))

        self.experiment.observe(self.reacting(lambda _: self._experiment_changed()), names="value")
        self.klass.observe(self.reacting(lambda _: self._redraw()), names="value")
        for b in self.arch_boxes.values():
            b.observe(self.reacting(lambda _: self._controls()), names="value")
        self._experiment_changed()

    # --- state --------------------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return glue.EXPERIMENTS[self.experiment.value]

    @property
    def archs(self) -> tuple:
        return tuple(a for a, b in self.arch_boxes.items() if b.value)

    def _controls(self) -> None:
        k = self.key
        self.pairs.disabled = k != "recall"
        self.examples.disabled = k != "icl"
        self.state_size.disabled = k not in ("recall", "icl") or "recurrent" not in self.archs
        self.klass.layout.display = "" if k == "icl" else "none"
        self.models_row.layout.display = "" if k == "recall" else "none"

    def _experiment_changed(self) -> None:
        self._controls()
        self.live_result = None
        self.live_curves = {}
        self.shipped_result = None
        try:
            path = None if self.sweep_dir is None else self.sweep_dir / f"{self.key}.json"
            self.shipped_result = glue.load_shipped(self.key, path)
            set_notice(self.shipped_note, "")
        except MemoryLabError as e:
            msg = str(e) if path is not None else str(e).replace(str(glue.SWEEP_DIR) + "/", "sweeps/")
            set_notice(self.shipped_note, f"no shipped sweep to show: {msg}", "warning")
        except Exception as e:  # noqa: BLE001 - a visible notice, never a traceback
            set_notice(self.shipped_note, f"the shipped sweep failed to load: {type(e).__name__}: {e}", "error")
        set_notice(self.info, "")
        self._redraw()

    # --- drawing ------------------------------------------------------------------------------------------
    def _views(self):
        out = []
        for res, prefix in ((self.shipped_result, ""), (self.live_result, "live: ")):
            if res is not None:
                try:
                    out.append((glue.view(self.key, res, self.klass.value, prefix), prefix))
                except MemoryLabError as e:
                    set_notice(self.info, str(e), "error")
        return out

    def _redraw(self) -> None:
        views = self._views()
        main, curves, notes = [], [], []
        for v, prefix in views:
            main += [(s, prefix) for s in v.main]
            if not prefix:  # live curves come from the checkpoints as they arrive (below)
                curves += [(s, prefix) for s in v.curves]
            if v.note and not prefix:
                notes.append(v.note)
        live = [glue.Series(lab, xs, ys) for lab, (xs, ys) in self.live_curves.items()]
        if not live and self.live_result is not None:
            live = [s for v, p in views if p for s in v.curves]
        curves += [(s, "live: ") for s in live]
        self._fill(self.main_slots, self.main_legend, main)
        self._fill(self.curve_slots, self.curve_legend, curves)
        if views:
            v = views[0][0]
            self.fig.xaxis.axis_label, self.fig.yaxis.axis_label = v.x_label, v.y_label
            xs = sorted({x for s, _ in main for x in s.x})
            if xs and all(float(x).is_integer() for x in xs) and len(xs) <= 12:  # pairs, sizes, boundaries
                self.fig.xaxis.ticker = FixedTicker(ticks=xs)
                self.fig.xaxis.major_label_overrides = (
                    {i: b for i, b in enumerate(self.shipped_result.boundaries)}
                    if self.key == "reversal" and self.shipped_result is not None else {})
            else:  # example indices: whole numbers only
                self.fig.xaxis.ticker = BasicTicker(min_interval=1)
                self.fig.xaxis.major_label_overrides = {}
            self.curve_fig.xaxis.axis_label, self.curve_fig.yaxis.axis_label = "training step", v.curve_label
        name = self.experiment.value
        self.fig.title.text = f"{name}: shipped sweep (thin)" + (", live run (thick)" if self.live_result else "") + (
            f"; {notes[0]}" if notes else "")
        self.curve_fig.title.text = f"{name}: training curves (shipped thin, live thick)"
        labels = [v.curve_label for v, _ in views]
        if len(labels) == 2 and labels[0] != labels[1]:  # e.g. recall: the shipped and the live most pairs differ
            self.curve_fig.title.text += f"; live: {labels[1]}"

    def _fill(self, slots, legend, series) -> None:
        if len(series) > SLOTS:
            series = series[:SLOTS]
        for i, (src, r, c) in enumerate(slots):
            item = legend.items[i]
            if i < len(series):
                s, prefix = series[i]
                live = bool(prefix)
                src.data = {"x": list(s.x), "y": list(s.y), "label": [s.label] * len(s.x)}
                r.glyph.line_dash = "dashed" if s.dash == "dashed" else "solid"
                r.glyph.line_width = 3 if live else 1.5
                c.glyph.size = 7 if live else 3
                r.visible = c.visible = True
                item.label = value(s.label)
                item.visible = True
            else:
                src.data = {"x": [], "y": [], "label": []}
                r.visible = c.visible = False
                item.visible = False
                item.label = value("")

    # --- live runs ----------------------------------------------------------------------------------------
    def _start(self) -> None:
        settings = dict(pairs=self.pairs.value, state_size=self.state_size.value, examples=self.examples.value,
                        steps=self.steps.value)
        key, archs, klass = self.key, self.archs, self.klass.value
        try:
            glue.check_settings(key, archs, **settings)
        except MemoryLabError as e:
            set_notice(self.info, f"{type(e).__name__}: {e}", "error")
            return
        self.live_result, self.live_curves, self.live_experiment = None, {}, key
        self._reports = queue.Queue()
        self.progress.value, self.progress.max = 0, 1
        set_notice(self.info, f"training {', '.join(archs) if key != 'answer_format' else 'one model per format'} "
                              f"for {settings['steps']} steps ...", "info")
        self._redraw()
        reports = self._reports

        def work(progress):
            task = progress.__self__

            def prog(done, total):
                try:
                    progress(done, total)
                except Cancelled:  # stop: the core loop ends at its next step and keeps what it measured
                    pass

            def report(label, ck):
                reports.put(glue.checkpoint_values(key, label, ck.metrics, klass) | {"_step": ck.step})

            cb = dict(progress=prog, should_stop=lambda: task.stop_requested, report=report)
            if key == "recall":  # keep the models, for Evaluate and Save
                res, models = glue.run_live_recall(archs, pairs=settings["pairs"], state_size=settings["state_size"],
                                                   steps=settings["steps"], **cb)
                self.live_models = dict(models)
                return res
            return glue.run_live(key, archs, **settings, **cb)

        self.run_in_background(work, on_progress=self._on_progress, on_done=self._on_done,
                               on_error=self._on_error)

    def _drain(self) -> bool:
        got = False
        while True:
            try:
                vals = self._reports.get_nowait()
            except queue.Empty:
                return got
            step = vals.pop("_step")
            for lab, v in vals.items():
                xs, ys = self.live_curves.setdefault(lab, ([], []))
                xs.append(float(step))
                ys.append(v)
            got = True

    def _on_progress(self, done, total) -> None:
        self.progress.max, self.progress.value = max(1, int(total)), int(done)
        if self._drain():
            self._redraw()

    def _on_done(self, result) -> None:
        self._drain()
        if self.live_experiment != self.key:  # the experiment was changed during the run: drop it
            return
        self.live_result = result
        stopped = self.task is not None and self.task.stop_requested
        set_notice(self.info, ("stopped early: showing what finished. " if stopped else "done. ") +
                   f"{getattr(result, 'cpu_s', 0.0):.1f} s of CPU", "warning" if stopped else "info")
        self._redraw()

    def _on_error(self, e) -> None:
        self._drain()
        set_notice(self.info, f"{type(e).__name__}: {e}", "error")
        self._redraw()

    # --- live recall models: evaluate, save, load ----------------------------------------------------------
    def _guard(self, fn) -> None:
        """Run a button's action; every error is a visible notice (the widget keeps working)."""
        if self.busy:
            set_notice(self.info, "wait for the training run to end (or stop it) first", "warning")
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a student sees the message, not a traceback
            set_notice(self.info, f"{type(e).__name__}: {e}", "error")

    def evaluate(self, n_pairs: int | None = None) -> dict:
        """Recall accuracy of the live (and loaded) recall models at ``n_pairs`` (default: the slider's) pairs."""
        n = self.pairs.value if n_pairs is None else n_pairs
        acc = glue.recall_at(self.live_models, n)
        set_notice(self.info, f"recall at {n} pairs (context once): " +
                   ", ".join(f"{lab} {a:.2f}" for lab, a in acc.items()), "info")
        return acc

    def save_models(self, directory=None) -> list:
        """Save the live recall models (default: ``export_dir/memory-models``)."""
        if not self.live_models:
            raise MemoryLabError("no live recall model to save yet: train the recall experiment first")
        out = glue.save_models(self.live_models, directory or Path(self.export_dir) / "memory-models")
        set_notice(self.info, "saved " + ", ".join(str(d) for d in out), "info")
        if out:
            self.checkpoint_path.value = str(out[0])
        return out

    def load_checkpoint(self, directory, arch: str) -> None:
        """Load a checkpoint expected to be of ``arch``; Evaluate then scores it as ``loaded <arch>``."""
        if not str(directory).strip():
            raise MemoryLabError("give a checkpoint folder (Save models writes some)")
        model = glue.load_model(directory, arch)
        self.live_models[f"loaded {arch}"] = model
        set_notice(self.info, f"loaded {directory} as {arch}: 'Evaluate at pairs' scores it", "info")

    # --- export -------------------------------------------------------------------------------------------
    def export_tables(self) -> dict:
        """Two tables: ``main`` and ``curves``, one row per point shown (label, x, y)."""
        out = {}
        for name, slots in (("main", self.main_slots), ("curves", self.curve_slots)):
            t = {"label": [], "x": [], "y": []}
            for src, r, _ in slots:
                if r.visible:
                    for k in t:
                        t[k] += list(src.data[k])
            out[name] = t
        return out

    def export_state(self) -> dict:
        return {"experiment": self.experiment.value, "archs": list(self.archs), "pairs": self.pairs.value,
                "state_size": self.state_size.value, "examples": self.examples.value, "steps": self.steps.value,
                "class": self.klass.value}
