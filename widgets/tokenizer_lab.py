"""TokenizerLab: type text, see 1-4 tokenizers cut it side by side, and scrub through a BPE's merges.

The widget only draws. Segmentations come from each tokenizer's ``spans``, statistics from
:func:`workbench.tokenizers.measure`, the "cut differently" outlines from
:func:`workbench.tokenizers.experiments.crossing_spans` (tokens another tokenizer cuts across, not every token that
merely splits into or merges from the others' tokens), and the scrubber from
:meth:`BPETokenizer.encode_at` / :meth:`BPETokenizer.pair_counts_at`.

Tokens are drawn as unbreakable boxes (a line wraps between tokens, never inside one unless a single token is wider
than its column), and tokenizer columns are separated by a gutter. Any error while drawing (text that is not valid
Unicode, a tokenizer that fails) clears the view and says why in the notice; the next good text draws again.

Long text: only the first ``max_view_chars`` characters are drawn as spans (a notice says so), while
the statistics are computed over the whole text, so a pasted megabyte never builds a megabyte of HTML.

Lesson: ``notebooks/01_tokenization.ipynb`` (1. Train a BPE and watch it).
"""
from __future__ import annotations

import html
from typing import Mapping, Optional, Sequence, Union

import ipywidgets as W
from bokeh.models import ColumnDataSource, FactorRange, HoverTool
from bokeh.plotting import figure

from workbench.tokenizers import BPETokenizer, Tokenizer, TokenizerError, TokenSpan, measure, printable
from workbench.tokenizers.base import check_text
from workbench.tokenizers.experiments import crossing_spans

from .base import Debouncer, WorkbenchWidget, bokeh_pane, notice, set_notice

# Alternating pastel backgrounds: neighbouring tokens always differ in colour.
PALETTE = ("#cfe8ff", "#ffe3b8", "#d6f5d0", "#f5d0f0", "#fff5b0", "#d9d4ff")
DISAGREE_STYLE = "outline:2px solid #d62728;outline-offset:-1px;"
METRICS = ("n_tokens", "bytes_per_token", "fertility", "split_word_share", "vocab_used")
DEFAULT_TEXT = (
    "Tokenizers cut text into pieces.\n"
    "    def add(a, b):\n        return a + b  # 1234567 + 89 = 1234656\n"
    "Unicode too: café, naïve, 東京, 🙂\n"
)


def tokenizer_name(tok: Tokenizer) -> str:
    """A short label: ``"byte"``, ``"bpe-1024 (gpt2)"`` or the wrapped HF tokenizer's name."""
    if isinstance(tok, BPETokenizer):
        digits = f", digits {tok.digits}" if tok.digits != "none" else ""
        pattern = tok.pattern if len(tok.pattern) < 12 else "custom"
        return f"bpe-{tok.vocab_size} ({pattern}{digits})"
    return getattr(tok, "name", None) or getattr(tok, "kind", None) or type(tok).__name__


