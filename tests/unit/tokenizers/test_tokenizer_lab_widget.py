"""TokenizerLab driven from Python: set traits, then check the spans, HTML, data sources and notices."""
import asyncio
import re

import pytest

from workbench.tokenizers import BPETokenizer, ByteTokenizer, measure

pytest.importorskip("ipywidgets")
from widgets.tokenizer_lab import TokenizerLab  # noqa: E402


@pytest.fixture(scope="module")
def bpe(docs_text):
    return BPETokenizer.train(docs_text[:60_000], 512, progress=False)


@pytest.fixture(scope="module")
def bpe_r2l(docs_text):
    return BPETokenizer.train(docs_text[:60_000], 512, pattern="gpt4", digits="r2l3", progress=False)


def _titles(html):
    return re.findall(r'title="([^"]*)"', html)


def test_spans_cover_text_and_hover_shows_id_and_bytes(bpe):
    text = "The for statement\n\tx = 12345 é"
    w = TokenizerLab([ByteTokenizer(), bpe], text=text, debounce=0)
    data = text.encode()
    for name, tok in zip(w.names, [ByteTokenizer(), bpe]):
        spans = w.span_data[name]
        assert [i for i, *_ in spans] == tok.encode(text)
        assert b"".join(data[a:b] for _, a, b, _ in spans) == data
        titles = _titles(w.views[name].value)
        assert len(titles) == len(spans)
        first_id, a, b, _ = spans[0]
        assert titles[0].startswith(f"id {first_id} ") and data[a:b].hex(" ") in titles[0]
    # whitespace made visible, newline also breaks the line
    html = w.views[w.names[1]].value
    assert "·" in html and "⏎" in html and "⇥" in html and "<br>" in html


def test_cut_differently_marks_only_crossing_tokens(bpe, bpe_r2l):
    # a byte tokenizer refines every BPE: nothing is cut *across*, so nothing is outlined
    w = TokenizerLab({"a": bpe, "b": ByteTokenizer()}, text="the the", debounce=0)
    assert not any(d for name in "ab" for *_, d in w.span_data[name])
    assert ' d"' not in w.views["a"].value and "0 of" in w.info.value
    same = TokenizerLab({"x": bpe, "y": bpe}, text="the the", debounce=0)
    assert not any(d for _, _, _, d in same.span_data["x"]) and ' d"' not in same.views["x"].value
    # digits: l2r 3-chunks against r2l 3-chunks cut across each other; the outlined tokens are exactly the core's
    text = "x = 1234567"
    digits = "1234567 7654321 " * 50
    w = TokenizerLab({"l2r": BPETokenizer.train(digits, 300, digits="l2r3", progress=False),
                      "r2l": BPETokenizer.train(digits, 300, digits="r2l3", progress=False)}, text=text, debounce=0)
    data = text.encode()
    from workbench.tokenizers.experiments import crossing_spans

    want = crossing_spans([w.tokenizers[n].spans(text) for n in w.names])
    for n in w.names:
        marked = [(a, b) for _, a, b, d in w.span_data[n] if d]
        assert set(marked) == {(a, b) for _, a, b, _ in w.span_data[n]} & want and marked
        assert all(data[a:b].strip().isdigit() for a, b in marked)
        assert w.views[n].value.count(' d"') == len(marked)


def _marked_share(w):
    return {n: sum(d for *_, d in sp) / len(sp) for n, sp in w.span_data.items()}


def test_cut_differently_singles_out_a_minority(bpe, bpe_r2l, docs_text):
    from widgets.tokenizer_lab import DEFAULT_TEXT

    w = TokenizerLab([ByteTokenizer(), bpe, bpe_r2l], debounce=0)
    assert w.text.value == DEFAULT_TEXT
    share = _marked_share(w)
    assert sum(sum(d for *_, d in sp) for sp in w.span_data.values()) > 0  # something is singled out
    assert all(v < 0.1 for v in share.values()), share  # was 85 of 140 with "not shared by all"
    w.text.value = docs_text[200_000:220_000]  # a long paste
    share = _marked_share(w)
    assert all(v < 0.1 for v in share.values()), share
    assert "Red outlines: tokens another tokenizer cuts across" in w.info.value


