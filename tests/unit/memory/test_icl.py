"""The in-context-learning task and its optimal learner: rows round-trip to inputs and labels, only the labels are
scored, the optimal learner equals a brute-force Bayes count on tiny cases, and bad input says what is allowed."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from workbench.memory import ModelCapabilityError, TaskRangeError
from workbench.memory import icl
from workbench.memory.tasks import IGNORE, ICLVocab, function_table, icl_batch, icl_read, icl_rows


def test_rows_round_trip_to_inputs_and_labels():
    rng = np.random.default_rng(0)
    for d in (2, 4, 5):
        xs = rng.integers(0, 2 ** d, size=(6, 7))
        ys = rng.integers(0, 2, size=(6, 7))
        rows = icl_rows(xs, ys, d)
        assert rows.shape == (6, 1 + 7 * (d + 1))
        back_x, back_y = icl_read(rows, d)
        assert (back_x == xs).all() and (back_y == ys).all()
    voc = ICLVocab(3)  # by hand: x = 6 is bits (0, 1, 1), least significant first
    assert icl_rows(np.array([[6]]), np.array([[1]]), 3).tolist() == [[voc.bos, 0, 3, 5, voc.y0 + 1]]


def test_batch_scores_only_the_labels_and_they_follow_the_rows_function():
    d, n = 4, 6
    voc = ICLVocab(d)
    b = icl_batch(np.random.default_rng(3), 40, n, {"conjunction": 1, "parity": 1}, n_bits=d)
    x, y = b.x.numpy(), b.y.numpy()
    pos = b.info["label_pos"]
    assert x.shape == y.shape == (40, voc.row_len(n)) == (40, n * (d + 1))
    assert pos.tolist() == [d + i * (d + 1) for i in range(n)] and (x[:, 0] == voc.bos).all()
    assert ((y != IGNORE).sum(1) == n).all() and (y[:, pos] != IGNORE).all()
    full = np.concatenate([x, y[:, -1:]], 1)  # the last label is a target only
    xs, ys = icl_read(full, d)
    assert (xs == b.info["inputs"]).all() and (ys == b.info["labels"]).all()
    assert (y[:, pos] == voc.y0 + ys).all()
    tables = [function_table("conjunction", d), function_table("parity", d)]
    for r in range(40):
        f = tables[b.info["kind"][r]][b.info["function"][r]]
        assert (f[xs[r]] == ys[r]).all()
    assert {0, 1} <= set(b.info["kind"].tolist())


def test_labels_are_balanced_for_conjunctions():
    b = icl_batch(np.random.default_rng(1), 400, 10, {"conjunction": 1.0}, n_bits=5)
    assert abs(b.info["labels"].mean() - 0.5) < 0.03  # under uniform inputs it would be 0.25


def _brute_force_bayes_error(kind: str, d: int, n: int) -> np.ndarray:
    """Expected error of the Bayes-optimal predictor at each index, by summing the joint probability of every
    (function, input sequence) under the sampler: for each history (inputs so far, labels before the last), the
    mass of the rarer next label."""
    table = function_table(kind, d)
    p_label = 0.5
    mass = [dict() for _ in range(n)]
    for f in table:
        p_x = np.where(f == 1, p_label / f.sum(), p_label / (len(f) - f.sum()))
        for seq in itertools.product(range(2 ** d), repeat=n):
            p = np.prod(p_x[list(seq)]) / len(table)
            for i in range(n):
                h = (seq[:i + 1], tuple(int(f[s]) for s in seq[:i]))
                m = mass[i].setdefault(h, [0.0, 0.0])
                m[int(f[seq[i]])] += p
    return np.array([sum(min(m) for m in mass[i].values()) for i in range(n)])


@pytest.mark.parametrize("kind", ["conjunction", "parity"])
def test_optimal_learner_equals_a_brute_force_bayes_count(kind):
    d, n = 3, 3
    table = function_table(kind, d)
    want = _brute_force_bayes_error(kind, d, n)
    got = np.zeros(n)
    for f in table:  # the learner's error on every row, weighted by the row's probability
        p_x = np.where(f == 1, 0.5 / f.sum(), 0.5 / (len(f) - f.sum()))
        for seq in itertools.product(range(2 ** d), repeat=n):
            p = np.prod(p_x[list(seq)]) / len(table)
            xs = np.array([seq])
            got += p * icl.optimal_error(kind, d, xs, f[xs])
    assert np.allclose(got, want, atol=1e-12)
    # first answer: a conjunction's input says nothing about its label on average (0.5); a parity's input 0 is
    # always labelled 0 (shown 1 time in 8), and any other input is 1 under 4 of the 7 parities: 3/7 * 7/8 wrong
    assert want[0] == pytest.approx({"conjunction": 0.5, "parity": 0.375}[kind]) and want[-1] < want[0]


def test_optimal_learner_by_hand_on_parities():
    # d = 2 parities: x0, x1, x0^x1, each 1 on two of the four inputs, so every input is equally likely under each
    # and the learner is a majority vote of the consistent ones. Inputs 1 (x0=1), 2 (x1=1), 3; labels of f = x0:
    # x=1: votes 1,0,1 -> 1, right; {x0, x0^x1} remain; x=2: votes 0,1 -> a tie (half an error); x=3 -> 1, right.
    err = icl.optimal_error("parity", 2, np.array([[1, 2, 3]]), np.array([[1, 0, 1]]))
    assert err.tolist() == [0.0, 0.5, 0.0]


def test_optimal_learner_uses_how_inputs_are_drawn_for_conjunctions():
    # d = 2 conjunctions are each 1 on one input; an input is shown with chance 1/2 under a function that labels it
    # 1 and 1/6 under one that labels it 0: the first answer is 1 (3 to 1 odds against a 1 of 4 prior -> a tie)...
    err = icl.optimal_error("conjunction", 2, np.array([[0]]), np.array([[1]]))
    assert err.tolist() == [0.5]
    # ... and after x=0 labelled 0, the three functions left each label one of 1, 2, 3: input 1 is 1 under one of
    # them (weight 1/2) and 0 under two (1/6 each): 1/2 > 1/3, the learner answers 1.
    err = icl.optimal_error("conjunction", 2, np.array([[0, 1]]), np.array([[0, 1]]))
    assert err.tolist() == [0.5, 0.0]


def test_optimal_learner_reaches_zero_once_the_function_is_pinned_down():
    b = icl_batch(np.random.default_rng(0), 30, 40, {"parity": 1.0}, n_bits=4)
    err = icl.optimal_error("parity", 4, b.info["inputs"], b.info["labels"])
    assert err[-10:].max() == 0.0 and err[0] > 0.2


def test_bad_input_says_what_is_allowed():
    with pytest.raises(TaskRangeError, match=r"inputs must be .* in \[0, 8\) for 3 bits"):
        icl_rows(np.array([[8]]), np.array([[0]]), 3)
    with pytest.raises(TaskRangeError, match="labels must be 0/1"):
        icl_rows(np.array([[1]]), np.array([[2]]), 3)
    with pytest.raises(TaskRangeError, match=r"n_bits must be an int in \[2, 8\]"):
        icl_rows(np.array([[1]]), np.array([[0]]), 9)
    rows = icl_rows(np.array([[5, 2]]), np.array([[1, 0]]), 3)
    with pytest.raises(TaskRangeError, match="whole examples of 4 tokens"):
        icl_read(rows[:, :-1], 3)
    swapped = rows.copy()
    swapped[0, [1, 2]] = swapped[0, [2, 1]]  # bit 1's token where bit 0's goes
    with pytest.raises(TaskRangeError, match="bits 0 .. 2 in order"):
        icl_read(swapped, 3)
    with pytest.raises(TaskRangeError, match="unknown function classes"):
        icl_batch(np.random.default_rng(0), 2, 3, {"linear": 1.0})
    with pytest.raises(TaskRangeError, match="not all 0"):
        icl_batch(np.random.default_rng(0), 2, 3, {"parity": 0.0})
    with pytest.raises(TaskRangeError, match=r"n_examples must be an int in \[1, 128\]"):
        icl.run_one(icl.ICLSetting("transformer"), {"n_examples": 0})
    with pytest.raises(TaskRangeError, match=r"n_bits must be an int in \[2, 8\]"):
        icl.run_one(icl.ICLSetting("transformer"), {"n_bits": 1})
    with pytest.raises(TaskRangeError, match="unknown ICL settings"):
        icl.run_one(icl.ICLSetting("transformer"), {"bits": 4})
    with pytest.raises(TaskRangeError, match="unknown mixture 'linear'; choose from"):
        icl.run_one(icl.ICLSetting("transformer", "linear"), {"steps": 1})
    with pytest.raises(TaskRangeError, match="init must be one of"):
        icl.run_one(icl.ICLSetting("transformer"), {"init": "xavier"})
    for bad in (0, -1e-3, "1e-3", True):
        with pytest.raises(TaskRangeError, match="lr_recurrent must be None or a positive number"):
            icl.run_one(icl.ICLSetting("recurrent"), {"lr_recurrent": bad})


def test_lookup_learner_copies_the_label_of_an_input_seen_before():
    xs = np.array([[3, 3, 3, 1], [0, 1, 2, 1]])
    ys = np.array([[1, 1, 0, 1], [0, 1, 1, 0]])  # row 0's third label contradicts its first: a copier errs
    # index 0: nothing seen (0.5, 0.5); 1: row 0 copies 1, right; row 1 guesses; 2: row 0 copies 1, wrong; row 1
    # guesses; 3: row 0 guesses (1 is new); row 1 copies 1 from index 1 and is wrong
    assert icl.lookup_error(xs, ys).tolist() == [0.5, 0.25, 0.75, 0.75]


def test_run_one_passes_the_init_and_each_architectures_learning_rate(monkeypatch):
    seen = []
    real_build, real_train = icl.build_model, icl.train_masked
    monkeypatch.setattr(icl, "build_model", lambda *a, **k: seen.append(("init", k["init"])) or real_build(*a, **k))
    monkeypatch.setattr(icl, "train_masked", lambda *a, **k: seen.append(("lr", k["lr"])) or real_train(*a, **k))
    tiny = {"n_bits": 3, "n_examples": 2, "steps": 1, "width": 16, "eval_rows": 2, "batch": 2, "lr": 1e-3}
    try:
        icl.run_one(icl.ICLSetting("recurrent", state_size=2), {**tiny, "init": "torch", "lr_recurrent": 3e-3})
    except ModelCapabilityError:  # the recurrent model is written by another issue
        pytest.skip("no recurrent model here")
    icl.run_one(icl.ICLSetting("transformer"), {**tiny, "init": "gpt2", "lr_recurrent": 3e-3})
    icl.run_one(icl.ICLSetting("recurrent", state_size=2), {**tiny, "lr_recurrent": None})
    assert seen == [("init", "torch"), ("lr", 3e-3), ("init", "gpt2"), ("lr", 1e-3),
                    ("init", icl.LIVE["init"]), ("lr", 1e-3)]
