"""NextByteView driven from Python: its bars are what the core functions return, for any prompt typed."""
import pytest

from tests.factories import tiny_gpt
from tests.unit.tokenizers.test_byte_probs import tiny_model
from workbench.models.predict import next_token
from workbench.tokenizers import ByteTokenizer
from workbench.tokenizers.byte_probs import next_byte_distribution

pytest.importorskip("ipywidgets")
from widgets.next_byte import NextByteView  # noqa: E402


@pytest.fixture(scope="module")
def models():
    byte = tiny_gpt(ByteTokenizer(bos=True), seed=2, n_layer=1, n_head=2, n_embd=16, block_size=64, weight_std=0.3,
                    name="byte")
    return tiny_model(bos=False), byte


def test_bars_are_the_core_results(models):
    bpe, byte = models
    w = NextByteView(bpe, byte, prompt="the lo", k=5, debounce=0)
    exact = next_byte_distribution(bpe, "the lo").top(5)
    assert [p for _, p in w.bars("exact")] == pytest.approx([p for _, p in exact])
    assert [lab.split(". ", 1)[1] for lab, _ in w.bars("exact")] == [lab for lab, _ in exact]
    naive = next_token(bpe, "the lo", 5)
    assert [p for _, p in w.bars("naive")] == pytest.approx(naive.probs)
    own = next_byte_distribution(byte, "the lo").top(5)
    assert [p for _, p in w.bars("byte")] == pytest.approx([p for _, p in own])
    assert "contexts scored" in w.info.value and "BPE tokens at the end" in w.info.value
    assert repr(w) == "NextByteView(bpe='tinygpt', byte='byte', k=5)"


def test_typing_redraws_and_bad_prompts_reach_the_notice(models):
    bpe, _ = models
    w = NextByteView(bpe, None, prompt="the lo", k=4, debounce=0)
    assert set(w.sources) == {"naive", "exact"}
    w.prompt.value = "newer th"
    assert w.result.prompt == b"newer th"
    assert [p for _, p in w.bars("exact")] == pytest.approx(
        [p for _, p in next_byte_distribution(bpe, "newer th").top(4)])
    w.prompt.value = ""
    assert w.bars("exact") == [] and w.bars("naive") == [] and "empty" in w.info.value
    w.prompt.value = "low"  # one piece and no BOS: a specific error, shown
    assert w.bars("exact") == [] and "no BOS" in w.info.value
    w.prompt.value = "the lowe"
    assert w.bars("exact") and "error" not in w.info.value.lower()


def test_playground_opens_a_linked_next_byte_view(models):
    from widgets.playground import Playground

    bpe, byte = models
    pg = Playground(bpe, prompt="the lo", debounce=0)
    view = pg.next_byte_view(byte, debounce=0)
    pg.prompt.value = "newer th"
    assert view.prompt.value == "newer th" and view.result.prompt == b"newer th"
