"""Per-head metrics on hand-built attention patterns with known answers."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.attention import (
    AttentionCapture,
    AttentionError,
    duplicate_token_score,
    entropy,
    head_metrics,
    induction_score,
    mean_distance,
    previous_token_score,
    repeated_random_ids,
    rollout,
    sink_mass,
    value_sink_mass,
    value_weighted,
)

T = 12


def prev_head(T=T):
    a = np.eye(T, k=-1)
    a[0, 0] = 1.0
    return a


def uniform_head(T=T):
    return np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]


def sink_head(T=T):
    a = np.zeros((T, T))
    a[:, 0] = 1.0
    return a


def self_head(T=T):
    return np.eye(T)


def test_previous_token_head_scores_one():
    assert previous_token_score(prev_head())[0, 0] == 1.0
    assert previous_token_score(self_head())[0, 0] == 0.0
    # uniform: a[i, i-1] = 1/(i+1) for i >= 1
    expect = np.mean([1 / (i + 1) for i in range(1, T)])
    assert previous_token_score(uniform_head())[0, 0] == pytest.approx(expect, abs=1e-12)


def test_entropy_uniform_is_one_and_one_hot_is_zero():
    assert entropy(uniform_head())[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert entropy(prev_head())[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert entropy(sink_head())[0, 0] == pytest.approx(0.0, abs=1e-12)
    # half the rows uniform over two keys: H = log 2 / log(n)
    a = np.zeros((3, 3)); a[0, 0] = 1; a[1, :2] = 0.5; a[2, :2] = 0.5
    assert entropy(a)[0, 0] == pytest.approx(np.mean([1.0, np.log(2) / np.log(3)]), abs=1e-12)


def test_entropy_normalises_by_the_mask_row_length():
    w = 3  # sliding window of 3: uniform over the visible keys has entropy 1 under that mask
    a = np.zeros((T, T))
    for i in range(T):
        lo = max(0, i - w + 1)
        a[i, lo : i + 1] = 1.0 / (i + 1 - lo)
    mask = a > 0
    assert entropy(a, mask=mask)[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert entropy(a)[0, 0] < 0.9  # but not under the dense causal normalisation


def test_sink_mass():
    assert sink_mass(sink_head())[0, 0] == 1.0
    assert sink_mass(prev_head())[0, 0] == pytest.approx(1 / (T - 1))  # only row 1 looks at token 0
    expect = np.mean([2 / (i + 1) for i in range(2, T)])
    assert sink_mass(uniform_head(), k=2)[0, 0] == pytest.approx(expect, abs=1e-12)
    with pytest.raises(AttentionError):
        sink_mass(uniform_head(), k=0)


def test_mean_distance():
    assert mean_distance(self_head())[0, 0] == 0.0
    assert mean_distance(prev_head())[0, 0] == pytest.approx((T - 1) / T)
    assert mean_distance(sink_head())[0, 0] == pytest.approx(np.mean(np.arange(T)))
    assert mean_distance(uniform_head())[0, 0] == pytest.approx(np.mean(np.arange(T) / 2))


def ideal_heads(n):
    """On x x (length 2n, distinct tokens): an induction head (n+t -> t+1) and a duplicate head (n+t -> t)."""
    L = 2 * n
    ind, dup = np.zeros((L, L)), np.zeros((L, L))
    for i in range(L):
        if i >= n:
            ind[i, i - n + 1] = 1.0
            dup[i, i - n] = 1.0
        else:
            ind[i, 0] = dup[i, 0] = 1.0
    return ind, dup


def test_induction_and_duplicate_scores():
    n = 7
    ids = repeated_random_ids(n, seed=3)
    assert len(set(ids[:n])) == n and (ids[:n] == ids[n:]).all()
    ind, dup = ideal_heads(n)
    both = np.stack([ind, dup])[None]  # (1, 2, T, T)
    assert induction_score(both, ids).tolist() == [[1.0, 0.0]]
    assert duplicate_token_score(both, ids).tolist() == [[0.0, 1.0]]
    # previous-token head: neither
    assert induction_score(prev_head(2 * n), ids)[0, 0] == 0.0
    with pytest.raises(AttentionError, match="ids"):
        induction_score(ind)


def test_no_defined_rows_gives_nan():
    ids = np.arange(5)  # no repeats: induction undefined
    assert np.isnan(induction_score(uniform_head(5), ids)[0, 0])


def capture_of(probs, ids, q_start=0, value_norms=None):
    probs = np.asarray(probs, dtype=np.float32)
    L, H = probs.shape[:2]
    return AttentionCapture(ids=np.asarray(ids), tokens=[str(i) for i in ids], probs=probs,
                            layers=tuple(range(L)), heads=tuple(range(H)), q_start=q_start,
                            value_norms=value_norms, n_layer=L, n_head=H)


def test_value_weighted_sink_carries_little():
    a = uniform_head()[None, None]
    vn = np.ones((1, 1, T), dtype=np.float32)
    vn[..., 0] = 0.0  # the sink writes nothing
    cap = capture_of(a, np.arange(T), value_norms=vn)
    assert sink_mass(cap)[0, 0] == pytest.approx(np.mean([1 / (i + 1) for i in range(1, T)]), abs=1e-6)
    assert value_sink_mass(cap)[0, 0] == 0.0
    vw = value_weighted(cap)
    np.testing.assert_allclose(vw[0, 0, 1:].sum(-1), 1.0, rtol=1e-6)
    # row i >= 1 becomes uniform over keys 1..i
    np.testing.assert_allclose(vw[0, 0, 4, 1:5], 0.25, rtol=1e-6)
    with pytest.raises(AttentionError, match="value_norms"):
        value_weighted(capture_of(a, np.arange(T)))


def test_rollout_known_answers():
    I = np.eye(T)[None, None]
    np.testing.assert_allclose(rollout(np.concatenate([I, I]))[-1], np.eye(T))
    A1, A2 = uniform_head(), prev_head()
    probs = np.stack([np.stack([A1, A1]), np.stack([A2, A2])])  # (2 layers, 2 heads)
    R = rollout(probs)
    B1, B2 = 0.5 * A1 + 0.5 * np.eye(T), 0.5 * A2 + 0.5 * np.eye(T)
    np.testing.assert_allclose(R[0], B1, atol=1e-6)
    np.testing.assert_allclose(R[1], B2 @ B1, atol=1e-6)
    np.testing.assert_allclose(R.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(rollout(probs, residual=False)[1], A2 @ A1, atol=1e-6)


def test_windowed_capture_metrics_use_absolute_positions():
    full = uniform_head()
    q0 = 5
    cap = capture_of(full[None, None, q0:], np.arange(T), q_start=q0)
    expect = np.mean([1 / (i + 1) for i in range(q0, T)])
    assert previous_token_score(cap)[0, 0] == pytest.approx(expect, abs=1e-6)
    assert entropy(cap)[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert mean_distance(cap)[0, 0] == pytest.approx(np.mean(np.arange(q0, T) / 2), abs=1e-5)
    with pytest.raises(AttentionError, match="every query"):
        rollout(cap)


def test_head_metrics_bundle_matches_functions():
    ind, dup = ideal_heads(6)
    ids = repeated_random_ids(6, seed=1)
    cap = capture_of(np.stack([ind, dup])[None], ids)
    hm = head_metrics(cap)
    assert hm.induction.tolist() == [[1.0, 0.0]] and hm.duplicate_token.tolist() == [[0.0, 1.0]]
    np.testing.assert_array_equal(hm.get("entropy"), entropy(cap))
    with pytest.raises(AttentionError, match="unknown metric"):
        hm.get("nope")
    with pytest.raises(AttentionError, match="not available"):
        hm.get("value_sink_mass")


@st.composite
def causal_patterns(draw):
    n = draw(st.integers(2, 9))
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    a = np.tril(rng.random((2, 3, n, n)) ** 4)
    return a / a.sum(-1, keepdims=True)


@settings(max_examples=40, deadline=None)
@given(causal_patterns())
def test_metric_ranges_on_random_patterns(a):
    n = a.shape[-1]
    for f in (entropy, sink_mass, previous_token_score):
        v = f(a)
        assert v.shape == (2, 3)
        assert np.all((v >= -1e-12) & (v <= 1 + 1e-12))
    d = mean_distance(a)
    assert np.all((d >= 0) & (d <= n - 1))
    np.testing.assert_allclose(rollout(a).sum(-1), 1.0, atol=1e-5)


def test_shifted_induction_and_offsets():
    from workbench.attention import attention_by_offset

    n, s = 8, 3
    ids = repeated_random_ids(n, seed=4)
    L = 2 * n
    a = np.zeros((L, L))
    for i in range(L):
        j = i - n + 1 + s if i >= n else 0  # looks s tokens past the induction target
        a[i, j if 0 <= j <= i else 0] = 1.0
    assert induction_score(a, ids, shift=s)[0, 0] == 1.0
    assert induction_score(a, ids)[0, 0] == 0.0
    prof = attention_by_offset(prev_head())[0, 0]
    assert prof[1] == 1.0 and prof[0] == pytest.approx(1 / T) and prof[2:].max() == 0.0
