"""The memory lab's task generators, checked against brute-force re-derivations of each row."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from workbench.memory import TaskRangeError
from workbench.memory.icl import optimal_error
from workbench.memory.tasks import (AUGMENTATIONS, FORMATS, IGNORE, AdditionVocab, ICLVocab, RecallVocab,
                                    ReversalVocab, addition_rows, function_table, icl_batch, read_sum, recall_batch,
                                    recall_length, reversal_facts, reversal_rows)


@pytest.mark.parametrize("twice", [False, True])
def test_recall_targets_are_the_values_of_the_queried_keys(twice):
    voc = RecallVocab(10, 7)
    b = recall_batch(np.random.default_rng(1), 6, 5, voc, read_twice=twice)
    x, y = b.x.numpy(), b.y.numpy()
    assert x.shape == (6, recall_length(5, twice))
    for r in range(6):
        ctx = x[r, 1:11]
        keys, vals = ctx[0::2], ctx[1::2]
        assert len(set(keys)) == 5 and all(2 <= k < 12 for k in keys) and all(12 <= v < 19 for v in vals)
        if twice:
            assert (x[r, 12:22] == ctx).all() and x[r, 22] == RecallVocab.SEP
        table = dict(zip(keys, vals))
        scored = np.nonzero(y[r] != IGNORE)[0]
        assert len(scored) == 5
        for j, t in enumerate(scored):
            assert y[r, t] == table[x[r, t]]  # the value paired with the query key
            assert keys[b.info["pair"][r, j]] == x[r, t]  # the pair index names where that key sat
            if t + 1 < x.shape[1]:
                assert x[r, t + 1] == y[r, t]  # the answer is also the next input


def test_recall_bad_settings():
    with pytest.raises(TaskRangeError, match="n_pairs"):
        recall_batch(np.random.default_rng(0), 2, 11, RecallVocab(10, 10))
    with pytest.raises(TaskRangeError, match="n_pairs"):
        recall_batch(np.random.default_rng(0), 2, 0)


def _parity(s, x):
    return bin(s & x).count("1") % 2


@pytest.mark.parametrize("d", [2, 3, 4])
def test_function_tables_against_their_definitions(d):
    par = function_table("parity", d)
    want = {tuple(_parity(s, x) for x in range(2 ** d)) for s in range(1, 2 ** d)}
    assert par.shape == (2 ** d - 1, 2 ** d) and set(map(tuple, par.tolist())) == want
    conj = function_table("conjunction", d)
    want = set()
    for i, j in itertools.combinations(range(d), 2):
        for a, c in itertools.product((0, 1), repeat=2):
            want.add(tuple(int(((x >> i) & 1) == a and ((x >> j) & 1) == c) for x in range(2 ** d)))
    assert conj.shape == (4 * d * (d - 1) // 2, 2 ** d) and set(map(tuple, conj.tolist())) == want
    with pytest.raises(TaskRangeError, match="unknown function class"):
        function_table("majority", d)


def test_icl_rows_label_each_input_by_the_rows_function():
    b = icl_batch(np.random.default_rng(3), 8, 6, {"conjunction": 1, "parity": 1}, n_bits=4)
    voc = ICLVocab(4)
    x, y = b.x.numpy(), b.y.numpy()
    assert x.shape == (8, 12) and (x[:, 0] == voc.bos).all()
    tables = [function_table("conjunction", 4), function_table("parity", 4)]
    for r in range(8):
        f = tables[b.info["kind"][r]][b.info["function"][r]]
        assert (x[r, 1::2] == b.info["inputs"][r]).all()
        assert (y[r, 1::2] == voc.y0 + f[x[r, 1::2]]).all()
        assert (y[r, 0::2] == IGNORE).all()
        assert (x[r, 2::2] == y[r, 1:-1:2]).all()  # the next input after x_i is its label


def test_icl_bad_mixture():
    with pytest.raises(TaskRangeError, match="unknown function classes"):
        icl_batch(np.random.default_rng(0), 2, 3, {"linear": 1.0})
    with pytest.raises(TaskRangeError, match="not all 0"):
        icl_batch(np.random.default_rng(0), 2, 3, {"parity": 0.0})


def test_optimal_learner_by_hand():
    # d = 2 parities: x0, x1, x0^x1. Inputs 1 (x0=1), 2 (x1=1), 3; labels of f = x0: 1, 0, 1.
    # x=1: votes 1,0,1 -> predicts 1, right. Then {x0, x0^x1} remain; x=2: votes 0,1 -> tie (half an error);
    # label 0 leaves x0 alone; x=3 -> 1, right.
    err = optimal_error("parity", 2, np.array([[1, 2, 3]]), np.array([[1, 0, 1]]))
    assert err.tolist() == [0.0, 0.5, 0.0]


def test_optimal_learner_reaches_zero_once_the_function_is_pinned_down():
    rng = np.random.default_rng(0)
    table = function_table("parity", 4)
    f = table[5]
    xs = rng.integers(0, 16, size=(20, 40))
    err = optimal_error("parity", 4, xs, f[xs])
    # with 40 uniform inputs the 4 bits are spanned long before the end: no errors late, about half at first
    assert err[-10:].max() == 0.0 and err[0] > 0.2


def test_reversal_rows():
    facts = reversal_facts(20, seed=1)
    assert len({tuple(a) for a in facts.a}) == 20 and len({tuple(b) for b in facts.b}) == 20
    assert facts.both.sum() == 10
    V = ReversalVocab
    plain = reversal_rows(facts, "none")
    assert plain.shape == (30, 7)
    assert (plain[:20, 1:3] == facts.a).all() and (plain[:20, 4:6] == facts.b).all() and (plain[:, 3] == V.IS).all()
    assert (plain[20:, 1:3] == facts.b[facts.both]).all() and (plain[20:, 4:6] == facts.a[facts.both]).all()
    tok = reversal_rows(facts, "token_reverse")
    fwd = plain[:20][~facts.both]
    assert tok.shape == (40, 7) and (tok[30:, 0] == V.REV).all()
    assert (tok[30:, 1:6] == fwd[:, 1:6][:, ::-1]).all()  # the fact's tokens in reverse order
    ent = reversal_rows(facts, "entity_reverse")
    assert (ent[30:, 1:3] == facts.b[~facts.both]).all() and (ent[30:, 4:6] == facts.a[~facts.both]).all()
    assert len(ReversalVocab().names()) == ReversalVocab().size
    with pytest.raises(TaskRangeError, match="augmentation"):
        reversal_rows(facts, "shuffle")
    assert "none" in AUGMENTATIONS


@pytest.mark.parametrize("fmt", FORMATS)
def test_addition_rows_read_back_to_the_sum(fmt):
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 1000, 200), rng.integers(0, 1000, 200)
    rows, start = addition_rows(a, b, 3, fmt)
    assert start == 9 and (rows[:, start - 1] == AdditionVocab.EQ).all() and (rows[:, -1] == AdditionVocab.EOS).all()
    assert (read_sum(rows[:, start:-1], 3, fmt) == a + b).all()
    for r in range(5):  # the operands as written, most significant digit first
        assert int("".join(map(str, rows[r, 1:4]))) == a[r] and int("".join(map(str, rows[r, 5:8]))) == b[r]


def test_addition_formats_by_hand():
    rows = {f: addition_rows(np.array([999]), np.array([1]), 3, f)[0][0, 9:-1].tolist() for f in FORMATS}
    assert rows["plain"] == [1, 0, 0, 0]
    assert rows["reversed"] == [0, 0, 0, 1]
    # units 9+1 = 10 -> digit 0 carry 1; tens 9+0+1 -> 0 carry 1; hundreds 9+0+1 -> 0 carry 1; then 1000
    assert rows["scratchpad"] == [0, 1, 0, 1, 0, 1, AdditionVocab.SEMI, 1, 0, 0, 0]
    assert read_sum(np.array([[1, 0, 12, 0]]), 3, "plain").tolist() == [-1]  # a non-digit is no answer
    with pytest.raises(TaskRangeError, match="operands"):
        addition_rows(np.array([1000]), np.array([1]), 3, "plain")
    with pytest.raises(TaskRangeError, match="format"):
        addition_rows(np.array([1]), np.array([1]), 3, "roman")
