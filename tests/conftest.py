import importlib
import os

import pytest
import torch
from hypothesis import settings

# `make test` sets HYPOTHESIS_PROFILE=ci, hypothesis's built-in CI profile (derandomized, no deadline, no
# example database): the same examples every run, so a pass or a failure is reproducible.
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])

# Tests share 2 cores with notebook kernels and the browser; one intra-op thread keeps timings sane.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_model():
    """A random 2-layer TinyGPT with a byte tokenizer (rope positions, context 64)."""
    from tests.factories import tiny_gpt
    from workbench.tokenizers import ByteTokenizer

    return tiny_gpt(ByteTokenizer(), name="tiny", n_layer=2, n_head=2, n_embd=32, block_size=64, pos="rope")


@pytest.fixture
def restore_backend(monkeypatch):
    """Give a test a fresh kernel back-end decision and restore the previous one afterwards."""
    # `workbench.kernels.backend` the attribute is the function backend(); get the module itself.
    backend_mod = importlib.import_module("workbench.kernels.backend")
    saved = backend_mod._state, backend_mod._probe_cache
    monkeypatch.delenv(backend_mod.ENV_VAR, raising=False)
    backend_mod._state = backend_mod._probe_cache = None
    yield backend_mod
    backend_mod._state, backend_mod._probe_cache = saved
