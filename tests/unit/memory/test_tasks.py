"""The memory lab's task generators, checked against brute-force re-derivations of each row."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from workbench.memory import TaskRangeError
from workbench.memory.tasks import (AUGMENTATIONS, FORMATS, IGNORE, AdditionVocab, RecallVocab,
                                    ReversalVocab, addition_rows, function_table, read_sum, recall_batch,
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


# the in-context-learning rows and optimal learner: test_icl.py


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
