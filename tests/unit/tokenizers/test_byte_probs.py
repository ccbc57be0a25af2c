"""Exact next-byte probabilities (workbench.tokenizers.byte_probs) against brute force.

The reference here enumerates *every* tokenisation of the prompt (all token sequences whose bytes run along it),
scores each with its own model calls, and keeps those the tokenizer's real ``encode`` produces (the canonical
assumption the module states). A second model, masked so that it can only ever emit canonical sequences, checks
the assumption's consequences without any filter: there the exact answer must equal the sum over all
tokenisations, and the kept mass must be 1.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from tests.factories import tiny_gpt
from workbench.models import LMOutput
from workbench.tokenizers import BPETokenizer, ByteTokenizer, Tokenizer
from workbench.tokenizers.byte_probs import (
    ByteProbError, byte_logprob, byte_view, next_byte_distribution,
)

TEXT = "low lower lowest newer newest the then there low lot lo newer " * 20


@functools.lru_cache(maxsize=None)
def tiny_bpe(bos: bool = True) -> BPETokenizer:
    tok = BPETokenizer.train(TEXT, vocab_size=256 + 1 + 24, pattern="gpt2", special_tokens=["<|endoftext|>"],
                             progress=False)
    if bos:  # the special token doubles as a BOS, so the reference can score every tokenisation from the start
        tok.bos_id = tok.special_tokens["<|endoftext|>"]
    return tok


@functools.lru_cache(maxsize=None)
def tiny_model(bos: bool = True, seed: int = 0):
    return tiny_gpt(tiny_bpe(bos), seed=seed, n_layer=1, n_head=2, n_embd=16, block_size=32, weight_std=0.4)


class CanonicalOnly(torch.nn.Module):
    """A model that gives probability 0 to every next token that would make the sequence non-canonical (by the
    tokenizer's own ``encode`` on the decoded text): its token distribution lives on canonical sequences only."""

    def __init__(self, base):
        super().__init__()
        self.base, self.tokenizer, self.config = base, base.tokenizer, base.config

    def forward(self, ids, capture=False):
        ids = torch.as_tensor(ids)
        logits = self.base.forward(ids).logits.clone()
        tok = self.tokenizer
        specials = set(tok.special_tokens.values())
        for b in range(ids.shape[0]):
            for t in range(ids.shape[1]):
                ctx = [int(i) for i in ids[b, : t + 1] if int(i) not in specials]
                if not canonical(tok, ctx):  # unreachable (probability 0 already): left as it is
                    continue
                for u in range(tok.vocab_size):
                    if u in specials or not canonical(tok, ctx + [u]):
                        logits[b, t, u] = -math.inf
        return LMOutput(logits)


@functools.lru_cache(maxsize=200_000)
def _canonical(tok, seq):
    data = b"".join(tok.vocab[i] for i in seq)
    try:
        return tok.encode(data.decode("utf-8")) == list(seq)
    except UnicodeDecodeError:  # a lone non-ASCII byte: the module's convention (opaque symbols in pre-tokenizing)
        text = data.decode("utf-8", errors="surrogateescape")
        ids = [i for piece in tok.pretokenizer.split(text) for i in tok._bpe(piece.encode("utf-8", "surrogateescape"))]
        return ids == list(seq)


def canonical(tok, seq) -> bool:
    """The stated assumption: ``seq`` is a prefix of the canonical encoding of its own bytes, or, when they end in
    whitespace, of its bytes followed by a letter (the pre-tokenizer cuts a whitespace run before a word)."""
    if _canonical(tok, tuple(seq)):
        return True
    data = b"".join(tok.vocab[i] for i in seq)
    if not data[-1:].isspace():
        return False
    return tok.encode((data + b"a").decode("utf-8"))[:len(seq)] == list(seq)


def brute_force(model, prompt: bytes, context_ids, context_bytes=b"", keep_all=False):
    """``(P(prompt b) for each byte b, P(prompt))``, given ``context_ids`` (whose bytes are ``context_bytes``),
    summed over every token sequence that covers ``prompt``: all its tokenisations, scored one sequence at a time.
    Only canonical sequences are kept unless ``keep_all``."""
    tok = model.tokenizer
    specials = set(tok.special_tokens.values())
    counted = [u for u in range(tok.vocab_size) if u not in specials]
    context_ids = list(context_ids)

    @functools.lru_cache(maxsize=None)
    def next_logp(seq):
        with torch.no_grad():
            logits = model.forward(torch.tensor([context_ids + list(seq)])).logits[0, -1].double()
        return torch.log_softmax(logits, -1).numpy()

    def prob(seq):
        lp = 0.0
        for k in range(len(seq)):
            lp += next_logp(tuple(seq[:k]))[seq[k]]
        return math.exp(lp)

    def ok(seq):
        if keep_all:
            return True
        ctx = [i for i in context_ids if i not in specials]
        return canonical(tok, ctx + list(seq))

    covers, exact = [], []  # sequences covering the prompt; sequences whose bytes are exactly the prompt

    def walk(seq, pos):
        if pos == len(prompt):
            exact.append(seq)
            return
        rest = prompt[pos:]
        for u in counted:
            bu = tok.vocab[u]
            if bu.startswith(rest):
                covers.append(seq + [u])
            if rest.startswith(bu):
                walk(seq + [u], pos + len(bu))

    walk([], 0)
    n = len(prompt)
    joint = np.zeros(256)
    p_prompt = 0.0
    for s in covers:
        if not ok(s):
            continue
        p = prob(s)
        p_prompt += p
        b = b"".join(tok.vocab[i] for i in s)
        if len(b) > n:
            joint[b[n]] += p
    for e in exact:
        if not ok(e):
            continue
        pe = prob(e) if e else 1.0
        lp = next_logp(tuple(e))
        for u in counted:
            if ok(e + [u]):
                joint[tok.vocab[u][0]] += pe * math.exp(lp[u])
    return joint, p_prompt


PROMPTS = ["low", "the lo", "newe", "the the", "lowes", " ne", "the low ", "lot th", "the  ", "lo \n\n"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_equals_brute_force_over_every_tokenisation(prompt):
    m = tiny_model()
    nb = next_byte_distribution(m, prompt)
    joint, p_prompt = brute_force(m, prompt.encode(), [m.tokenizer.bos_id])
    np.testing.assert_allclose(nb.probs, joint / joint.sum(), atol=1e-6)
    assert nb.valid_mass == pytest.approx(joint.sum() / p_prompt, abs=1e-6)
    assert nb.probs.sum() == pytest.approx(1.0, abs=1e-12) and (nb.probs >= 0).all()


def test_without_bos_conditions_on_the_first_piece():
    """docs-bpe has no BOS: the first piece's tokens are the fixed context, the rest is marginalised."""
    m = tiny_model(bos=False)
    tok = m.tokenizer
    nb = next_byte_distribution(m, "the lowe")
    joint, _ = brute_force(m, b" lowe", tok.encode("the"), b"the")
    np.testing.assert_allclose(nb.probs, joint / joint.sum(), atol=1e-6)
    with pytest.raises(ByteProbError, match="no BOS"):
        next_byte_distribution(m, "lowe")


def test_canonical_only_model_needs_no_filter_and_keeps_all_mass():
    """With a model that only emits canonical sequences, the exact distribution equals the sum over *all*
    tokenisations (no canonical filter in the reference) and the kept mass is 1."""
    m = CanonicalOnly(tiny_model(seed=3))
    for prompt in ["the lo", "newe", "lowes", "the\n\nl", "lo  "]:
        nb = next_byte_distribution(m, prompt)
        joint, p_prompt = brute_force(m, prompt.encode(), [m.tokenizer.bos_id], keep_all=True)
        np.testing.assert_allclose(nb.probs, joint / joint.sum(), atol=1e-6)
        assert nb.valid_mass == pytest.approx(1.0, abs=1e-9)
        assert joint.sum() == pytest.approx(p_prompt, rel=1e-9)  # sum over next bytes = P(prompt)


def test_naive_misses_what_the_last_token_would_have_absorbed():
    """The papers' case: the prompt ends mid-token (" lo" of " low"). After the naive tokenisation [" lo"], the
    canonical-only model can never emit "w" (" low" would have been one token), so the naive answer gives the
    byte "w" no mass; the exact one does."""
    tok = tiny_bpe()
    assert b" low" in tok.vocab and tok.encode("the lo")[-1] == tok.vocab.index(b" lo")
    m = CanonicalOnly(tiny_model(seed=3))
    nb = next_byte_distribution(m, "the lo")
    assert nb.naive_prob("w") < 1e-9
    assert nb.prob("w") > 0.01


def test_naive_and_exact_agree_for_a_byte_model():
    """Every byte is a token, so nothing is ever absorbed: naive = exact = the model's softmax over the bytes."""
    m = tiny_gpt(ByteTokenizer(bos=True), seed=1, n_layer=1, n_head=2, n_embd=16, block_size=64, weight_std=0.3)
    for prompt in ["h", "hello wor", "a b c"]:
        nb = next_byte_distribution(m, prompt)
        with torch.no_grad():
            logits = m.forward(torch.tensor([m.tokenizer.encode(prompt)])).logits[0, -1, :256].double()
        ref = torch.softmax(logits, -1).numpy()
        np.testing.assert_allclose(nb.probs, ref, atol=1e-6)  # float32: cached step vs forward
        np.testing.assert_allclose(nb.naive_probs, nb.probs, atol=1e-12)


def test_byte_logprob_is_the_sum_of_next_byte_terms_and_telescopes():
    m = CanonicalOnly(tiny_model(seed=3))
    text = "the low"
    lp = byte_logprob(m, text)
    assert lp.start == 0 and lp.n_bytes == len(text)
    terms = []
    for k in range(1, len(text)):
        terms.append(math.log(next_byte_distribution(m, text[:k]).prob(text[k])))
    np.testing.assert_allclose(lp.terms[1:], terms, atol=1e-12)
    # telescoping: with a canonical-only model, the product of next-byte terms is P(text) itself
    _, p_text = brute_force(m, text.encode(), [m.tokenizer.bos_id], keep_all=True)
    assert lp.total == pytest.approx(math.log(p_text), abs=1e-6)


def test_byte_logprob_without_bos_starts_after_the_first_piece():
    """No BOS: the first piece's tokens are given, the rest is scored; with a canonical-only model the product of
    the next-byte terms is the reference's P(rest | first piece's tokens)."""
    m = CanonicalOnly(tiny_model(bos=False, seed=3))
    lp = byte_logprob(m, "the lowest")
    assert lp.start == 3 and lp.n_bytes == 7
    _, p_rest = brute_force(m, b" lowest", m.tokenizer.encode("the"), keep_all=True)
    assert lp.total == pytest.approx(math.log(p_rest), abs=1e-6)
    assert lp.bits_per_byte == pytest.approx(-lp.total / 7 / math.log(2))


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet="lowertnhs ", min_size=2, max_size=9))
def test_any_prompt_gives_a_distribution(prompt):
    m = tiny_model()
    nb = next_byte_distribution(m, prompt)
    assert nb.probs.shape == (256,) and nb.probs.sum() == pytest.approx(1.0, abs=1e-9)
    assert (nb.probs >= 0).all() and 0 < nb.valid_mass <= 1 + 1e-9
    assert nb.naive_probs.sum() == pytest.approx(1.0, abs=1e-9)


