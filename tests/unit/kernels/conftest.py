"""Shared fixtures for the kernel tests."""
import importlib

import pytest

# `workbench.kernels.backend` the attribute is the function backend(); get the module itself.
backend_mod = importlib.import_module("workbench.kernels.backend")


@pytest.fixture
def restore_backend(monkeypatch):
    """Give a test a fresh back-end decision and restore the previous one afterwards."""
    saved = backend_mod._state, backend_mod._probe_cache
    monkeypatch.delenv(backend_mod.ENV_VAR, raising=False)
    backend_mod._state = backend_mod._probe_cache = None
    yield backend_mod
    backend_mod._state, backend_mod._probe_cache = saved
