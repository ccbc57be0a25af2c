"""The four emergence metrics on hand-made cases and on stub models whose answers we know."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from tests.factories import tiny_gpt
from workbench.data.tasks import addition_problems
from workbench.scaling import ScalingError
from workbench.scaling.emergence import score_addition, score_outputs, token_edit_distance
from workbench.tokenizers import ByteTokenizer


def test_edit_distance_known_cases():
    assert token_edit_distance("kitten", "sitting") == 3
    assert token_edit_distance([], [1, 2, 3]) == 3
    assert token_edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert token_edit_distance([1, 2, 3], [1, 3]) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=7), st.lists(st.integers(0, 3), max_size=7),
       st.lists(st.integers(0, 3), max_size=7))
def test_edit_distance_is_a_metric(a, b, c):
    d = token_edit_distance
    assert d(a, b) == d(b, a)
    assert abs(len(a) - len(b)) <= d(a, b) <= max(len(a), len(b))
    assert d(a, c) <= d(a, b) + d(b, c)
    assert (d(a, b) == 0) == (a == b)


def test_score_outputs_by_hand():
    s = score_outputs([[1, 2, 3], [1, 2, 9], [1]], [[1, 2, 3], [1, 2, 3], [1, 2]], [-0.1, -2.0, -3.0])
    assert s.exact_match == pytest.approx(1 / 3)
    assert s.token_accuracy == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert s.edit_distance == pytest.approx((0 + 1 + 1) / 3)
    assert s.answer_logprob == pytest.approx(-5.1 / 3)
    with pytest.raises(ScalingError):
        score_outputs([[1]], [[1], [2]], [0.0])


class StubAdder(torch.nn.Module):
    """Reads the prompt bytes, computes a + b (plus ``error`` in the last digit), and puts almost all
    probability on the next byte of that answer followed by a newline."""

    def __init__(self, error=0):
        super().__init__()
        self.error = error
        self.tok = ByteTokenizer()

    def forward(self, ids):
        rows = []
        for row in ids.tolist():
            logits = torch.full((len(row), self.tok.vocab_size), -20.0)
            text = self.tok.decode(row)
            a, rest = text.split("+")
            b, done = rest.split("=")
            want = self.tok.encode(str(int(a) + int(b) + self.error) + "\n")
            start = len(row) - len(done) - 1                # position of "="
            for i in range(start, len(row)):
                k = i - start
                if k < len(want):
                    logits[i, want[k]] = 20.0
            rows.append(logits)
        return type("Out", (), {"logits": torch.stack(rows)})()


def test_oracle_scores_perfectly():
    probs = addition_problems(20, 3, seed=0)
    s = score_addition(StubAdder(), probs, ByteTokenizer())
    assert s.exact_match == 1.0 and s.token_accuracy == 1.0 and s.edit_distance == 0.0
    assert -1e-6 < s.answer_logprob <= 0


def test_off_by_one_is_wrong_under_exact_match_but_nearly_right_otherwise():
    probs = [p for p in addition_problems(40, 3, seed=1) if (p.a + p.b) % 10 != 9]   # no carry into the
    s = score_addition(StubAdder(error=1), probs, ByteTokenizer())                 # tens digit
    assert s.exact_match == 0.0
    assert s.edit_distance == 1.0
    lengths = np.array([len(p.answer) for p in probs])
    assert s.token_accuracy == pytest.approx(np.mean((lengths - 1) / lengths))
    assert s.answer_logprob < -30                     # one confidently wrong token


def test_runs_on_an_untrained_tinygpt():

    m = tiny_gpt(train=True, vocab_size=ByteTokenizer().vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=32)
    s = score_addition(m, addition_problems(5, 2, seed=0), ByteTokenizer())
    assert s.n == 5 and 0 <= s.exact_match <= s.token_accuracy <= 1
    assert s.answer_logprob < 0
    assert m.training                                 # the caller's mode is restored


def test_emergence_sweep_small():
    from workbench.models import GPTConfig
    from workbench.scaling.emergence import emergence_sweep

    cfgs = [GPTConfig(vocab_size=257, n_layer=1, n_head=2, n_embd=16, block_size=32),
            GPTConfig(vocab_size=257, n_layer=1, n_head=2, n_embd=32, block_size=32)]
    rows = emergence_sweep(cfgs, digits=2, steps=20, n_train=300, n_test=10, progress=False)
    assert [r.N for r in rows] == sorted(r.N for r in rows) and len(rows) == 2
    again = emergence_sweep(cfgs[:1], digits=2, steps=20, n_train=300, n_test=10, progress=False)
    assert again[0].scores == rows[0].scores          # seeded: the same model, the same scores
    np.testing.assert_array_equal(again[0].scores.per_problem["logprob"], rows[0].scores.per_problem["logprob"])


def test_held_out_problems_are_unseen_and_distinct():
    from workbench.scaling import held_out_problems

    train = addition_problems(9000, 2, seed=0)          # covers most of the 10,000 two-digit pairs
    seen = {(p.a, p.b) for p in train}
    test = held_out_problems(300, 2, seen, seed=1)
    keys = [(p.a, p.b) for p in test]
    assert len(test) == 300 and len(set(keys)) == 300 and not set(keys) & seen
    assert keys == [(p.a, p.b) for p in held_out_problems(300, 2, seen, seed=1)]     # seeded
    with pytest.raises(ScalingError):
        held_out_problems(10, 1, {(a, b) for a in range(10) for b in range(10)})


def test_train_on_answers_learns():
    from workbench.scaling import train_on_answers

    tok = ByteTokenizer()
    m = tiny_gpt(train=True, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=16)
    probs = addition_problems(500, 1, seed=0)
    losses = train_on_answers(m, probs, tok, steps=150, batch_size=32, lr=1e-2, seed=0)
    assert len(losses) == 150 and np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    # it has learnt the task (1-digit: the 100 pairs are all in training, so this checks fitting, not generalising)
    s = score_addition(m, addition_problems(50, 1, seed=5), tok)
    assert s.token_accuracy > 0.5
    with pytest.raises(ScalingError):
        train_on_answers(m, addition_problems(5, 9, seed=0), tok, steps=1)      # too long for block_size 16


def test_emergence_sweep_rejects_unknown_objective():
    from workbench.scaling.emergence import emergence_sweep

    with pytest.raises(ScalingError):
        emergence_sweep([], objective="vibes")


def test_shipped_emergence_sweep():
    from workbench.scaling import load_emergence

    em = load_emergence()
    models = em["models"]
    assert em["settings"]["n_test"] >= 200 and em["settings"]["objective"] == "answer"
    assert len(models) >= 5 and [m["N"] for m in models] == sorted(m["N"] for m in models)
    assert models[-1]["N"] / models[0]["N"] > 100                      # over two decades of size
    for m in models:
        assert 0 <= m["exact_match"] <= m["token_accuracy"] <= 1
        assert m["answer_logprob"] < 0 and m["edit_distance"] >= 0 and m["n_test"] == em["settings"]["n_test"]
    # the largest model is far better than the smallest under every metric
    lo, hi = models[0], models[-1]
    assert hi["exact_match"] > lo["exact_match"] + 0.3 and hi["answer_logprob"] > lo["answer_logprob"] + 1
    assert hi["edit_distance"] < lo["edit_distance"]


def test_make_emergence_command_writes_a_loadable_sweep(tmp_path, monkeypatch):
    from workbench.scaling import load_emergence
    from workbench.scaling import make_emergence as mk

    monkeypatch.setattr(mk, "SIZES", ((1, 1, 8), (1, 2, 16)))
    monkeypatch.setattr(mk, "N_TRAIN", 300)
    monkeypatch.setattr(mk, "N_TEST", 12)
    out = tmp_path / "em.json"
    assert mk.main(["--out", str(out), "--steps", "3", "--seeds", "2"]) == 0
    em = load_emergence(out)
    assert em["settings"]["seeds"] == [0, 1] and em["settings"]["n_test"] == 12
    assert [m["n_embd"] for m in em["models"]] == [8, 16]
    for m in em["models"]:
        assert [r["seed"] for r in m["seeds"]] == [0, 1]
        vals = [r["exact_match"] for r in m["seeds"]]
        assert m["exact_match"] == pytest.approx(np.mean(vals))
        assert m["sem"]["answer_logprob"] == pytest.approx(
            np.std([r["answer_logprob"] for r in m["seeds"]], ddof=1) / np.sqrt(2))
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ScalingError):
        load_emergence(tmp_path / "bad.json")


def test_answer_batch_supervises_only_the_answer():
    from workbench.data.tasks import AdditionProblem
    from workbench.scaling import answer_batch

    tok = ByteTokenizer()
    probs = [AdditionProblem(7, 5), AdditionProblem(40, 3)]          # "7+5=12\n", "40+3=43\n"
    X, Y = answer_batch(probs, tok)
    assert X.shape == Y.shape == (2, 7)
    assert tok.decode(X[0, :6].tolist()) == "7+5=12" and tok.decode(X[1].tolist()) == "40+3=43"
    for row, p in zip(Y, probs):
        kept = row[row != -100].tolist()
        assert tok.decode(kept) == p.answer + "\n"                   # the answer and its stop, nothing else
        first = (row != -100).nonzero()[0].item()
        assert first == len(p.prompt) - 1                            # predicted from the "=" position
    with pytest.raises(ScalingError):
        answer_batch([], tok)
