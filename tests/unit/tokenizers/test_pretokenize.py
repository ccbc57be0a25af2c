"""Pre-tokenization presets and digit splitting, checked against HF's Split pre-tokenizer."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.tokenizers import PreTokenizer, TokenizerError


@pytest.mark.parametrize(
    "digits,expected",
    [
        ("none", ["x", "=", "1234567", "+", "89"]),
        ("single", ["x", "=", "1", "2", "3", "4", "5", "6", "7", "+", "8", "9"]),
        ("l2r3", ["x", "=", "123", "456", "7", "+", "89"]),
        ("r2l3", ["x", "=", "1", "234", "567", "+", "89"]),
    ],
)
def test_digit_modes(digits, expected):
    assert PreTokenizer("gpt2", digits).split("x=1234567+89") == expected


def test_r2l3_also_applies_under_gpt4():
    # GPT-4's own \p{N}{1,3} chunks left to right; the digit step runs first, so r2l3 wins.
    assert PreTokenizer("gpt4").split("1234567") == ["123", "456", "7"]
    assert PreTokenizer("gpt4", "r2l3").split("1234567") == ["1", "234", "567"]
    assert PreTokenizer("none", "r2l3").split("a 1234 b") == ["a ", "1", "234", " b"]


def test_presets():
    assert PreTokenizer("gpt2").split("He's  here!\n") == ["He", "'s", " ", " here", "!", "\n"]
    assert PreTokenizer("gpt4").split("HE'S  here!!\n\n") == ["HE", "'S", " ", " here", "!!\n\n"]
    assert PreTokenizer("none").split("a b") == ["a b"]
    assert PreTokenizer("none").split("") == []


def test_custom_regex_keeps_the_gaps():
    pre = PreTokenizer(r"\d+")
    assert pre.pattern_name == "custom"
    assert pre.split("ab12cd3") == ["ab", "12", "cd", "3"]


def test_bad_pattern_and_digits():
    with pytest.raises(TokenizerError, match=r"pattern '\(oops' does not compile"):
        PreTokenizer("(oops")
    with pytest.raises(TokenizerError, match="unknown digits mode"):
        PreTokenizer("gpt2", "thousands")
    with pytest.raises(TokenizerError, match="non-empty regex"):
        PreTokenizer("")


def _hf_split(pre, text):
    from tokenizers import Regex, pre_tokenizers

    seq = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(s), behavior="isolated") for s in pre.steps])
    return [p for p, _ in seq.pre_tokenize_str(text)]


PRES = [PreTokenizer(p, d) for p in ("gpt2", "gpt4") for d in ("none", "single", "l2r3", "r2l3")]
pieces = st.sampled_from(["'s", "'T", " ", "  ", "\n", "\r\n", "\t", "12345", "٣٤٥٦", "½", "x", "é", "e\u0301",
                          "👍🏽", "中文", "!!", "?\n", "\u00a0", "\u2028", "\x85", "\x1c"])
odd = st.lists(st.one_of(pieces, st.text(max_size=3)), max_size=30).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=odd, i=st.integers(0, len(PRES) - 1))
def test_split_matches_hf_and_covers_text(text, i):
    pre = PRES[i]
    got = pre.split(text)
    assert "".join(got) == text and all(got)
    assert got == _hf_split(pre, text)
