"""The memory lab's experiments: scorers against oracle models that answer by the task's rule (so a right answer
must score 1 and a wrong one 0), tiny live runs for shapes and callbacks, and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.memory import ModelCapabilityError, SequenceTooLongError, TaskRangeError
from workbench.memory import answer_format as AF
from workbench.memory import icl, recall, reversal
from workbench.memory.tasks import (AdditionVocab, ICLVocab, RecallVocab, ReversalVocab, function_table,
                                    reversal_facts)
from workbench.models.interface import LMOutput


class Oracle(torch.nn.Module):
    """A stand-in model whose next token at each position is ``rule(row, t)`` (or token 0 when the rule says
    None): logits one-hot on it."""

    supports_capture = False

    def __init__(self, vocab, length, rule):
        super().__init__()
        self.config = type("C", (), {"vocab_size": vocab, "block_size": length})()
        self.trained_length = length
        self.rule = rule

    def forward(self, ids, capture=False):
        ids = torch.as_tensor(ids)
        out = torch.zeros(ids.shape + (self.config.vocab_size,))
        for b, row in enumerate(ids.tolist()):
            for t in range(len(row)):
                out[b, t, self.rule(row, t) or 0] = 1.0
        return LMOutput(out)


def recall_rule(row, t):
    """The value that followed the key ``row[t]`` the first time it appeared."""
    for i in range(1, t):
        if row[i] == row[t]:
            return row[i + 1]
    return None


def test_recall_accuracy_of_an_oracle_and_of_a_forgetful_model():
    voc = RecallVocab(8, 8)
    L = recall.recall_length(6, True)
    acc, by_pos = recall.recall_accuracy(Oracle(voc.size, L, recall_rule), 6, True, 20, 0, voc, 6)
    assert acc == 1.0 and by_pos.tolist() == [1.0] * 6

    def last_three(row, t):  # remembers only the last 3 pairs of the (first) context
        sep = row.index(RecallVocab.SEP)
        for i in range(max(1, sep - 6), sep):
            if row[i] == row[t] and i < t:
                return row[i + 1]
        return None

    acc, by_pos = recall.recall_accuracy(Oracle(voc.size, L, last_three), 6, False, 40, 1, voc, 6)
    assert by_pos[:3].max() <= 1 / 8 + 0.15 and by_pos[3:].tolist() == [1.0, 1.0, 1.0]
    assert abs(acc - by_pos.mean()) < 0.1  # queries drawn with replacement: pairs are asked unequally often


def test_recall_bad_input():
    voc = RecallVocab(8, 8)
    short = Oracle(voc.size, recall.recall_length(4, False), recall_rule)
    with pytest.raises(TaskRangeError, match="trained with up to 4"):
        recall.recall_accuracy(short, 5, False, 4, 0, voc, 4)
    with pytest.raises(SequenceTooLongError):
        recall.recall_accuracy(short, 4, True, 4, 0, voc, 4)
    with pytest.raises(TaskRangeError, match="max_pairs"):
        recall.run_one(recall.RecallSetting("transformer"), {"max_pairs": 20})
    with pytest.raises(TaskRangeError, match="unknown recall settings"):
        recall.run_one(recall.RecallSetting("transformer"), {"pairs": 3})


def test_icl_error_of_an_oracle_is_zero_and_of_a_constant_is_the_label_rate():
    c = icl._check({"n_bits": 4, "n_examples": 10, "eval_rows": 30})
    voc = ICLVocab(4)
    for kind in ("conjunction", "parity"):
        b = icl.eval_rows(c, kind)
        table = [function_table("conjunction", 4), function_table("parity", 4)][b.info["kind"][0]]
        fn = {tuple(r): table[f] for r, f in zip(b.x.tolist(), b.info["function"])}

        def rule(row, t, fn=fn):  # at the last bit of an example: the label of the input its bits spell
            if t % 5 != 4:
                return None
            x = sum((row[t - 3 + j] - 2 * j) << j for j in range(4))
            return voc.y0 + int(fn[tuple(row)][x])

        model = Oracle(voc.size, voc.row_len(10), rule)
        assert icl.icl_error(model, b).tolist() == [0.0] * 10
        always0 = Oracle(voc.size, voc.row_len(10), lambda row, t: voc.y0)
        assert np.allclose(icl.icl_error(always0, b), b.info["labels"].mean(0))


def test_reversal_scorer_by_oracle_that_knows_one_direction():
    facts = reversal_facts(12, seed=0)
    fwd = {tuple(a): tuple(b) for a, b in zip(facts.a.tolist(), facts.b.tolist())}

    def forward_only(row, t):
        if t == 3:
            return fwd.get((row[1], row[2]), (None, None))[0]
        if t == 4:
            return fwd.get((row[1], row[2]), (None, None))[1]
        return None

    m = Oracle(ReversalVocab().size, 6, forward_only)
    sel = ~facts.both
    assert reversal.direction_accuracy(m, facts, sel, reverse=False) == 1.0
    assert reversal.direction_accuracy(m, facts, sel, reverse=True) == 0.0
    with pytest.raises(ModelCapabilityError, match="capture"):
        reversal.is_residuals(m, facts, sel, True)


def test_probe_reads_a_planted_bit_and_not_noise():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    X = rng.normal(size=(2, 40, 8))
    X[1, :, 3] += 5.0 * y  # the label is written in boundary 1 only
    acc = reversal.probe_accuracy(X, y, 4)
    assert acc[1] > 0.9 and acc[0] < 0.8


def test_answer_format_scorer_with_an_oracle_adder():
    a, b = np.array([123, 999, 5]), np.array([877, 1, 0])

    def adder(fmt):
        def rule(row, t):
            if t < 8:
                return None
            ans = AF.addition_rows(np.array([int("".join(map(str, row[1:4])))]),
                                   np.array([int("".join(map(str, row[5:8])))]), 3, fmt)[0][0]
            return int(ans[t + 1]) if t + 1 < len(ans) else None
        return rule

    for fmt in ("plain", "reversed", "scratchpad"):
        assert AF.exact_match(Oracle(AdditionVocab.size, 24, adder(fmt)), a, b, 3, fmt) == 1.0
    zero = Oracle(AdditionVocab.size, 24, lambda row, t: 0)
    assert AF.exact_match(zero, a, b, 3, "plain") == 0.0  # no sum here is 0
    tr_a, tr_b, te_a, te_b = AF.problems(100, 50, 2, seed=0)
    assert not {(x, y) for x, y in zip(tr_a, tr_b)} & {(x, y) for x, y in zip(te_a, te_b)}
    with pytest.raises(TaskRangeError, match="n_train"):
        AF.problems(6000, 10, 2)


def test_live_experiments_run_small_and_report():
    seen, reports = [], []
    r = recall.recall_experiment([recall.RecallSetting("transformer")],
                                 {"max_pairs": 3, "steps": 6, "every": 3, "width": 16, "eval_rows": 8},
                                 progress=lambda d, t: seen.append((d, t)), report=lambda l, c: reports.append(l))
    assert r.accuracy.shape == (1, 1, 3) and r.by_position.shape == (1, 1, 3) and r.curve.shape == (1, 1, 2)
    assert seen[-1] == (6, 6) and reports == ["transformer"] * 2 and r.gap().tolist() == [[0.0, 0.0, 0.0]]
    i = icl.icl_experiment([icl.ICLSetting("transformer", "parity")],
                           {"n_bits": 3, "n_examples": 4, "steps": 4, "every": 2, "width": 16, "eval_rows": 8})
    assert i.error.shape == (1, 1, 2, 4) and i.curve.shape == (1, 1, 2, 2, 4) and i.optimal.shape == (2, 4)
    v = reversal.reversal_experiment([reversal.ReversalSetting("transformer", "none")],
                                     {"n_facts": 32, "steps": 4, "every": 2, "width": 16, "probe_folds": 2})
    assert v.forward.shape == (1, 1) and v.probe_reverse.shape == (1, 1, 3)
    a = AF.answer_format_experiment(("reversed",), (20,), {"steps": 4, "every": 2, "width": 16, "n_test": 10},
                                    should_stop=lambda: False)
    assert a.accuracy.shape == (1, 1, 1) and a.curve.shape == (1, 1, 1, 2)
    with pytest.raises(TaskRangeError, match="mixture"):
        icl.run_one(icl.ICLSetting("transformer", "linear"), {"steps": 1})
    with pytest.raises(TaskRangeError, match="format"):
        AF.run_one(AF.FormatSetting("roman", 10), {"steps": 1})


def test_make_sweep_round_trip_through_run_sweep_and_the_loaders(tmp_path, monkeypatch):
    from workbench.memory import ShippedSweepError, make_sweeps

    tiny = {"recall": {"max_pairs": 2, "steps": 2, "every": 1, "width": 16, "eval_rows": 4},
            "icl": {"n_bits": 3, "n_examples": 3, "steps": 2, "every": 1, "width": 16, "eval_rows": 4},
            "reversal": {"n_facts": 32, "steps": 2, "every": 1, "width": 16, "probe_folds": 2},
            "answer_format": {"digits": 1, "steps": 2, "every": 1, "width": 16, "n_test": 5, "batch": 4}}
    monkeypatch.setattr(make_sweeps, "CFG", {k: {"batch": 4, "lr": 3e-3, **v} for k, v in tiny.items()})
    monkeypatch.setattr(make_sweeps, "TRAIN_SIZES", (5, 10))
    monkeypatch.setattr(make_sweeps, "STATE_SIZES", (2,))
    loaders = {"recall": recall.load_recall, "icl": icl.load_icl, "reversal": reversal.load_reversal,
               "answer_format": AF.load_answer_format}
    for name in ("recall", "reversal", "answer_format", "icl"):
        if name in ("recall", "icl"):
            try:
                import workbench.models.recurrent  # noqa: F401
            except ImportError:
                continue
        out = make_sweeps.make(name, tmp_path / "store", out_dir=tmp_path, progress=False)
        res = loaders[name](out)
        assert res.cpu_s > 0
        again = make_sweeps.make(name, tmp_path / "store", out_dir=tmp_path / "b", progress=False)  # all stored
        assert again.read_text() == out.read_text()
    res = AF.load_answer_format(tmp_path / "answer_format.json")
    assert res.formats == ["plain", "reversed", "scratchpad"] and res.n_train.tolist() == [5, 10]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ShippedSweepError, match="make_sweeps reversal"):
        reversal.load_reversal(bad)
    with pytest.raises(ShippedSweepError, match="expected format"):
        recall.load_recall(tmp_path / "reversal.json")
    with pytest.raises(ShippedSweepError, match="no shipped sweep"):
        icl.load_icl(tmp_path / "missing.json")
