"""The tokenization lab's experiment helpers (what notebook 01 draws)."""
import pytest
import torch

from workbench.data import addition_problems
from workbench.tokenizers import BPETokenizer, ByteTokenizer, TokenSpan
from workbench.tokenizers import experiments as X


def test_compression_sweep_prefix_equals_smaller_training(docs_text):
    text = docs_text[:40_000]
    pts = X.compression_sweep({"docs": text}, [256, 300, 400])
    assert [p.vocab_size for p in pts] == [256, 300, 400]
    assert pts[0].bytes_per_token == 1.0
    assert pts[0].bytes_per_token < pts[1].bytes_per_token < pts[2].bytes_per_token
    # the sweep's shortcut (first k merges of a bigger run) is what a smaller training gives
    train, held = X.holdout_split(text)
    small = BPETokenizer.train(train, 300, progress=False)
    assert pts[1].n_tokens == len(small.encode(held))


def test_compression_sweep_rejects_small_vocab():
    with pytest.raises(ValueError, match=">= 256"):
        X.compression_sweep({"a": "abc abc"}, [100])


def test_digit_chunks():
    out = X.digit_chunks("x=1234567", ["single", "l2r3", "r2l3"])
    assert out["single"][-7:] == list("1234567")
    assert out["l2r3"][-3:] == ["123", "456", "7"]
    assert out["r2l3"][-3:] == ["1", "234", "567"]
    assert all("".join(p) == "x=1234567" for p in out.values())


def test_disagreeing_spans():
    a = [TokenSpan(0, 0, 3), TokenSpan(1, 3, 4)]
    b = [TokenSpan(0, 0, 1), TokenSpan(1, 1, 3), TokenSpan(2, 3, 4)]
    assert X.disagreeing_spans([a, b]) == {(0, 3), (0, 1), (1, 3)}
    assert X.disagreeing_spans([a, a]) == set() and X.disagreeing_spans([a]) == set()


class _Oracle(torch.nn.Module):
    """Predicts each row's true next token, except at chosen (row, position) pairs."""

    def __init__(self, rows, vocab, wrong=()):
        super().__init__()
        self.rows, self.vocab, self.wrong = rows, vocab, set(wrong)

    def forward(self, x):
        B, T = x.shape
        logits = torch.zeros(B, T, self.vocab)
        for i in range(B):
            r = self.rows[i]
            for t in range(T):
                nxt = r[t + 1] if t + 1 < len(r) else 0
                if (i, t) in self.wrong:
                    nxt = (nxt + 1) % self.vocab
                logits[i, t, nxt] = 1.0
        return type("Out", (), {"logits": logits})()


def test_answer_accuracy_counts_exact_matches():
    tok = ByteTokenizer()
    probs = addition_problems(4, 3, seed=0)
    rows = [tok.encode("\n" + p.prompt + p.answer + "\n") for p in probs]
    assert X.answer_accuracy(_Oracle(rows, tok.vocab_size), tok, probs) == 1.0
    # a wrong prediction inside the prompt does not count; one on the answer (or its newline) does
    first_answer = len(tok.encode("\n" + probs[1].prompt)) - 1
    assert X.answer_accuracy(_Oracle(rows, tok.vocab_size, [(1, 0)]), tok, probs) == 1.0
    assert X.answer_accuracy(_Oracle(rows, tok.vocab_size, [(1, first_answer)]), tok, probs) == 0.75
    last = len(rows[2]) - 2  # predicts the closing newline
    assert X.answer_accuracy(_Oracle(rows, tok.vocab_size, [(2, last)]), tok, probs) == 0.75


def test_addition_experiment_runs_both_modes():
    res = X.addition_experiment(modes=("l2r3", "r2l3"), n_digits=2, n_train=300, n_test=20, steps=3,
                                config=dict(n_layer=1, n_embd=16, n_head=2))
    assert [r.digits for r in res.runs] == ["l2r3", "r2l3"]
    assert all(0.0 <= r.accuracy <= 1.0 and r.n_test == 20 for r in res.runs)
    assert res.accuracy("r2l3") == res.runs[1].accuracy


def test_mixture_experiment_recovers_known_shares(docs_text, code_text):
    trials = X.mixture_experiment({"docs": docs_text, "code": code_text[:600_000]}, shares=(0.3,),
                                  train_chars=100_000, sample_chars=80_000, n_merges=200)
    (t,) = trials
    assert t.true["docs"] == pytest.approx(0.3, abs=0.01)
    assert t.error("docs") < 0.1
    with pytest.raises(ValueError, match="exactly two"):
        X.mixture_experiment({"docs": docs_text})
