"""Decoding on real HF models of every family (tests/hf_families.py: tiny random models saved to folders and loaded
with ``from_hf``, padded vocabularies of 320 model ids for 300 tokenizer ids).

References: the model's own full forward (cached steps), HF ``generate`` (greedy, beam search, ``suppress_tokens``
for masking) and plain greedy decoding of the target (greedy speculative decoding).
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
from tests.unit.decoding.hf_padded import padded_model  # noqa: E402
from tests import hf_families as F  # noqa: E402
from workbench.decoding import (  # noqa: E402
    DecodingError, beam_search, greedy, sample, sample_batch, speculative_decode,
)
from workbench.decoding.strategies import MASK_STAGE  # noqa: E402
from workbench.models import from_hf  # noqa: E402

torch.set_num_threads(1)

TEXT = "The for statement is used to iterate over the elements of a sequence (such as a string, tuple or list)"
PAD = list(range(F.TOKENIZER_VOCAB, F.MODEL_VOCAB))  # ids with no text


def _hf_greedy(model, ids, n, **kw):
    """HF ``generate`` greedy tokens after the prompt, cut after EOS (id 0) as our ``eos_id=0`` does."""
    prompt = torch.tensor([ids])
    out = model.hf.generate(prompt, max_new_tokens=n, do_sample=False, attention_mask=torch.ones_like(prompt),
                            pad_token_id=0, eos_token_id=0, **kw)[0, len(ids):].tolist()
    return out[: out.index(0) + 1] if 0 in out else out


def _expected_text(tokens):
    """HF's decoding of each run of ids with text, and ``<id N>`` for each padding id."""
    out, run = [], []
    for t in tokens + [None]:
        if t is not None and t < F.TOKENIZER_VOCAB:
            run.append(t)
            continue
        if run:
            out.append(F.hf_tokenizer().decode(run))
            run = []
        if t is not None:
            out.append(f"<id {t}>")
    return "".join(out)


@pytest.fixture(scope="module")
def padded():
    """Fresh gpt2 and llama pushed towards padding ids 301 and 310 (see hf_padded.py)."""
    return {fam: padded_model(fam) for fam in ("gpt2", "llama")}


# ------------------------------------------------------------------------------------------------ KV cache
@pytest.mark.parametrize("fam", F.FAMILIES)
def test_cached_steps_equal_full_forward(fam):
    """Prefill, one-token steps, then a crop and a multi-token step (what speculative decoding does) give the
    logits of one full forward, past the sliding window (8) of Mistral and Gemma."""
    m = F.loaded(fam)
    ids = torch.tensor([m.tokenizer.encode(TEXT)[:16]])
    T = ids.size(1)
    assert T == 16
    full = m.forward(ids).logits[0]
    cache = m.new_cache(1)
    got = [m.step(ids[:, :5], cache).logits[0]]
    for t in range(5, T):
        got.append(m.step(ids[:, t:t + 1], cache).logits[0])
    got = torch.cat(got)
    assert (got - full).abs().max().item() < 1e-4
    cache.crop(11)
    again = m.step(ids[:, 11:], cache).logits[0]
    assert cache.length == T
    assert (again - full[11:]).abs().max().item() < 1e-4


# ------------------------------------------------------------------------------------------ greedy / sampling
@pytest.mark.parametrize("fam", F.FAMILIES)
def test_greedy_equals_hf_and_sampling_decodes(fam):
    """Greedy from a text prompt equals HF ``generate``; sampling runs, and the text shows padding ids as
    ``<id N>`` (random weights do sample them)."""
    m = F.loaded(fam)
    text = TEXT[:40]
    ids = F.hf_tokenizer()(text, add_special_tokens=False).input_ids  # HF's own encoding as the reference
    g = greedy(m, text, 12, eos_id=0)
    assert g.prompt == ids
    assert g.tokens == _hf_greedy(m, ids, 12)
    s = sample(m, ids, 24, {"temperature": 1.5}, seed=1)
    assert len(s.tokens) == 24
    assert s.text == _expected_text(s.tokens)
    masked = sample(m, ids, 24, {"temperature": 1.5}, seed=1, mask_undecodable=True)
    assert max(masked.tokens) < F.TOKENIZER_VOCAB and "<id " not in masked.text
    assert masked.text == F.hf_tokenizer().decode(masked.tokens)


