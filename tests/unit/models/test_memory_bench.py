"""`python -m workbench.bench memory` at a tiny size: the rows, the byte counts against their formulas, the
printout. Timings are not asserted (the bench prints them against the target)."""
from __future__ import annotations

import pytest
import torch

from workbench.bench import memory_bench as memory
from workbench.bench.__main__ import AREAS


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_rows_and_cache_bytes():
    rows = memory.run(lengths=(8, 40), steps=2, rounds=1, shape=memory.TINY_SHAPE)
    by = {(r.model, r.T): r for r in rows}
    assert set(by) == {("tinygpt", 8), ("tinygpt", 40), ("recurrent", 8), ("recurrent", 40)}
    L, H, D = 2, 2, 16
    for T in (8, 40):  # keys and values of T tokens, float32
        assert by["tinygpt", T].cache_bytes == by["tinygpt", T].ring_bytes == 2 * L * H * T * (D // H) * 4
    state = L * H * (D // H) * (D // H) * 4  # one (Dk, Dv) state per layer and head
    assert by["recurrent", 8].cache_bytes == by["recurrent", 40].cache_bytes == state
    assert by["recurrent", 40].ring_bytes == state * 4  # the state and 3 past ones (warm-up + 2 steps)
    assert all(r.step_ms > 0 for r in rows)
    assert memory.ratios(rows)["tinygpt"] == by["tinygpt", 40].step_ms / by["tinygpt", 8].step_ms


def test_prefilled_caches_hold_the_same_bytes_as_filled_ones():
    filled = memory.run(lengths=(12,), steps=1, rounds=1, shape=memory.TINY_SHAPE)
    real = memory.run(lengths=(12,), steps=1, rounds=1, shape=memory.TINY_SHAPE, prefill=True)
    assert [(r.model, r.cache_bytes) for r in filled] == [(r.model, r.cache_bytes) for r in real]


def test_main_prints_both_models_and_the_verdict(capsys):
    assert "memory" in AREAS
    assert memory.main(["--tiny", "--T", "8", "24", "--steps", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("tinygpt ") >= 3 and out.count("recurrent ") >= 3
    assert "step time at T = 24 / at T = 8" in out and "target" in out
