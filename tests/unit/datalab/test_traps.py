"""Traps and exchangeability: insertion puts each copy in place, the AUC is the Mann-Whitney statistic, the
sliding log-probability equals evaluate on aligned windows, the permutation p-value behaves at its two ends,
long traps are refused, and the shipped sweep loads."""
import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from tests.factories import tiny_gpt
from workbench.datalab.recipes import BOS, corpus_split
from workbench.datalab.traps import (TrapTooLongError, benchmark_examples, exchangeability_test, insert_copies,
                                     load_traps, membership_auc, random_word_sequences, run_traps,
                                     sequence_logprob, sequence_losses)
from workbench.models import evaluate


def _count(hay, needle):
    n = len(needle)
    w = np.lib.stride_tricks.sliding_window_view(hay, n)
    return int(np.all(w == needle, axis=1).sum())


def test_insert_copies_places_every_copy():
    base = np.full(500, 1)
    seqs = [np.array([7, 8, 9, 7]), np.array([5, 6, 5])]
    out = insert_copies(base, seqs, [3, 5], seed=2, sep=0)
    assert len(out) == 500 + 3 * 6 + 5 * 5
    assert _count(out, np.r_[0, seqs[0], 0]) == 3 and _count(out, np.r_[0, seqs[1], 0]) == 5
    assert np.array_equal(out[out == 1], base)                # the corpus itself is untouched, in order
    assert np.array_equal(insert_copies(base, seqs, 0), base)


def test_trap_material_is_of_one_kind():
    s = random_word_sequences(6, 48, seed=0)
    assert s.shape == (6, 48) and len({tuple(r) for r in s}) == 6 and s.max() < 128
    ex = benchmark_examples(5, seed=0)
    assert all(e[-1] == 10 and bytes(e.astype(np.uint8)).startswith(b"q: ") for e in ex)


def test_auc_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    tm, tn = rng.gamma(2, size=15), rng.gamma(2.5, size=12)
    rm, rn = rng.gamma(3, size=15), rng.gamma(3, size=12)
    auc, fpr, tpr = membership_auc(tm, tn, rm, rn)
    u = mannwhitneyu(-(tm / rm), -(tn / rn)).statistic
    assert auc == pytest.approx(u / (15 * 12)) and fpr[0] == 0 and tpr[-1] == 1


def test_sliding_logprob_equals_evaluate_on_aligned_windows():
    m = tiny_gpt(vocab_size=258, n_layer=1, n_head=2, n_embd=16, block_size=16, pos="rope", weight_std=0.2)
    ids = corpus_split("python-docs")[1][:64].copy()
    want = -evaluate(m, np.r_[ids, 0], block_size=16, bos=BOS) * 64      # 4 windows of 16, BOS first
    assert sequence_logprob(m, ids, stride=16) == pytest.approx(want, rel=1e-6)
    short = ids[:10]
    with torch.no_grad():
        lp = torch.log_softmax(m(torch.as_tensor(np.r_[BOS, short[:-1]])[None]).logits[0].double(), -1)
    assert sequence_logprob(m, short) == pytest.approx(float(lp[np.arange(10), short].sum()), rel=1e-9)
    assert sequence_logprob(m, ids) != pytest.approx(sequence_logprob(m, ids, stride=16))   # more context


def test_exchangeability_p_value_at_both_ends():
    ex = benchmark_examples(6, seed=1)
    flat = tiny_gpt(vocab_size=258, n_layer=1, n_head=2, n_embd=16, block_size=64, pos="rope")
    with torch.no_grad():
        flat.lm_head.weight.zero_()                                  # uniform: every order equally likely
    assert exchangeability_test(flat, ex, n_shuffles=9).p_value == 1.0
    # a model trained on the canonical order over and over prefers it to every shuffle
    from workbench.datalab.distill import train_student
    from workbench.datalab.recipes import micro_model

    m = micro_model({"vocab_size": 258, "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64,
                     "pos": "rope"}, 0)
    train_student(m, np.tile(np.concatenate(ex), 40), steps=150, batch_size=8, lr=1e-2)
    t = exchangeability_test(m, ex, n_shuffles=19)
    assert t.p_value == pytest.approx(1 / 20) and np.all(t.shuffled < t.canonical)


def test_trap_longer_than_context_is_refused():
    m = tiny_gpt(vocab_size=258, n_layer=1, n_head=2, n_embd=16, block_size=16, pos="rope")
    with pytest.raises(TrapTooLongError, match="longer than the model's context of 16"):
        sequence_losses(m, random_word_sequences(2, 17))
    with pytest.raises(TrapTooLongError):
        run_traps(copies=(1,), trap_len=65, steps=2)


def test_live_run_progress_and_stop():
    calls = []
    res = run_traps(copies=(0, 5, 50), steps=3, n_shuffles=3, progress=lambda d, t: calls.append((d, t)),
                    should_stop=lambda: len(calls) >= 6)
    assert res.stopped and res.copies.tolist() == [0, 5] and calls[-1] == (6, 9)
    assert res.auc.shape == (2, 1) and np.isnan(res.auc_clean).sum() == 0
    assert res.auc_clean[0, 0] == pytest.approx(0.5)                 # the clean run against itself: ratio 1


def test_shipped_sweep_loads():
    res = load_traps()
    assert res.copies[0] == 0 and res.copies[-1] >= 100 and res.auc.shape == (len(res.copies), len(res.seeds))
    assert np.all((res.p_value > 0) & (res.p_value <= 1)) and res.shuffled.shape[2] >= 99
    assert np.allclose(res.p_value, (1 + (res.shuffled >= res.canonical[..., None]).sum(2)) /
                       (1 + res.shuffled.shape[2]))
