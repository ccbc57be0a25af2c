"""Blockwise per-head metrics and head images on a probe equal the full-matrix computations.

The reference is the full ``(L, H, T, T)`` capture: ``head_metrics(capture)`` runs the NumPy functions of
:mod:`workbench.attention.metrics` over whole matrices, and one metric is also written out here by hand.
"""
import numpy as np
import pytest
import torch

from tests.factories import attention_gpt
from tests import hf_families as F
from workbench.attention import (
    METRICS,
    AttentionProbe,
    dense,
    head_metrics,
    head_view,
    lambda_mask,
    repeated_random_ids,
    sliding_window,
)
from workbench.attention.metrics import block_rows_for
from workbench.attention.view import probe_head_view


def assert_metrics_equal(a, b):
    for name in METRICS:
        va, vb = getattr(a, name), getattr(b, name)
        if vb is None:
            assert va is None, name
            continue
        np.testing.assert_allclose(va, vb, rtol=2e-5, atol=1e-6, err_msg=name)


IDS = np.concatenate([[5, 7], repeated_random_ids(23, seed=2, low=3), [9, 9, 5]])  # T = 51


@pytest.mark.parametrize("policy", [None, sliding_window(6), lambda_mask(2, 6)], ids=str)
@pytest.mark.parametrize("block_rows", [None, 7])
def test_tinygpt_blockwise_metrics_equal_the_full_matrix(policy, block_rows):
    m = attention_gpt("rope", n_head=4, n_layer=2)
    probe = AttentionProbe(m, IDS, policy=policy)
    for window, sink_k in ((None, 1), ((9, 41), 3), (5, 1)):
        full = head_metrics(probe.capture(window=window), sink_k=sink_k)
        blocks = head_metrics(probe, sink_k=sink_k, window=window, block_rows=block_rows)
        assert_metrics_equal(blocks, full)


def test_one_row_blocks():
    probe = AttentionProbe(attention_gpt("rope", n_head=2), IDS, policy=lambda_mask(2, 6))
    assert_metrics_equal(head_metrics(probe, sink_k=2, block_rows=1), head_metrics(probe.capture(), sink_k=2))


def test_beyond_the_context_under_a_dense_policy():
    m = attention_gpt("rope", n_head=2, block_size=32)
    ids = repeated_random_ids(40, seed=1)  # T = 80 > 32
    probe = AttentionProbe(m, ids, policy=dense())
    assert_metrics_equal(head_metrics(probe, sink_k=2, block_rows=16), head_metrics(probe.capture(), sink_k=2))


def test_entropy_by_hand_over_the_full_matrix():
    """Entropy normalised by log(visible keys) under a sliding window, written out over the T x T matrix."""
    m = attention_gpt("rope", n_head=2)
    probe = AttentionProbe(m, IDS, policy=sliding_window(5))
    got = head_metrics(probe, block_rows=4).entropy
    T = len(IDS)
    for layer in range(2):
        P = probe.probs(layer).double().numpy()  # (H, T, T)
        for h in range(2):
            rows = []
            for i in range(T):
                n = min(i + 1, 5)
                if n > 1:
                    p = P[h, i, max(0, i - 4): i + 1]
                    rows.append(-(p * np.log(p)).sum() / np.log(n))
            assert got[layer, h] == pytest.approx(np.mean(rows), rel=1e-5)


@pytest.mark.parametrize("family,recompute", [("gpt2", True), ("llama", True), ("mistral", True),
                                              ("gpt2", False)])
def test_hf_blockwise_metrics_equal_the_full_matrix(family, recompute):
    """GPT-2 and Llama (grouped-query, RoPE) recomputed from hooked q/k, Mistral's sliding window, and the
    model's own (eager-switch) capture sliced."""
    model = F.loaded(family)
    ids = F.hf_tokenizer()("the probe reads the text; the probe reads the text again and again")["input_ids"]
    probe = AttentionProbe(model, ids, recompute=recompute)
    assert probe.meta["mechanism"] == ("recompute" if recompute else "eager_switch")
    for window in (None, (3, len(ids) - 2)):
        full = head_metrics(probe.capture(window=window), sink_k=2)
        assert_metrics_equal(head_metrics(probe, sink_k=2, window=window, block_rows=5), full)


def test_block_rows_for_bounds_the_block():
    assert block_rows_for(4, 4096) == 256
    assert block_rows_for(12, 8192) == 42
    assert block_rows_for(1, 10) == 1024 and block_rows_for(64, 10**6) == 16


@pytest.mark.parametrize("mode", ["raw", "value-weighted"])
@pytest.mark.parametrize("window,max_side,block_rows", [(None, 16, None), (None, 16, 5), ((7, 51), 10, 3),
                                                          (None, 512, 4)])
def test_probe_head_view_equals_the_full_pattern_view(mode, window, max_side, block_rows):
    m = attention_gpt("rope", n_head=2)
    probe = AttentionProbe(m, IDS)
    a = probe.probs(1, [1], window)[0].numpy()
    if mode == "value-weighted":
        w = a * probe.value_norms(1, [1])[0].numpy()[None, : a.shape[1]]
        a = w / np.maximum(w.sum(-1, keepdims=True), 1e-30)
    q0 = 0 if window is None else window[0]
    tokens = [f"t{i}" for i in range(len(IDS))]
    want = head_view(a, q0, tokens, max_side)
    got = probe_head_view(probe, 1, 1, tokens, max_side, window=window, value_weighted=mode == "value-weighted",
                          block_rows=block_rows)
    np.testing.assert_allclose(got.image, want.image, rtol=1e-6, atol=1e-7)
    assert got.factor == want.factor
    np.testing.assert_array_equal(got.q_edges, want.q_edges)
    np.testing.assert_array_equal(got.k_edges, want.k_edges)
    assert (got.q_labels, got.k_labels) == (want.q_labels, want.k_labels)


def test_metrics_on_the_torch_path(monkeypatch):
    """The branch for probabilities off the CPU (torch ops on their device, as on CUDA) gives the same numbers;
    run here on CPU tensors."""
    from workbench.attention import metrics as M

    m = attention_gpt("rope", n_head=2)
    probe = AttentionProbe(m, IDS, policy=lambda_mask(2, 6))
    want = head_metrics(probe.capture(), sink_k=2)
    monkeypatch.setattr(M, "_on_cpu", lambda t: False)
    assert_metrics_equal(head_metrics(probe, sink_k=2, block_rows=9), want)
