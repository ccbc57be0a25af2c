"""Playground: type a prompt, watch the next-token distribution, sample a continuation.

Ids the model scores but its tokenizer cannot decode (a padded vocabulary, as in Pythia, Qwen or Phi) appear as
grey bars labelled ``<id N>``; the "never sample ids without text" box masks them from sampling (off by default,
as HF ``generate``; it is disabled when every model id has text).

Lesson: ``notebooks/00_tour.ipynb`` (The playground), ``notebooks/01_tokenization.ipynb`` (5. Byte vs BPE models).
"""
from __future__ import annotations

import html

import ipywidgets as W
from bokeh.models import ColumnDataSource, FactorRange, HoverTool
from bokeh.plotting import figure

from workbench.models.predict import next_token, sample_continuation

from .base import Debouncer, WorkbenchWidget, bokeh_pane, notice, set_notice


_BLUE, _GREY = "#4C72B0", "#AAAAAA"
_STALE = "#a66300"


class Playground(WorkbenchWidget):
    """A prompt box with a live top-``k`` next-token bar chart and a "Sample" button; works with any workbench model.

    The bars are the distribution the first sampled token is drawn from: the model's at the chosen temperature (and
    without ids that have no text when that box is ticked); black outlines show the model's own probabilities
    (T = 1) for comparison, so moving the temperature slider reshapes the bars.

    ``debounce`` is the pause (seconds) after typing before the chart updates; 0 updates on every change.
    ``width`` (pixels) is the widget's width; ``compact=True`` makes it 420 px (one control per line), so two fit
    side by side in a notebook column of about 900 px (see :func:`widgets.side_by_side`).
    """

    def __init__(self, model, prompt: str = "The for statement", k: int = 10, debounce: float = 0.25,
                 max_new_tokens: int = 80, seed: int = 0, temperature: float = 0.8, width: int | None = None,
                 compact: bool = False):
        self.model, self.k = model, k
        self.compact = bool(compact)
        width = int(width or (420 if compact else 600))
        self.width = width
        self._summary = f"model={getattr(model, 'name', type(model).__name__)!r}, k={k}"
        self.prediction = None
        self.last_continuation = None
        label = {"description_width": "initial"}
        self.prompt = W.Textarea(value=prompt, placeholder="Type a prompt…", continuous_update=True,
                                 layout=W.Layout(width="auto", align_self="stretch", height="70px"))
        self.info = notice()
        self.source = ColumnDataSource(dict(label=[], prob=[], model_prob=[], id=[], pct=[], model_pct=[], color=[]))
        fig = figure(height=300, width=width - 10, y_range=FactorRange(), x_range=(0, 1), toolbar_location=None,
                     title="Next-token probabilities", x_axis_label="probability")
        fig.hbar(y="label", right="prob", height=0.8, source=self.source, color="color")
        fig.hbar(y="label", right="model_prob", height=0.8, source=self.source, fill_alpha=0.0,
                 line_color="black", line_width=1)
        fig.add_tools(HoverTool(tooltips=[("token", "@label"), ("id", "@id"), ("p at this T", "@pct"),
                                          ("p at T = 1", "@model_pct")]))
        fig.title.text_font_size = "11px"
        fig.y_range.factors = []
        self.figure = fig
        self.chart = bokeh_pane(fig)
        no_shrink = dict(flex="0 0 auto")
        slider_w = f"{width - 20}px" if compact else f"{(width - 30) // 2}px"
        self.temperature = W.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05, description="temperature",
                                         style=label, layout=W.Layout(width=slider_w, **no_shrink),
                                         tooltip="divides the logits before the softmax: 0 is greedy, 1 the model's "
                                                 "own distribution")
        self.max_new = W.IntSlider(value=max_new_tokens, min=1, max=min(256, model.config.block_size - 1),
                                   description="new tokens", style=label,
                                   layout=W.Layout(width=slider_w, **no_shrink))
        self.seed = W.IntText(value=seed, description="seed", style=label, layout=W.Layout(width="140px", **no_shrink))
        tok = getattr(model, "tokenizer", None)
        n_bad = len(tok.undecodable_ids(model.config.vocab_size)) if tok is not None else 0
        self.mask_undecodable = W.Checkbox(
            value=False, description="never sample ids without text", disabled=n_bad == 0, indent=False,
            style=label, layout=W.Layout(width="auto", **no_shrink),
            tooltip=(f"{n_bad} of the model's {model.config.vocab_size} ids have no text in its tokenizer"
                     if n_bad else "every id of this model has text"))
        self.sample_button = W.Button(description="Sample", button_style="primary", icon="play",
                                      tooltip="sample a continuation with this temperature, length and seed",
                                      layout=W.Layout(width="auto", min_width="100px", **no_shrink))
        # width auto + stretch, not 100%: ipywidgets adds a 2 px margin each side, and 100% + 4 px overflows the
        # box (a horizontal scrollbar under the Playground wherever scrollbars are not overlays)
        self.continuation = W.HTML(layout=W.Layout(width="auto", align_self="stretch"))
        self.sample_button.on_click(lambda _: self.sample())
        self._debouncer = Debouncer(self.refresh, debounce)
        self.prompt.observe(self._on_prompt, names="value")
        self.temperature.observe(self._on_setting, names="value")
        self.mask_undecodable.observe(self._on_setting, names="value")
        self.max_new.observe(lambda ch: self._mark_stale(), names="value")
        self.seed.observe(lambda ch: self._mark_stale(), names="value")
        row = W.Layout(flex_flow="row wrap", align_items="center", width="100%")
        controls = [W.HBox([self.temperature, self.max_new], layout=row),
                    W.HBox([self.seed, self.sample_button, self.mask_undecodable], layout=row),
                    W.HBox([self.export_controls()], layout=row)]
        super().__init__(children=[self.prompt, self.info, self.chart, *controls, self.continuation],
                         layout=W.Layout(width=f"{width}px", max_width="100%"))
        self.refresh()

    # -- wiring -----------------------------------------------------------------------------------------------

    def _on_prompt(self, change) -> None:
        self._clear_sample()  # a sample of another prompt must not sit under this prompt's chart
        self._debouncer.trigger()

    def _on_setting(self, change) -> None:
        self._mark_stale()
        self._debouncer.trigger()

    def _clear_sample(self) -> None:
        self.continuation.value = ""
        self.last_continuation = None

    def _mark_stale(self) -> None:
        """Keep the last sample visible but say it was made with other settings."""
        c = self.last_continuation
        if c is None or getattr(self, "_stale", False):
            return
        self._stale = True
        self.continuation.value = (
            f'<div style="color:{_STALE}">Settings changed since this sample (T = {c.temperature:g}, seed {c.seed}, '
            f'{len(c.ids)} tokens): click Sample for a new one.</div>'
            f'<div style="opacity:0.5">{self._sample_html}</div>')

    # -- next-token chart -------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Recompute the next-token distribution for the current prompt and settings and redraw the bars.

        Any failure (a prompt that is not valid Unicode, a model error, a bug) clears the bars and says what went
        wrong in the notice; the next good input draws again."""
        try:
            self._refresh()
        except Exception as e:  # noqa: BLE001 - every failure reaches the notice, never only the log console
            self.prediction = None
            self._show_bars(None)
            set_notice(self.info, f"Cannot predict for this prompt: {type(e).__name__}: {e}", "error")

    def _refresh(self) -> None:
        text = self.prompt.value
        if not text:
            self.prediction = None
            self._show_bars(None)
            set_notice(self.info, "Type a prompt to see what the model predicts next.")
            return
        t = self.temperature.value
        pred = next_token(self.model, text, self.k, temperature=t,
                          mask_undecodable=bool(self.mask_undecodable.value))
        self.prediction = pred
        self._show_bars(pred)
        msg = f"{pred.prompt.n_tokens} tokens; sampling entropy {pred.entropy_bits:.2f} bits at T = {t:g}"
        if t == 0:
            msg += " (greedy: only the top token can be sampled)"
        if pred.decodable is not None and not all(pred.decodable):
            msg += (f"; grey bars <id N> are ids without text in the tokenizer (padding), "
                    f"{pred.undecodable_mass:.1%} of the model's probability in all")
        if pred.masked and pred.undecodable_mass:
            msg += "; ids without text are masked, so their bars are 0"
        if pred.prompt.truncated:
            set_notice(self.info, f"{msg}. The prompt is longer than the context ({self.model.config.block_size}): "
                                  f"the first {pred.prompt.dropped} tokens were dropped.", "warning")
        else:
            set_notice(self.info, msg + ".")

    def _show_bars(self, pred) -> None:
        """Draw ``pred`` (a :class:`~workbench.models.predict.NextToken`), or clear the chart when it is None."""
        if pred is None:
            labels, probs, model_probs, ids, decodable = [], [], [], [], []
            self.figure.title.text = "Next-token probabilities"
        else:
            labels = [f"{r + 1}. {lab}" for r, lab in enumerate(pred.labels)]
            probs, model_probs, ids = pred.probs, pred.model_probs, pred.ids
            decodable = pred.decodable if pred.decodable is not None else [True] * len(ids)
            self.figure.title.text = (f"Next token: bars at T = {pred.temperature:g}"
                                      f"{', masked' if pred.masked else ''}; outlines at T = 1 (the model)")
        # Factors first, then data, so the browser never sees bars for unknown categories.
        self.figure.y_range.factors = list(reversed(labels))
        self.source.data = dict(label=labels, prob=list(probs), model_prob=list(model_probs), id=list(ids),
                                pct=[f"{p:.2%}" for p in probs], model_pct=[f"{p:.2%}" for p in model_probs],
                                color=[_BLUE if d else _GREY for d in decodable])
        self.figure.x_range.end = min(1.0, max([0.05, *probs, *model_probs]) * 1.1) if probs else 1.0

    # -- sampling ---------------------------------------------------------------------------------------------

    def sample(self) -> None:
        """Sample a continuation of the prompt with the chosen temperature, length and seed."""
        self._stale = False
        try:
            c = sample_continuation(self.model, self.prompt.value, self.max_new.value, self.temperature.value,
                                    self.seed.value, mask_undecodable=bool(self.mask_undecodable.value))
            context = self.model.tokenizer.decode_segments(c.prompt.ids)
        except Exception as e:  # noqa: BLE001 - every failure reaches the page (ModelError, TokenizerError, ...)
            self.last_continuation = None
            self.continuation.value = (f'<span style="color:#b00020">Cannot sample: '
                                       f'{html.escape(f"{type(e).__name__}: {e}")}</span>')
            return
        self.last_continuation = c
        self._sample_html = (
            '<pre style="white-space:pre-wrap;margin:4px 0">'
            f'<span style="color:#888">{_segments_html(_tail(context, 300))}</span>'
            f'<b>{_segments_html(c.segments or [("text", c.text)])}</b></pre>')
        note = ""
        if c.invalid_bytes:
            note = (f'<div style="color:{_STALE};font-size:12px">{c.invalid_bytes} of the sampled bytes are not valid '
                    "UTF-8, shown as <span style=\"" + _BYTES_STYLE + "\">&lt;0xNN&gt;</span>: this model picks "
                    "text a byte (or byte piece) at a time and can emit a byte that no character starts with, or stop "
                    "in the middle of a character. Decoded as text they would print as \ufffd (U+FFFD).</div>")
        self.continuation.value = self._sample_html + note

    def export_state(self) -> dict:
        """Exported with the data: the prompt and settings, and the last sampled continuation."""
        c = getattr(self, "last_continuation", None)
        return {"model": getattr(self.model, "name", type(self.model).__name__), "prompt": self.prompt.value,
                "k": self.k, "temperature": self.temperature.value, "masked": bool(self.mask_undecodable.value),
                "continuation": None if c is None else c.text,
                "continuation_segments": None if c is None else [list(x) for x in c.segments or ()]}

    @property
    def bars(self) -> list[tuple[str, float]]:
        """(label, probability) pairs currently drawn."""
        return list(zip(self.source.data["label"], self.source.data["prob"]))

    def next_byte_view(self, byte_model=None, **kwargs):
        """The "next byte" view of this prompt (:class:`widgets.next_byte.NextByteView`: naive next-token bars, exact
        next-byte bars, a byte model's bars), its prompt box linked to this one."""
        from .next_byte import NextByteView

        view = NextByteView(self.model, byte_model, prompt=self.prompt.value, **kwargs)
        W.link((self.prompt, "value"), (view.prompt, "value"))
        return view


_BYTES_STYLE = "color:#b00020;background:#fde8e8;border-radius:2px"


def _segments_html(segments) -> str:
    """HTML for ``(kind, text)`` pieces (see ``Tokenizer.decode_segments``): text as is, bytes that are not valid
    UTF-8 in red, placeholders ``<id N>`` in grey."""
    out = []
    for kind, text in segments:
        t = html.escape(text)
        if kind == "bytes":
            out.append(f'<span style="{_BYTES_STYLE}" title="bytes that are not valid UTF-8">{t}</span>')
        elif kind == "id":
            out.append(f'<span style="color:#888" title="an id without text in the tokenizer">{t}</span>')
        else:
            out.append(t)
    return "".join(out)


def _tail(segments, n: int):
    """The last ``n`` characters of ``segments``, as segments."""
    out, left = [], n
    for kind, text in reversed(segments):
        if left <= 0:
            break
        out.append((kind, text[-left:]))
        left -= len(text)
    return list(reversed(out))
