"""Beam search equals HF's on a tiny GPT-2; scores add up; diverse beam search; prompt lookup; comparisons."""
from __future__ import annotations

import pytest
import torch

from tests.factories import peaked_gpt
from workbench.decoding import (
    DecodingError, Strategy, beam_search, compare, diverse_beam_search, greedy, prompt_lookup,
)
from workbench.decoding.compare import first_divergence
from workbench.decoding.strategies import lookup_draft

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def hf_pair():
    transformers = pytest.importorskip("transformers")
    from workbench.models import from_hf

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=40, n_positions=64,
                                  bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # larger weights than GPT-2's init: peaked, varied distributions, EOS actually chosen
        for p in hf.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return hf, from_hf(hf)


BEAM_CASES = [  # num_beams, length_penalty, early_stopping, eos, max_new_tokens
    (3, 1.0, False, None, 10), (4, 0.5, True, 3, 10), (4, 2.0, "never", 3, 10), (2, -1.0, False, 7, 8),
    (5, 1.0, False, 29, 12), (4, 1.0, True, 29, 12), (6, 0.0, "never", 33, 9), (2, 1.0, True, None, 6),
]


@pytest.mark.parametrize("nb,lp,es,eos,n", BEAM_CASES)
def test_beam_search_equals_hf(hf_pair, nb, lp, es, eos, n):
    """Every returned hypothesis, its score and its transition scores agree with ``generate``."""
    hf, model = hf_pair
    prompt = torch.tensor([[5, 7, 9, 11]])
    kw = dict(num_beams=nb, max_new_tokens=n, do_sample=False, length_penalty=lp, early_stopping=es,
              num_return_sequences=nb, output_scores=True, output_logits=True, return_dict_in_generate=True,
              pad_token_id=0, attention_mask=torch.ones_like(prompt))
    if eos is not None:
        kw["eos_token_id"] = eos
    out = hf.generate(prompt, **kw)
    r = beam_search(model, prompt[0], nb, n, length_penalty=lp, early_stopping=es, eos_id=eos)
    trans = hf.compute_transition_scores(out.sequences, out.scores, out.beam_indices, normalize_logits=False)
    assert len(r.hypotheses) == nb
    for i, h in enumerate(r.hypotheses):
        seq = out.sequences[i, 4:4 + h.length].tolist()
        assert h.tokens == seq
        assert h.score == pytest.approx(float(out.sequences_scores[i]), abs=1e-5, rel=1e-6)  # float32 at |score| ~ 100
        assert h.transition_scores == pytest.approx(trans[i, :h.length].tolist(), abs=1e-5)
        if h.length < out.sequences.size(1) - 4:  # shorter than the longest: it ended with EOS
            assert h.tokens[-1] == eos
    if eos is not None:
        assert any(h.tokens[-1] == eos for h in r.hypotheses) or r.search_steps == n


@pytest.mark.parametrize("lp", [0.0, 1.0, 1.7])
def test_transition_scores_sum_to_sequence_score(lp):
    """Summed in step order in float32, transition scores give the raw score exactly, and raw / len^lp the score;
    every node's cum_score is its parent's plus its transition score."""
    model = peaked_gpt(3, vocab=24, scale=0.5)
    r = beam_search(model, [1, 2, 3], 4, 9, length_penalty=lp, eos_id=5)
    for h in r.hypotheses:
        acc = torch.tensor(0.0)
        for t in h.transition_scores:
            acc = acc + torch.tensor(t, dtype=torch.float32)
        assert float(acc) == h.raw_score
        assert h.score == float(torch.tensor(h.raw_score) / float(h.length ** lp))
        assert h.logprob == pytest.approx(h.raw_score, abs=1e-4)  # no pipeline: scores are log-probs
        assert [r.nodes[i].token for i in h.node_ids] == h.tokens
    for node in r.nodes[1:]:
        parent = r.nodes[node.parent]
        assert node.cum_score == float(torch.tensor(parent.cum_score) + torch.tensor(node.transition_score))
        assert node.step == parent.step + 1
    statuses = {n.status for n in r.nodes}
    assert {"root", "finished", "pruned", "running"} <= statuses


@torch.no_grad()
def test_beam_scores_are_model_logprobs():
    model = peaked_gpt(4, vocab=24, scale=0.5)
    r = beam_search(model, [2, 3], 3, 6)
    for h in r.hypotheses:
        seq = torch.tensor([[2, 3] + h.tokens])
        lp = model.forward(seq).logits[0, :-1].log_softmax(-1)
        want = lp[torch.arange(1, seq.size(1) - 1), seq[0, 2:]]
        assert h.transition_scores == pytest.approx(want.tolist(), abs=1e-5)


def test_one_beam_is_greedy():
    model = peaked_gpt(7, vocab=24, scale=0.5)
    assert beam_search(model, [3, 4], 1, 10).tokens == greedy(model, [3, 4], 10).tokens


