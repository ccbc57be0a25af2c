"""DecodingLab: step through greedy, sampling, beam, diverse beam, prompt-lookup and speculative decoding.

Every number this lab shows comes from :mod:`workbench.decoding.lab` (settings, strategy dispatch through
:class:`~workbench.decoding.Strategy`, the cursor rule, stage bars, timeline rows, beam-tree layout, speculative
rows and the running acceptance rate); this module keeps controls, figures and wiring. Changing a control that
the chosen strategy reads recomputes the whole decode once; ``step`` / ``play`` / ``reset`` then move a cursor
through it, so a step only redraws. After a recompute the cursor stays on its step where that still makes sense
(:func:`workbench.decoding.lab.next_cursor`). Controls the chosen strategy does not read (and no ticked
comparison reads) are disabled, and changing them never recomputes.

Views: the current step's distribution through each pipeline stage (what each stage removed; a key names the
stages), an entropy and surprisal timeline, the beam tree (labels beside the nodes, a key for node status), a
comparison of up to four strategies on the same prompt and noise (with the first divergence), and a speculative
view (draft vs target probabilities of each drafted token, accepted / rejected / not verified with a key, running
acceptance against the formula).

Ids the model scores but its tokenizer cannot decode (a padded vocabulary: Pythia, Qwen, Phi) are shown everywhere
as ``<id N>``. The ``mask_undecodable`` box ("never pick ids without text") removes them from every strategy (the
step view then shows a "mask <id N>" stage); it is off by default, like HF ``generate``, and disabled
when every id of the model has text.

Lesson: ``notebooks/03_decoding.ipynb`` (7. The lab).
"""
from __future__ import annotations

import asyncio
import html
import time

import ipywidgets as W
from bokeh.layouts import column
from bokeh.core.properties import value
from bokeh.models import (
    ColumnDataSource, FixedTicker, HoverTool, Legend, LegendItem, Range1d, SingleIntervalTicker,
)
from bokeh.plotting import figure

from workbench.decoding import DecodingError, Strategy, compare
from workbench.decoding import lab as core
from workbench.decoding.lab import COMPARE_CHOICES, LABELS, KINDS  # noqa: F401  (re-exported for notebooks)

from .base import Debouncer, WorkbenchWidget, bokeh_pane, notice, set_notice
from .cascade_view import cascade_tab

#: (label, kind) options of the strategy control: one vocabulary with ``workbench.decoding.compare.KINDS``.
STRATEGY_OPTIONS = tuple((LABELS[k], k) for k in KINDS)
STAGE_COLORS = ["#9e9e9e", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
STATUS_COLORS = {"root": "#444444", "running": "#1f77b4", "finished": "#2ca02c", "ended": "#ff7f0e",
                 "pruned": "#c8c8c8"}
SPEC_COLORS = {"accepted": "#2ca02c", "rejected": "#d62728", "not verified": "#bbbbbb"}
FIG_W = 820  # fits the notebook column (about 900 px with the file browser open) inside the tabs
_LABEL = {"description_width": "105px"}
_SLIDER = dict(style=_LABEL, layout=W.Layout(width="275px"))
_WRAP = dict(layout=W.Layout(flex_flow="row wrap", align_items="center"))


def default_models():
    """(target, draft, note): the shipped docs-byte pair when present, else small random byte-level models."""
    try:
        from workbench.models import available, load_pretrained

        names = available()
        if "docs-byte" in names:
            t = load_pretrained("docs-byte").float().eval()
            d = load_pretrained("docs-byte-draft").float().eval() if "docs-byte-draft" in names else None
            return t, d, ""
    except Exception:  # pragma: no cover - fall back to random weights below
        pass
    import torch
    from workbench.models import GPTConfig, TinyGPT
    from workbench.tokenizers import ByteTokenizer

    tok = ByteTokenizer()
    torch.manual_seed(0)
    t = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=64, block_size=256, pos="rope"),
                tokenizer=tok, name="random-target").eval()
    d = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=256, pos="rope"),
                tokenizer=tok, name="random-draft").eval()
    return t, d, "shipped models not found: random weights"


def _legend(items=()) -> Legend:
    """A key outside the plot area (right), whose entries hide their glyphs on click."""
    return Legend(items=list(items), click_policy="hide", label_text_font_size="11px", spacing=2, padding=4,
                  margin=4)


