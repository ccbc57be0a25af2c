"""Shared fixtures for the tokenizer tests: corpus slices and an HF trainer configured as issue 3 says."""
import pytest

from workbench.bench import tokenizers_bench as bench_tokenizers


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


@pytest.fixture(scope="session")
def hf_train():
    return bench_tokenizers.hf_train
