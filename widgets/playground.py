"""Playground: type a prompt, watch the next-token distribution, sample a continuation.

Ids the model scores but its tokenizer cannot decode (a padded vocabulary, as in Pythia, Qwen or Phi) appear as
grey bars labelled ``<id N>``; the "never sample ids without text" box masks them from sampling (off by default,
as HF ``generate``; it is disabled when every model id has text).
"""
from __future__ import annotations

import html

import ipywidgets as W
from bokeh.models import ColumnDataSource, FactorRange, HoverTool
from bokeh.plotting import figure

from workbench.models.predict import next_token, sample_continuation

from .base import Debouncer, WorkbenchWidget, bokeh_pane, notice, set_notice


class Playground(WorkbenchWidget):
    """A prompt box with a live top-``k`` next-token bar chart and a "Sample" button; works with any workbench model.

    ``debounce`` is the pause (seconds) after typing before the chart updates; 0 updates on every change.
    """

    def __init__(self, model, prompt: str = "The for statement", k: int = 10, debounce: float = 0.25,
                 max_new_tokens: int = 80, seed: int = 0):
        self.model, self.k = model, k
        self._summary = f"model={getattr(model, 'name', type(model).__name__)!r}, k={k}"
        self.prompt = W.Textarea(value=prompt, placeholder="Type a prompt…", continuous_update=True,
                                 layout=W.Layout(width="100%", height="70px"))
        self.info = notice()
        self.source = ColumnDataSource(dict(label=[], prob=[], id=[], pct=[], color=[]))
        fig = figure(height=300, width=560, y_range=FactorRange(), x_range=(0, 1), toolbar_location=None,
                     title="Next-token probabilities", x_axis_label="probability")
        fig.hbar(y="label", right="prob", height=0.8, source=self.source, color="color")
        fig.add_tools(HoverTool(tooltips=[("token", "@label"), ("id", "@id"), ("p", "@pct")]))
        fig.y_range.factors = []
        self.figure = fig
        self.chart = bokeh_pane(fig)
        self.temperature = W.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.05, description="temperature")
        self.max_new = W.IntSlider(value=max_new_tokens, min=1, max=min(256, model.config.block_size - 1),
                                   description="new tokens")
        self.seed = W.IntText(value=seed, description="seed", layout=W.Layout(width="160px"))
        tok = getattr(model, "tokenizer", None)
        n_bad = len(tok.undecodable_ids(model.config.vocab_size)) if tok is not None else 0
        self.mask_undecodable = W.Checkbox(
            value=False, description="never sample ids without text", disabled=n_bad == 0, indent=False,
            style={"description_width": "initial"}, layout=W.Layout(width="auto"),
            tooltip=(f"{n_bad} of the model's {model.config.vocab_size} ids have no text in its tokenizer"
                     if n_bad else "every id of this model has text"))
        self.sample_button = W.Button(description="Sample", button_style="primary", icon="play")
        self.continuation = W.HTML()
        self.sample_button.on_click(lambda _: self.sample())
        self._debouncer = Debouncer(self.refresh, debounce)
        self.prompt.observe(lambda ch: self._debouncer.trigger(), names="value")
        super().__init__(children=[
            self.prompt, self.info, self.chart,
            W.HBox([self.temperature, self.max_new, self.seed, self.mask_undecodable, self.sample_button,
                    self.export_controls()],
                   layout=W.Layout(flex_flow="row wrap")), self.continuation,
        ])
        self.refresh()

    def refresh(self) -> None:
        """Recompute the next-token distribution for the current prompt and redraw the bars."""
        text = self.prompt.value
        if not text:
            self._show([], [], [])
            set_notice(self.info, "Type a prompt to see what the model predicts next.")
            return
        try:
            pred = next_token(self.model, text, self.k)
        except Exception as e:  # every failure reaches the notice (ModelError, TokenizerError, ...)
            self._show([], [], [])
            set_notice(self.info, f"{type(e).__name__}: {e}", "error")
            return
        labels = [f"{r + 1}. {lab}" for r, lab in enumerate(pred.labels)]
        self._show(labels, pred.probs, pred.ids, pred.decodable)
        msg = f"{pred.prompt.n_tokens} tokens, entropy {pred.entropy_bits:.2f} bits"
        if pred.decodable is not None and not all(pred.decodable):
            msg += (f"; grey bars <id N> are ids without text in the tokenizer (padding), "
                    f"{pred.undecodable_mass:.1%} of the probability in all")
        if pred.prompt.truncated:
            set_notice(self.info, f"{msg}. The prompt is longer than the context ({self.model.config.block_size}): "
                                  f"the first {pred.prompt.dropped} tokens were dropped.", "warning")
        else:
            set_notice(self.info, msg)

    def _show(self, labels, probs, ids, decodable=None) -> None:
        # Factors first, then data, so the browser never sees bars for unknown categories.
        decodable = [True] * len(ids) if decodable is None else decodable
        self.figure.y_range.factors = list(reversed(labels))
        self.source.data = dict(label=labels, prob=probs, id=ids, pct=[f"{p:.2%}" for p in probs],
                                color=["#4C72B0" if d else "#AAAAAA" for d in decodable])
        self.figure.x_range.end = max([0.05, *probs]) * 1.1

    def sample(self) -> None:
        """Sample a continuation of the prompt with the chosen temperature, length and seed."""
        try:
            c = sample_continuation(self.model, self.prompt.value, self.max_new.value, self.temperature.value,
                                    self.seed.value, mask_undecodable=bool(self.mask_undecodable.value))
            shown = self.model.tokenizer.decode_with_placeholders(c.prompt.ids)
        except Exception as e:  # every failure reaches the page (ModelError, TokenizerError, ...)
            self.continuation.value = f'<span style="color:#b00020">{html.escape(f"{type(e).__name__}: {e}")}</span>'
            return
        self.continuation.value = (
            '<pre style="white-space:pre-wrap">'
            f'<span style="color:#888">{html.escape(shown[-300:])}</span><b>{html.escape(c.text)}</b></pre>'
        )
        self.last_continuation = c

    def export_state(self) -> dict:
        """Exported with the data: the prompt and settings, and the last sampled continuation."""
        c = getattr(self, "last_continuation", None)
        return {"model": getattr(self.model, "name", type(self.model).__name__), "prompt": self.prompt.value,
                "k": self.k, "continuation": None if c is None else c.text}

    @property
    def bars(self) -> list[tuple[str, float]]:
        """(label, probability) pairs currently drawn."""
        return list(zip(self.source.data["label"], self.source.data["prob"]))
