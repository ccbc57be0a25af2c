"""Shared fixtures for the scaling-law tests: replay data and the expensive full-grid fits, once each."""
import pytest

from workbench.scaling import fit_chinchilla, load_chinchilla


@pytest.fixture(scope="session")
def chinchilla240():
    return load_chinchilla(drop_highest=5)


@pytest.fixture(scope="session")
def chinchilla_fit(chinchilla240):
    d = chinchilla240
    return fit_chinchilla(d.N, d.D, d.loss, delta=1e-3, reduce="sum", grid="full")