def test_non_ascii_prompts_and_byte_prompts():
    m = tiny_model()
    for prompt in ["the é", "lo☃", "é".encode()[:1], b"the \xe2\x98"]:
        nb = next_byte_distribution(m, prompt)
        assert nb.probs.sum() == pytest.approx(1.0, abs=1e-9)


def test_hf_byte_level_bpe_with_a_padded_vocabulary():
    from tests import hf_families as F

    m = F.loaded("gpt2")
    tok = m.tokenizer
    assert m.config.vocab_size > tok.vocab_size  # padded ids have no text
    view = byte_view(m)
    assert len(view.sorted_ids) == tok.vocab_size - len(tok.special_tokens)
    nb = next_byte_distribution(m, "The function retur")
    assert nb.probs.sum() == pytest.approx(1.0, abs=1e-9)
    # the same computation through the converted workbench BPE gives the same numbers (the HF pipeline is read
    # as a byte-level BPE, not guessed)
    assert view.encode_bytes(b"The function retur") == tok.encode("The function retur")


class _CharTokenizer(Tokenizer):
    special_tokens: dict = {}

    @property
    def vocab_size(self):
        return 128

    def encode(self, text):
        return [ord(c) for c in text]

    def token_bytes(self, i):
        return chr(i).encode()


def test_bad_input():
    m = tiny_model()
    with pytest.raises(ByteProbError, match="empty"):
        next_byte_distribution(m, "")
    with pytest.raises(ByteProbError, match="empty"):
        byte_logprob(m, b"")
    with pytest.raises(ByteProbError, match="surrogate"):
        next_byte_distribution(m, "a\ud800")
    with pytest.raises(ByteProbError, match="str or bytes"):
        next_byte_distribution(m, 5)
    other = tiny_gpt(_CharTokenizer(), n_layer=1, n_head=2, n_embd=16, block_size=16)
    with pytest.raises(ByteProbError, match="Supported: ByteTokenizer, BPETokenizer"):
        next_byte_distribution(other, "abc")
    with pytest.raises(ByteProbError, match="one byte"):
        next_byte_distribution(m, "the").prob("ab")


