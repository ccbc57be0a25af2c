"""capture_attention on TinyGPT: equals an explicit recomputation, respects masks, and rejects bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.unit.attention.attn_helpers import TEXT, explicit_forward
from tests.factories import attention_gpt
from workbench.attention import (
    AttentionProbe,
    BudgetExceededError,
    CaptureNotSupportedError,
    ContextLengthError,
    EmptyInputError,
    IndexOutOfRangeError,
    PolicyError,
    capture_attention,
    dense,
    lambda_mask,
    sliding_window,
    streaming,
    use_policy,
)


def explicit_attention(m, ids, allowed=None):
    """Every layer's probabilities (L, H, T, T) recomputed from the weights, written out step by step."""
    return explicit_forward(m, ids, allowed)[0].numpy()


@pytest.mark.parametrize("pos, n_head", [("learned", 4), ("rope", 4), ("alibi", 4), ("alibi", 6)])
def test_capture_equals_explicit_recomputation(pos, n_head):
    m = attention_gpt(pos, n_head=n_head, n_embd=8 * n_head)  # 6 heads: ALiBi's slopes for a head count not a power of 2
    ids = list(TEXT.encode())
    cap = capture_attention(m, TEXT)
    assert cap.probs.shape == (2, n_head, len(ids), len(ids))
    assert cap.tokens[:3] == ["t", "h", "e"] and cap.ids.tolist() == ids
    ref = explicit_attention(m, ids)
    np.testing.assert_allclose(cap.probs, ref, atol=1e-5)
    assert np.abs(cap.probs - ref).max() < 1e-5
    # and the pattern is far from uniform (the test could fail)
    assert cap.probs.max() > 0.5
    # the model's own capture path agrees
    own = m.forward(torch.tensor([ids]), capture=True).attentions[:, 0].detach().numpy()
    np.testing.assert_allclose(cap.probs, own, atol=1e-6)


@pytest.mark.parametrize("policy", [sliding_window(4), lambda_mask(2, 5)], ids=str)
@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_variant_rows_sum_to_one_and_respect_mask(pos, policy):
    m = attention_gpt(pos, n_head=4)
    ids = list(TEXT.encode())
    cap = capture_attention(m, TEXT, policy=policy)
    allowed = cap.allowed()
    np.testing.assert_allclose(cap.probs.sum(-1), 1.0, atol=1e-5)
    assert (cap.probs[..., ~allowed] == 0).all()
    assert (cap.probs[..., allowed] > 0).all()
    ref = explicit_attention(m, ids, torch.from_numpy(allowed))
    np.testing.assert_allclose(cap.probs, ref, atol=1e-5)
    with use_policy(m, policy):
        own = m.forward(torch.tensor([ids]), capture=True).attentions[:, 0].detach().numpy()
    np.testing.assert_allclose(cap.probs, own, atol=1e-6)
    assert m.mask_fn is None  # restored


def test_known_mask_shapes():
    pos = torch.arange(6)
    lam = lambda_mask(1, 2).allowed(pos, pos).int().numpy()
    assert lam.tolist() == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                            [1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 1, 0], [1, 0, 0, 0, 1, 1]]
    assert sliding_window(1).allowed(pos, pos).int().numpy().tolist() == np.eye(6, dtype=int).tolist()


def test_beyond_context_with_policy():
    m = attention_gpt("rope", block_size=32)
    ids = np.random.default_rng(0).integers(0, 256, 80)
    with pytest.raises(ContextLengthError, match="policy"):
        capture_attention(m, ids)
    cap = capture_attention(m, ids, policy=sliding_window(16), layers=[1])
    assert cap.probs.shape == (1, 2, 80, 80)
    assert (cap.probs[..., ~cap.allowed()] == 0).all()
    np.testing.assert_allclose(cap.probs.sum(-1), 1.0, atol=1e-5)
    capd = capture_attention(m, ids, policy=dense(), layers=[0])
    np.testing.assert_allclose(capd.probs[0], explicit_attention(m, ids.tolist())[0], atol=1e-5)
    learned = attention_gpt("learned", block_size=32)
    with pytest.raises(ContextLengthError, match="learned positions"):
        capture_attention(learned, ids, policy=sliding_window(16))
    with pytest.raises(PolicyError, match="lambda_mask"):
        capture_attention(m, ids, policy=streaming(4, 16))


