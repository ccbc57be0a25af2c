"""DecodingLab: step through greedy, sampling, beam, diverse beam, prompt-lookup and speculative decoding.

All numbers come from :mod:`workbench.decoding`; this module only draws them. Changing a control recomputes the
whole decode once (a :class:`~workbench.decoding.DecodeTrace`, :class:`~workbench.decoding.BeamResult` or
:class:`~workbench.decoding.SpeculativeResult`); ``step`` / ``play`` / ``reset`` then move a cursor through it,
so a step only redraws.

Views: the current step's distribution through each pipeline stage (what each stage removed), an entropy and
surprisal timeline, the beam tree, a comparison of up to four strategies on the same prompt and noise (with the
first divergence), and a speculative view (draft vs target probabilities of each drafted token, accepted and
rejected coloured, running acceptance rate against the formula).

Ids the model scores but its tokenizer cannot decode (a padded vocabulary: Pythia, Qwen, Phi) are shown everywhere
as ``<id N>``. The ``mask_undecodable`` box ("never pick ids without text") removes them from every strategy (the
step view then shows a "mask <id N>" stage); it is off by default, like HF ``generate``, and disabled
when every id of the model has text.
"""
from __future__ import annotations

import asyncio
import html
import time

import ipywidgets as W
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Legend, LegendItem, Range1d
from bokeh.plotting import figure

from workbench.decoding import (
    DecodingError, Pipeline, Strategy, beam_search, compare, diverse_beam_search, expected_tokens_per_call,
    prompt_lookup, sample, speculative_decode,
)

from .base import Debouncer, WorkbenchWidget, bokeh_pane, notice, set_notice