def test_padding_ids_shown_and_masked(padded):
    """With padding ids on top: greedy picks 301 and says so in the text and the trace; masking keeps them out of
    greedy (equal to HF ``suppress_tokens``), of samples and of batches, and the trace shows the mask stage."""
    m = padded["llama"]
    ids = m.tokenizer.encode(TEXT)[:8]
    g = greedy(m, ids, 4)
    assert g.tokens[0] == 301 and "<id 301>" in g.text and g.text == _expected_text(g.tokens)
    assert 301 in g.steps[0].candidates and 310 in g.steps[0].candidates
    assert m.tokenizer.token_str(301) == "<id 301>"
    gm = greedy(m, ids, 6, mask_undecodable=True, eos_id=0)
    assert gm.tokens == _hf_greedy(m, ids, 6, suppress_tokens=PAD)
    assert max(gm.tokens) < F.TOKENIZER_VOCAB
    st = gm.steps[0]
    assert [s.name for s in st.stages][:2] == ["raw", MASK_STAGE]
    j = st.candidates.index(301)
    assert st.stages[0].probs[j] > 0.5 and st.stages[1].probs[j] == 0.0
    free = sample_batch(m, ids, 4, 32, {"temperature": 1.0}, seed=0)
    assert (free >= F.TOKENIZER_VOCAB).float().mean() > 0.5  # the push makes padding the likely choice
    kept = sample_batch(m, ids, 4, 32, {"temperature": 1.0}, seed=0, mask_undecodable=True)
    assert int(kept.max()) < F.TOKENIZER_VOCAB
    s = sample(m, ids, 8, {"top_k": 5}, seed=2, mask_undecodable=True)
    assert max(s.tokens) < F.TOKENIZER_VOCAB


def test_mask_needs_a_tokenizer():
    hf = F.build("gpt2")
    bare = from_hf(hf)  # an instance without a tokenizer
    assert bare.tokenizer is None
    with pytest.raises(DecodingError, match="needs the model's tokenizer"):
        greedy(bare, [1, 2, 3], 2, mask_undecodable=True)
    with pytest.raises(DecodingError, match="no tokenizer, so a text prompt cannot be encoded"):
        greedy(bare, "some text", 2)
    with pytest.raises(DecodingError, match="mask_undecodable must be True or False"):
        greedy(F.loaded("gpt2"), [1, 2], 2, mask_undecodable="yes")


# ------------------------------------------------------------------------------------------------ beam search
def _hf_beams(m, ids, nb, n, lp, es, **kw):
    prompt = torch.tensor([ids])
    out = m.hf.generate(prompt, num_beams=nb, max_new_tokens=n, do_sample=False, length_penalty=lp,
                        early_stopping=es, num_return_sequences=nb, output_scores=True,
                        return_dict_in_generate=True, pad_token_id=0, eos_token_id=0,
                        attention_mask=torch.ones_like(prompt), **kw)
    return out


def _assert_same_beams(r, out, T):
    assert len(r.hypotheses) == out.sequences.size(0)
    for i, h in enumerate(r.hypotheses):
        assert h.tokens == out.sequences[i, T:T + h.length].tolist()
        assert h.score == pytest.approx(float(out.sequences_scores[i]), abs=1e-5, rel=1e-6)


