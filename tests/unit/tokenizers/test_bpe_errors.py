"""Bad input to training, encoding, decoding and saving: each a specific TokenizerError, and no
file written unless a save succeeds."""
import os

import pytest

from workbench.tokenizers import BPETokenizer, TokenizerError
from workbench.tokenizers.hf_interop import save_json


def test_vocab_size_below_bytes_plus_specials():
    with pytest.raises(TokenizerError, match=r"vocab_size 257 is below 256 byte symbols \+ 2 special tokens = 258"):
        BPETokenizer.train("hello", 257, special_tokens=["<a>", "<b>"])
    with pytest.raises(TokenizerError, match="vocab_size 100 is below"):
        BPETokenizer.train("hello", 100)
    with pytest.raises(TokenizerError, match="must be an int"):
        BPETokenizer.train("hello", 300.0)
    BPETokenizer.train("hello", 258, special_tokens=["<a>", "<b>"])  # exactly the minimum is fine


@pytest.mark.parametrize("text", ["", [], ["", ""]])
def test_empty_corpus(text):
    with pytest.raises(TokenizerError, match="empty corpus"):
        BPETokenizer.train(text, 300)


@pytest.mark.parametrize("pattern", ["(unclosed", "[a-", "*x", r"\p{NotAProperty}"])
def test_bad_regex_is_named(pattern):
    with pytest.raises(TokenizerError, match="does not compile") as e:
        BPETokenizer.train("hello world", 300, pattern=pattern)
    assert repr(pattern) in str(e.value)


def test_unknown_digit_mode():
    with pytest.raises(TokenizerError, match="unknown digits mode 'r2l4'"):
        BPETokenizer.train("123", 300, digits="r2l4")


@pytest.mark.parametrize(
    "specials,match",
    [(["<a>", ""], "non-empty"), (["\u0100"], "byte-level name of byte 0x00"), (["<a>", "<a>"], "more than once"), ([None], "non-empty"), ("<a>", "list of strings")],
)
def test_bad_special_tokens(specials, match):
    with pytest.raises(TokenizerError, match=match):
        BPETokenizer.train("hello", 300, special_tokens=specials)


def test_decode_out_of_range_names_the_position():
    tok = BPETokenizer.train("hello hello", 260)
    with pytest.raises(TokenizerError, match=r"token id 260 at position 1 is out of range"):
        tok.decode([5, 260])
    with pytest.raises(TokenizerError, match="out of range"):
        tok.token_bytes(-1)


def test_save_into_missing_folder_writes_nothing(tmp_path):
    tok = BPETokenizer.train("hello hello", 260)
    target = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(TokenizerError, match="does not exist"):
        tok.save(target)
    assert not (tmp_path / "nope").exists()


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    tok = BPETokenizer.train("hello hello", 260)
    target = tmp_path / "tokenizer.json"
    target.write_text("old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        tok.save(target)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]


def test_unserialisable_document_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        save_json({"x": object()}, tmp_path / "t.json")
    assert list(tmp_path.iterdir()) == []


def test_load_errors(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer file"):
        BPETokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="not a JSON tokenizer file"):
        BPETokenizer.load(bad)
    other = tmp_path / "other.json"
    other.write_text('{"model": {"type": "WordPiece", "vocab": {}}}')
    with pytest.raises(TokenizerError, match="model type 'WordPiece'"):
        BPETokenizer.load(other)
