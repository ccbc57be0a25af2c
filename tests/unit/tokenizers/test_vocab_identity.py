"""Vocabulary identity (``same_vocab`` / ``vocab_fingerprint``) across Byte, BPE and HF tokenizers however stored,
and ids without text (padding ids of a larger model vocabulary, unassigned ids) shown as ``<id N>``."""
from __future__ import annotations

import pytest

from workbench.tokenizers import BPETokenizer, ByteTokenizer, HFTokenizer, TokenizerError
from workbench.tokenizers import from_hf as bpe_from_hf
from workbench.tokenizers.base import placeholder

TEXT = "def add(a, b):\n    return a + b  # café, naïve, 東京\n" * 20


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(TEXT, 290, special_tokens=["<|endoftext|>"], progress=False)


def test_byte_tokenizer_equals_its_bpe_and_hf_forms():
    b = ByteTokenizer()
    assert b.same_vocab(ByteTokenizer()) and b.same_vocab(b.as_bpe())
    pytest.importorskip("tokenizers")
    assert b.same_vocab(HFTokenizer(b.to_hf()))
    assert not b.same_vocab(ByteTokenizer(special_tokens=("<|endoftext|>", "<pad>")))
    assert b.vocab_difference(ByteTokenizer(special_tokens=("<s>",))) == "id 256 is b'<|endoftext|>' in one and b'<s>' " \
                                                                        "in the other"
    assert not b.same_vocab("not a tokenizer") and "not a workbench Tokenizer" in b.vocab_difference(3)


def test_bpe_equals_its_hf_wrapping_and_files(bpe, tmp_path):
    pytest.importorskip("tokenizers")
    hf = HFTokenizer(bpe.to_hf())
    assert bpe.same_vocab(hf) and hf.same_vocab(bpe)
    assert bpe.vocab_fingerprint() == hf.vocab_fingerprint()
    bpe.save(tmp_path / "tokenizer.json")
    assert HFTokenizer.from_file(tmp_path / "tokenizer.json").same_vocab(bpe)
    assert BPETokenizer.load(tmp_path / "tokenizer.json").same_vocab(hf)
    other = BPETokenizer.train(TEXT.upper(), 290, special_tokens=["<|endoftext|>"], progress=False)
    assert not bpe.same_vocab(other)
    diff = bpe.vocab_difference(other)
    assert diff.startswith("id ") and "in one and" in diff
    smaller = BPETokenizer.train(TEXT, 280, special_tokens=["<|endoftext|>"], progress=False)
    assert bpe.vocab_difference(smaller) == "290 vs 280 ids"


def test_hf_tokenizers_from_separate_folders(tmp_path):
    """Two copies of one HF tokenizer saved with save_pretrained and loaded separately: same vocabulary; the
    entries equal HF's own vocabulary read through the byte-level map (the reference)."""
    pytest.importorskip("transformers")
    from tests import hf_families as F
    from workbench.tokenizers.byte_level import hf_str_to_bytes

    raw = F.hf_tokenizer()
    raw.save_pretrained(tmp_path / "a")
    raw.save_pretrained(tmp_path / "b")
    a, b = HFTokenizer.from_pretrained(str(tmp_path / "a")), HFTokenizer.from_pretrained(str(tmp_path / "b"))
    assert a.same_vocab(b) and a.same_vocab(bpe_from_hf(raw))
    by_id = {i: s for s, i in raw.get_vocab().items()}
    want = [s.encode() if s == "<|endoftext|>" else hf_str_to_bytes(s) for s in (by_id[i] for i in range(len(by_id)))]
    assert a.vocab_entries() == want
    with pytest.raises(TokenizerError, match="saved with its own files"):
        a.to_dict()  # still true: identity never needed to_dict


def test_placeholders_for_ids_without_text(bpe):
    b = ByteTokenizer()
    assert b.token_str(257) == "<id 257>" and b.token_str(-1) == "<id -1>" and b.token_str(256) == "<|endoftext|>"
    assert b.decode_with_placeholders([99, 0xC3, 0xA9, 300, 0xC3, 0xA9]) == "cé<id 300>é"
    with pytest.raises(TokenizerError, match="out of range"):
        b.decode([99, 300])  # decode stays strict
    assert b.undecodable_ids(260) == [257, 258, 259] and b.undecodable_ids() == []
    assert not b.is_decodable("x") and not b.is_decodable(None) and b.is_decodable(5)
    assert placeholder(301) == "<id 301>"
    # a hole in a BPE vocabulary (an id never assigned) is undecodable too
    holed = BPETokenizer(list(bpe.vocab[:-1]) + [None], bpe.merges[:-1], dict(bpe.special_tokens))
    last = holed.vocab_size - 1
    assert holed.token_str(last) == f"<id {last}>" and holed.undecodable_ids(holed.vocab_size + 2) == [
        last, last + 1, last + 2]
    assert holed.decode_with_placeholders([bpe.encode("a")[0], last]) == f"a<id {last}>"


def test_hf_placeholders_beyond_the_tokenizer():
    pytest.importorskip("transformers")
    from tests import hf_families as F

    t = HFTokenizer(F.hf_tokenizer())
    assert t.undecodable_ids(F.MODEL_VOCAB) == list(range(F.TOKENIZER_VOCAB, F.MODEL_VOCAB))
    ids = t.encode("for x in y") + [305] + t.encode(" café")
    assert t.decode_with_placeholders(ids) == "for x in y<id 305> café"
    assert t.token_str(305) == "<id 305>"
