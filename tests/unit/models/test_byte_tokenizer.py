import pytest
from hypothesis import given, strategies as st

from workbench.tokenizers import ByteTokenizer, TokenizerError, tokenizer_from_dict


@given(st.text())
def test_round_trip_any_valid_unicode(s):
    t = ByteTokenizer()
    ids = t.encode(s)
    assert ids == list(s.encode("utf-8")) or "<|endoftext|>" in s
    assert t.decode(ids) == s


def test_special_tokens_and_spans():
    t = ByteTokenizer(special_tokens=["<|endoftext|>", "<pad>"])
    assert t.vocab_size == 258
    ids = t.encode("hé<pad>x<|endoftext|>")
    assert ids == [104, 195, 169, 257, 120, 256]
    assert t.decode(ids) == "hé<pad>x<|endoftext|>"
    spans = t.spans("hé")
    assert [(s.start, s.end) for s in spans] == [(0, 1), (1, 2), (2, 3)]
    assert t.token_str(10) == "⏎" and t.token_str(32) == "·" and t.token_str(0xC3) == "<0xC3>"


def test_errors():
    t = ByteTokenizer()
    with pytest.raises(TokenizerError, match="surrogate"):
        t.encode("a\ud800b")
    with pytest.raises(TokenizerError, match=r"id 300 at position 1 is out of range"):
        t.decode([65, 300])
    with pytest.raises(TokenizerError, match="non-empty"):
        ByteTokenizer(special_tokens=[""])
    with pytest.raises(TokenizerError, match="duplicate"):
        ByteTokenizer(special_tokens=["<a>", "<a>"])


def test_mid_character_decodes_to_replacement():
    t = ByteTokenizer()
    ids = t.encode("é")[:1]
    assert t.decode(ids) == "\ufffd"


def test_dict_round_trip():
    t = ByteTokenizer(special_tokens=["<s>"])
    t2 = tokenizer_from_dict(t.to_dict())
    assert t2.encode("a<s>") == t.encode("a<s>") and t2.vocab_size == t.vocab_size
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        tokenizer_from_dict({"workbench_kind": "nope"})
