"""Plumbing of ``python -m workbench.bench models`` (the real run uses longer settings)."""
import pytest
import torch

from workbench.bench import models_bench as B


def test_decode_worker_times_steps_after_a_prefill(monkeypatch):
    seen = []
    step = B.TinyGPT.step

    def spy(self, ids, cache, capture=False):
        seen.append((cache.length, ids.size(1), torch.is_grad_enabled()))
        return step(self, ids, cache, capture)

    monkeypatch.setattr(B.TinyGPT, "step", spy)
    d = B._decode(T=24, reps=2)
    assert d["speedup"] == pytest.approx(d["recompute_ms"] / d["cached_ms"])
    assert d["speedup_vs_reference"] == pytest.approx(d["reference_recompute_ms"] / d["cached_ms"])
    assert d["cached_ms"] > 0 and d["peak_mb"] > 0
    # each rep: a 16-token prefill, then 8 one-token steps on the growing cache, all without gradients
    assert seen[:9] == [(0, 16, False)] + [(16 + i, 1, False) for i in range(8)]
    assert len(seen) == 18


@pytest.mark.parametrize("kind", ["tinygpt", "reference-sdpa"])
def test_training_worker(kind):
    r = B._train_tps(kind, steps=1, batch=1)
    assert r["tokens_per_s"] > 0 and r["step_ms"] > 0


def test_load_times_cover_every_shipped_model():
    from workbench.models import available

    t = B.load_times()
    assert set(t) == set(available()) and all(s > 0 for s in t.values())
