"""to_hf / from_hf / save / load in HF's tokenizer.json format, to_dict for checkpoints, and the
HFTokenizer wrapper that brings any HF tokenizer into the workbench interface."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.tokenizers import (
    BPETokenizer,
    ByteTokenizer,
    HFTokenizer,
    TokenizerError,
    from_hf,
    to_hf,
    tokenizer_from_dict,
)


@pytest.fixture(scope="module")
def tok(code_text):
    return BPETokenizer.train(code_text[:80_000], 900, pattern="gpt4", digits="l2r3",
                              special_tokens=["<|endoftext|>"], progress=False)


@pytest.fixture(scope="module")
def probe(code_text):
    return code_text[80_000:100_000] + " <|endoftext|> 1234567 naïve 👍🏽\r\n"


def test_to_hf_gives_identical_ids(tok, probe):
    hf = to_hf(tok)
    assert hf.encode(probe).ids == tok.encode(probe)
    assert hf.get_vocab_size() == tok.vocab_size
    assert hf.decode(tok.encode(probe), skip_special_tokens=False) == probe


def test_from_hf_round_trip(tok, probe):
    back = from_hf(to_hf(tok))
    assert back.vocab == tok.vocab and back.merges == tok.merges
    assert back.special_tokens == tok.special_tokens
    assert (back.pattern, back.digits) == ("gpt4", "l2r3")
    assert back.encode(probe) == tok.encode(probe)


def test_save_load_and_hf_reads_the_file(tok, probe, tmp_path):
    from tokenizers import Tokenizer

    path = tmp_path / "tokenizer.json"
    tok.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]
    assert Tokenizer.from_file(str(path)).encode(probe).ids == tok.encode(probe)
    loaded = BPETokenizer.load(path)
    assert loaded.encode(probe) == tok.encode(probe)
    assert loaded.to_hf_json() == tok.to_hf_json()


def test_saved_json_matches_hf_trained_document(docs_text, hf_train):
    """What we write is what HF writes for the same training run (vocab, merges, pipeline)."""
    text = docs_text[:30_000]
    ours = BPETokenizer.train(text, 500, pattern="gpt2", special_tokens=["<|endoftext|>"], progress=False)
    theirs = json.loads(hf_train(text, 500, "gpt2", "none", ["<|endoftext|>"]).to_str())
    mine = ours.to_hf_json()
    assert mine["model"]["vocab"] == theirs["model"]["vocab"]
    assert mine["model"]["merges"] == [list(m) for m in theirs["model"]["merges"]]
    assert mine["pre_tokenizer"] == theirs["pre_tokenizer"]
    assert mine["added_tokens"] == theirs["added_tokens"]


def test_from_hf_of_a_gpt2_style_byte_level_tokenizer(docs_text):
    """A tokenizer built the GPT-2 way (ByteLevel with its built-in regex) converts with the same ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator([docs_text[:40_000]], trainer)
    ours = from_hf(hf)
    assert ours.pattern == "gpt2"
    s = docs_text[40_000:50_000] + "<|endoftext|>x"
    assert ours.encode(s) == hf.encode(s).ids
    # ... and with transformers' fast tokenizer around it
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=hf)
    assert from_hf(fast).encode(s) == ours.encode(s)


def test_from_hf_rejects_what_it_cannot_represent():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    wp = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    with pytest.raises(TokenizerError, match="WordPiece.*HFTokenizer"):
        from_hf(wp)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(TokenizerError, match="Whitespace"):
        from_hf(bpe)
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    with pytest.raises(TokenizerError, match="add_prefix_space"):
        from_hf(bpe)
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.normalizer = normalizers.NFKC()
    with pytest.raises(TokenizerError, match="normalizer 'NFKC'"):
        from_hf(bpe)
    with pytest.raises(TokenizerError, match="expected a tokenizers.Tokenizer"):
        from_hf("gpt2")


def test_to_dict_round_trip_for_checkpoints(tok, probe):
    d = json.loads(json.dumps(tok.to_dict()))
    back = tokenizer_from_dict(d)
    assert isinstance(back, BPETokenizer) and back.encode(probe) == tok.encode(probe)
    b = tokenizer_from_dict(json.loads(json.dumps(ByteTokenizer().to_dict())))
    assert isinstance(b, ByteTokenizer) and b.encode("hé") == [104, 195, 169]


def test_hf_wrapper_on_a_byte_level_file(tok, probe, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    w = HFTokenizer.from_file(path)
    assert w.vocab_size == tok.vocab_size and w.special_tokens == tok.special_tokens
    ids = w.encode(probe)
    assert ids == tok.encode(probe)
    assert w.decode(ids) == probe
    assert [w.token_bytes(i) for i in ids] == [tok.token_bytes(i) for i in ids]
    assert w.spans(probe) == tok.spans(probe)
    with pytest.raises(TokenizerError, match="out of range"):
        w.decode([tok.vocab_size])


def test_hf_wrapper_on_a_non_byte_level_tokenizer():
    """A WordPiece-style tokenizer: spans come from HF's offsets, converted to UTF-8 bytes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.train_from_iterator(["héllo wörld hello world"] * 5,
                           trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[UNK]"], show_progress=False))
    w = HFTokenizer(hf, name="wordpiece")
    s = "héllo wörld"
    spans = w.spans(s)
    data = s.encode()
    assert [sp.id for sp in spans] == w.encode(s)
    assert data[spans[0].start : spans[0].end].decode().startswith("h")
    assert spans[-1].end == len(data)
    assert "wordpiece" in repr(w)


def test_hf_wrapper_with_transformers_fast_tokenizer(tok, probe):
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=to_hf(tok))
    w = HFTokenizer(fast)
    assert w.encode(probe) == tok.encode(probe)
    assert w.decode(w.encode(probe)) == probe


def test_from_pretrained_is_local_only(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(TokenizerError, match="local files only"):
        HFTokenizer.from_pretrained(str(tmp_path / "no-such-model"))
    # a folder saved by transformers loads, and encodes like the tokenizer it came from
    transformers = pytest.importorskip("transformers")
    tok = BPETokenizer.train("hello world " * 20, 270, special_tokens=["<|endoftext|>"])
    transformers.PreTrainedTokenizerFast(tokenizer_object=to_hf(tok)).save_pretrained(tmp_path / "m")
    w = HFTokenizer.from_pretrained(str(tmp_path / "m"))
    assert w.encode("hello world<|endoftext|>") == tok.encode("hello world<|endoftext|>")


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs", "Cn"))))
def test_loaded_tokenizer_agrees_with_hf_on_any_text(tok, s):
    assert tok.encode(s) == _hf(tok).encode(s).ids


_cache = {}


def _hf(tok):
    return _cache.setdefault(id(tok), to_hf(tok))


def test_byte_tokenizer_in_hf_format(tmp_path):
    from tokenizers import Tokenizer

    t = ByteTokenizer(special_tokens=["<|endoftext|>", "<|pad|>"])
    s = "héllo <|pad|> wörld<|endoftext|>\r\n👍"
    path = tmp_path / "byte.json"
    t.save(path)
    assert Tokenizer.from_file(str(path)).encode(s).ids == t.encode(s)
    back = ByteTokenizer.load(path)
    assert back.special_tokens == t.special_tokens and back.encode(s) == t.encode(s)
    assert t.to_hf().decode(t.encode(s), skip_special_tokens=False) == s
    BPETokenizer.train("abc abc", 260).save(tmp_path / "bpe.json")
    with pytest.raises(TokenizerError, match="not a byte tokenizer"):
        ByteTokenizer.load(tmp_path / "bpe.json")
