"""The counting experiment (workbench.tokenizers.counting): examples, the evaluator, token pieces, the recipe."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings, strategies as st

from workbench.models import LMOutput
from workbench.tokenizers import BPETokenizer, ByteTokenizer
from workbench.tokenizers.counting import (
    CountExample, CountingError, evaluate_counting, make_examples, pieces_of, train_pair,
)
from workbench.tokenizers.make_counting import RESULT_FILE


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 20), min_size=1, max_size=5))
def test_examples_count_by_brute_force(seed, lengths):
    for e in make_examples(20, lengths, "xyz", seed):
        assert len(e.string) in lengths and set(e.string) <= set("xyz") and e.letter in "xyz"
        assert e.count == sum(1 for ch in e.string if ch == e.letter)
        s, rest = e.line().split(":")
        letter, answer = rest.rstrip("\n").split("=")
        assert (s, letter, int(answer)) == (e.string, e.letter, e.count)
        assert e.prompt + e.answer + "\n" == "\n" + e.line()


class Scripted(torch.nn.Module):
    """A byte 'model' that answers each prompt with a fixed function of the string and letter, by reading its
    own input ids: the evaluator must report exactly that function's accuracy."""

    def __init__(self, reply):
        super().__init__()
        self.tokenizer, self.reply, self.name = ByteTokenizer(special_tokens=()), reply, "scripted"

    def forward(self, ids, capture=False):
        ids = ids[0].tolist()
        text = bytes(ids).decode()
        head, _, given = text.rpartition("=")
        string, letter = head.lstrip("\n").split(":")
        want = self.reply(string, letter) + "\n"
        logits = torch.full((1, len(ids), 256), -10.0)
        logits[0, -1, ord(want[len(given)])] = 10.0
        return LMOutput(logits)


def test_the_evaluator_scores_what_the_model_answers():
    ex = make_examples(60, range(1, 9), "ab", seed=3)
    right = evaluate_counting(Scripted(lambda s, c: str(s.count(c))), ex)
    assert right.accuracy == 1.0 and right.failures() == []
    zero = evaluate_counting(Scripted(lambda s, c: "0"), ex)
    assert zero.accuracy == pytest.approx(sum(e.count == 0 for e in ex) / len(ex))
    by_len = zero.accuracy_by_length()
    for n, acc in by_len.items():
        of_len = [e for e in ex if len(e.string) == n]
        assert acc == pytest.approx(sum(e.count == 0 for e in of_len) / len(of_len))
    ten = evaluate_counting(Scripted(lambda s, c: str(s.count(c) + 10)), ex)
    assert ten.accuracy == 0.0 and ten.records[0].given == str(ex[0].count + 10)  # two-character answers


def test_pieces_are_the_tokenizers_cut_of_the_string():
    tok = BPETokenizer.train("abab:a=2\nabba:b=2\n" * 50, vocab_size=262, progress=False)
    for s in ["abab", "ba", "abbaab"]:
        pieces = pieces_of(tok, s)
        assert "".join(pieces) == s
        assert [tok.token_bytes(i).decode() for i in tok.encode(s)] == pieces  # a piece-initial string: same cut
    rec = evaluate_counting(Scripted(lambda s, c: "1"), [CountExample("aab", "a")]).records[0]
    assert rec.pieces == ["a", "a", "b"] and rec.hidden == 0


def test_train_pair_trains_two_models_the_same_way():
    byte, bpe = train_pair(dict(steps=3, n_train=300, batch_size=4), progress=False)
    assert isinstance(byte.tokenizer, ByteTokenizer) and isinstance(bpe.tokenizer, BPETokenizer)
    differ = {"vocab_size", "block_size"}  # the byte window is longer in tokens, as long in examples
    assert {k: v for k, v in vars(byte.config).items() if k not in differ} == \
        {k: v for k, v in vars(bpe.config).items() if k not in differ}
    assert (byte.config.block_size, bpe.config.block_size) == (48, 32)
    assert len(bpe.tokenizer.merges) > 0  # the BPE merged letter runs of the task's text


def test_bad_input():
    with pytest.raises(CountingError, match="alphabet"):
        make_examples(3, [2], "")
    with pytest.raises(CountingError, match="alphabet"):
        make_examples(3, [2], "a:")
    with pytest.raises(CountingError, match="lengths"):
        make_examples(3, [0, 2], "ab")


def test_the_lessons_numbers_are_consistent():
    r = json.loads(RESULT_FILE.read_text())
    for name, m in r["models"].items():
        n_len = len(m["by_length"])
        assert m["accuracy"] == pytest.approx(sum(m["by_length"].values()) / n_len)  # equal examples per length
        for f in m["failures"]:
            assert f["pieces"].replace("|", "") == f["string"] and f["given"] != str(f["count"])


def test_the_stored_run_gave_both_models_the_same_examples_per_window():
    r = json.loads(RESULT_FILE.read_text())
    per = r["examples_per_window"]
    assert abs(per["count-byte"] - per["count-bpe"]) < 0.5
