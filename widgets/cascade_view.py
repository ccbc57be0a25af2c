"""Views of token-level uncertainty, cascades and repeated sampling.

* :class:`UncertaintyView`: a text with every token shaded by how unsure the model was of it (surprisal, entropy,
  rank, top-2 margin or max probability; :func:`workbench.decoding.uncertainty.token_scores`); hover a token
  for all five numbers; a key gives the colour range.
* :class:`CascadeView`: cost (fraction of tokens sent to the large model) against quality (bits per byte, or
  agreement with the large model's top token) of a small -> large cascade for every threshold of each deferral
  rule, with the oracle and random references (:func:`workbench.decoding.cascade.cascade_curve`). It is also the
  DecodingLab's "cascade" tab (:func:`cascade_tab`).
* :func:`coverage_figure`: coverage (pass@k) and majority-vote accuracy against k on a log axis, one colour per
  model size (:mod:`workbench.decoding.repeated`).

The numbers all come from the core; this module only maps them to colours and lines.

Lesson: ``notebooks/03_decoding.ipynb`` (uncertainty, cascades, repeated sampling).
"""
from __future__ import annotations

import html
import math

import ipywidgets as W
import numpy as np
from bokeh.models import ColumnDataSource, HoverTool, Legend, LegendItem, Range1d
from bokeh.plotting import figure

from workbench.decoding import DecodingError
from workbench.decoding.cascade import PAIRS, RULES, cascade_curve, eval_text
from workbench.decoding.uncertainty import SCORES, token_scores

from .base import WorkbenchWidget, bokeh_pane, notice, set_notice

FIG_W = 760
RULE_COLORS = {"entropy": "#1f77b4", "margin": "#ff7f0e", "max_prob": "#2ca02c", "oracle": "#555555",
               "random": "#999999"}
RULE_LABELS = {"entropy": "entropy", "margin": "1 - margin", "max_prob": "1 - max prob (Chow)",
               "oracle": "oracle (bound)", "random": "random (chord)"}
#: How each score reads as unsureness: True = a higher value is less sure.
HIGHER_IS_UNSURE = {"surprisal": True, "entropy": True, "rank": True, "margin": False, "max_prob": False}
_LABEL = {"description_width": "initial"}


# --------------------------------------------------------------------------------------------- shading
def shade_levels(values, score: str) -> np.ndarray:
    """Values of ``score`` -> shading in [0, 1], 1 = least sure: scaled to the range shown (rank on a log scale;
    margin and max_prob reversed, so that low confidence is dark everywhere)."""
    v = np.asarray(values, dtype=float)
    if score not in HIGHER_IS_UNSURE:
        raise DecodingError(f"unknown score {score!r}; choose one of {SCORES}")
    if score == "rank":
        v = np.log2(v)
    if not HIGHER_IS_UNSURE[score]:
        v = -v
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
    return np.zeros_like(v) if hi - lo < 1e-12 else (v - lo) / (hi - lo)


def _rgb(level: float) -> str:
    """White to deep red."""
    r, g, b = 255, int(255 - 200 * level), int(255 - 200 * level)
    return f"rgb({r},{g},{b})"


def _visible(tok: str) -> str:
    return html.escape(tok.replace("\n", "\u21b5\n").replace("\t", "\u2192"))


