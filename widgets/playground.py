"""Playground: type a prompt, watch the next-token distribution, sample a continuation."""
from __future__ import annotations

import html

import ipywidgets as W
from bokeh.models import ColumnDataSource, FactorRange, HoverTool
from bokeh.plotting import figure

from workbench.models.interface import ModelError
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
        self.source = ColumnDataSource(dict(label=[], prob=[], id=[], pct=[]))
        fig = figure(height=300, width=560, y_range=FactorRange(), x_range=(0, 1), toolbar_location=None,
                     title="Next-token probabilities", x_axis_label="probability")
        fig.hbar(y="label", right="prob", height=0.8, source=self.source, color="#4C72B0")
        fig.add_tools(HoverTool(tooltips=[("token", "@label"), ("id", "@id"), ("p", "@pct")]))
        fig.y_range.factors = []
        self.figure = fig
        self.chart = bokeh_pane(fig)
        self.temperature = W.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.05, description="temperature")
        self.max_new = W.IntSlider(value=max_new_tokens, min=1, max=min(256, model.config.block_size - 1),
                                   description="new tokens")
        self.seed = W.IntText(value=seed, description="seed", layout=W.Layout(width="160px"))
        self.sample_button = W.Button(description="Sample", button_style="primary", icon="play")
        self.continuation = W.HTML()
        self.sample_button.on_click(lambda _: self.sample())
        self._debouncer = Debouncer(self.refresh, debounce)
        self.prompt.observe(lambda ch: self._debouncer.trigger(), names="value")
        super().__init__(children=[
            self.prompt, self.info, self.chart,
            W.HBox([self.temperature, self.max_new, self.seed, self.sample_button]), self.continuation,
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
        except ModelError as e:
            self._show([], [], [])
            set_notice(self.info, str(e), "error")
            return
        labels = [f"{r + 1}. {lab}" for r, lab in enumerate(pred.labels)]
        self._show(labels, pred.probs, pred.ids)
        msg = f"{pred.prompt.n_tokens} tokens, entropy {pred.entropy_bits:.2f} bits"
        if pred.prompt.truncated:
            set_notice(self.info, f"{msg}. The prompt is longer than the context ({self.model.config.block_size}): "
                                  f"the first {pred.prompt.dropped} tokens were dropped.", "warning")
        else:
            set_notice(self.info, msg)

    def _show(self, labels, probs, ids) -> None:
        # Factors first, then data, so the browser never sees bars for unknown categories.
        self.figure.y_range.factors = list(reversed(labels))
        self.source.data = dict(label=labels, prob=probs, id=ids, pct=[f"{p:.2%}" for p in probs])
        self.figure.x_range.end = max([0.05, *probs]) * 1.1

    def sample(self) -> None:
        """Sample a continuation of the prompt with the chosen temperature, length and seed."""
        try:
            c = sample_continuation(self.model, self.prompt.value, self.max_new.value, self.temperature.value,
                                    self.seed.value)
        except ModelError as e:
            self.continuation.value = f'<span style="color:#b00020">{html.escape(str(e))}</span>'
            return
        shown = self.model.tokenizer.decode(c.prompt.ids)
        self.continuation.value = (
            '<pre style="white-space:pre-wrap">'
            f'<span style="color:#888">{html.escape(shown[-300:])}</span><b>{html.escape(c.text)}</b></pre>'
        )
        self.last_continuation = c

    @property
    def bars(self) -> list[tuple[str, float]]:
        """(label, probability) pairs currently drawn."""
        return list(zip(self.source.data["label"], self.source.data["prob"]))
