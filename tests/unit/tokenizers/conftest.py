"""Shared fixtures for the tokenizer tests: corpus slices and an HF trainer configured as issue 3 says."""
import pytest

from workbench.tokenizers import PreTokenizer


def _docs_text() -> str:
    try:
        from workbench.data import load_corpus

        return load_corpus("python-docs")
    except ImportError:  # the foundation's loader is not there: build the same kind of text
        from pydoc_data.topics import topics

        return "\n\n".join(topics[k].strip() for k in sorted(topics))


def _code_text() -> str:
    try:
        from workbench.data import load_corpus

        return load_corpus("python-code")
    except ImportError:
        import inspect
        import textwrap

        return inspect.getsource(textwrap) + inspect.getsource(inspect)


@pytest.fixture(scope="session")
def docs_text() -> str:
    return _docs_text()


@pytest.fixture(scope="session")
def code_text() -> str:
    return _code_text()


def hf_bpe_train(texts, vocab_size, pattern="gpt2", digits="none", special_tokens=()):
    """HF's BpeTrainer with the reference configuration: Split(regex, isolated) steps, then
    ByteLevel(add_prefix_space=False, use_regex=False), full byte alphabet, specials first."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    pre = PreTokenizer(pattern, digits)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(s), behavior="isolated") for s in pre.steps]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    if special_tokens:
        # Added before training so HF, like BPETokenizer, cuts them out of the training text.
        tok.add_special_tokens(list(special_tokens))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([texts] if isinstance(texts, str) else list(texts), trainer)
    return tok


@pytest.fixture(scope="session")
def hf_train():
    return hf_bpe_train
