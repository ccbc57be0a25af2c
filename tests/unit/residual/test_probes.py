"""Probes and labellers checked against independent references: scikit-learn fits on residuals taken from the model's
own capture path, Python's ``ast`` for string literals, and per-character loops."""
import ast
import doctest

import numpy as np
import pytest
import torch

from tests import hf_families as F
from workbench.models import GPTConfig, TinyGPT
from workbench.residual import input_attribution, labellers, neurons, probes
from workbench.residual.errors import OutOfRangeError, ResidualError
from workbench.residual.labellers import (
    Labeller, char_spans, digit_paragraphs, in_string_literal, is_digit, next_is_digit, python_snippets)
from workbench.residual.probes import ProbeLabelError, probe, split
from workbench.tokenizers import ByteTokenizer


def tiny(width=32, block=64):
    torch.manual_seed(0)
    tok = ByteTokenizer()
    cfg = GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=width, block_size=block)
    return TinyGPT(cfg, tok).eval()


DIGITS = ["x1 = 42 + y7; z = 3.14 * r9 - 8 # 05 6 apples, 2 pears " * 3, "call 555 0199 at 10:30 on 12/08 " * 4]


def test_a_planted_linear_feature_is_found_at_the_embeddings():
    m = tiny()
    plain = probe(m, DIGITS, is_digit, layer=0)
    with torch.no_grad():  # plant a direction: every digit's embedding moves along v
        v = torch.randn(32, generator=torch.Generator().manual_seed(1))
        m.wte.weight[48:58] += 0.1 * v / v.norm()
    r = probe(m, DIGITS, is_digit, layer=0)
    assert r.test_acc[0] == 1.0 and r.majority < 0.8 and plain.test_acc[0] < 0.95
    assert r.boundaries == ["embed", "block 0", "block 1"] and r.layer == 0
    assert r.pca.shape == (r.n_test, 2) and r.pca_labels.shape == (r.n_test,)
    assert r.label_names == ["no digit", "digit"]


def test_shuffled_labels_stay_at_the_majority_baseline():
    rng_labels = Labeller("random", ("a", "b"),
                          lambda model, text, ids: np.random.default_rng(len(text)).integers(0, 2, len(ids)))
    m = tiny()
    texts = [digit_paragraphs(30)[i] for i in range(30)]
    r = probe(m, texts, rng_labels, max_tokens=1500)
    assert 0.4 < r.majority < 0.6
    assert np.all(np.abs(r.test_acc - r.majority) < 0.08), (r.test_acc, r.majority)
    assert np.all(r.train_acc > r.test_acc)  # it can only memorise


def test_accuracies_equal_a_direct_scikit_learn_fit_on_captured_residuals():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m = tiny(block=256)  # one window: the whole text in one pass
    text = DIGITS[0]
    r = probe(m, [text], next_is_digit, test_fraction=0.25, seed=3)
    ids = torch.tensor(m.tokenizer.encode(text))[None]
    with torch.no_grad():
        res = m(ids, capture=True).residuals[:, 0].numpy()  # (L + 1, T, D) from the model's own capture
    y = np.array([int(text[t + 1] in "0123456789") for t in range(len(text) - 1)])
    X = res[:, :-1]
    tr, te = split(y, 0.25, 3)
    for b in range(3):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X[b, tr], y[tr])
        assert r.test_acc[b] == pytest.approx(clf.score(X[b, te], y[te]), abs=1e-9)
        assert r.train_acc[b] == pytest.approx(clf.score(X[b, tr], y[tr]), abs=1e-9)
    assert r.majority == pytest.approx(np.mean(y[te] == np.bincount(y[tr]).argmax()))


