"""Metrics: bytes per token, fertility, split-word share, vocabulary utilisation, count difference."""
import pytest

from workbench.tokenizers import BPETokenizer, ByteTokenizer, count_difference, measure


def test_byte_tokenizer_metrics_by_hand():
    s = measure(ByteTokenizer(), "hi  héllo")
    assert (s.n_bytes, s.n_chars, s.n_tokens, s.n_words) == (10, 9, 10, 2)
    assert s.bytes_per_token == 1.0 and s.chars_per_token == 0.9
    assert s.fertility == (2 + 6) / 2  # 'hi' is 2 byte tokens, 'héllo' is 6
    assert s.split_word_share == 1.0
    assert s.vocab_used == 7  # h i ' ' \xc3 \xa9 l o
    assert s.vocab_utilisation == pytest.approx(7 / 256)


def test_bpe_metrics_on_its_training_text():
    text = "the cat sat on the mat " * 20
    tok = BPETokenizer.train(text, 300, progress=False)
    s = measure(tok, text)
    # every word is learned whole (GPT-2 pieces ' cat' etc.): one token per word, nothing split
    assert s.n_words == 120 and s.n_tokens == 120 + 1 and s.fertility == 1.0 and s.split_word_share == 0.0
    assert s.bytes_per_token == pytest.approx(len(text) / 121)
    ids = set(tok.encode(text))
    assert tok.vocab_size < 300  # training stops early once no pair is left
    assert s.vocab_used == len(ids) and s.vocab_utilisation == pytest.approx(len(ids) / tok.vocab_size)
    # an unseen word gets split
    t = measure(tok, "the zebra")
    assert t.n_words == 2 and t.split_word_share == 0.5 and t.fertility > 1


def test_token_straddling_words_counts_for_both():
    tok = BPETokenizer.train("a b " * 50, 270, pattern="none", progress=False)  # learns 'a b ' across words
    s = measure(tok, "a b ")
    assert s.n_tokens == 1 and s.n_words == 2 and s.fertility == 1.0 and s.split_word_share == 0.0


def test_empty_text():
    s = measure(ByteTokenizer(), "")
    assert (s.n_tokens, s.bytes_per_token, s.fertility, s.vocab_used) == (0, 0.0, 0.0, 0)


def test_count_difference(docs_text):
    text = docs_text[:5000]
    bpe = BPETokenizer.train(docs_text[:50_000], 600, progress=False)
    d = count_difference(ByteTokenizer(), bpe, text)
    assert d["a"] == len(text.encode()) and d["b"] == len(bpe.encode(text))
    assert d["difference"] == d["a"] - d["b"] > 0 and d["ratio"] == pytest.approx(d["a"] / d["b"])
    assert measure(bpe, text).as_dict()["n_tokens"] == d["b"]
