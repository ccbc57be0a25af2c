import pytest
import torch

import widgets
from tests.factories import tiny_gpt
from workbench.models.predict import next_token, sample_continuation


def test_bars_follow_the_prompt(tiny_model):
    pg = widgets.Playground(tiny_model, prompt="abc", debounce=0)
    expected = next_token(tiny_model, "abc", 10, temperature=pg.temperature.value)
    assert [p for _, p in pg.bars] == expected.probs
    assert pg.source.data["model_prob"] == next_token(tiny_model, "abc", 10).probs
    assert pg.source.data["id"] == expected.ids
    assert list(pg.figure.y_range.factors) == list(reversed(pg.source.data["label"]))
    before = pg.bars
    pg.prompt.value = "def f(x):"
    assert pg.bars != before
    assert [p for _, p in pg.bars] == next_token(tiny_model, "def f(x):", 10, temperature=0.8).probs
    assert sorted((p for _, p in pg.bars), reverse=True) == [p for _, p in pg.bars]


def test_debounce_waits_without_an_event_loop_only_when_asked(tiny_model):
    calls = []
    d = widgets.Debouncer(lambda: calls.append(1), delay=0)
    d.trigger()
    d.trigger()
    assert calls == [1, 1]


def test_empty_long_and_unprintable_prompts(tiny_model):
    pg = widgets.Playground(tiny_model, prompt="", debounce=0)
    assert pg.bars == [] and "Type a prompt" in pg.info.value
    pg.prompt.value = "x" * 100  # context is 64
    assert "first 36 tokens were dropped" in pg.info.value and len(pg.bars) == 10
    pg.prompt.value = "a\x00\x07\n\t\u200b"
    assert len(pg.bars) == 10 and "error" not in pg.info.value
    assert all(lab.isprintable() for lab, _ in pg.bars)


def test_sample_button_is_seeded(tiny_model):
    pg = widgets.Playground(tiny_model, prompt="hello", debounce=0, max_new_tokens=12)
    pg.sample_button.click()
    first = pg.continuation.value
    assert pg.last_continuation.ids == sample_continuation(tiny_model, "hello", 12, 0.8, seed=0).ids
    pg.sample_button.click()
    assert pg.continuation.value == first
    pg.seed.value = 5
    pg.sample_button.click()
    assert pg.continuation.value != first
    pg.prompt.value = ""
    pg.sample_button.click()
    assert "empty" in pg.continuation.value


def test_stable_repr(tiny_model):
    pg = widgets.Playground(tiny_model, debounce=0)
    assert repr(pg) == "Playground(model='tiny', k=10)"
    assert pg._repr_mimebundle_()["text/plain"] == "Playground(model='tiny', k=10)"


def test_sampling_core():
    from workbench.models.interface import ModelError
    from workbench.tokenizers import ByteTokenizer

    m = tiny_gpt(ByteTokenizer(), train=True, vocab_size=257, n_layer=1, n_head=1, n_embd=8, block_size=16)
    greedy = sample_continuation(m, "ab", 5, temperature=0)
    ids = m.tokenizer.encode("ab")
    for t in greedy.ids:  # greedy through the cache equals argmax of full forwards
        assert t == int(m(torch.tensor([ids])).logits[0, -1].argmax())
        ids.append(t)
    with pytest.raises(ModelError, match="temperature"):
        sample_continuation(m, "ab", 5, temperature=-1)
    with pytest.raises(ModelError, match="max_new_tokens"):
        sample_continuation(m, "ab", 16)
    with pytest.raises(ModelError, match="k must be"):
        next_token(m, "ab", 0)


def test_playground_with_an_hf_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    from workbench.models import from_hf
    from workbench.tokenizers import ByteTokenizer

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=257,
                                                              n_positions=32))
    m = from_hf(hf, tokenizer=ByteTokenizer())
    pg = widgets.Playground(m, prompt="hi", debounce=0, max_new_tokens=5)
    assert len(pg.bars) == 10
    pg.sample_button.click()
    assert len(pg.last_continuation.ids) == 5


