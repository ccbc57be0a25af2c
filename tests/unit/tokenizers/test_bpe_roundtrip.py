"""Round trips, the lone-surrogate error, the mid-character replacement policy, special tokens,
and encode_at (encoding with the first n merges only)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.tokenizers import BPETokenizer, ByteTokenizer, TokenizerError


@pytest.fixture(scope="module")
def tok(docs_text):
    return BPETokenizer.train(docs_text[:60_000], 700, pattern="gpt2", digits="r2l3",
                              special_tokens=["<|endoftext|>", "<|pad|>"], progress=False)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_valid_unicode(tok, s):
    assert tok.decode(tok.encode(s)) == s


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["<|endoftext|>", "<|pad|>", "<|", "endoftext", " x", "\r\n", "é"]), max_size=12).map("".join))
def test_specials_are_single_ids_and_round_trip(tok, s):
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert ids.count(0) == s.count("<|endoftext|>") and ids.count(1) == s.count("<|pad|>")


@pytest.mark.parametrize("s", ["\ud800", "ok \udfff", "a\udc80b"])
def test_lone_surrogate_is_a_clear_error(tok, s):
    with pytest.raises(TokenizerError, match="lone surrogate"):
        tok.encode(s)
    with pytest.raises(TokenizerError, match="lone surrogate"):
        BPETokenizer.train("abc" + s, 300)


def test_decoding_mid_character_replaces_with_u_fffd(tok, hf_train):
    # '€' is 3 bytes; a cut after 1 or 2 of them gives exactly one U+FFFD (Python's "replace"
    # and Rust's from_utf8_lossy agree: one per maximal invalid run).
    e = [tok.byte_ids[b] for b in "€".encode()]
    assert tok.decode(e[:1]) == "\ufffd"
    assert tok.decode(e[:2] + [tok.byte_ids[ord("a")]]) == "\ufffda"
    assert tok.decode(e[1:]) == "\ufffd\ufffd"  # two stray continuation bytes
    assert tok.decode_bytes(e[:2]) == "€".encode()[:2]
    hf = tok.to_hf()
    for ids in (e[:1], e[:2] + [tok.byte_ids[ord("a")]], e[1:], e[::-1]):
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 699), max_size=30))
def test_decode_of_any_ids_matches_hf(tok, ids):
    hf = _hf_of(tok)
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False)


_HF = {}


def _hf_of(tok):
    if id(tok) not in _HF:
        _HF[id(tok)] = tok.to_hf()
    return _HF[id(tok)]


def test_decode_rejects_ids_out_of_range(tok):
    for bad in ([700], [-1], [3, 10**9]):
        with pytest.raises(TokenizerError, match="out of range"):
            tok.decode(bad)


def test_spans_cover_the_utf8_bytes(tok):
    s = "naïve café 12345 <|pad|>\r\n👍🏽"
    spans = tok.spans(s)
    assert spans[0].start == 0 and spans[-1].end == len(s.encode())
    assert all(a.end == b.start for a, b in zip(spans, spans[1:]))
    assert [sp.id for sp in spans] == tok.encode(s)


def test_encode_at_scrubs_through_training(tok, docs_text):
    s = docs_text[60_000:62_000]
    assert tok.encode_at(s, 0) == [tok.byte_ids[b] for b in s.encode()]
    assert tok.encode_at(s, len(tok.merges)) == tok.encode(s)
    lengths = [len(tok.encode_at(s, k)) for k in range(0, len(tok.merges) + 1, 50)]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] > lengths[-1]
    # The trace's n_tokens is the same quantity on the training corpus.
    train = docs_text[:60_000]
    for step in tok.trace[::97]:
        assert len(tok.encode_at(train, step.rank + 1)) == step.n_tokens


def test_cache_does_not_change_results(tok, docs_text):
    s = docs_text[70_000:80_000]
    first = tok.encode(s)
    tok._cache.clear()
    old = tok.cache_size
    tok.cache_size = 3  # force the cache to be cleared over and over
    try:
        assert tok.encode(s) == first
    finally:
        tok.cache_size = old


def test_byte_tokenizer_still_round_trips():
    t = ByteTokenizer()
    assert t.decode(t.encode("hé<|endoftext|>")) == "hé<|endoftext|>"


def test_pair_counts_at_shows_what_competed(docs_text):
    text = docs_text[:20_000]
    tok = BPETokenizer.train(text, 256 + 60, progress=False)
    for step in tok.trace[::7]:
        top = tok.pair_counts_at(text, step.rank, top=5)
        # on the training text, the leader at step k is exactly merge k, with the trace's count
        assert (top[0][0] + top[0][1], top[0][2]) == (step.token, step.count)
        assert [c for *_, c in top] == sorted((c for *_, c in top), reverse=True)


def test_progress_bar_on_request(capsys):
    BPETokenizer.train("hello world " * 50, 270, progress=True)
    assert "BPE merges" in capsys.readouterr().err
    BPETokenizer.train("hello world " * 50, 270, progress=False)
    assert capsys.readouterr().err == ""