class DecodingLab(WorkbenchWidget):
    """Decode a prompt with a chosen strategy and step through what happened.

    Controls are public ipywidgets (``prompt``, ``strategy`` (values: ``workbench.decoding.compare.KINDS``),
    ``order``, ``temperature``, ``top_k`` (0 = off), ``top_p`` (1 = off), ``min_p`` (0 = off), ``typical``
    (1 = off), ``seed``, ``num_beams``, ``num_groups``, ``diversity``, ``gamma``, ``max_new_tokens``,
    ``mask_undecodable``) and buttons (``step_button``, ``play_button`` (toggles to pause), ``reset_button``,
    ``compare_button`` with the strategies ticked in ``compare_with``). :meth:`configure` sets several controls
    with one recompute. Data sources behind the figures: ``stage_source``, ``timeline_source``, ``beam_nodes``,
    ``beam_edges``, ``spec_source``, ``alpha_source``.
    """

    def __init__(self, model=None, draft=None, prompt: str = "The for statement ", strategy: str = "sample",
                 max_new_tokens: int = 40, top_n: int = 8, debounce: float = 0.3, play_interval: float = 0.15):
        note = ""
        if model is None:
            model, d, note = default_models()
            draft = draft if draft is not None else d
        kind = core.kind_of(strategy)
        self.model, self.draft, self.top_n, self.play_interval = model, draft, top_n, play_interval
        self._lm_name = getattr(model, "name", type(model).__name__)
        self._summary = f"model={self._lm_name!r}, strategy={kind!r}"
        self._label = core.token_labeller(model)
        self.result = None
        self.comparison = None
        self.cursor = 0
        self.timings: dict[str, float] = {}
        self._play_handle = None
        self._last = None  # (kind, prompt ids) of the result shown, for the cursor rule
        self._drawn = None  # which kind of view holds data ("steps", "beam", "spec")

        # --- controls ---
        self.prompt = W.Textarea(value=prompt, description="prompt", layout=W.Layout(width="98%", height="50px"))
        self.strategy = W.Dropdown(options=STRATEGY_OPTIONS, value=kind, description="strategy",
                                   layout=W.Layout(width="230px"))
        self.order = W.Dropdown(options=["hf", "vllm", "llamacpp"], value="hf", description="order",
                                tooltip="engine order of the processors", layout=W.Layout(width="180px"))
        self.temperature = W.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.05, description="temperature",
                                         **_SLIDER)
        self.top_k = W.IntSlider(value=0, min=0, max=100, description="top_k (0=off)", **_SLIDER)
        self.top_p = W.FloatSlider(value=1.0, min=0.01, max=1.0, step=0.01, description="top_p (1=off)", **_SLIDER)
        self.min_p = W.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.01, description="min_p (0=off)", **_SLIDER)
        self.typical = W.FloatSlider(value=1.0, min=0.01, max=1.0, step=0.01, description="typical (1=off)",
                                     **_SLIDER)
        self.seed = W.IntText(value=0, description="seed", layout=W.Layout(width="150px"))
        self.num_beams = W.IntSlider(value=4, min=1, max=8, description="beams", **_SLIDER)
        self.num_groups = W.IntSlider(value=2, min=1, max=4, description="groups", **_SLIDER)
        self.diversity = W.FloatSlider(value=1.0, min=0.0, max=5.0, step=0.1, description="diversity", **_SLIDER)
        self.gamma = W.IntSlider(value=4, min=1, max=8, description="gamma (drafts)", **_SLIDER)
        self.max_new_tokens = W.IntSlider(value=max_new_tokens, min=1, max=128, description="new tokens",
                                          **_SLIDER)
        tok = getattr(model, "tokenizer", None)
        n_bad = len(tok.undecodable_ids(model.config.vocab_size)) if tok is not None else 0
        self._mask_possible = n_bad > 0
        self.mask_undecodable = W.Checkbox(
            value=False, description="never pick ids without text", disabled=n_bad == 0, indent=False,
            style={"description_width": "initial"}, layout=W.Layout(width="auto"),
            tooltip=(f"{n_bad} of the model's {model.config.vocab_size} ids have no text in its tokenizer "
                     "(shown as <id N>)" if n_bad else "every id of this model has text"))
        self.step_button = W.Button(description="step", icon="step-forward", layout=W.Layout(width="90px"))
        self.play_button = W.Button(description="play", icon="play", layout=W.Layout(width="90px"),
                                    tooltip="play through the steps; click again to pause")
        self.reset_button = W.Button(description="reset", icon="undo", layout=W.Layout(width="90px"))
        self.compare_with = W.SelectMultiple(options=COMPARE_CHOICES, value=COMPARE_CHOICES[1:4],
                                             rows=len(COMPARE_CHOICES), description="compare",
                                             layout=W.Layout(width="300px"))
        self.compare_button = W.Button(description="compare", icon="columns", layout=W.Layout(width="110px"),
                                       tooltip="run 2-4 ticked strategies on this prompt with one seed")
        self.info = notice(note, "warning" if note else "info")
        self.text_view = W.HTML()
        self.compare_view = W.HTML(self.COMPARE_HINT)  # says what to do until a comparison is run
        self.controls = {name: getattr(self, name) for name in core.CONTROLS}

        # --- figures ---
        # step view: the full table in stage_source; one bar renderer per stage slot (colour + key entry), drawn on
        # a linear and on a log figure (the "log scale" box shows one of them)
        self.stage_source = ColumnDataSource({c: [] for c in core.STAGE_COLUMNS})
        # (a bokeh model lives in one document, so each figure has its own per-slot sources)
        self._stage_bars, self._stage_log_bars = ({str(k): ColumnDataSource({c: [] for c in core.STAGE_COLUMNS})
                                                  for k in range(len(STAGE_COLORS))} for _ in range(2))
        self.stage_figure, self._stage_renderers, self._stage_legend = self._stage_fig(log=False)
        self.stage_log_figure, self._stage_log_renderers, self._stage_log_legend = self._stage_fig(log=True)
        self.stage_log = W.Checkbox(value=False, description="log scale (small bars)", indent=False,
                                    style={"description_width": "initial"}, layout=W.Layout(width="auto"),
                                    tooltip="probability axis on a log scale, so tiny probabilities stay visible")

        self.timeline_source = ColumnDataSource(dict(step=[], entropy=[], surprisal=[], token=[]))
        tf = figure(width=FIG_W, height=210, title="entropy and surprisal (bits)", toolbar_location=None, tools="",
                    x_range=Range1d(0.5, 1.5))  # steps count from 1; a lone first point sits in view, not at an edge
        l1 = tf.line("step", "entropy", source=self.timeline_source, color="#1f77b4", line_width=2)
        l1m = tf.scatter("step", "entropy", source=self.timeline_source, color="#1f77b4", size=5)  # a 1-point line
        l2 = tf.scatter("step", "surprisal", source=self.timeline_source, color="#d62728", size=6)
        tf.add_tools(HoverTool(renderers=[l2], tooltips=[("step", "@step"), ("token", "@token"),
                                                         ("surprisal", "@surprisal{0.00}"),
                                                         ("entropy", "@entropy{0.00}")]))
        tf.add_layout(_legend([LegendItem(label="entropy", renderers=[l1, l1m]),
                               LegendItem(label="surprisal of chosen", renderers=[l2])]), "right")
        tf.xaxis.ticker = SingleIntervalTicker(interval=1)
        tf.xaxis.axis_label = "step"
        tf.yaxis.axis_label = "bits"
        self.timeline_figure = tf

        self.beam_nodes = ColumnDataSource(dict(id=[], x=[], y=[], token=[], text=[], status=[], group=[], score=[]))
        self.beam_edges = ColumnDataSource(dict(x0=[], y0=[], x1=[], y1=[], status=[], color=[]))
        bf = figure(width=FIG_W, height=300, title="beam tree (x: step, y: rank within the step)",
                    x_range=Range1d(-1.5, 1.5), y_range=Range1d(1, -1), toolbar_location="above",
                    tools="pan,wheel_zoom,reset")
        bf.segment(x0="x0", y0="y0", x1="x1", y1="y1", color="color", source=self.beam_edges, line_width=1.5)
        self._beam_status = {}
        items = []
        for status, col in STATUS_COLORS.items():
            src = ColumnDataSource(dict(x=[], y=[], token=[], status=[], score=[]))
            self._beam_status[status] = src
            r = bf.scatter("x", "y", color=col, size=8 if status != "pruned" else 6, source=src)
            items.append(LegendItem(label=status, renderers=[r]))
        bf.text("x", "y", text="text", source=self.beam_nodes, text_font_size="10px", y_offset=-6,
                text_align="center", text_baseline="bottom", text_color="#222222")
        bf.add_tools(HoverTool(renderers=[i.renderers[0] for i in items],
                               tooltips=[("token", "@token"), ("status", "@status"),
                                         ("cum. log-prob", "@score{0.000}")]))
        bf.add_layout(_legend(items), "right")
        bf.xaxis.ticker = SingleIntervalTicker(interval=1)
        bf.yaxis.ticker = SingleIntervalTicker(interval=1)
        bf.xaxis.axis_label = "step"
        bf.yaxis.axis_label = "rank"
        self.beam_figure = bf

        self.spec_source = ColumnDataSource(dict(x=[], p=[], q=[], token=[], status=[], round=[]))
        self.alpha_source = ColumnDataSource(dict(round=[], alpha=[], tokens_per_call=[], expected=[]))
        pf = figure(width=FIG_W, height=230, title="speculative: target p (bars) vs draft q (dots) per drafted token",
                    y_range=Range1d(0, 1.05), toolbar_location=None, tools="")
        self._spec_bars = {}
        items = []
        for status, col in SPEC_COLORS.items():
            src = ColumnDataSource(dict(x=[], p=[], q=[], token=[], status=[], round=[]))
            self._spec_bars[status] = src
            r = pf.vbar(x="x", top="p", width=0.8, color=col, source=src, alpha=0.75)
            items.append(LegendItem(label=status, renderers=[r]))
        qd = pf.scatter(x="x", y="q", source=self.spec_source, color="black", size=6)
        items.append(LegendItem(label="draft q", renderers=[qd]))
        pf.add_tools(HoverTool(renderers=[i.renderers[0] for i in items[:3]],
                               tooltips=[("token", "@token"), ("p", "@p{0.000}"), ("q", "@q{0.000}"),
                                         ("", "@status (round @round)")]))
        pf.add_layout(_legend(items), "right")
        pf.xaxis.ticker = SingleIntervalTicker(interval=1)
        pf.xaxis.axis_label = "generated position"
        self.spec_figure = pf
        af = figure(width=FIG_W, height=190, title="tokens per target call: measured (running) vs formula",
                    toolbar_location=None, tools="")
        a1 = af.line("round", "tokens_per_call", source=self.alpha_source, line_width=2, color="#1f77b4")
        a2 = af.line("round", "expected", source=self.alpha_source, line_width=2, color="#ff7f0e", line_dash="dashed")
        af.add_layout(_legend([LegendItem(label="measured", renderers=[a1]),
                               LegendItem(label="(1-a^(g+1))/(1-a)", renderers=[a2])]), "right")
        af.xaxis.ticker = SingleIntervalTicker(interval=1)
        af.xaxis.axis_label = "round"
        self.alpha_figure = af

        self._stage_pane = bokeh_pane(self.stage_figure)
        self._stage_log_pane = bokeh_pane(self.stage_log_figure)
        self._timeline_pane = bokeh_pane(tf)
        self._beam_pane = bokeh_pane(bf)
        self._spec_pane = bokeh_pane(column(pf, af))

        # --- wiring: one re-entrancy mechanism (WorkbenchWidget.quietly / reacting) ---
        self._debouncer = Debouncer(self.recompute, debounce)
        self.prompt.observe(self.reacting(lambda ch: self._debouncer.trigger()), names="value")
        for name, w in self.controls.items():
            w.observe(self.reacting(lambda ch, name=name: self._on_control(name)), names="value")
        self.compare_with.observe(self.reacting(lambda ch: self._update_enabled()), names="value")
        self.stage_log.observe(self.reacting(lambda ch: self._show_stage_scale()), names="value")
        self.step_button.on_click(lambda b: self._safely(self.step))
        self.play_button.on_click(lambda b: self._safely(self.toggle_play))
        self.reset_button.on_click(lambda b: self._safely(self.reset))
        self.compare_button.on_click(lambda b: self.run_compare())

        controls = W.VBox([
            self.prompt,
            W.HBox([self.strategy, self.order, self.seed, self.max_new_tokens], **_WRAP),
            W.HBox([self.temperature, self.top_k, self.top_p], **_WRAP),
            W.HBox([self.min_p, self.typical, self.mask_undecodable, self.stage_log], **_WRAP),
            W.HBox([self.num_beams, self.num_groups, self.diversity, self.gamma], **_WRAP),
            W.HBox([self.step_button, self.play_button, self.reset_button, self.export_controls()], **_WRAP),
            W.HBox([self.compare_with, self.compare_button], **_WRAP),
        ])
        self._step_box = W.VBox([self._stage_pane, self._timeline_pane])
        self.tabs = W.Tab(children=[self._step_box, self._beam_pane,
                                    self._spec_pane, self.compare_view])
        for i, t in enumerate(["step", "beam tree", "speculative", "compare"]):
            self.tabs.set_title(i, t)
        self.cascade_view = cascade_tab(self)  # cost against quality of draft -> model cascades (issue #17)
        self.tabs.children = (*self.tabs.children, self.cascade_view)
        self.tabs.set_title(len(self.tabs.children) - 1, "cascade")
        super().__init__(children=[controls, self.info, self.text_view, self.tabs])
        self._update_enabled()
        self.recompute()

    def _stage_fig(self, log: bool):
        kw = dict(y_axis_type="log", y_range=Range1d(1e-3, 1.5)) if log else dict(y_range=Range1d(0, 1))
        sf = figure(width=FIG_W, height=280, title="this step's distribution through each stage",
                    x_range=Range1d(-0.6, 0.6), toolbar_location=None, tools="", **kw)
        sources = self._stage_log_bars if log else self._stage_bars
        renderers = [sf.vbar(x="x", top="prob_log" if log else "prob", bottom="log_floor" if log else 0,
                             width="width", color=col, source=sources[str(k)])
                     for k, col in enumerate(STAGE_COLORS)]
        sf.add_tools(HoverTool(renderers=renderers, tooltips=[("token", "@token"), ("stage", "@stage (kept @kept)"),
                                                              ("p", "@prob{0.0000}")]))
        sf.xaxis.ticker = FixedTicker(ticks=[])
        sf.yaxis.axis_label = "probability (log)" if log else "probability"
        sf.xgrid.grid_line_color = None
        # one key entry per stage slot, made once (new legend items would make bokeh re-walk the document on
        # every step); unused slots are hidden
        legend = _legend([LegendItem(label="", renderers=[r], visible=False) for r in renderers])
        sf.add_layout(legend, "right")
        return sf, renderers, legend

    # ------------------------------------------------------------------------------------------ settings
    def settings(self) -> core.LabSettings:
        """The controls as :class:`workbench.decoding.lab.LabSettings`."""
        return core.LabSettings(**{name: w.value for name, w in self.controls.items()})

    def pipeline(self):
        """The pipeline the controls describe (off-values left out), in the chosen engine order."""
        return self.settings().pipeline()

    def configure(self, **values) -> None:
        """Set several controls (by name, e.g. ``strategy="beam", num_beams=3``) and recompute once."""
        unknown = set(values) - set(self.controls) - {"prompt"}
        if unknown:
            raise DecodingError(f"unknown controls {sorted(unknown)}; known: {['prompt', *self.controls]}")
        with self.quietly():
            for name, v in values.items():
                getattr(self, name).value = core.kind_of(v) if name == "strategy" else v
        self._update_enabled()
        self.recompute()

    def _update_enabled(self) -> None:
        """Disable the controls that neither the strategy nor a ticked comparison reads."""
        on = core.enabled_controls(self.strategy.value, self.compare_with.value)
        for name, w in self.controls.items():
            w.disabled = name not in on or (name == "mask_undecodable" and not self._mask_possible)

    def _on_control(self, name: str) -> None:
        if name == "strategy":
            self._update_enabled()
        if core.affects(name, self.strategy.value):
            self.recompute()

    def _show_stage_scale(self) -> None:
        """Show the linear or the log stage figure (a view option: nothing is recomputed)."""
        self._step_box.children = [self._stage_log_pane if self.stage_log.value else self._stage_pane,
                                   self._timeline_pane]

    def _safely(self, fn) -> None:
        try:
            fn()
        except Exception as e:  # every failure reaches the notice, not the log console
            self._stop_play()
            set_notice(self.info, str(e) if isinstance(e, DecodingError) else f"{type(e).__name__}: {e}", "error")

    # ------------------------------------------------------------------------------------------ core calls
    def _prompt_ids(self) -> list[int]:
        return core.prompt_ids(self.model, self.prompt.value, int(self.max_new_tokens.value))

    def recompute(self) -> None:
        """Run the chosen strategy on the prompt once; the cursor stays on its step where that still makes sense
        (:func:`workbench.decoding.lab.next_cursor`)."""
        self._stop_play()
        t0 = time.perf_counter()
        old_steps, old_cursor, last = self.n_steps, self.cursor, self._last
        try:
            s = self.settings()
            ids = self._prompt_ids()
            self.result = core.run(self.model, self.draft, ids, s, self.top_n)
        except Exception as e:  # every failure reaches the notice, not the log console
            self.result = None
            self.cursor = 0
            self._last = None
            set_notice(self.info, str(e) if isinstance(e, DecodingError) else f"{type(e).__name__}: {e}", "error")
            self._clear()
            return
        self.timings["recompute"] = time.perf_counter() - t0
        set_notice(self.info, f"{core.describe(self.result)}; recompute {self.timings['recompute'] * 1e3:.0f} ms")
        same_unit = last is not None and core.UNITS[last[0]] == core.UNITS[s.strategy]
        same_prompt = last is not None and last[1] == ids
        self.cursor = core.next_cursor(old_cursor, old_steps, self.n_steps, same_unit=same_unit,
                                       same_prompt=same_prompt)
        if last is None or last[0] != s.strategy:
            self.tabs.selected_index = {"beam": 1, "diverse_beam": 1, "speculative": 2}.get(s.strategy, 0)
        self._last = (s.strategy, ids)
        self._summary = f"model={self._lm_name!r}, strategy={s.strategy!r}"
        self.render()

    @property
    def n_steps(self) -> int:
        return core.n_steps(self.result)

    @property
    def playing(self) -> bool:
        """True while play is advancing the cursor (the button then reads "pause")."""
        return self._play_handle is not None

    def step(self) -> None:
        """One step forward (pauses a running play)."""
        self._stop_play()
        self._advance()

    def _advance(self) -> None:
        self.cursor = min(self.cursor + 1, self.n_steps)
        self.render()

    def reset(self) -> None:
        self._stop_play()
        self.cursor = 1 if self.n_steps else 0
        self.render()

    def toggle_play(self) -> None:
        """What the play button does: pause while playing, else play."""
        if self.playing:
            self._stop_play()
        else:
            self.play()

    def play(self) -> None:
        """Advance one step every ``play_interval`` seconds in a live notebook (from the start when at the end);
        all at once without an event loop. While playing, a second call does nothing: never a second run."""
        if self.playing or not self.n_steps:
            return
        if self.cursor >= self.n_steps:
            self.cursor = 0
        try:
            loop = asyncio.get_event_loop()
            running = loop.is_running()
        except RuntimeError:
            running = False
        if not running or self.play_interval <= 0:
            self.cursor = self.n_steps
            self.render()
            return

        def tick():
            self._play_handle = None
            try:
                self._advance()
            except Exception as e:  # a failed step stops play with a notice
                self._show_play(False)
                set_notice(self.info, f"{type(e).__name__}: {e}", "error")
                return
            if self.cursor < self.n_steps:
                self._play_handle = loop.call_later(self.play_interval, tick)
            else:
                self._show_play(False)

        self._show_play(True)
        tick()

    def _show_play(self, playing: bool) -> None:
        self.play_button.description = "pause" if playing else "play"
        self.play_button.icon = "pause" if playing else "play"

    def _stop_play(self):
        if self._play_handle is not None:
            self._play_handle.cancel()
            self._play_handle = None
        self._show_play(False)

    def compare_strategies(self) -> list[Strategy]:
        """The strategies ticked in ``compare_with``, built from the current controls."""
        return self.settings().compare_strategies(self.compare_with.value)

    def run_compare(self, strategies=None) -> None:
        """Run 2-4 strategies (default: those ticked in ``compare_with``) on the prompt with one seed, so they
        share their noise, and show where the outputs first diverge."""
        try:
            ids = self._prompt_ids()
            strategies = self.compare_strategies() if strategies is None else strategies
            self.comparison = compare(self.model, ids, strategies, int(self.max_new_tokens.value),
                                      seed=int(self.seed.value), draft=self.draft,
                                      mask_undecodable=bool(self.mask_undecodable.value))
        except Exception as e:  # every failure reaches the notice
            set_notice(self.info, str(e) if isinstance(e, DecodingError) else f"{type(e).__name__}: {e}", "error")
            return
        self.compare_view.value = self._compare_html()
        self.tabs.selected_index = 3

    def export_state(self) -> dict:
        """Exported with the data: the settings, the cursor and the core result (trace, beams or rounds) and the
        last comparison."""
        controls = {"prompt": self.prompt.value, **self.settings().as_dict()}
        return {"controls": controls, "cursor": self.cursor, "n_steps": self.n_steps,
                "result_type": type(self.result).__name__, "result": self.result, "comparison": self.comparison}

    # -------------------------------------------------------------------------------------------- drawing
    def _clear(self):
        self._drawn = None
        for src in (self.stage_source, self.timeline_source, self.beam_nodes, self.beam_edges, self.spec_source,
                    self.alpha_source, *self._stage_bars.values(), *self._stage_log_bars.values(),
                    *self._beam_status.values(),
                    *self._spec_bars.values()):
            src.data = {k: [] for k in src.data}
        for item in (*self._stage_legend.items, *self._stage_log_legend.items):
            item.visible = False
        self.text_view.value = ""

    def render(self) -> None:
        """Redraw every view for the steps up to the cursor."""
        t0 = time.perf_counter()
        r = self.result
        if r is None:
            self._clear()
            return
        view = r.view
        if view != self._drawn:  # empty the views of the previous kind of result once
            self._clear()
            self._drawn = view
            self._show_tabs_for(view)
        {"spec": self._render_spec, "beam": self._render_beam, "steps": self._render_steps}[view](r)
        tok = self.model.tokenizer
        prompt = html.escape(tok.decode_with_placeholders(r.prompt)) if tok is not None else ""
        gen = "".join(f'<span style="background:#e3f2fd">{html.escape(self._label(t))}</span>'
                      for t in core.shown_tokens(r, self.cursor))
        self.text_view.value = f'<div style="font-family:monospace">{prompt}{gen}</div>' \
                               f'<small>step {self.cursor} / {self.n_steps}</small>'
        self.timings["render"] = time.perf_counter() - t0

    #: what the compare tab says before the first comparison (never an empty box)
    COMPARE_HINT = ('<p style="color:#555;max-width:640px">No comparison yet: tick 2-4 strategies in the '
                    "'compare' list above (ctrl/cmd-click to pick several) and click the 'compare' button. They "
                    "run on this prompt with one seed, so they share their noise, and the first step where their "
                    "outputs diverge is marked here.</p>")

    #: what each tab needs, said in the tab when the current strategy does not draw it (no empty axes)
    _TAB_NEEDS = {"steps": "The step view follows one sequence token by token: choose 'greedy' or 'sample' in "
                           "'strategy' above (beam and speculative results have their own tabs).",
                  "beam": "The beam tree is drawn for the strategies 'beam' and 'diverse beam': choose one in "
                          "'strategy' above.",
                  "spec": "Speculative rounds (accepted, rejected and unverified draft tokens) are drawn for the "
                          "strategy 'speculative', which needs a draft model: choose it in 'strategy' above."}

    def _show_tabs_for(self, view: str) -> None:
        """The tab of the current kind of result shows its figures; the others say what they need."""
        panes = {"steps": self._step_box, "beam": self._beam_pane, "spec": self._spec_pane}
        notes = self.__dict__.setdefault("_tab_notes", {})
        children = list(self.tabs.children)
        for i, kind in enumerate(("steps", "beam", "spec")):
            if kind == view:
                children[i] = panes[kind]
            else:
                if kind not in notes:
                    notes[kind] = W.HTML(f'<p style="color:#555;max-width:640px">{self._TAB_NEEDS[kind]}</p>')
                children[i] = notes[kind]
        if tuple(children) != tuple(self.tabs.children):
            self.tabs.children = children

    def _render_steps(self, r):
        tl = core.timeline_rows(r, self.cursor, self._label)
        self.timeline_source.data = tl
        span = max(self.n_steps, len(tl["step"]), 1)  # the whole run's steps: points fill in as the cursor moves
        self.timeline_figure.x_range.update(start=0.5, end=span + 0.5)
        self.timeline_figure.xaxis.ticker.interval = core.tick_interval(span)
        v = core.stage_view(r, self.cursor, self._label)
        self.stage_source.data = v.rows
        for k in self._stage_bars:
            sel = [i for i, s in enumerate(v.rows["stage_index"]) if s % len(STAGE_COLORS) == int(k)]
            if not sel and not len(self._stage_bars[k].data["x"]):
                continue  # an unused slot stays empty without a redraw
            part = {c: [v.rows[c][i] for i in sel] for c in core.STAGE_COLUMNS}
            self._stage_bars[k].data = part
            self._stage_log_bars[k].data = dict(part)
        n = max(len(v.labels), 1)
        turn = max(map(len, v.labels), default=0) * 7 > (FIG_W - 220) / n
        for sf, renderers, legend in ((self.stage_figure, self._stage_renderers, self._stage_legend),
                                      (self.stage_log_figure, self._stage_log_renderers, self._stage_log_legend)):
            for k, item in enumerate(legend.items):
                used = k < len(v.stages)
                item.label = value(f"{v.stages[k]} (kept {v.kept[k]})" if used else "")  # a text, not a column
                item.visible = used
            sf.x_range.start, sf.x_range.end = -0.6, n - 0.4
            sf.xaxis.ticker.ticks = v.ticks
            sf.xaxis.major_label_overrides = {j: lab for j, lab in enumerate(v.labels)}
            sf.xaxis.major_label_orientation = 0.8 if turn else 0.0
            sf.title.text = v.title
        self.stage_figure.y_range.end = v.y_max
        self.stage_log_figure.y_range.start = v.log_floor

    def _render_beam(self, r):
        bf = self.beam_figure
        steps = max(min(self.cursor, r.search_steps), 1)
        px_per_step = (FIG_W - 200) / (steps + 2)
        lay = core.beam_layout(r, self.cursor, self._label, label_width=max(1, int((px_per_step - 2) / 6)))
        nodes = lay.nodes
        self.beam_nodes.data = nodes
        for status, src in self._beam_status.items():
            sel = [i for i, s in enumerate(nodes["status"]) if s == status]
            src.data = {c: [nodes[c][i] for i in sel] for c in ("x", "y", "token", "status", "score")}
        self.beam_edges.data = {**lay.edges, "color": [STATUS_COLORS[s] for s in lay.edges["status"]]}
        bf.x_range.start, bf.x_range.end = -1.5, lay.last_step + 1.5
        bf.y_range.start, bf.y_range.end = lay.n_rows - 0.4, -0.8  # rank 0 on top, with room for its label
        bf.height = max(260, min(560, 22 * lay.n_rows + 90))
        bf.xaxis.ticker.interval = core.tick_interval(lay.last_step + 2, 20)
        bf.yaxis.ticker.interval = core.tick_interval(lay.n_rows, 10)
        kind = "diverse beam" if r.num_groups > 1 else "beam"
        bf.title.text = f"{kind} tree, {r.num_beams} beams (x: step, y: rank within the step)"

    def _render_spec(self, r):
        rows = core.spec_rows(r, self.cursor, self._label)
        self.spec_source.data = rows
        for status, src in self._spec_bars.items():
            sel = [i for i, s in enumerate(rows["status"]) if s == status]
            src.data = {c: [rows[c][i] for i in sel] for c in rows}
        self.spec_figure.y_range.end = core.y_top(rows["p"] + rows["q"], cap=1.05)
        self.spec_figure.xaxis.ticker.interval = core.tick_interval(max(rows["x"], default=0) + 1, 20)
        a = core.acceptance_curve(r, self.cursor)
        self.alpha_source.data = a
        self.alpha_figure.xaxis.ticker.interval = core.tick_interval(len(a["round"]))

    def _compare_html(self) -> str:
        c = self.comparison
        d = c.first_divergence
        rows = []
        for name, toks in zip(c.names, c.tokens):
            cells = "".join(
                f'<span style="background:{"#ffcdd2" if d is not None and i >= d else "#e8f5e9"}">'
                f"{html.escape(self._label(t))}</span>" for i, t in enumerate(toks))
            rows.append(f"<tr><td><b>{html.escape(name)}</b></td><td style='font-family:monospace'>{cells}</td></tr>")
        head = f"first divergence at step {d}" if d is not None else "all outputs identical"
        return f"<p>{head} (seed {c.seed}; same noise for all)</p><table>{''.join(rows)}</table>"


__all__ = ["DecodingLab", "default_models", "STRATEGY_OPTIONS"]
