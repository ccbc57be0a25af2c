"""Head ablation against weight surgery, mean ablation's known answer, and capture diffs."""
import copy

import numpy as np
import pytest
import torch

from tests.unit.attention.attn_helpers import TEXT
from tests.factories import attention_gpt
from workbench.attention import (
    AttentionError,
    IndexOutOfRangeError,
    ablate_heads,
    ablation_scan,
    capture_attention,
    diff_captures,
    entropy,
)


def without_head_values(m, pairs):
    """A copy whose heads write nothing: zero the value projection rows (weights and bias) of those heads."""
    c = copy.deepcopy(m)
    D, Dh = m.config.n_embd, m.config.head_dim
    with torch.no_grad():
        for layer, h in pairs:
            sl = slice(2 * D + h * Dh, 2 * D + (h + 1) * Dh)
            c.blocks[layer].attn.qkv.weight[sl] = 0
            c.blocks[layer].attn.qkv.bias[sl] = 0
    return c


@pytest.mark.parametrize("pairs", [[(0, 1)], [(0, 0), (1, 1)]])
def test_zero_ablation_equals_weight_surgery(pairs):
    m = attention_gpt("rope")
    r = ablate_heads(m, TEXT, pairs)
    ids = torch.tensor([list(TEXT.encode())])
    ref = without_head_values(m, pairs).forward(ids).logits[0, -1].log_softmax(-1).detach().numpy()
    np.testing.assert_allclose(r.ablated, ref, atol=1e-5)
    base = m.forward(ids).logits[0, -1].log_softmax(-1).detach().numpy()
    np.testing.assert_allclose(r.base, base, atol=1e-6)
    np.testing.assert_allclose(r.delta, ref - base, atol=1e-5)
    assert r.kl > 1e-6 and np.abs(r.delta).max() > 1e-4
    assert r.kl == pytest.approx(float((np.exp(base) * (base - ref)).sum()), abs=1e-5)
    assert abs(r.top[0][3] - r.top[0][2]) == pytest.approx(np.abs(r.delta).max(), abs=1e-6)


def test_mean_ablation_on_one_token_changes_nothing_and_differs_from_zero():
    m = attention_gpt("learned")
    one = ablate_heads(m, "a", [(0, 0), (1, 1)], mode="mean")
    np.testing.assert_allclose(one.delta, 0.0, atol=1e-6)
    longer_mean = ablate_heads(m, TEXT, [(0, 0)], mode="mean")
    longer_zero = ablate_heads(m, TEXT, [(0, 0)], mode="zero")
    assert np.abs(longer_mean.ablated - longer_zero.ablated).max() > 1e-4
    # a reference equal to the input gives the same answer as the default
    ref = ablate_heads(m, TEXT, [(0, 0)], mode="mean", reference=TEXT)
    np.testing.assert_allclose(ref.ablated, longer_mean.ablated, atol=1e-6)


def test_scan_matches_single_ablations():
    m = attention_gpt("alibi")
    scan = ablation_scan(m, TEXT)
    assert scan.shape == (2, 2)
    tgt = int(ablate_heads(m, TEXT, (0, 0)).base.argmax())
    for layer in range(2):
        for h in range(2):
            r = ablate_heads(m, TEXT, (layer, h))
            assert scan[layer, h] == pytest.approx(r.delta[tgt], abs=1e-5)


def test_ablation_errors():
    m = attention_gpt()
    with pytest.raises(IndexOutOfRangeError, match="head 2"):
        ablate_heads(m, TEXT, (0, 2))
    with pytest.raises(IndexOutOfRangeError, match="layer 3"):
        ablate_heads(m, TEXT, [(3, 0)])
    with pytest.raises(AttentionError, match="mode"):
        ablate_heads(m, TEXT, (0, 0), mode="resample")
    with pytest.raises(IndexOutOfRangeError, match="position"):
        ablate_heads(m, "abc", (0, 0), position=3)


def test_diff_of_two_prompts_is_zero_before_the_first_difference():
    m = attention_gpt("rope")
    a = capture_attention(m, "the cat sat on the mat")
    b = capture_attention(m, "the cat sat on the hat!")  # differs from position 19, one token longer
    d = diff_captures(a, b)
    assert d.T == 22 and not d.same_tokens
    assert d.delta.shape == (2, 2, 22, 22)
    np.testing.assert_allclose(d.delta[:, :, :19], 0.0, atol=1e-6)  # causal: earlier rows cannot change
    assert np.abs(d.delta[:, :, 19:]).max() > 1e-3
    same = diff_captures(a, a)
    assert same.same_tokens and same.max_abs.max() == 0.0
    assert all(np.nan_to_num(v).max() == 0 for v in same.metrics.values())
    with pytest.raises(AttentionError, match="layers/heads"):
        diff_captures(a, capture_attention(m, "the cat", layers=[0]))


def test_diff_of_two_checkpoints():
    m1, m2 = attention_gpt("rope", seed=0), attention_gpt("rope", seed=1)
    d = diff_captures(capture_attention(m1, TEXT), capture_attention(m2, TEXT))
    assert d.same_tokens and d.max_abs.min() > 1e-3
    e1, e2 = entropy(capture_attention(m1, TEXT)), entropy(capture_attention(m2, TEXT))
    np.testing.assert_allclose(d.metrics["entropy"], e2 - e1, atol=1e-9)


@pytest.mark.parametrize("layer, head, msg", [(0, 2, "head 2 is out of range: the model has 2 heads (0..1)"),
                                              (-1, 0, "layer -1 is out of range: the model has 2 layers (0..1)")])
def test_layer_and_head_checked_alike_everywhere(layer, head, msg):
    """Ablation, capture and the probe validate (layer, head) with one function, so they say the same thing."""
    from workbench.attention import AttentionProbe
    from workbench.attention.errors import check_layer_head

    m = attention_gpt()
    assert (m.config.n_layer, m.config.n_head) == (2, 2)
    calls = [lambda: check_layer_head(2, 2, layer, head), lambda: ablate_heads(m, TEXT, (layer, head)),
             lambda: capture_attention(m, TEXT, layers=[layer], heads=[head]),
             lambda: AttentionProbe(m, TEXT).probs(layer, [head])]
    for call in calls:
        with pytest.raises(IndexOutOfRangeError) as e:
            call()
        assert str(e.value) == msg