def test_typing_updates_view_and_metrics(bpe):
    w = TokenizerLab([ByteTokenizer(), bpe], text="hello", debounce=0)
    new = "def f(x):\n    return x * 2\n"
    w.text.value = new
    src = w.metrics_source.data
    assert src["name"] == w.names
    assert src["n_tokens"] == [len(new.encode()), len(bpe.encode(new))]
    assert src["bytes_per_token"][1] == pytest.approx(measure(bpe, new).bytes_per_token)
    assert src["fertility"][1] == pytest.approx(measure(bpe, new).fertility)
    assert w.names[1] in w.table.value and f"{len(bpe.encode(new)):,}" in w.table.value
    assert [i for i, *_ in w.span_data[w.names[1]]] == bpe.encode(new)


def test_typing_is_debounced_inside_an_event_loop(bpe):
    w = TokenizerLab([bpe], text="hello", debounce=5.0)

    async def type_and_check():
        w.text.value = "hello world, again and again"
        before = list(w.metrics_source.data["n_tokens"])
        w._debouncer.flush()
        return before, list(w.metrics_source.data["n_tokens"])

    before, after = asyncio.run(type_and_check())
    assert before == [len(bpe.encode("hello"))]
    assert after == [len(bpe.encode("hello world, again and again"))]


def test_long_text_shows_a_window_but_measures_everything(bpe, docs_text):
    big = (docs_text * 3)[:1_000_000]
    w = TokenizerLab([bpe], text="short", debounce=0, max_view_chars=3000)
    small_html = None
    w.text.value = big[:20_000]
    small_html = len(w.views[w.names[0]].value)
    w.text.value = big  # its time (< 30 s) is measured by `python -m workbench.bench tokenizers`
    assert "showing the first 3,000 of 1,000,000 characters" in w.info.value
    assert w.stats[w.names[0]].n_chars == 1_000_000
    assert w.metrics_source.data["n_tokens"] == [len(bpe.encode(big))]
    assert w.span_data[w.names[0]][-1][2] <= len(big[:3000].encode())
    assert len(w.views[w.names[0]].value) == small_html  # the drawn part does not grow with the text


def test_scrubber_replays_merges(bpe, docs_text):
    sample = docs_text[:1500]
    w = TokenizerLab([bpe], text="x", sample=sample, debounce=0)
    n = len(bpe.merges)
    assert w.merge_slider.max == n and w.merge_slider.value == n
    assert w.scrub_ids == bpe.encode(sample)
    w.merge_slider.value = 0
    assert len(w.scrub_ids) == len(sample.encode())
    assert "no merges applied" in w.merge_info.value
    w.merge_slider.value = 5
    assert w.scrub_ids == bpe.encode_at(sample, 5)
    a, b, new = bpe.merges[4]
    assert "merge 5:" in w.merge_info.value and f"{bpe.trace[4].count:,} times" in w.merge_info.value
    counts = bpe.pair_counts_at(sample, 5, 10)
    assert w.pairs_source.data["count"] == [c for *_, c in counts]
    assert list(reversed(w.pairs_figure.y_range.factors)) == w.pairs_source.data["pair"]


def test_scrubber_on_training_text_shows_the_next_merge_on_top():
    text = "low lower lowest newest widest " * 30
    tok = BPETokenizer.train(text, 270, progress=False)
    w = TokenizerLab([tok], text="x", sample=text, debounce=0)
    for k in (0, 3, 7):
        w.merge_slider.value = k
        a, b, _ = tok.merges[k]
        left, right = (s.strip() for s in w.pairs_source.data["pair"][0].split(" + "))
        assert (left, right) == (tok.token_str(a), tok.token_str(b))


def test_scrubber_absent_without_bpe_and_bad_input():
    w = TokenizerLab([ByteTokenizer()], text="abc", debounce=0)
    assert w.merge_slider is None
    with pytest.raises(ValueError, match="1 to 4"):
        TokenizerLab([], debounce=0)
    with pytest.raises(ValueError, match="1 to 4"):
        TokenizerLab([ByteTokenizer()] * 5, debounce=0)
    with pytest.raises(TypeError, match="not a workbench Tokenizer"):
        TokenizerLab(["gpt2"], debounce=0)
    w.text.value = "bad \ud800 text"
    assert "lone surrogate" in w.info.value and "at character 4" in w.info.value


def test_repr_is_stable(bpe):
    w = TokenizerLab([ByteTokenizer(), bpe, bpe], debounce=0)
    assert repr(w) == "TokenizerLab(tokenizers=['byte', 'bpe-512 (gpt2)', 'bpe-512 (gpt2) #2'])"