# --------------------------------------------------------------------------------------- temperature (issue 13.10)
def test_next_token_at_a_temperature_is_what_the_sampler_draws_from(tiny_model):
    from workbench.models.interface import ModelError

    logits = tiny_model(torch.tensor([tiny_model.tokenizer.encode("abc")])).logits[0, -1].detach().double()
    for t in (0.5, 1.0, 1.8):
        pred = next_token(tiny_model, "abc", 5, temperature=t)
        want = torch.softmax(logits / t, -1)
        assert pred.ids == want.topk(5).indices.tolist()
        assert pred.probs == pytest.approx(want[pred.ids].tolist(), rel=1e-5)
        assert pred.model_probs == pytest.approx(torch.softmax(logits, -1)[pred.ids].tolist(), rel=1e-5)
        ent = float(-(want * want.log()).sum() / torch.log(torch.tensor(2.0, dtype=torch.float64)))
        assert pred.entropy_bits == pytest.approx(ent, rel=1e-4) and pred.temperature == t
    greedy = next_token(tiny_model, "abc", 5, temperature=0)
    assert greedy.probs == [1.0, 0.0, 0.0, 0.0, 0.0] and greedy.entropy_bits == 0
    assert greedy.ids == next_token(tiny_model, "abc", 5).ids  # the runners-up still ranked by the model
    assert greedy.ids[0] == sample_continuation(tiny_model, "abc", 1, temperature=0).ids[0]
    # the first sampled token follows the bars: over many seeds its frequencies match them
    pred = next_token(tiny_model, "abc", 3, temperature=0.3)
    firsts = [sample_continuation(tiny_model, "abc", 1, temperature=0.3, seed=s).ids[0] for s in range(300)]
    for i, p in zip(pred.ids, pred.probs):
        assert abs(firsts.count(i) / 300 - p) < 0.09
    for bad in (-1, float("nan"), float("inf"), "hot"):
        with pytest.raises(ModelError, match="temperature must be"):
            next_token(tiny_model, "abc", 5, temperature=bad)


def test_temperature_slider_reshapes_the_chart(tiny_model):
    pg = widgets.Playground(tiny_model, prompt="abc", debounce=0)
    pg.temperature.value = 0.8
    cold = [p for _, p in pg.bars]
    pg.temperature.value = 1.8
    hot = [p for _, p in pg.bars]
    assert hot != cold and hot == next_token(tiny_model, "abc", 10, temperature=1.8).probs
    assert hot[0] < cold[0]  # hotter is flatter
    assert pg.source.data["model_prob"] == next_token(tiny_model, "abc", 10).probs  # outlines stay at T = 1
    assert "T = 1.8" in pg.figure.title.text and "T = 1" in pg.figure.title.text
    assert "at T = 1.8" in pg.info.value
    pg.temperature.value = 0.0
    assert [p for _, p in pg.bars] == [1.0] + [0.0] * 9 and "greedy" in pg.info.value
    assert pg.figure.x_range.end <= 1.0


def test_descriptions_fit_and_controls_never_shrink(tiny_model):
    for compact in (False, True):
        pg = widgets.Playground(tiny_model, prompt="abc", debounce=0, compact=compact)
        for w in (pg.temperature, pg.max_new, pg.seed, pg.mask_undecodable):
            assert w.style.description_width == "initial", w.description  # never "temperat..."
            assert w.layout.flex == "0 0 auto"
        assert pg.sample_button.layout.flex == "0 0 auto" and pg.sample_button.layout.min_width == "100px"
        # every fixed width fits the widget's own width, which fits half a 900 px column when compact
        width = int(pg.layout.width[:-2])
        assert width == (420 if compact else 600) and pg.figure.width <= width
        for w in (pg.temperature, pg.max_new, pg.seed):
            assert int(w.layout.width[:-2]) <= width - 20
        assert all(c.layout.flex_flow == "row wrap" for c in pg.children if isinstance(c, widgets.base.W.HBox))


def test_side_by_side_wraps_instead_of_squeezing(tiny_model):
    a = widgets.Playground(tiny_model, prompt="abc", debounce=0, compact=True)
    b = widgets.Playground(tiny_model, prompt="abc", debounce=0, compact=True)
    box = widgets.side_by_side(a, b)
    assert list(box.children) == [a, b]
    assert box.layout.flex_flow == "row wrap"
    assert all(w.layout.flex == "0 0 auto" for w in (a, b))  # keep their width; wrap when the row is full
    assert 2 * 420 + int(box.children[0].layout.margin.split()[1][:-2]) <= 900  # two compact ones fit in 900 px
    a.seed.value = b.seed.value = 3  # both sample with the same seed, independently
    a.sample_button.click()
    b.sample_button.click()
    assert a.last_continuation.ids == b.last_continuation.ids


# ------------------------------------------------------------------------------------------ samples (issue 13.10)
def test_old_sample_is_cleared_or_marked_stale(tiny_model):
    pg = widgets.Playground(tiny_model, prompt="hello", debounce=0, max_new_tokens=8)
    pg.sample_button.click()
    assert "<b>" in pg.continuation.value and pg.last_continuation is not None
    pg.temperature.value = 1.2
    assert "Settings changed since this sample" in pg.continuation.value and "T = 0.8" in pg.continuation.value
    pg.sample_button.click()
    assert "Settings changed" not in pg.continuation.value and pg.last_continuation.temperature == 1.2
    pg.seed.value = 9
    assert "Settings changed" in pg.continuation.value
    pg.prompt.value = "goodbye"
    assert pg.continuation.value == "" and pg.last_continuation is None
    assert pg.export_state()["continuation"] is None