STRATEGIES = ("greedy", "sample", "beam", "diverse beam", "prompt lookup", "speculative")
STAGE_COLORS = ["#9e9e9e", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
COMPARE_CHOICES = ("current settings", "hf order", "vllm order", "llamacpp order", "greedy", "beam",
                   "prompt lookup", "speculative")
STATUS_COLORS = {"root": "#444444", "running": "#1f77b4", "finished": "#2ca02c", "pruned": "#cccccc",
                 "ended": "#ff7f0e"}


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


class DecodingLab(WorkbenchWidget):
    """Decode a prompt with a chosen strategy and step through what happened.

    Controls are public ipywidgets (``prompt``, ``strategy``, ``order``, ``temperature``, ``top_k`` (0 = off),
    ``top_p`` (1 = off), ``min_p`` (0 = off), ``typical`` (1 = off), ``seed``, ``num_beams``, ``num_groups``,
    ``diversity``, ``gamma``, ``max_new_tokens``) and buttons (``step_button``, ``play_button``,
    ``reset_button``, ``compare_button`` with the strategies ticked in ``compare_with``). Data sources behind the figures: ``stage_source``,
    ``timeline_source``, ``beam_nodes``, ``beam_edges``, ``spec_source``, ``alpha_source``.
    """

    def __init__(self, model=None, draft=None, prompt: str = "The for statement ", strategy: str = "sample",
                 max_new_tokens: int = 40, top_n: int = 8, debounce: float = 0.3, play_interval: float = 0.15):
        note = ""
        if model is None:
            model, d, note = default_models()
            draft = draft if draft is not None else d
        self.model, self.draft, self.top_n, self.play_interval = model, draft, top_n, play_interval
        self._summary = f"model={getattr(model, 'name', type(model).__name__)!r}, strategy={strategy!r}"
        self.result = None
        self.comparison = None
        self.cursor = 0
        self.timings: dict[str, float] = {}
        self._quiet = False
        self._play_handle = None

        # --- controls ---
        self.prompt = W.Textarea(value=prompt, description="prompt", layout=W.Layout(width="100%", height="50px"))
        self.strategy = W.Dropdown(options=STRATEGIES, value=strategy, description="strategy")
        self.order = W.Dropdown(options=["hf", "vllm", "llamacpp"], value="hf", description="order")
        self.temperature = W.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.05, description="temperature")
        self.top_k = W.IntSlider(value=0, min=0, max=100, description="top_k (0=off)")
        self.top_p = W.FloatSlider(value=1.0, min=0.01, max=1.0, step=0.01, description="top_p")
        self.min_p = W.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.01, description="min_p")
        self.typical = W.FloatSlider(value=1.0, min=0.01, max=1.0, step=0.01, description="typical (1=off)")
        self.seed = W.IntText(value=0, description="seed", layout=W.Layout(width="160px"))
        self.num_beams = W.IntSlider(value=4, min=1, max=8, description="beams")
        self.num_groups = W.IntSlider(value=2, min=1, max=4, description="groups")
        self.diversity = W.FloatSlider(value=1.0, min=0.0, max=5.0, step=0.1, description="diversity")
        self.gamma = W.IntSlider(value=4, min=1, max=8, description="gamma")
        self.max_new_tokens = W.IntSlider(value=max_new_tokens, min=1, max=128, description="new tokens")
        tok = getattr(model, "tokenizer", None)
        n_bad = len(tok.undecodable_ids(model.config.vocab_size)) if tok is not None else 0
        self.mask_undecodable = W.Checkbox(
            value=False, description="never pick ids without text", disabled=n_bad == 0, indent=False,
            style={"description_width": "initial"}, layout=W.Layout(width="auto"),
            tooltip=(f"{n_bad} of the model's {model.config.vocab_size} ids have no text in its tokenizer "
                     "(shown as <id N>)" if n_bad else "every id of this model has text"))
        self.step_button = W.Button(description="step", icon="step-forward")
        self.play_button = W.Button(description="play", icon="play")
        self.reset_button = W.Button(description="reset", icon="undo")
        self.compare_with = W.SelectMultiple(options=COMPARE_CHOICES, value=COMPARE_CHOICES[1:4], rows=4,
                                             description="compare")
        self.compare_button = W.Button(description="compare", icon="columns")
        self.info = notice(note, "warning" if note else "info")
        self.text_view = W.HTML()
        self.compare_view = W.HTML()

        # --- figures ---
        self.stage_source = ColumnDataSource(dict(x=[], prob=[], color=[], stage=[], token=[]))
        sf = figure(width=640, height=260, title="this step's distribution through each stage",
                    x_range=FactorRange(factors=[]), y_range=Range1d(0, 1), toolbar_location=None, tools="")
        bars = sf.vbar(x="x", top="prob", width=0.9, color="color", source=self.stage_source)
        sf.add_tools(HoverTool(renderers=[bars], tooltips=[("token", "@token"), ("stage", "@stage"),
                                                           ("p", "@prob{0.0000}")]))
        sf.xaxis.major_label_orientation = 1.2
        sf.xaxis.group_text_font_size = "11px"
        self.stage_figure = sf

        self.timeline_source = ColumnDataSource(dict(step=[], entropy=[], surprisal=[], token=[]))
        tf = figure(width=640, height=200, title="entropy and surprisal (bits)", toolbar_location=None, tools="")
        l1 = tf.line("step", "entropy", source=self.timeline_source, color="#1f77b4", line_width=2)
        l2 = tf.scatter("step", "surprisal", source=self.timeline_source, color="#d62728", size=6)
        tf.add_tools(HoverTool(renderers=[l2], tooltips=[("step", "@step"), ("token", "@token"),
                                                         ("surprisal", "@surprisal{0.00}"),
                                                         ("entropy", "@entropy{0.00}")]))
        tf.add_layout(Legend(items=[LegendItem(label="entropy", renderers=[l1]),
                                    LegendItem(label="surprisal of chosen", renderers=[l2])],
                             location="top_left"))
        self.timeline_figure = tf

        self.beam_nodes = ColumnDataSource(dict(x=[], y=[], label=[], status=[], color=[], score=[]))
        self.beam_edges = ColumnDataSource(dict(x0=[], y0=[], x1=[], y1=[], color=[]))
        bf = figure(width=640, height=300, title="beam tree (x: step, y: rank; green finished, grey pruned)",
                    toolbar_location="above", tools="pan,wheel_zoom,reset")
        bf.segment(x0="x0", y0="y0", x1="x1", y1="y1", color="color", source=self.beam_edges, line_width=1.5)
        nodes = bf.scatter("x", "y", color="color", size=9, source=self.beam_nodes)
        bf.text("x", "y", text="label", source=self.beam_nodes, text_font_size="10px", x_offset=5, y_offset=-3)
        bf.add_tools(HoverTool(renderers=[nodes], tooltips=[("token", "@label"), ("status", "@status"),
                                                            ("cum. log-prob", "@score{0.000}")]))
        bf.y_range.flipped = True
        self.beam_figure = bf

        self.spec_source = ColumnDataSource(dict(x=[], p=[], q=[], color=[], token=[], status=[]))
        self.alpha_source = ColumnDataSource(dict(round=[], alpha=[], tokens_per_call=[], expected=[]))
        pf = figure(width=640, height=220, title="speculative: target p (bars) vs draft q (dots) per drafted token",
                    y_range=Range1d(0, 1.05), toolbar_location=None, tools="")
        sb = pf.vbar(x="x", top="p", width=0.8, color="color", source=self.spec_source, alpha=0.7)
        pf.scatter(x="x", y="q", source=self.spec_source, color="black", size=6)
        pf.add_tools(HoverTool(renderers=[sb], tooltips=[("token", "@token"), ("p", "@p{0.000}"), ("q", "@q{0.000}"),
                                                         ("", "@status")]))
        self.spec_figure = pf
        af = figure(width=640, height=180, title="tokens per target call: measured (running) vs formula",
                    toolbar_location=None, tools="")
        a1 = af.line("round", "tokens_per_call", source=self.alpha_source, line_width=2, color="#1f77b4")
        a2 = af.line("round", "expected", source=self.alpha_source, line_width=2, color="#ff7f0e", line_dash="dashed")
        af.add_layout(Legend(items=[LegendItem(label="measured", renderers=[a1]),
                                    LegendItem(label="(1-a^(g+1))/(1-a)", renderers=[a2])], location="bottom_right"))
        self.alpha_figure = af

        self._stage_pane = bokeh_pane(sf)
        self._timeline_pane = bokeh_pane(tf)
        self._beam_pane = bokeh_pane(bf)
        self._spec_pane = bokeh_pane(column(pf, af))

        # --- wiring ---
        self._debouncer = Debouncer(self.recompute, debounce)
        self.prompt.observe(lambda ch: self._debouncer.trigger(), names="value")
        for w in (self.strategy, self.order, self.temperature, self.top_k, self.top_p, self.min_p, self.typical,
                  self.seed, self.num_beams, self.num_groups, self.diversity, self.gamma, self.max_new_tokens,
                  self.mask_undecodable):
            w.observe(self._on_control, names="value")
        self.step_button.on_click(lambda b: self.step())
        self.play_button.on_click(lambda b: self.play())
        self.reset_button.on_click(lambda b: self.reset())
        self.compare_button.on_click(lambda b: self.run_compare())

        controls = W.VBox([
            self.prompt,
            W.HBox([self.strategy, self.order, self.seed, self.max_new_tokens]),
            W.HBox([self.temperature, self.top_k, self.top_p]),
            W.HBox([self.min_p, self.typical, self.mask_undecodable]),
            W.HBox([self.num_beams, self.num_groups, self.diversity, self.gamma]),
            W.HBox([self.step_button, self.play_button, self.reset_button, self.export_controls()],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.compare_with, self.compare_button]),
        ])
        self.tabs = W.Tab(children=[W.VBox([self._stage_pane, self._timeline_pane]), self._beam_pane,
                                    self._spec_pane, self.compare_view])
        for i, t in enumerate(["step", "beam tree", "speculative", "compare"]):
            self.tabs.set_title(i, t)
        super().__init__(children=[controls, self.info, self.text_view, self.tabs])
        self.recompute()

    # ------------------------------------------------------------------------------------------ core calls
    def pipeline(self) -> Pipeline:
        """The pipeline the controls describe (off-values left out), in the chosen engine order."""
        params = dict(temperature=float(self.temperature.value))
        if self.top_k.value > 0:
            params["top_k"] = int(self.top_k.value)
        if self.top_p.value < 1.0:
            params["top_p"] = float(self.top_p.value)
        if self.min_p.value > 0.0:
            params["min_p"] = float(self.min_p.value)
        if self.typical.value < 1.0:
            params["typical"] = float(self.typical.value)
        return Pipeline.preset(self.order.value, **params)

    def _prompt_ids(self) -> list[int]:
        ids = self.model.tokenizer.encode(self.prompt.value) if self.model.tokenizer is not None else []
        if not ids:
            raise DecodingError("type a prompt first")
        room = self.model.config.block_size - self.max_new_tokens.value
        return ids[-room:]

    def _on_control(self, change):
        if not self._quiet:
            self.recompute()

    def recompute(self) -> None:
        """Run the chosen strategy on the prompt once; the cursor goes back to the first step."""
        self._stop_play()
        t0 = time.perf_counter()
        kind = self.strategy.value
        n = int(self.max_new_tokens.value)
        mask = bool(self.mask_undecodable.value)
        try:
            ids = self._prompt_ids()
            pipe = self.pipeline()
            if kind in ("greedy", "sample"):
                p = Pipeline.preset(self.order.value, temperature=0.0) if kind == "greedy" else pipe
                self.result = sample(self.model, ids, n, p, seed=int(self.seed.value), top_n=self.top_n,
                                     strategy=kind, mask_undecodable=mask)
            elif kind == "beam":
                self.result = beam_search(self.model, ids, int(self.num_beams.value), n, mask_undecodable=mask)
            elif kind == "diverse beam":
                g = int(self.num_groups.value)
                nb = max(g, int(self.num_beams.value) // g * g)
                self.result = diverse_beam_search(self.model, ids, nb, n, num_groups=g,
                                                  diversity_penalty=float(self.diversity.value),
                                                  mask_undecodable=mask)
            elif kind == "prompt lookup":
                self.result = prompt_lookup(self.model, ids, n, mask_undecodable=mask)
            else:
                if self.draft is None:
                    raise DecodingError("speculative decoding needs a draft model: DecodingLab(model, draft=...)")
                self.result = speculative_decode(self.model, self.draft, ids, n, gamma=int(self.gamma.value),
                                                 pipeline=pipe, seed=int(self.seed.value), mask_undecodable=mask)
        except Exception as e:  # every failure reaches the notice, not the log console
            self.result = None
            set_notice(self.info, str(e) if isinstance(e, DecodingError) else f"{type(e).__name__}: {e}", "error")
            self._clear()
            return
        self.timings["recompute"] = time.perf_counter() - t0
        set_notice(self.info, self._describe())
        self.cursor = 1
        self.tabs.selected_index = {"beam": 1, "diverse beam": 1, "speculative": 2}.get(kind, 0)
        self.render()

    @property
    def n_steps(self) -> int:
        r = self.result
        if r is None:
            return 0
        if hasattr(r, "rounds"):
            return len(r.rounds)
        if hasattr(r, "hypotheses"):
            return r.steps
        return len(r.tokens)

    def step(self) -> None:
        self.cursor = min(self.cursor + 1, self.n_steps)
        self.render()

    def reset(self) -> None:
        self._stop_play()
        self.cursor = 1 if self.n_steps else 0
        self.render()

    def play(self) -> None:
        """Advance one step every ``play_interval`` seconds in a live notebook; all at once without an event loop."""
        self._stop_play()
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
            if self.cursor < self.n_steps:
                self.step()
                self._play_handle = loop.call_later(self.play_interval, tick)

        tick()

    def _stop_play(self):
        if self._play_handle is not None:
            self._play_handle.cancel()
            self._play_handle = None

    def compare_strategies(self) -> list[Strategy]:
        """The strategies ticked in ``compare_with``, built from the current controls."""
        pipe = self.pipeline()
        out = []
        for choice in self.compare_with.value:
            if choice == "current settings":
                out.append(Strategy("sample", pipe, name=f"sample, {self.order.value} order"))
            elif choice.endswith(" order"):
                o = choice.split()[0]
                out.append(Strategy("sample", pipe.with_order(o), name=f"sample, {o} order"))
            elif choice == "beam":
                out.append(Strategy("beam", params={"num_beams": int(self.num_beams.value)}))
            elif choice == "speculative":
                out.append(Strategy("speculative", pipe, params={"gamma": int(self.gamma.value)}))
            else:
                out.append(Strategy(choice.replace(" ", "_")))
        return out

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
        controls = {k: getattr(self, k).value for k in ("prompt", "strategy", "order", "temperature", "top_k", "top_p",
                                                         "min_p", "typical", "seed", "num_beams", "num_groups",
                                                         "diversity", "gamma", "max_new_tokens")}
        return {"controls": controls, "cursor": self.cursor, "n_steps": self.n_steps,
                "result_type": type(self.result).__name__, "result": self.result, "comparison": self.comparison}

    # -------------------------------------------------------------------------------------------- drawing
    def _tok(self, i: int) -> str:
        t = self.model.tokenizer
        return t.token_str(i) if t is not None else str(i)

    def _describe(self) -> str:
        r = self.result
        if hasattr(r, "rounds"):
            s = r.stats
            return (f"speculative: alpha={s.alpha:.3f}, {s.tokens_per_call:.2f} tokens per target call "
                    f"(formula {s.expected_tokens_per_call:.2f}), c={s.c:.2f}, predicted speedup "
                    f"{s.expected_speedup:.2f}x; recompute {self.timings['recompute'] * 1e3:.0f} ms")
        if hasattr(r, "hypotheses"):
            h = r.best
            return (f"best of {len(r.hypotheses)}: score {h.score:.3f} = {h.raw_score:.3f} / {h.length}^"
                    f"{r.length_penalty:g}; recompute {self.timings['recompute'] * 1e3:.0f} ms")
        extra = f", {r.stats['tokens_per_call']:.2f} tokens per call" if r.stats.get("tokens_per_call") else ""
        return f"{r.strategy}: {len(r.tokens)} tokens, {r.target_calls} model calls{extra}; " \
               f"recompute {self.timings['recompute'] * 1e3:.0f} ms"

    def _clear(self):
        for src in (self.stage_source, self.timeline_source, self.beam_nodes, self.beam_edges, self.spec_source,
                    self.alpha_source):
            src.data = {k: [] for k in src.data}
        self.text_view.value = ""

    def render(self) -> None:
        """Redraw every view for the steps up to the cursor."""
        t0 = time.perf_counter()
        r = self.result
        if r is None:
            self._clear()
            return
        if hasattr(r, "rounds"):
            self._render_spec(r)
            shown = [t for rd in r.rounds[: self.cursor] for t in rd.emitted]
        elif hasattr(r, "hypotheses"):
            self._render_beam(r)
            shown = r.best.tokens if self.cursor >= r.steps else []
        else:
            self._render_steps(r)
            shown = r.tokens[: self.cursor]
        tok = self.model.tokenizer
        prompt = html.escape(tok.decode_with_placeholders(r.prompt)) if tok is not None else ""
        gen = "".join(f'<span style="background:#e3f2fd">{html.escape(self._tok(t))}</span>' for t in shown)
        self.text_view.value = f'<div style="font-family:monospace">{prompt}{gen}</div>' \
                               f'<small>step {self.cursor} / {self.n_steps}</small>'
        self.timings["render"] = time.perf_counter() - t0

    def _render_steps(self, r):
        steps = r.steps[: self.cursor]
        self.timeline_source.data = dict(step=[s.step for s in steps], entropy=[s.entropy for s in steps],
                                         surprisal=[s.surprisal for s in steps],
                                         token=[self._tok(s.chosen) for s in steps])
        if not steps:
            self.stage_source.data = dict(x=[], prob=[], color=[], stage=[], token=[])
            return
        st = steps[-1]
        xs, probs, colors, stages, toks = [], [], [], [], []
        labels = []
        for j, tok in enumerate(st.candidates):
            lab = f"{self._tok(tok)}{' *' if tok == st.chosen else ''} ({j})"
            labels.append(lab)
            for k, snap in enumerate(st.stages):
                xs.append((lab, snap.name))
                probs.append(snap.probs[j])
                colors.append(STAGE_COLORS[k % len(STAGE_COLORS)])
                stages.append(f"{snap.name}: kept {snap.kept}")
                toks.append(self._tok(tok))
        self.stage_figure.x_range.factors = xs
        self.stage_source.data = dict(x=xs, prob=probs, color=colors, stage=stages, token=toks)
        self.stage_figure.title.text = (f"step {st.step}: chose {self._tok(st.chosen)!r} "
                                        f"(p={st.chosen_prob:.3f}, kept {st.kept}, H={st.entropy:.2f} bits)")
        self.beam_nodes.data = dict(x=[], y=[], label=[], status=[], color=[], score=[])
        self.beam_edges.data = dict(x0=[], y0=[], x1=[], y1=[], color=[])

    def _render_beam(self, r):
        shown = [n for n in r.nodes if n.step < self.cursor]
        # y: rank within its step by cumulative score (best at the top); root at 0
        ypos = {}
        by_step: dict[int, list] = {}
        for n in shown:
            by_step.setdefault(n.step, []).append(n)
        for s, ns in by_step.items():
            for rank, n in enumerate(sorted(ns, key=lambda n: (n.group, -n.cum_score))):
                ypos[n.id] = rank
        self.beam_nodes.data = dict(
            x=[n.step for n in shown], y=[ypos[n.id] for n in shown],
            label=["" if n.token is None else self._tok(n.token) for n in shown],
            status=[n.status for n in shown], color=[STATUS_COLORS[n.status] for n in shown],
            score=[n.cum_score for n in shown])
        edges = [n for n in shown if n.parent is not None]
        self.beam_edges.data = dict(
            x0=[r.nodes[n.parent].step for n in edges], y0=[ypos[n.parent] for n in edges],
            x1=[n.step for n in edges], y1=[ypos[n.id] for n in edges],
            color=[STATUS_COLORS[n.status] for n in edges])
        self.timeline_source.data = dict(step=[], entropy=[], surprisal=[], token=[])

    def _render_spec(self, r):
        rounds = r.rounds[: self.cursor]
        x, p, q, color, tok, status = [], [], [], [], [], []
        pos = 0
        for rd in rounds:
            for i, d in enumerate(rd.draft_tokens):
                if i < len(rd.accepted):
                    st = "accepted" if rd.accepted[i] else "rejected"
                else:
                    st = "not verified"
                x.append(pos + i)
                p.append(rd.p[i])
                q.append(rd.q[i])
                color.append({"accepted": "#2ca02c", "rejected": "#d62728", "not verified": "#bbbbbb"}[st])
                tok.append(self._tok(d))
                status.append(st)
            pos += len(rd.draft_tokens) + 1
        self.spec_source.data = dict(x=x, p=p, q=q, color=color, token=tok, status=status)
        rr, al, tpc, ex = [], [], [], []
        acc = ver = toks = 0
        for i, rd in enumerate(rounds):
            acc += rd.n_accepted
            ver += len(rd.accepted)
            toks += len(rd.emitted)
            a = acc / ver if ver else 0.0
            rr.append(i + 1)
            al.append(a)
            tpc.append(toks / (i + 1))
            ex.append(expected_tokens_per_call(a, r.stats.gamma))
        self.alpha_source.data = dict(round=rr, alpha=al, tokens_per_call=tpc, expected=ex)

    def _compare_html(self) -> str:
        c = self.comparison
        d = c.first_divergence
        rows = []
        for name, toks in zip(c.names, c.tokens):
            cells = "".join(
                f'<span style="background:{"#ffcdd2" if d is not None and i >= d else "#e8f5e9"}">'
                f"{html.escape(self._tok(t))}</span>" for i, t in enumerate(toks))
            rows.append(f"<tr><td><b>{html.escape(name)}</b></td><td style='font-family:monospace'>{cells}</td></tr>")
        head = f"first divergence at step {d}" if d is not None else "all outputs identical"
        return f"<p>{head} (seed {c.seed}; same noise for all)</p><table>{''.join(rows)}</table>"


__all__ = ["DecodingLab", "default_models"]