def test_selection_and_window_are_slices_of_the_full_capture():
    m = attention_gpt("rope", n_layer=3, n_head=4)
    full = capture_attention(m, TEXT)
    part = capture_attention(m, TEXT, layers=[2, 0], heads=[3, 1], window=(10, 30))
    assert part.probs.shape == (2, 2, 20, 30) and part.q_start == 10
    np.testing.assert_allclose(part.probs, full.probs[[2, 0]][:, [3, 1], 10:30, :30], atol=1e-6)
    np.testing.assert_allclose(part.head(0, 1), full.head(0, 1)[10:30, :30], atol=1e-6)
    last = capture_attention(m, TEXT, layers=1, heads=2, window=5)
    assert last.probs.shape == (1, 1, 5, len(TEXT))
    np.testing.assert_allclose(last.probs[0, 0], full.head(1, 2)[-5:], atol=1e-6)
    with pytest.raises(IndexOutOfRangeError, match="not in this capture"):
        part.head(1, 1)


def test_value_norms_equal_explicit():
    m = attention_gpt("learned", n_head=2)
    cap = capture_attention(m, TEXT)
    ids = torch.tensor(list(TEXT.encode()))
    x = m.wte.weight[ids] + m.wpe.weight[: len(ids)]
    b = m.blocks[0]
    v = F.layer_norm(x, (32,), b.ln1.weight, b.ln1.bias) @ b.attn.qkv.weight[64:].T + b.attn.qkv.bias[64:]
    for h in range(2):
        f = v[:, h * 16:(h + 1) * 16] @ b.attn.proj.weight[:, h * 16:(h + 1) * 16].T
        np.testing.assert_allclose(cap.value_norms[0, h], f.norm(dim=-1).detach().numpy(), rtol=1e-5)


def test_budget_error_says_how_to_narrow():
    m = attention_gpt("rope", block_size=256)
    ids = np.random.default_rng(1).integers(0, 256, 256)
    # 2 layers x 2 heads x 256 x 256 x 4 bytes = 1 MB
    with pytest.raises(BudgetExceededError) as e:
        capture_attention(m, ids, budget_mb=0.5)
    msg = str(e.value)
    assert "layers=" in msg and "heads=" in msg and "window=" in msg and "1 MB" in msg
    cap = capture_attention(m, ids, budget_mb=0.5, layers=[0])  # exactly 0.5 MB fits
    assert cap.nbytes >= 2 * 256 * 256 * 4


def test_bad_input_errors():
    m = attention_gpt()
    with pytest.raises(EmptyInputError):
        capture_attention(m, "")
    with pytest.raises(EmptyInputError):
        capture_attention(m, [])
    with pytest.raises(IndexOutOfRangeError, match="layer 2 is out of range"):
        capture_attention(m, "abc", layers=[2])
    with pytest.raises(IndexOutOfRangeError, match="head -1 is out of range"):
        capture_attention(m, "abc", heads=[-1])
    with pytest.raises(IndexOutOfRangeError, match="token id 999"):
        capture_attention(m, [1, 2, 999])
    with pytest.raises(IndexOutOfRangeError, match="window"):
        capture_attention(m, "abc", window=(2, 9))
    with pytest.raises(ContextLengthError, match="context of 64"):
        capture_attention(m, "x" * 65)

    class NoCapture:
        supports_capture = False
        name = "blind"
        config = m.config
        tokenizer = m.tokenizer

    with pytest.raises(CaptureNotSupportedError, match="blind does not support"):
        capture_attention(NoCapture(), "abc")