def shaded_html(scores, score: str) -> str:
    """The text of a :class:`~workbench.decoding.uncertainty.TokenScores` as HTML spans shaded by ``score``, each
    with a hover title of all five numbers, and a key of the range shown."""
    vals = scores.score(score)
    lv = shade_levels(vals, score)
    parts = [f'<span style="color:#888" title="first token: no prediction">{_visible(scores.tokens[0])}</span>']
    for i, row in enumerate(scores.rows()):
        title = (f"{row['token']!r}: surprisal {row['surprisal']:.2f} bits, entropy {row['entropy']:.2f} bits, "
                 f"rank {int(row['rank'])}, margin {row['margin']:.3f}, max prob {row['max_prob']:.3f}")
        parts.append(f'<span style="background:{_rgb(lv[i])}" title="{html.escape(title)}">'
                     f'{_visible(row["token"])}</span>')
    lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 0.0)
    sure, unsure = (lo, hi) if HIGHER_IS_UNSURE[score] else (hi, lo)
    key = (f'<div style="font-size:12px;color:#444;margin-top:6px">{html.escape(score)}: '
           f'<span style="background:{_rgb(0)};border:1px solid #ccc;padding:0 6px">{sure:.3g} (sure)</span> '
           f'<span style="display:inline-block;width:120px;height:10px;background:linear-gradient(to right,'
           f'{_rgb(0)},{_rgb(1)});border:1px solid #ccc"></span> '
           f'<span style="background:{_rgb(1)};color:#fff;padding:0 6px">{unsure:.3g} (unsure)</span>'
           f'{" (log scale)" if score == "rank" else ""}. Hover a token for its numbers; '
           f'{scores.bits_per_byte:.3f} bits per byte.</div>')
    return ('<div style="font-family:monospace;white-space:pre-wrap;line-height:1.7;max-width:860px">'
            + "".join(parts) + "</div>" + key)


class UncertaintyView(WorkbenchWidget):
    """A text shaded token by token by how unsure ``model`` was of each token (``score``: one of
    :data:`~workbench.decoding.uncertainty.SCORES`). Controls: ``text`` (Textarea), ``score`` (Dropdown);
    ``scores`` holds the :class:`~workbench.decoding.uncertainty.TokenScores` shown."""

    def __init__(self, model=None, text: str = "The for statement is used to iterate over the elements of a "
                                                "sequence (such as a string, tuple or list).",
                 score: str = "surprisal"):
        if model is None:
            from workbench.models import load_pretrained

            model = load_pretrained("docs-bpe")
        self.model = model
        self.scores = None
        self._summary = f"model={getattr(model, 'name', type(model).__name__)!r}, score={score!r}"
        self.text = W.Textarea(value=text, description="text", layout=W.Layout(width="98%", height="60px"))
        self.score = W.Dropdown(options=list(SCORES), value=score, description="shade by", style=_LABEL,
                                layout=W.Layout(width="220px"))
        self.view = W.HTML()
        self.info = notice()
        self.text.observe(self.reacting(lambda ch: self.recompute()), names="value")
        self.score.observe(self.reacting(lambda ch: self.render()), names="value")
        super().__init__(children=[self.text, self.score, self.view, self.info])
        self.recompute()

    def recompute(self) -> None:
        try:
            self.scores = token_scores(self.model, self.text.value)
        except DecodingError as e:
            self.scores = None
            self.view.value = ""
            set_notice(self.info, str(e), "error")
            return
        set_notice(self.info, "")
        self.render()

    def render(self) -> None:
        if self.scores is not None:
            self.view.value = shaded_html(self.scores, self.score.value)

    def export_state(self) -> dict:
        s = self.scores
        return {} if s is None else {"tokens": s.tokens, **{k: s.score(k).tolist() for k in SCORES}}


# ------------------------------------------------------------------------------------------------ cascade
def curve_rows(comparison, quality: str = "bits_per_byte") -> dict:
    """``{curve name: {"deferral", "quality", "threshold"}}`` for the figure (``quality``: "bits_per_byte" or
    "agreement")."""
    if quality not in ("bits_per_byte", "agreement"):
        raise DecodingError(f"quality must be 'bits_per_byte' or 'agreement', got {quality!r}")
    return {name: {"deferral": c.deferral.tolist(), "quality": getattr(c, quality).tolist(),
                   "threshold": [("-" if not math.isfinite(t) and math.isnan(t) else f"{t:.4g}")
                                 for t in c.thresholds]}
            for name, c in comparison.curves.items()}


