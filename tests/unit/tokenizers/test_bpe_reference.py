"""The fast BPE trainer and encoder against the naive reference (workbench.tokenizers.reference), which
recounts every pair before every merge and rescans a piece after every merge."""
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.tokenizers import BPETokenizer
from workbench.tokenizers import reference

# Few distinct characters make long repeated pairs, ties and merges of merges; a few odd ones (multi-byte,
# digits, newlines) exercise the byte map and the pre-tokenizer.
small_text = st.text(st.sampled_from("aab  bc\n1é"), min_size=1, max_size=300)
any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
settings_ = settings(max_examples=60, deadline=None)


@settings_
@given(text=small_text, extra=st.integers(0, 80), pattern=st.sampled_from(["gpt2", "gpt4", "none"]),
       digits=st.sampled_from(["none", "single", "r2l3"]))
def test_trainer_matches_the_reference(text, extra, pattern, digits):
    fast = BPETokenizer.train(text, 256 + extra, pattern=pattern, digits=digits, progress=False)
    vocab, merges = reference.train(text, 256 + extra, pattern=pattern, digits=digits)
    assert fast.merges == merges
    assert fast.vocab == vocab
    assert [s.count for s in fast.trace] == [  # the counts the reference merged at, recounted from scratch
        _count(text, merges[:r], (a, b), pattern, digits) for r, (a, b, _) in enumerate(merges)]


@settings_
@given(train_text=small_text, text=st.one_of(small_text, any_text), extra=st.integers(0, 80),
       pattern=st.sampled_from(["gpt2", "none"]))
def test_encoder_matches_the_reference(train_text, text, extra, pattern):
    fast = BPETokenizer.train(train_text, 256 + extra, pattern=pattern, progress=False)
    assert fast.encode(text) == reference.encode(text, fast.merges, pattern=pattern)


def test_on_real_text(docs_text):
    text = docs_text[:6_000]
    fast = BPETokenizer.train(text, 256 + 60, pattern="gpt2", digits="r2l3", progress=False)
    vocab, merges = reference.train(text, 256 + 60, pattern="gpt2", digits="r2l3")
    assert (fast.merges, fast.vocab) == (merges, vocab)
    other = docs_text[50_000:53_000]
    assert fast.encode(other) == reference.encode(other, merges, pattern="gpt2", digits="r2l3")


def _count(text, merges, pair, pattern, digits):
    ids = [reference.encode(p, merges, pattern="none") for p in
           BPETokenizer.train("x", 256, pattern=pattern, digits=digits, progress=False).pretokenizer.split(text)]
    return sum(1 for w in ids for p in zip(w, w[1:]) if p == pair)