def test_probe_computes_one_head_on_demand():
    m = attention_gpt("alibi", n_head=4)
    probe = AttentionProbe(m, TEXT)
    full = capture_attention(m, TEXT)
    np.testing.assert_allclose(probe.probs(1, [2]).numpy()[0], full.head(1, 2), atol=1e-6)
    with pytest.raises(IndexOutOfRangeError):
        probe.probs(5)


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
@pytest.mark.parametrize("policy", [None, dense(), sliding_window(6), lambda_mask(2, 6)], ids=str)
def test_probe_uses_the_fused_kernel_on_cupy(monkeypatch, pos, policy):
    """With CUDA tensors and the CuPy back-end a head click asks the fused attention kernel for the selected
    heads' probabilities (stood in for here by its reference, which runs on a CPU): same probabilities as the
    explicit route, for every mask the kernel supports; ALiBi keeps the explicit route."""
    from workbench import kernels

    m = attention_gpt(pos, n_head=2)  # head size 16, one the kernel supports
    want = AttentionProbe(m, TEXT, policy=policy).probs(1, [1, 0], window=(5, 30))
    calls = []
    real = kernels.attention

    def recording(*a, **k):
        if k.get("return_probs_heads") is not None:   # the probe's calls (TinyGPT's forward also takes the kernel)
            calls.append(k)
        return real(*a, **k)

    monkeypatch.setattr(kernels, "attention", recording)
    monkeypatch.setattr(kernels, "kernels_run_for", lambda is_cuda: True)
    got = AttentionProbe(m, TEXT, policy=policy).probs(1, [1, 0], window=(5, 30))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    if pos == "alibi":
        assert calls == []
    else:
        (kw,) = calls
        assert kw["return_probs_heads"] == range(2) and kw["causal"]
        assert (kw["window"], kw["sinks"]) == {None: (None, 0), "dense": (None, 0), "sliding(w=6)": (6, 0),
                                               "lambda(g=2, w=6)": (6, 2)}[policy and str(policy)]


def test_probe_keeps_the_explicit_route_where_the_kernel_cannot_go(monkeypatch):
    """float64 (no kernel dtype) falls back instead of raising; a window longer than the text is capped."""
    from workbench import kernels

    monkeypatch.setattr(kernels, "kernels_run_for", lambda is_cuda: True)
    m = attention_gpt("rope", n_head=2).double()
    want = explicit_forward(m, list(TEXT.encode()))[0][1, [1, 0]]
    torch.testing.assert_close(AttentionProbe(m, TEXT).probs(1, [1, 0]), want.float(), atol=1e-6, rtol=1e-5)
    seen = []
    real = kernels.attention
    monkeypatch.setattr(kernels, "attention", lambda *a, **k: seen.append(k) or real(*a, **k))
    AttentionProbe(attention_gpt("rope", n_head=2), TEXT, policy=lambda_mask(10**10, 10**10)).probs(0, [0])
    assert (seen[0]["window"], seen[0]["sinks"]) == (len(TEXT), len(TEXT))


@pytest.mark.parametrize("policy", [None, sliding_window(6), lambda_mask(2, 6)], ids=str)
def test_probe_metrics_equal_capture_metrics(policy):
    from workbench.attention import METRICS, head_metrics, repeated_random_ids

    m = attention_gpt("rope", n_head=4)
    ids = np.concatenate([[5], repeated_random_ids(20, seed=2)])
    probe = AttentionProbe(m, ids, policy=policy)
    for window in (None, (9, 41)):
        a = head_metrics(probe, sink_k=2, window=window)
        b = head_metrics(capture_attention(m, ids, policy=policy, window=window), sink_k=2)
        for name in METRICS:
            np.testing.assert_allclose(a.get(name), b.get(name), rtol=1e-4, atol=1e-6, err_msg=name)
        assert np.isfinite(a.induction).all()
        # the induction targets lie 20 tokens back: visible densely, masked out by a window of 6
        assert (a.induction.max() > 0) == (policy is None)


def test_induction_on_a_repeated_random_sequence():
    from workbench.attention import (AttentionError, induction_score, repeated_random_ids,
                                     repeated_sequence_induction, train_induction)

    run = train_induction(steps=10, every=10, length=8, min_length=4, n_embd=32, batch_size=8, seed=3)
    # the run scores its checkpoints on repeated_random_ids(length, vocab=vocab, seed=seed + 2): same probe
    np.testing.assert_allclose(repeated_sequence_induction(run.model, n=8, seed=5), run.induction[-1], atol=1e-6)
    m = attention_gpt("rope", n_head=4)
    ids = repeated_random_ids(20, 3, vocab=m.config.vocab_size, seed=1)
    got = repeated_sequence_induction(m, n=20, reps=3, seed=1, shift=1)
    np.testing.assert_allclose(got, induction_score(capture_attention(m, ids), shift=1), atol=1e-7)
    assert got.shape == (2, 4) and np.isfinite(got).all()
    with pytest.raises(ContextLengthError, match="context of 64"):
        repeated_sequence_induction(m, n=40)  # 80 tokens, no long-context policy
    assert repeated_sequence_induction(m, n=40, policy=dense()).shape == (2, 4)
    with pytest.raises(AttentionError, match="reps >= 2"):
        repeated_sequence_induction(m, n=8, reps=1)