def cascade_table_html(comparison) -> str:
    """The rules side by side: area under the curve and the deferral needed to close half / 90% of the gap."""
    rows = "".join(
        f"<tr><td>{html.escape(RULE_LABELS.get(r['rule'], r['rule']))}</td><td>{r['area']:.4f}</td>"
        f"<td>{r['deferral_for_half_gap']:.1%}</td><td>{r['deferral_for_90pct_gap']:.1%}</td></tr>"
        for r in comparison.table())
    return ("<table style='font-size:12px;border-collapse:collapse' cellpadding='3'>"
            "<tr><th>rule</th><th>area (bits/byte, lower better)</th><th>sent to large for half the gap</th>"
            f"<th>for 90% of the gap</th></tr>{rows}</table>"
            f"<p style='font-size:12px;color:#555'>{html.escape(comparison.small_name)} alone "
            f"{comparison.small_bpb:.3f} bits/byte, {html.escape(comparison.large_name)} alone "
            f"{comparison.large_bpb:.3f}; {comparison.n_tokens} tokens scored.</p>")


class CascadeView(WorkbenchWidget):
    """Cost against quality of a cascade for every threshold of each deferral rule.

    ``pair`` names a shipped pair ("byte" or "bpe"), or pass ``small`` and ``large`` models (same tokenizer).
    Controls: ``pair`` (Dropdown, hidden when models are given), ``quality`` (bits per byte or agreement),
    ``compute_button`` (the curve is computed on demand when ``lazy``). Data source: ``sources[rule]``.
    """

    def __init__(self, small=None, large=None, *, pair: str = "bpe", text: str | None = None, chars: int = 1600,
                 lazy: bool = False):
        self.models = {} if small is None else {"given": (small, large)}
        self.text_value = text
        self.chars = chars
        self.comparison = None
        self._summary = f"pair={pair if small is None else 'given'!r}"
        self.pair = W.Dropdown(options=list(PAIRS), value=pair if small is None else None, description="pair",
                               style=_LABEL, layout=W.Layout(width="160px", display="none" if small else ""))
        self.quality = W.ToggleButtons(options=[("bits per byte", "bits_per_byte"), ("agreement", "agreement")],
                                       value="bits_per_byte", style={"button_width": "110px"})
        self.compute_button = W.Button(description="compute curve", icon="play", layout=W.Layout(width="150px"))
        self.sources = {name: ColumnDataSource({"deferral": [], "quality": [], "threshold": []})
                        for name in (*RULES, "oracle", "random")}
        self.fig = self._figure()
        self.table = W.HTML()
        self.info = notice("" if not lazy else "Press 'compute curve' (a few seconds: both models read the text once).")
        self.pair.observe(self.reacting(lambda ch: self.recompute()), names="value")
        self.quality.observe(self.reacting(lambda ch: self.render()), names="value")
        self.compute_button.on_click(lambda b: self.recompute())
        self.pane = bokeh_pane(self.fig)
        self.plot_box = W.VBox([])                         # the figure joins at the first curve: no empty axes
        super().__init__(children=[W.HBox([self.pair, self.quality, self.compute_button],
                                          layout=W.Layout(flex_flow="row wrap", align_items="center")),
                                   self.info, self.plot_box, self.table])
        if not lazy:
            self.recompute()

    def _figure(self):
        f = figure(width=FIG_W, height=330, title="cascade: cost against quality, every threshold",
                   x_range=Range1d(-0.02, 1.02), toolbar_location=None, tools="")
        items, rs = [], []
        for name, src in self.sources.items():
            dash = "dashed" if name == "oracle" else ("dotted" if name == "random" else "solid")
            r = f.line("deferral", "quality", source=src, color=RULE_COLORS[name], line_width=2, line_dash=dash)
            rs.append(r)
            items.append(LegendItem(label=RULE_LABELS[name], renderers=[r]))
        f.add_tools(HoverTool(renderers=rs, tooltips=[("sent to large", "@deferral{0.0%}"), ("quality", "@quality{0.000}"),
                                                      ("threshold", "@threshold")], mode="vline"))
        f.add_layout(Legend(items=items, click_policy="hide", label_text_font_size="11px"), "right")
        f.xaxis.axis_label = "fraction of tokens sent to the large model"
        f.yaxis.axis_label = "bits per byte"
        return f

    def _models(self):
        if "given" in self.models:
            return self.models["given"]
        name = self.pair.value
        if name not in self.models:
            from workbench.models import load_pretrained

            self.models[name] = tuple(load_pretrained(n) for n in PAIRS[name])
        return self.models[name]

    def recompute(self) -> None:
        try:
            small, large = self._models()
            text = self.text_value if self.text_value is not None else eval_text(self.chars)
            self.comparison = cascade_curve(small, large, text, max_windows=None)
        except (DecodingError, ValueError) as e:
            set_notice(self.info, str(e), "error")
            return
        set_notice(self.info, f"{self.comparison.small_name} -> {self.comparison.large_name}: "
                              "a rule is worth using where its line lies below the random chord.")
        self.render()

    def render(self) -> None:
        if self.comparison is None:
            return
        q = self.quality.value
        for name, rows in curve_rows(self.comparison, q).items():
            self.sources[name].data = rows
        self.fig.yaxis.axis_label = "bits per byte (lower is better)" if q == "bits_per_byte" else \
            "agreement with the large model's top token"
        self.table.value = cascade_table_html(self.comparison)
        if not self.plot_box.children:
            self.plot_box.children = [self.pane]

    def export_state(self) -> dict:
        return {} if self.comparison is None else {"table": self.comparison.table()}


