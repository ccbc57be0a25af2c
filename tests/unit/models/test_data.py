import pytest
import torch

from workbench.data import (CorpusError, addition_problems, addition_text, load_corpus, repeated_random_sequences,
                            train_val_split)


def test_python_docs_is_the_pydoc_topics_text():
    from pydoc_data.topics import topics

    text = load_corpus("python-docs")
    assert text == load_corpus("python-docs")
    assert len(text) > 100_000
    # every topic's text is in the corpus, in sorted-topic order
    first, second = sorted(topics)[:2]
    assert text.index(topics[first].strip()) < text.index(topics[second].strip())


def test_python_code_is_deterministic_stdlib_source():
    text = load_corpus("python-code")
    assert text == load_corpus("python-code")
    assert "# ---- abc.py ----" in text and "def " in text and len(text) > 500_000


def test_path_corpus(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("héllo\nworld", encoding="utf-8")
    assert load_corpus(p) == "héllo\nworld"
    assert load_corpus(str(p)) == "héllo\nworld"


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CorpusError, match="python-docs"):
        load_corpus(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match="directory"):
        load_corpus(tmp_path)


def test_non_utf8_names_the_byte_offset(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"abc\xffdef")
    with pytest.raises(CorpusError, match=r"0xff at byte offset 3"):
        load_corpus(p)


def test_split_is_deterministic_and_contiguous():
    data = list(range(100))
    tr, va = train_val_split(data, 0.1)
    assert tr == list(range(90)) and va == list(range(90, 100))
    t = torch.arange(10)
    tr, va = train_val_split(t, 0.25)
    assert torch.equal(torch.cat([tr, va]), t) and len(va) == 2
    for bad in (0, 1, -0.5, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            train_val_split(data, bad)
    with pytest.raises(ValueError, match="at least 2"):
        train_val_split([1], 0.5)


def test_addition_problems_are_seeded_and_correct():
    a = addition_problems(50, 3, seed=1)
    assert a == addition_problems(50, 3, seed=1)
    assert a != addition_problems(50, 3, seed=2)
    for p in a:
        assert 0 <= p.a < 1000 and 0 <= p.b < 1000
        assert eval(p.prompt[:-1]) == int(p.answer)
    fixed = addition_problems(100, 4, seed=0, fixed_width=True)
    assert all(1000 <= p.a < 10000 for p in fixed)
    assert addition_text(a[:2]) == f"{a[0].text}\n{a[1].text}\n"
    with pytest.raises(ValueError):
        addition_problems(5, 0)


def test_repeated_random_sequences():
    x = repeated_random_sequences(4, 10, 50, seed=3)
    assert x.shape == (4, 20)
    assert torch.equal(x[:, :10], x[:, 10:])
    assert torch.equal(x, repeated_random_sequences(4, 10, 50, seed=3))
    assert not torch.equal(x, repeated_random_sequences(4, 10, 50, seed=4))
    assert int(x.max()) < 50
    y = repeated_random_sequences(2, 5, 50, seed=0, prefix=99)
    assert y.shape == (2, 11) and bool((y[:, 0] == 99).all())