def test_invalid_utf8_from_a_byte_model_is_shown_as_bytes(tiny_model):
    text = ""
    for seed in range(50):  # a random byte model at a high temperature emits stray bytes >= 0x80
        c = sample_continuation(tiny_model, "abc", 30, temperature=2.0, seed=seed)
        if c.invalid_bytes:
            break
    assert c.invalid_bytes, "no sample with invalid UTF-8 found"
    raw = bytes(c.ids)
    assert "\ufffd" in raw.decode("utf-8", errors="replace") == c.text
    rebuilt = b"".join(bytes(int(h, 16) for h in __import__("re").findall(r"<0x([0-9A-F]{2})>", t)) if k == "bytes"
                       else t.encode() for k, t in c.segments)
    assert rebuilt == raw and c.invalid_bytes == sum(t.count("<0x") for k, t in c.segments if k == "bytes")
    pg = widgets.Playground(tiny_model, prompt="abc", debounce=0, max_new_tokens=30)
    pg.temperature.value, pg.seed.value = 2.0, seed
    pg.sample_button.click()
    v = pg.continuation.value
    bold = v[v.index("<b>"):v.index("</b>")]
    assert "\ufffd" not in bold and "&lt;0x" in bold
    assert f"{c.invalid_bytes} of the sampled bytes are not valid UTF-8" in v
    pg.seed.value = 0
    pg.temperature.value = 0.0
    pg.sample_button.click()
    if not pg.last_continuation.invalid_bytes:
        assert "not valid UTF-8" not in pg.continuation.value


# -------------------------------------------------------------------------------- error path (issue 13.13)
def _is_error(w) -> bool:
    return "#b00020" in w.value


def _assert_cleared_with_notice(pg, *needles):
    """What an error must leave: no bars, no factors, no prediction, a visible error notice naming the cause."""
    assert pg.bars == [] and list(pg.figure.y_range.factors) == [] and pg.source.data["model_prob"] == []
    assert pg.prediction is None and "Next token: bars" not in pg.figure.title.text
    assert _is_error(pg.info) and all(n in pg.info.value for n in needles), pg.info.value


def test_lone_surrogate_clears_the_chart_says_why_and_the_next_prompt_recovers(tiny_model):
    pg = widgets.Playground(tiny_model, prompt="abc", debounce=0)
    pg.sample_button.click()
    assert pg.bars and not _is_error(pg.info)
    pg.prompt.value = "ab\ud800"
    _assert_cleared_with_notice(pg, "TokenizerError", "surrogate")
    assert pg.continuation.value == ""
    pg.sample_button.click()
    assert "Cannot sample" in pg.continuation.value and "surrogate" in pg.continuation.value
    pg.prompt.value = "abd"
    assert not _is_error(pg.info) and "tokens" in pg.info.value
    assert [p for _, p in pg.bars] == next_token(tiny_model, "abd", 10, temperature=0.8).probs
    assert list(pg.figure.y_range.factors) == list(reversed(pg.source.data["label"]))


def test_any_exception_in_the_observer_reaches_the_notice(tiny_model, monkeypatch):
    import widgets.playground as P

    pg = widgets.Playground(tiny_model, prompt="abc", debounce=0)
    good = pg.bars
    real = P.next_token

    def broken(*a, **k):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(P, "next_token", broken)
    pg.prompt.value = "abcd"  # through the observer: must not raise
    _assert_cleared_with_notice(pg, "RuntimeError: planted failure")
    pg.temperature.value = 1.1  # another observer, same path
    _assert_cleared_with_notice(pg, "planted failure")
    monkeypatch.setattr(P, "next_token", real)
    pg.prompt.value = "abc"
    assert not _is_error(pg.info)
    assert [p for _, p in pg.bars] == next_token(tiny_model, "abc", 10, temperature=1.1).probs != [p for _, p in good]


def test_the_error_check_catches_a_planted_stale_chart_bug(tiny_model, monkeypatch):
    """Issue 13's planted bug (an error branch that keeps the old bars) must fail the error-path check above."""
    import widgets.playground as P

    pg = widgets.Playground(tiny_model, prompt="abc", debounce=0)
    real = P.Playground._show_bars
    monkeypatch.setattr(P.Playground, "_show_bars", lambda self, pred: None if pred is None else real(self, pred))
    pg.prompt.value = "ab\ud800"
    with pytest.raises(AssertionError):
        _assert_cleared_with_notice(pg, "surrogate")