def test_split_is_deterministic_and_stratified():
    y = np.array([0] * 70 + [1] * 30)
    a, b = split(y, 0.3, 0), split(y, 0.3, 0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(split(y, 0.3, 1)[1], a[1])
    assert len(a[1]) == 30 and y[a[1]].sum() == 9 and len(np.intersect1d(a[0], a[1])) == 0
    m = tiny()
    r1, r2 = probe(m, DIGITS, is_digit), probe(m, DIGITS, is_digit)
    np.testing.assert_array_equal(r1.test_acc, r2.test_acc)
    np.testing.assert_array_equal(r1.pca, r2.pca)


def test_split_by_text_keeps_texts_whole():
    from workbench.residual.probes import labelled_residuals

    m = tiny()
    texts = digit_paragraphs(12)
    X, y, groups = labelled_residuals(m, texts, next_is_digit, max_tokens=2000)
    tr, te = split(y, 0.3, 0, groups)
    assert set(groups[tr]).isdisjoint(groups[te]) and len(tr) + len(te) == len(y)
    np.testing.assert_array_equal(te, split(y, 0.3, 0, groups)[1])
    r = probe(m, texts, next_is_digit, split_by="text", max_tokens=2000)
    assert r.n_test == len(te) and r.n_train == len(tr)
    assert X.shape == (3, len(y), 32) and np.all(np.diff(groups) >= 0)


def test_in_string_literal_agrees_with_ast():
    m = tiny()
    for src in python_snippets(25):
        labels = in_string_literal(m, src, m.tokenizer.encode(src))
        raw = src.encode()
        inside = np.zeros(len(raw), dtype=np.int64)  # ast offsets are UTF-8 byte columns
        starts = np.cumsum([0] + [len(line) + 1 for line in raw.split(b"\n")])
        for node in ast.walk(ast.parse(src)):
            literal = isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))
            if literal or isinstance(node, ast.JoinedStr):
                a = starts[node.lineno - 1] + node.col_offset
                b = starts[node.end_lineno - 1] + node.end_col_offset
                inside[a:b] = 1
        # byte tokenizer: one token per byte. ast joins implicitly concatenated literals ("a" "b") into one node
        # spanning the whitespace between them, which is code, not string: the only allowed difference
        assert np.all(inside[labels == 1] == 1)
        gap = (inside == 1) & (labels == 0)
        assert all(chr(raw[i]) in " \n\t\\" for i in np.nonzero(gap)[0])
    assert sum(int(in_string_literal(m, s, m.tokenizer.encode(s)).sum()) for s in python_snippets(25)) > 100


def test_in_string_literal_marks_what_tokenize_cannot_reach():
    m = tiny()
    src = 'a = "ok"\nb = """never closed\n'
    labels = in_string_literal(m, src, m.tokenizer.encode(src))
    assert labels[:8].tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and labels[8:12].tolist() == [0, 0, 0, 0]
    assert np.all(labels[12:] == -1)  # from the unterminated string on, tokenize cannot say


def test_labels_on_a_bpe_tokenizer_follow_character_spans():
    m = F.loaded("gpt2")  # byte-level BPE: tokens span several characters
    text = 'n = "abc" + 1234  # ok'
    ids = m.tokenizer.encode(text)
    s, e = char_spans(m, text, ids)
    assert "".join(text[a:b] for a, b in zip(s, e)) == text and len(ids) < len(text)
    nd = next_is_digit(m, text, ids)
    assert nd.tolist() == [(int(text[b] in "0123456789") if b < len(text) else -1) for b in e]
    strs = in_string_literal(m, text, ids)
    assert [text[a:b] for a, b, v in zip(s, e, strs) if v == 1] != [] and all(
        4 <= a < 9 for a, v in zip(s, strs) if v == 1)


def test_multibyte_characters_map_to_one_character():
    m = tiny()
    text = "é1"
    s, e = char_spans(m, text, m.tokenizer.encode(text))
    assert s.tolist() == [0, 0, 1] and e.tolist() == [1, 1, 2]
    assert next_is_digit(m, text, m.tokenizer.encode(text)).tolist() == [1, 1, -1]


def test_bad_input():
    m = tiny()
    with pytest.raises(ProbeLabelError, match="two classes"):
        probe(m, ["abcdefghijklmnop"], is_digit)
    with pytest.raises(OutOfRangeError, match="layer"):
        probe(m, DIGITS, is_digit, layer=3)
    with pytest.raises(ProbeLabelError, match="one int per token"):
        probe(m, DIGITS, Labeller("bad", ("a",), lambda model, text, ids: np.zeros(3, dtype=int)))
    with pytest.raises(ProbeLabelError, match="skipped every token"):
        probe(m, DIGITS, Labeller("none", ("a",), lambda model, text, ids: -np.ones(len(ids), dtype=int)))
    with pytest.raises(ResidualError, match="no text"):
        probe(m, [""], is_digit)
    with pytest.raises(ResidualError, match="split_by"):
        probe(m, DIGITS, is_digit, split_by="sentence")
    with pytest.raises(ResidualError, match="two texts"):
        probe(m, DIGITS[:1], is_digit, split_by="text")
    with pytest.raises(ResidualError, match="test_fraction"):
        probe(m, DIGITS, is_digit, test_fraction=1.0)


def test_docstring_examples():
    for mod in (input_attribution, labellers, neurons, probes):
        assert doctest.testmod(mod).failed == 0