def cascade_tab(lab) -> CascadeView:
    """The DecodingLab's cascade tab: its draft model as the small one and its model as the large one (the
    shipped bpe pair when the lab has no draft); computed on demand."""
    if getattr(lab, "draft", None) is not None:
        return CascadeView(lab.draft, lab.model, lazy=True)
    return CascadeView(pair="bpe", lazy=True)


# ---------------------------------------------------------------------------------------- repeated sampling
SIZE_COLORS = ["#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b", "#041a33"]


def coverage_figure(runs, *, majority: bool = True, guess_space: int | None = 199, width: int = FIG_W):
    """Coverage (solid, pass@k) and majority-vote accuracy (dashed) against k, log axis, one colour per model
    (``runs``: :class:`~workbench.decoding.repeated.RepeatedSampling`, smallest first). ``guess_space``: draw the
    coverage of a guesser uniform over that many answers (199 sums for two-digit addition), the floor a
    verifier gives for free."""
    from bokeh.models import LogTicker

    f = figure(width=width, height=360, x_axis_type="log", y_range=Range1d(0, 1.02), toolbar_location=None,
               tools="", title="repeated sampling: solved by at least one of k samples (solid), majority vote (dashed)")
    items = []
    cols = SIZE_COLORS[-len(runs):] if len(runs) <= len(SIZE_COLORS) else None
    for i, r in enumerate(runs):
        c = cols[i] if cols else SIZE_COLORS[i % len(SIZE_COLORS)]
        src = ColumnDataSource({"k": r.ks, "coverage": r.coverage, "majority": r.majority,
                                "name": [r.name] * len(r.ks)})
        ln = f.line("k", "coverage", source=src, color=c, line_width=2)
        f.scatter("k", "coverage", source=src, color=c, size=5)
        rs = [ln]
        if majority:
            rs.append(f.line("k", "majority", source=src, color=c, line_width=2, line_dash="dashed"))
        label = f"N={r.N:,} (greedy {r.greedy:.0%})" if r.N else r.name
        items.append(LegendItem(label=label, renderers=rs))
        f.add_tools(HoverTool(renderers=[ln], tooltips=[("model", "@name"), ("k", "@k"),
                                                        ("coverage", "@coverage{0.000}"),
                                                        ("majority", "@majority{0.000}")]))
    if guess_space and runs:
        ks = np.array(runs[0].ks, dtype=float)
        g = f.line(ks, 1 - (1 - 1 / guess_space) ** ks, color="#bbbbbb", line_width=2, line_dash="dotted")
        items.append(LegendItem(label=f"uniform guess of {guess_space}", renderers=[g]))
    f.add_layout(Legend(items=items, click_policy="hide", label_text_font_size="11px"), "right")
    f.xaxis.ticker = LogTicker(base=2, mantissas=[1])
    f.xaxis.axis_label = "k (samples per problem)"
    f.yaxis.axis_label = "fraction of problems"
    return f


__all__ = ["UncertaintyView", "CascadeView", "cascade_tab", "coverage_figure", "shaded_html", "shade_levels",
           "curve_rows"]
