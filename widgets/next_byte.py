"""NextByteView: what comes after a prompt that ends in the middle of a word, asked three ways.

Three bar charts for one prompt: the BPE model's naive next-token bars (the prompt tokenised as it stands), the
exact next-byte bars of the same model (every tokenisation that covers the prompt, marginalised:
:func:`workbench.tokenizers.byte_probs.next_byte_distribution`), and a byte model's own next-byte bars. The gap
between the first two is the tokenization bias. The widget only draws what the core functions return.

Lesson: ``notebooks/01_tokenization.ipynb`` (6. Byte-level probabilities from a BPE model).
"""
from __future__ import annotations

import ipywidgets as W
from bokeh.models import ColumnDataSource, FactorRange, HoverTool
from bokeh.plotting import figure

from workbench.models.predict import next_token
from workbench.tokenizers.byte_probs import next_byte_distribution

from .base import Debouncer, WorkbenchWidget, bokeh_pane, notice, set_notice

_COLOURS = {"naive": "#AAAAAA", "exact": "#4C72B0", "byte": "#55A868"}


class NextByteView(WorkbenchWidget):
    """A prompt box over three top-``k`` bar charts: naive next token (BPE), exact next byte (BPE), next byte (byte
    model; left out when ``byte_model`` is None). ``width``: the widget's width in pixels; the charts wrap."""

    def __init__(self, bpe_model, byte_model=None, prompt: str = "The function retur", k: int = 8,
                 debounce: float = 0.25, width: int = 880):
        self.bpe_model, self.byte_model, self.k = bpe_model, byte_model, int(k)
        self._summary = (f"bpe={getattr(bpe_model, 'name', '?')!r}, byte={getattr(byte_model, 'name', None)!r}, "
                         f"k={self.k}")
        self.result = None  # the last NextByte
        self.prompt = W.Textarea(value=prompt, placeholder="A prompt that ends mid-word…", continuous_update=True,
                                 layout=W.Layout(width="auto", align_self="stretch", height="50px"))
        self.info = notice()
        kinds = ["naive", "exact"] + (["byte"] if byte_model is not None else [])
        titles = {"naive": "BPE, naive: next token", "exact": "BPE, exact: next byte",
                  "byte": "byte model: next byte"}
        fig_w = max(240, (width - 20) // len(kinds) - 8)
        self.sources, self.figures = {}, {}
        for kind in kinds:
            src = ColumnDataSource(dict(label=[], prob=[], pct=[]))
            fig = figure(height=260, width=fig_w, y_range=FactorRange(), x_range=(0, 1), toolbar_location=None,
                         title=titles[kind], x_axis_label="probability")
            fig.hbar(y="label", right="prob", height=0.8, source=src, color=_COLOURS[kind])
            fig.add_tools(HoverTool(tooltips=[("", "@label"), ("p", "@pct")]))
            fig.title.text_font_size = "11px"
            self.sources[kind], self.figures[kind] = src, fig
        self.charts = W.HBox([bokeh_pane(self.figures[k]) for k in kinds],
                             layout=W.Layout(flex_flow="row wrap", width="100%"))
        self._debouncer = Debouncer(self.refresh, debounce)
        self.prompt.observe(lambda ch: self._debouncer.trigger(), names="value")
        super().__init__(children=[self.prompt, self.info, self.charts],
                         layout=W.Layout(width=f"{width}px", max_width="100%"))
        self.refresh()

    def refresh(self) -> None:
        """Recompute all bars for the current prompt; any failure clears them and says why in the notice."""
        try:
            self._refresh()
        except Exception as e:  # noqa: BLE001 - every failure reaches the notice
            self.result = None
            for kind in self.sources:
                self._draw(kind, [], [])
            set_notice(self.info, f"Cannot compute for this prompt: {type(e).__name__}: {e}", "error")

    def _refresh(self) -> None:
        text = self.prompt.value
        nb = next_byte_distribution(self.bpe_model, text)  # raises a clear error for an empty prompt
        self.result = nb
        tok = next_token(self.bpe_model, text, self.k)
        self._draw("naive", tok.labels, tok.probs)
        exact = nb.top(self.k)
        self._draw("exact", [lab for lab, _ in exact], [p for _, p in exact])
        if "byte" in self.sources:
            own = next_byte_distribution(self.byte_model, text).top(self.k)
            self._draw("byte", [lab for lab, _ in own], [p for _, p in own])
        btok = self.bpe_model.tokenizer
        last = [btok.token_str(i) for i in btok.encode(text)[-3:]]
        top_b, top_p = exact[0]
        set_notice(self.info, (
            f"BPE tokens at the end: {' | '.join(last)}. Exact next byte: {top_b} ({top_p:.0%}); naive next token: "
            f"{tok.labels[0]} ({tok.probs[0]:.0%}). Backed off to byte {nb.backoff} of {len(nb.prompt)}, "
            f"{nb.n_contexts} contexts scored; {nb.valid_mass:.1%} of the mass on canonical tokenisations."))

    def _draw(self, kind: str, labels, probs) -> None:
        labels = [f"{r + 1}. {lab}" for r, lab in enumerate(labels)]
        fig = self.figures[kind]
        fig.y_range.factors = list(reversed(labels))  # factors first, then data
        self.sources[kind].data = dict(label=labels, prob=list(probs), pct=[f"{p:.2%}" for p in probs])
        fig.x_range.end = min(1.0, max([0.05, *probs]) * 1.1)

    def bars(self, kind: str) -> list[tuple[str, float]]:
        """(label, probability) pairs drawn in chart ``kind`` ("naive", "exact" or "byte")."""
        d = self.sources[kind].data
        return list(zip(d["label"], d["prob"]))