def _piece_label(raw: bytes) -> str:
    """Visible text of one token's bytes: whitespace shown (``·``, ``⏎``, ``⇥``), a partial UTF-8
    character as ``<0xNN>`` bytes."""
    try:
        return printable(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "".join(f"<0x{b:02X}>" for b in raw)


# Each token is an inline-block: the line wraps between tokens, never inside one (``<0xC`` / ``3>``), unless one token
# alone is wider than the column (then it breaks rather than overflow).
_CSS = ("<style>.wbtok span{display:inline-block;max-width:100%;overflow-wrap:anywhere;vertical-align:top;"
        "border-radius:2px;padding:0 1px;margin:0 1px 2px 0}"
        + "".join(f".wbtok .c{k}{{background:{c}}}" for k, c in enumerate(PALETTE))
        + f".wbtok .d{{{DISAGREE_STYLE}}}</style>")


def spans_html(data: bytes, spans, disagree: frozenset | set = frozenset(), tok: Optional[Tokenizer] = None) -> str:
    """HTML for one segmentation: a coloured ``<span>`` per token with a hover title (id, token and
    bytes), whitespace made visible, a line break after each token holding a newline, and class ``d`` (a red outline)
    on spans in ``disagree``. Styles live in one ``<style>`` block so each span stays short; a token is never split
    across lines."""
    out = [_CSS, '<div class="wbtok" style="font-family:monospace;font-size:12px;line-height:1.5;'
           'white-space:normal;overflow-wrap:normal">']
    esc = html.escape
    for k, s in enumerate(spans):
        raw = data[s.start:s.end]
        name = ""
        if tok is not None:
            try:
                name = " " + tok.token_str(s.id)
            except (TokenizerError, ValueError, IndexError):
                name = ""
        title = f"id {s.id}{name} | bytes {raw.hex(' ')}"
        cls = f"c{k % len(PALETTE)} d" if (s.start, s.end) in disagree else f"c{k % len(PALETTE)}"
        out.append(f'<span class="{cls}" title="{esc(title)}">{esc(_piece_label(raw))}</span>')
        if b"\n" in raw:  # keep the text's line structure (a token may be a newline plus indentation)
            out.append("<br>")
    out.append("</div>")
    return "".join(out)


class TokenizerLab(WorkbenchWidget):
    """Side-by-side tokenizer view with metrics and a merge scrubber.

    ``tokenizers``: one to four tokenizers, as a list or a ``{name: tokenizer}`` dict. ``scrub``: the
    BPE whose merges the scrubber walks (default: the first BPE given, if any). ``debounce``: seconds
    after the last keystroke before re-tokenising (0 = at once). ``max_view_chars``: how much of a long
    text is drawn as spans.
    """

    def __init__(self, tokenizers: Union[Sequence[Tokenizer], Mapping[str, Tokenizer]], text: str = DEFAULT_TEXT,
                 sample: Optional[str] = None, scrub: Optional[BPETokenizer] = None, debounce: float = 0.25,
                 max_view_chars: int = 4000, top_pairs: int = 10):
        if isinstance(tokenizers, Mapping):
            named = dict(tokenizers)
        else:
            named = {}
            for t in tokenizers:
                base = name = tokenizer_name(t)
                k = 2
                while name in named:
                    name, k = f"{base} #{k}", k + 1
                named[name] = t
        if not 1 <= len(named) <= 4:
            raise ValueError(f"TokenizerLab shows 1 to 4 tokenizers, got {len(named)}")
        for n, t in named.items():
            if not isinstance(t, Tokenizer):
                raise TypeError(f"{n!r} is not a workbench Tokenizer (got {type(t).__name__}); wrap HF tokenizers "
                                "with workbench.tokenizers.HFTokenizer")
        if max_view_chars < 1:
            raise ValueError(f"max_view_chars must be >= 1, got {max_view_chars}")
        self.tokenizers = named
        self.names = list(named)
        self.max_view_chars = max_view_chars
        self.top_pairs = top_pairs
        self._summary = f"tokenizers={self.names!r}"

        # -- live view
        self.text = W.Textarea(value=text, placeholder="Type or paste text…", continuous_update=True,
                               layout=W.Layout(width="auto", align_self="stretch", height="110px"))
        self.info = notice()
        # width auto + stretch, not 100%: 100% plus ipywidgets' 2 px margins overflows its box by 4 px
        self.views = {n: W.HTML(layout=W.Layout(width="auto", align_self="stretch")) for n in self.names}
        # equal columns that may shrink (min_width 0) and a gutter: padding plus a rule between neighbours
        columns = [W.VBox([W.HTML(f"<b>{html.escape(n)}</b>"), self.views[n]],
                          layout=W.Layout(flex="1 1 0", min_width="0", padding="0 8px" if k else "0 8px 0 0",
                                          border_left="1px solid #ccc" if k else ""))
                   for k, n in enumerate(self.names)]
        self.table = W.HTML()
        self.metrics_source = ColumnDataSource({"name": [], **{m: [] for m in METRICS}})
        fig = figure(height=220, width=420, x_range=FactorRange(*self.names), toolbar_location=None,
                     title="UTF-8 bytes per token (higher = better compression)")
        fig.vbar(x="name", top="bytes_per_token", width=0.7, source=self.metrics_source, color="#4C72B0")
        fig.add_tools(HoverTool(tooltips=[("tokenizer", "@name"), ("tokens", "@n_tokens"),
                                          ("bytes/token", "@bytes_per_token{0.00}"),
                                          ("tokens/word", "@fertility{0.00}")]))
        fig.y_range.start = 0
        fig.xaxis.major_label_orientation = 0.4
        self.metrics_figure = fig
        self.span_data: dict = {}
        self.stats: dict = {}
        self._debouncer = Debouncer(self.refresh, debounce)
        self.text.observe(lambda ch: self._debouncer.trigger(), names="value")
        wrap = W.Layout(flex_flow="row wrap", align_items="flex-start", width="100%")
        self.columns = W.HBox(columns, layout=W.Layout(width="100%"))
        children = [self.text, W.HBox([self.export_controls(), self.info], layout=wrap), self.columns,
                    W.HBox([self.table, bokeh_pane(fig)], layout=wrap)]

        # -- merge scrubber
        self.scrub_tokenizer = scrub if scrub is not None else next(
            (t for t in named.values() if isinstance(t, BPETokenizer)), None)
        self.merge_slider = None
        if self.scrub_tokenizer is not None:
            if not isinstance(self.scrub_tokenizer, BPETokenizer):
                raise TypeError("scrub must be a BPETokenizer")
            n = len(self.scrub_tokenizer.merges)
            self.sample = W.Textarea(value=sample if sample is not None else text[:400], continuous_update=True,
                                     layout=W.Layout(width="auto", align_self="stretch", height="60px"))
            self.merge_slider = W.IntSlider(value=n, min=0, max=n, description="merges applied",
                                            continuous_update=True, style={"description_width": "initial"},
                                            layout=W.Layout(width="auto", align_self="stretch"))
            self.merge_info = W.HTML()
            self.scrub_view = W.HTML(layout=W.Layout(width="400px", margin="0 16px 0 0"))
            self.pairs_source = ColumnDataSource(dict(pair=[], count=[]))
            pf = figure(height=260, width=460, y_range=FactorRange(), toolbar_location=None,
                        title="Most frequent adjacent pairs in the sample at this step")
            pf.hbar(y="pair", right="count", height=0.8, source=self.pairs_source, color="#DD8452")
            pf.add_tools(HoverTool(tooltips=[("pair", "@pair"), ("count", "@count")]))
            pf.x_range.start = 0
            self.pairs_figure = pf
            self._scrub_debouncer = Debouncer(self.refresh_scrubber, debounce)
            self.merge_slider.observe(lambda ch: self._scrub_debouncer.trigger(), names="value")
            self.sample.observe(lambda ch: self._scrub_debouncer.trigger(), names="value")
            children += [W.HTML("<b>Merge scrubber</b> (BPE training replayed merge by merge on a sample)"),
                         self.sample, self.merge_slider, self.merge_info,
                         W.HBox([self.scrub_view, bokeh_pane(pf)], layout=wrap)]
        super().__init__(children=children)
        self.refresh()
        if self.merge_slider is not None:
            self.refresh_scrubber()

    # -- live view -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-tokenise the text: spans for the visible window, statistics for the whole text.

        Any failure clears the spans, the table and the chart and says why in the notice (never only in the log)."""
        try:
            self._refresh()
        except Exception as e:  # noqa: BLE001 - every failure reaches the notice
            self._clear()
            msg = str(e) if isinstance(e, TokenizerError) else f"{type(e).__name__}: {e}"
            set_notice(self.info, f"Cannot tokenize this text: {msg}", "error")

    def _clear(self) -> None:
        self.span_data, self.stats = {}, {}
        for view in self.views.values():
            view.value = ""
        self.table.value = ""
        self.metrics_source.data = {"name": [], **{m: [] for m in METRICS}}

    def _refresh(self) -> None:
        text = self.text.value
        check_text(text)  # a lone surrogate (a bad paste) is named with its position
        window = text[: self.max_view_chars]
        data = window.encode("utf-8")
        spans = {}
        for n, tok in self.tokenizers.items():
            try:
                spans[n] = tok.spans(window)
            except TokenizerError as e:
                raise TokenizerError(f"{n}: {e}") from e
        cross = crossing_spans(list(spans.values()))
        stats = {n: measure(tok, text) for n, tok in self.tokenizers.items()}
        self.span_data = {n: [(s.id, s.start, s.end, (s.start, s.end) in cross) for s in sp]
                          for n, sp in spans.items()}
        for n, tok in self.tokenizers.items():
            self.views[n].value = spans_html(data, spans[n], cross, tok)
        self.stats = stats
        self._draw_metrics()
        msg = f"{len(text):,} characters, {len(text.encode('utf-8')):,} bytes."
        if len(self.tokenizers) > 1:
            counts = [sum(d for *_, d in self.span_data[n]) for n in self.names]
            shown = ", ".join(f"{c} of {len(self.span_data[n])} in {n}" for c, n in zip(counts, self.names))
            msg += (f" Red outlines: tokens another tokenizer cuts across ({shown}); a token that only splits into, "
                    "or merges, the others' tokens is not outlined.")
        if len(text) > len(window):
            set_notice(self.info, f"{msg} Long text: showing the first {len(window):,} of {len(text):,} characters; "
                                  "the statistics cover the whole text.", "warning")
        else:
            set_notice(self.info, msg)

    def _draw_metrics(self) -> None:
        rows = [self.stats[n] for n in self.names]
        self.metrics_source.data = {"name": list(self.names), **{m: [getattr(s, m) for s in rows] for m in METRICS}}
        first = rows[0].n_tokens
        head = ("<tr><th>tokenizer</th><th>tokens</th><th>vs first</th><th>bytes/token</th>"
                "<th>tokens/word</th><th>words split</th><th>vocab used</th></tr>")
        body = []
        for n, s in zip(self.names, rows):
            rel = f"{s.n_tokens / first:.2f}x" if first else "-"
            body.append(f"<tr><td>{html.escape(n)}</td><td>{s.n_tokens:,}</td><td>{rel}</td>"
                        f"<td>{s.bytes_per_token:.2f}</td><td>{s.fertility:.2f}</td>"
                        f"<td>{s.split_word_share:.0%}</td><td>{s.vocab_used:,} ({s.vocab_utilisation:.0%})</td></tr>")
        self.table.value = ('<table style="font-size:12px;border-collapse:collapse" cellpadding="3">'
                            + head + "".join(body) + "</table>")

    def export_state(self) -> dict:
        """Exported with the data: each tokenizer's statistics and segmentation (id, start, end, cut differently)
        of the shown text, and the scrubber's merge step and token ids."""
        return {"text": self.text.value, "tokenizers": self.names, "stats": self.stats,
                "segmentations": {n: [dict(id=i, start=a, end=b, disagree=d) for i, a, b, d in sp]
                                  for n, sp in self.span_data.items()},
                "merges": None if self.merge_slider is None else self.merge_slider.value,
                "scrub_ids": list(getattr(self, "scrub_ids", []))}

    # -- merge scrubber ---------------------------------------------------------------------------

    def refresh_scrubber(self) -> None:
        """Re-segment the sample with the first ``merge_slider.value`` merges and redraw the pair counts."""
        try:
            self._refresh_scrubber()
        except Exception as e:  # noqa: BLE001 - every failure reaches the merge notice
            self.scrub_ids = []
            self.scrub_view.value = ""
            self.pairs_figure.y_range.factors = []
            self.pairs_source.data = dict(pair=[], count=[])
            msg = str(e) if isinstance(e, TokenizerError) else f"{type(e).__name__}: {e}"
            set_notice(self.merge_info, f"Cannot replay the merges on this sample: {msg}", "error")

    def _refresh_scrubber(self) -> None:
        tok, k = self.scrub_tokenizer, self.merge_slider.value
        sample = self.sample.value[: self.max_view_chars]
        ids = tok.encode_at(sample, k)
        spans, pos = [], 0
        for i, n in zip(ids, tok.token_lengths(ids)):
            spans.append(TokenSpan(i, pos, pos + n))
            pos += n
        self.scrub_ids = ids
        self.scrub_view.value = spans_html(sample.encode("utf-8"), spans, tok=tok)
        pairs = tok.pair_counts_at(sample, k, self.top_pairs)
        labels = [f"{_piece_label(a)} + {_piece_label(b)}" for a, b, _ in pairs]
        # Several byte pairs can print alike (e.g. two partial characters): keep factors unique.
        seen: dict = {}
        for j, lab in enumerate(labels):
            if lab in seen:
                labels[j] = f"{lab} ({j})"
            seen[lab] = j
        self.pairs_figure.y_range.factors = list(reversed(labels))
        self.pairs_source.data = dict(pair=labels, count=[c for _, _, c in pairs])
        if k == 0:
            last = "no merges applied: every token is one byte"
        else:
            m = tok.trace[k - 1] if len(tok.trace) >= k else None
            a, b, new = tok.merges[k - 1]
            what = (f"{_piece_label(tok.vocab[a])} + {_piece_label(tok.vocab[b])} -> "
                    f"{_piece_label(tok.vocab[new])}")
            last = f"merge {k}: {what}" + (f", seen {m.count:,} times in training" if m is not None else "")
        self.merge_info.value = (f"{html.escape(last)}. Sample: {len(ids):,} tokens for "
                                 f"{len(sample.encode('utf-8')):,} bytes.")