def test_byte_logprob_reusing_the_cache_equals_fresh_calls():
    """byte_logprob keeps one KV cache while it walks the text; each term equals a fresh next-byte call."""
    m = tiny_model()
    text = "the lowest newer there lo"
    lp = byte_logprob(m, text)
    fresh = [math.log(next_byte_distribution(m, text[:k]).prob(text[k])) for k in range(1, len(text))]
    np.testing.assert_allclose(lp.terms[1:], fresh, atol=1e-5)


def test_byte_model_logprob_in_windows_equals_next_byte_calls():
    m = tiny_gpt(ByteTokenizer(bos=True), seed=1, n_layer=1, n_head=2, n_embd=16, block_size=16, weight_std=0.3)
    text = "hello world, this is longer than one window"
    lp = byte_logprob(m, text)
    assert lp.start == 0 and lp.n_bytes == len(text)
    ref = [math.log(next_byte_distribution(m, text[max(0, k - 15):k]).prob(text[k])) for k in range(1, len(text))]
    np.testing.assert_allclose(lp.terms[1:16], ref[:15], atol=1e-5)  # inside the first window: the same contexts
    assert np.isfinite(lp.terms).all()


def test_bench_next_byte_row():
    """The tokenizers bench's next-byte row runs (on the shipped docs-bpe) and reports a ratio."""
    from workbench.bench.tokenizers_bench import next_byte_timing, report

    r = next_byte_timing(n_prompts=2)
    assert r["next_byte_prompts"] == 2 and r["next_token_naive_s"] > 0 and r["next_byte_exact_s"] > 0
    assert r["next_byte_ratio"] == pytest.approx(r["next_byte_exact_s"] / r["next_token_naive_s"])
    assert r["next_byte_mean_contexts"] >= 2  # mid-word: the last piece has at least one byte to back off over


def test_bias_by_prompt_end_on_a_tiny_model():
    from workbench.tokenizers.byte_probs import bias_by_prompt_end

    m = tiny_model(bos=False)
    text = "the lowest newer\nthere lot newest\nlow lower " * 6
    r = bias_by_prompt_end(m, text, per_kind=3, context=12)
    assert set(r) == {"mid-word", "end of a word", "after a space", "after a newline"}
    for g in r.values():
        assert g["n"] == 3 and 0 <= g["total_variation"] <= 1 and 0 <= g["p_true_exact"] <= 1


def test_the_lessons_numbers_are_consistent():
    """The stored measurement (python -m workbench.tokenizers.byte_probs): probabilities and distances in range,
    and the papers' pattern it reports: naive and exact far apart mid-word, close at the end of a word."""
    import json

    from workbench.tokenizers.byte_probs import RESULT_FILE

    g = json.loads(RESULT_FILE.read_text())["groups"]
    assert all(0 <= v["total_variation"] <= 1 and v["n"] >= 12 for v in g.values())
    assert g["mid-word"]["total_variation"] > 0.3 > g["end of a word"]["total_variation"]