@pytest.mark.parametrize("fam", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("nb,n,lp,es", [(3, 8, 1.0, False), (4, 6, 0.5, True)])
def test_beam_search_equals_hf_generate(fam, nb, n, lp, es):
    """A text prompt (bug 3: 'too many dimensions') encoded with the model's tokenizer; every hypothesis and its
    score equal ``generate(num_beams=...)``."""
    m = F.loaded(fam)
    text = "The for statement"
    ids = m.tokenizer.encode(text)
    r = beam_search(m, text, nb, n, length_penalty=lp, early_stopping=es, eos_id=0)
    assert r.prompt == ids
    _assert_same_beams(r, _hf_beams(m, ids, nb, n, lp, es), len(ids))
    assert isinstance(r.text, str)


def test_masked_beam_search_equals_hf_suppress_tokens(padded):
    m = padded["gpt2"]
    ids = m.tokenizer.encode("The for statement")
    free = beam_search(m, ids, 3, 5, eos_id=0)
    assert 301 in free.best.tokens and "<id 301>" in free.text
    _assert_same_beams(free, _hf_beams(m, ids, 3, 5, 1.0, False), len(ids))
    r = beam_search(m, ids, 3, 5, eos_id=0, mask_undecodable=True)
    assert all(t < F.TOKENIZER_VOCAB for h in r.hypotheses for t in h.tokens)
    _assert_same_beams(r, _hf_beams(m, ids, 3, 5, 1.0, False, suppress_tokens=PAD), len(ids))


# ------------------------------------------------------------------------------------------ speculative decoding
@pytest.mark.parametrize("fam", F.FAMILIES)
def test_speculative_with_an_hf_pair(fam):
    """Target and draft: two seeds saved to separate folders, so each loads its own tokenizer files (bug 1).
    Greedy speculative output equals the target's greedy output; sampling runs and shows padding ids."""
    target, draft = F.loaded(fam, 0), F.loaded(fam, 1)
    assert target.tokenizer is not draft.tokenizer and target.tokenizer.same_vocab(draft.tokenizer)
    ids = target.tokenizer.encode(TEXT)[:8]
    want = greedy(target, ids, 14, trace=False).tokens
    got = speculative_decode(target, draft, ids, 14, gamma=3, pipeline={"temperature": 0.0})
    assert got.tokens == want
    assert got.text == _expected_text(want)
    s = speculative_decode(target, draft, TEXT[:30], 14, gamma=3, pipeline={"temperature": 1.2}, seed=4)
    assert len(s.tokens) == 14 and s.rounds and s.prompt == target.tokenizer.encode(TEXT[:30])
    m = speculative_decode(target, draft, ids, 14, gamma=3, pipeline={"temperature": 1.2}, seed=4,
                           mask_undecodable=True)
    assert max(m.tokens) < F.TOKENIZER_VOCAB
    assert all(t < F.TOKENIZER_VOCAB for rd in m.rounds for t in rd.draft_tokens + [rd.next_token])


def test_speculative_greedy_with_padding_on_top(padded):
    """Padding ids win the arg-max: greedy speculative still equals greedy, with and without the mask."""
    target = padded["gpt2"]
    draft = from_hf(F.build("gpt2", seed=5), tokenizer=F.hf_tokenizer())
    ids = target.tokenizer.encode(TEXT)[:6]
    for mask in (False, True):
        want = greedy(target, ids, 10, mask_undecodable=mask).tokens
        got = speculative_decode(target, draft, ids, 10, gamma=4, pipeline={"temperature": 0.0},
                                 mask_undecodable=mask)
        assert got.tokens == want
        assert (301 in got.tokens) != mask


def test_speculative_different_vocabularies_is_specific():
    """Same number of model ids (320) and of tokenizer ids (300), but the ids mean other tokens: a specific error
    naming the first id that differs. The same vocabulary held by another class (a converted BPETokenizer) is fine."""
    from workbench.tokenizers import BPETokenizer, from_hf as bpe_from_hf

    target = F.loaded("gpt2")
    from workbench.data import load_corpus

    other = BPETokenizer.train(load_corpus("python-code")[:30_000], F.TOKENIZER_VOCAB,
                               special_tokens=["<|endoftext|>"], progress=False)  # code, not docs: other merges
    assert other.vocab_size == F.TOKENIZER_VOCAB
    wrong = from_hf(F.build("gpt2", seed=1), tokenizer=other)
    with pytest.raises(DecodingError, match=r"different vocabularies although both models have 320 ids \(id \d+ is"):
        speculative_decode(target, wrong, [1, 2, 3], 4)
    same = from_hf(F.build("gpt2", seed=1), tokenizer=bpe_from_hf(F.hf_tokenizer()))
    assert type(same.tokenizer).__name__ == "BPETokenizer"
    assert len(speculative_decode(target, same, [1, 2, 3], 4).tokens) == 4


@pytest.mark.parametrize("pipe", [{"top_k": 5}, {"temperature": 0.7, "top_p": 0.9}, {"min_p": 0.05}])
def test_mask_on_the_fused_kernel_route(padded, pipe):
    """draw='kernel' (the fused kernels' reference on a CPU): masked logits (-inf) reach the kernels and padding ids
    are never drawn, by sample, sample_batch and speculative decoding; unmasked they are."""
    m = padded["gpt2"]
    ids = m.tokenizer.encode("The for statement")
    assert max(sample(m, ids, 10, pipe, draw="kernel", mask_undecodable=True).tokens) < F.TOKENIZER_VOCAB
    assert int(sample_batch(m, ids, 5, 16, pipe, draw="kernel", mask_undecodable=True).max()) < F.TOKENIZER_VOCAB
    spec = speculative_decode(m, m, ids, 10, pipeline=pipe, draw="kernel", mask_undecodable=True)
    assert max(spec.tokens) < F.TOKENIZER_VOCAB
    assert max(sample(m, ids, 10, pipe, draw="kernel").tokens) >= F.TOKENIZER_VOCAB