def test_hf_wrapped_tokenizer_sits_beside_its_source(bpe):
    """A production tokenizer enters through HFTokenizer; converted from ``bpe`` it must agree everywhere."""
    pytest.importorskip("tokenizers")
    from workbench.tokenizers import HFTokenizer, to_hf

    hf = HFTokenizer(to_hf(bpe), name="hf-copy")
    text = "The for statement\n\titerates 12345 times, café 🙂"
    w = TokenizerLab([bpe, hf], text=text, debounce=0)
    assert w.names[1] == "hf-copy"
    assert [i for i, *_ in w.span_data["hf-copy"]] == bpe.encode(text)
    assert not any(d for *_, d in w.span_data["hf-copy"])
    assert w.metrics_source.data["n_tokens"][0] == w.metrics_source.data["n_tokens"][1]


# ------------------------------------------------------------------------- error path and recovery (issue 13.13)
def _assert_cleared_with_notice(w, *needles):
    """What an error must leave: no spans, no table, no bars, a visible error notice naming the cause."""
    assert w.span_data == {} and w.stats == {}
    assert all(v.value == "" for v in w.views.values()) and w.table.value == ""
    assert all(len(v) == 0 for v in w.metrics_source.data.values())
    assert "#b00020" in w.info.value and all(n in w.info.value for n in needles), w.info.value


def test_lone_surrogate_clears_the_view_and_the_next_text_recovers(bpe):
    w = TokenizerLab([ByteTokenizer(), bpe], text="hello", debounce=0)
    assert w.span_data and w.metrics_source.data["n_tokens"]
    w.text.value = "ab\ud800"
    _assert_cleared_with_notice(w, "lone surrogate", "Cannot tokenize")
    w.text.value = "abc def"
    assert "#b00020" not in w.info.value
    assert w.metrics_source.data["n_tokens"] == [7, len(bpe.encode("abc def"))]
    assert [i for i, *_ in w.span_data[w.names[1]]] == bpe.encode("abc def")
    assert len(_titles(w.views[w.names[1]].value)) == len(bpe.encode("abc def"))


def test_any_exception_reaches_the_notice_and_clears(bpe, monkeypatch):
    import widgets.tokenizer_lab as L

    w = TokenizerLab([ByteTokenizer(), bpe], text="hello", debounce=0)
    real = L.measure
    monkeypatch.setattr(L, "measure", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("planted failure")))
    w.text.value = "hello there"  # through the observer: must not raise
    _assert_cleared_with_notice(w, "RuntimeError: planted failure")
    monkeypatch.setattr(L, "measure", real)
    w.text.value = "hello again"
    assert w.metrics_source.data["n_tokens"] == [11, len(bpe.encode("hello again"))]


def test_the_error_check_catches_a_planted_stale_view_bug(bpe, monkeypatch):
    """Issue 13's planted bug (an error branch that keeps the old view) must fail the check above."""
    import widgets.tokenizer_lab as L

    w = TokenizerLab([ByteTokenizer(), bpe], text="hello", debounce=0)
    monkeypatch.setattr(L.TokenizerLab, "_clear", lambda self: None)
    w.text.value = "ab\ud800"
    with pytest.raises(AssertionError):
        _assert_cleared_with_notice(w, "lone surrogate")


def test_scrubber_error_and_recovery(bpe, docs_text):
    w = TokenizerLab([bpe], text="x", sample=docs_text[:300], debounce=0)
    assert w.pairs_source.data["count"]
    w.sample.value = "bad \ud800"
    assert w.pairs_source.data["count"] == [] and w.scrub_view.value == "" and list(w.pairs_figure.y_range.factors) == []
    assert "#b00020" in w.merge_info.value and "surrogate" in w.merge_info.value
    w.sample.value = docs_text[:300]
    assert w.scrub_ids == bpe.encode(docs_text[:300]) and w.pairs_source.data["count"]


# ------------------------------------------------------------------------------------------- layout (issue 13.5)
def test_tokens_are_unbreakable_boxes_columns_have_a_gutter_labels_fit(bpe):
    w = TokenizerLab([ByteTokenizer(), bpe, bpe], debounce=0)
    html = w.views[w.names[0]].value
    assert "break-all" not in html and ".wbtok span{display:inline-block" in html
    cols = w.columns.children
    assert all(c.layout.flex == "1 1 0" and c.layout.min_width == "0" for c in cols)
    assert cols[0].layout.border_left in (None, "") and all("solid" in c.layout.border_left for c in cols[1:])
    assert all(c.layout.padding.startswith("0 8px") for c in cols)
    assert w.merge_slider.style.description_width == "initial"
    for box in w.children:  # every row of several things wraps instead of squeezing
        if isinstance(box, type(w.columns)) and box is not w.columns:
            assert box.layout.flex_flow == "row wrap"