def test_diverse_beam_search():
    model = peaked_gpt(5, vocab=24, scale=0.5)
    plain = beam_search(model, [1, 2], 4, 8)
    one_group = diverse_beam_search(model, [1, 2], 4, 8, num_groups=1, diversity_penalty=3.0)
    assert [h.tokens for h in one_group.hypotheses] == [h.tokens for h in plain.hypotheses]
    div = diverse_beam_search(model, [1, 2], 4, 8, num_groups=2, diversity_penalty=50.0)
    g0 = [h for h in div.hypotheses if h.group == 0]
    g1 = [h for h in div.hypotheses if h.group == 1]
    assert g0 and g1
    # a huge penalty forbids group 1 from the first token group 0's beams chose at step 0
    first0 = {div.nodes[i].token for i in range(len(div.nodes)) if div.nodes[i].step == 0
              and div.nodes[i].group == 0 and div.nodes[i].status == "running"}
    assert all(h.tokens[0] not in first0 for h in g1)
    # group 0 is unaffected by the penalty: its beams are plain 2-beam search
    two = beam_search(model, [1, 2], 2, 8)
    assert [h.tokens for h in g0] == [h.tokens for h in two.hypotheses]
    for h in g1:
        assert sum(h.transition_scores) == pytest.approx(h.raw_score, abs=1e-3)
        assert h.logprob >= h.raw_score - 1e-4
    # Hamming penalty, node by node: group 1's score = log p - penalty * (group-0 beams that chose the token)
    dp = 0.7
    div = diverse_beam_search(model, [1, 2], 4, 8, num_groups=2, diversity_penalty=dp)
    checked = penalised = 0
    for step in range(div.search_steps - 1):  # (at the last step every beam ends; none stays "running")
        chosen0 = [n.token for n in div.nodes if n.step == step and n.group == 0 and n.status == "running"]
        for n in div.nodes:
            if n.step == step and n.group == 1:
                want = n.raw_logprob - dp * chosen0.count(n.token)
                assert n.transition_score == pytest.approx(want, abs=1e-5)
                checked += 1
                penalised += chosen0.count(n.token) > 0
    assert checked > 20 and penalised > 0


def test_prompt_lookup_equals_greedy():
    model = peaked_gpt(6, vocab=16, scale=0.6, block_size=64)
    prompt = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3]
    r = prompt_lookup(model, prompt, 30, max_ngram=2, num_pred=5)
    assert r.tokens == greedy(model, prompt, 30).tokens
    assert r.target_calls <= 30 and r.lookup.drafted > 0
    assert r.lookup.drafted == sum(len(rd.draft) for rd in r.lookup.rounds)
    assert r.lookup.accepted == sum(rd.accepted for rd in r.lookup.rounds)
    assert r.lookup.tokens_per_call == len(r.tokens) / r.target_calls


def test_lookup_draft():
    assert lookup_draft([1, 2, 3, 9, 1, 2], 2, 3) == [3, 9, 1]
    assert lookup_draft([5, 6, 7], 2, 3) == []
    assert lookup_draft([4, 8, 4], 3, 2) == [8, 4]


def test_compare_first_divergence():
    model = peaked_gpt(0, scale=0.25)
    same = compare(model, [1, 2, 3], [Strategy("sample", {"temperature": 1.0}),
                                      Strategy("sample", {"temperature": 1.0}, name="again")], 12, seed=4)
    assert same.first_divergence is None and same.tokens[0] == same.tokens[1]
    c = compare(model, [1, 2, 3], [Strategy("sample", {"temperature": 1.0}), Strategy("sample", {"top_k": 2}),
                                   Strategy("greedy")], 16, seed=4)
    d = c.first_divergence
    assert d is not None and len({tuple(t[:d]) for t in c.tokens}) == 1 and len({t[d] for t in c.tokens}) > 1
    assert c.pairwise[0][1] == first_divergence(c.tokens[0], c.tokens[1])
    with pytest.raises(DecodingError, match="2 to 4"):
        compare(model, [1], [Strategy("greedy")], 3)


def test_beam_bad_input():
    model = peaked_gpt(0)
    with pytest.raises(DecodingError, match="num_beams"):
        beam_search(model, [1], 0, 3)
    with pytest.raises(DecodingError, match="divisible"):
        diverse_beam_search(model, [1], 4, 3, num_groups=3)
    with pytest.raises(DecodingError, match="early_stopping"):
        beam_search(model, [1], 2, 3, early_stopping="sometimes")


@pytest.mark.parametrize("hf_kw,stages", [
    ({"no_repeat_ngram_size": 2}, [("no_repeat_ngram", 2)]),
    ({"repetition_penalty": 1.3}, [("repetition_penalty", 1.3)]),
])
def test_beam_search_with_processors_equals_hf(hf_pair, hf_kw, stages):
    """History-dependent processors inside beam search (applied to the log-softmax, as HF does)."""
    from workbench.decoding import Pipeline

    hf, model = hf_pair
    prompt = torch.tensor([[5, 7, 9, 5, 7]])
    out = hf.generate(prompt, num_beams=3, max_new_tokens=12, do_sample=False, num_return_sequences=3,
                      output_scores=True, return_dict_in_generate=True, pad_token_id=0,
                      attention_mask=torch.ones_like(prompt), **hf_kw)
    r = beam_search(model, prompt[0], 3, 12, pipeline=Pipeline(stages))
    plain = beam_search(model, prompt[0], 3, 12)
    assert [h.tokens for h in r.hypotheses] != [h.tokens for h in plain.hypotheses]  # the processor mattered
    for i, h in enumerate(r.hypotheses):
        assert h.tokens == out.sequences[i, 5:].tolist()
        assert h.score == pytest.approx(float(out.sequences_scores[i]), abs=1e-5, rel=1e-6)  # float32 at |score| ~ 100
