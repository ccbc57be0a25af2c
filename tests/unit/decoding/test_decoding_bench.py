"""Plumbing of ``python -m workbench.bench decoding`` on tiny models (the real run uses the shipped pair)."""
from __future__ import annotations

import pytest
import torch

from tests.factories import peaked_gpt
from workbench.bench import decoding_bench as B
from workbench.decoding import Pipeline, expected_speedup

torch.set_num_threads(1)


def test_speculative_rows_carry_formula_and_explanation():
    target, draft = peaked_gpt(0, scale=0.25, block_size=128), peaked_gpt(1, scale=0.25, block_size=128)
    target.tokenizer = draft.tokenizer = None
    costs = B.call_costs(target, draft, [3], reps=5)
    assert set(costs["target_ms"]) == {1, 3} and costs["c"] > 0
    rows = B.speculative(target, draft, 10, [2], 1, {"T=1": Pipeline.preset("hf", temperature=1.0)})
    (r,) = rows
    assert r["c"] == pytest.approx(r["draft_step_ms"] / r["target_step_ms"])  # costs timed inside the runs
    assert r["predicted_speedup"] == pytest.approx(expected_speedup(r["alpha"], 2, r["c"]))
    assert r["verify_cost_ratio"] == pytest.approx(r["verify_call_ms"] / r["target_step_ms"])
    assert r["measured_over_predicted"] == pytest.approx(r["measured_speedup"] / r["predicted_speedup"])
    assert 0 < r["plain_model_share"] <= 1 and 0 < r["spec_model_share"] <= 1
    text = B.explain(dict(r, measured_over_predicted=0.5))
    assert text.startswith("slower than predicted") and "outside model calls" in text
    assert B.explain(dict(r, measured_over_predicted=1.1)) == "within 15%"


def test_throughput_reports_both_sides():
    pytest.importorskip("transformers")
    target = peaked_gpt(0, vocab=40, block_size=128)
    target.tokenizer = None
    out = B.throughput(target, 6, 1)
    for mode in ("greedy", "sample"):
        row = out[mode]
        assert row["workbench_tok_s"] > 0 and row["hf_generate_tok_s"] > 0
        assert row["ratio"] == pytest.approx(row["workbench_tok_s"] / row["hf_generate_tok_s"])
        assert row["workbench_loop_ms_per_token"] >= 0 and row["hf_model_ms_per_token"] > 0


def test_lab_render_is_measured():
    """The DecodingLab's redraw time (its < 100 ms target is printed by the bench, not asserted in unit tests)."""
    pytest.importorskip("jupyter_bokeh")
    from tests.factories import byte_gpt

    r = B.lab_render(byte_gpt(0, 2), byte_gpt(1, 1), reps=2, max_new_tokens=8)
    assert r["render_s"] > 0 and r["target_s"] == B.RENDER_TARGET_S
