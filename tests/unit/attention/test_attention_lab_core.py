"""workbench.attention.lab, the AttentionLab's headless core: every number the lab shows, checked without a widget."""
import numpy as np
import pytest
import torch

from tests.factories import attention_gpt
from workbench.attention import (
    AttentionProbe,
    ContextLengthError,
    PolicyError,
    ablate_heads,
    head_metrics,
    lambda_mask,
    sliding_window,
    streaming,
    to_rgb,
)
from workbench.attention import lab as core

TEXT = "to be or not to be, that is the question; to be or not to be"


@pytest.fixture(scope="module")
def model():
    return attention_gpt("rope", n_layer=2, n_head=3, n_embd=48, block_size=96)


@pytest.fixture(scope="module")
def data(model):
    return core.compute(model, TEXT, compare_text=TEXT.replace("question", "answerxx"))


# --- colour scales ------------------------------------------------------------------------------------------------
def test_colour_scale_covers_exactly_the_values_drawn():
    s = core.colour_scale([-0.004, 0.001, 0.0035], diverging=True)
    assert (s.low, s.high, s.diverging) == (-0.004, 0.004, True)  # not +-3, not +-1: the data's own range
    labels = [s.fmt % t for t in np.linspace(s.low, s.high, 5)]
    assert labels == ["-0.0040", "-0.0020", "0.0000", "0.0020", "0.0040"]  # distinct, no scientific overlap
    s = core.colour_scale([0.1, 0.7, np.nan])
    assert (s.low, s.high) == (0.0, 0.7) and not s.diverging  # NaN ignored; sequential from 0
    assert core.colour_scale([-2.0, 3.0]).low == -2.0  # negative values are inside the bar
    assert core.colour_scale([np.nan, np.nan]).high > core.colour_scale([np.nan]).low  # never an empty range
    assert core.colour_scale([0.0, 0.0], diverging=True).high > 0


@pytest.mark.parametrize("low,high,want", [(0, 1, "%.2f"), (0, 30, "%.1f"), (-0.004, 0.004, "%.4f"),
                                           (0, 5e-5, "%.1e"), (0, 0, "%.2f"), (0, 250, "%.0f")])
def test_tick_format(low, high, want):
    assert core.tick_format(low, high) == want


def test_integer_ticks():
    assert core.integer_ticks(-0.5, 3.5) == [0, 1, 2, 3]
    assert core.integer_ticks(0, 100, 6) == [0, 20, 40, 60, 80, 100]
    assert core.integer_ticks(0, 11, 8) == [0, 2, 4, 6, 8, 10]
    assert core.integer_ticks(0.2, 0.8) == []
    assert all(isinstance(t, int) for t in core.integer_ticks(0, 4095))


# --- tiles ---------------------------------------------------------------------------------------------------------
def test_tiles_are_the_metrics_and_their_difference(model, data):
    hm_a = head_metrics(AttentionProbe(model, TEXT))
    hm_b = head_metrics(AttentionProbe(model, TEXT.replace("question", "answerxx")))
    t = core.tile_values(data, "previous_token")
    np.testing.assert_allclose(t.values, hm_a.previous_token, atol=1e-6)
    assert not t.difference and t.scale.low == 0 and t.scale.high == pytest.approx(t.values.max())
    assert t.text[0] == t.scale.fmt % t.values[0, 0]
    d = core.tile_values(data, "entropy", difference=True)
    np.testing.assert_allclose(d.values, hm_b.entropy - hm_a.entropy, atol=1e-6)
    assert d.difference and d.scale.diverging and d.scale.high == pytest.approx(np.abs(d.values).max())
    assert d.text[0].startswith(("+", "-"))
    alone = core.compute(model, TEXT)
    assert not core.tile_values(alone, "entropy", difference=True).difference  # no B: A's own values
    with pytest.raises(core.AttentionError, match="unknown metric"):
        core.tile_values(data, "nonsense")


def test_tiles_of_an_unavailable_metric_are_nan_with_the_reason(data):
    from dataclasses import replace

    broken = core.LabData(data.probe, replace(data.metrics, value_sink_mass=None, extra={"value_norms": "no W_O"}))
    t = core.tile_values(broken, "value_sink_mass")
    assert np.isnan(t.values).all() and set(t.text) == {"n/a"} and "no W_O" in t.why


# --- one head ------------------------------------------------------------------------------------------------------
def test_head_patterns_in_every_mode(model, data):
    from workbench.attention import rollout

    probe = AttentionProbe(model, TEXT)
    a = probe.probs(1, [2])[0].numpy()
    np.testing.assert_allclose(core.head_pattern(data, 1, 2, "raw"), a, atol=1e-6)
    w = a * probe.value_norms(1, [2])[0].numpy()[None]
    np.testing.assert_allclose(core.head_pattern(data, 1, 2, "value-weighted"), w / w.sum(-1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(core.head_pattern(data, 1, 2, "rollout"), rollout(probe)[1], atol=1e-5)
    b = AttentionProbe(model, TEXT.replace("question", "answerxx")).probs(1, [2])[0].numpy()
    v = core.detail_view(data, 1, 2, "difference")
    np.testing.assert_allclose(v.image, b - a, atol=1e-6)
    cut = TEXT.index("question")
    assert v.k_labels[cut] == "q|a" and v.k_labels[0] == "t"
    with pytest.raises(core.AttentionError, match="difference needs a second prompt"):
        core.detail_view(core.compute(model, TEXT), 1, 2, "difference")


def test_difference_is_on_the_common_prefix():
    a, b = np.ones((5, 5)), np.zeros((3, 3))
    d = core.difference(a, b)
    assert d.shape == (3, 3) and (d == -1).all()


def test_compare_views_share_one_scale_for_a_and_b(data):
    views = core.compare_views(data, 0, 1, "raw", side=16)
    s = core.compare_scales(views)
    assert s["a"] == s["b"] and s["a"].high == pytest.approx(max(views["a"].image.max(), views["b"].image.max()))
    assert s["diff"].diverging and s["diff"].high == pytest.approx(np.abs(views["diff"].image).max())
    assert views["a"].factor > 1  # 60 tokens into 16 pixels


def test_available_modes():
    assert core.available_modes(60, False) == ("raw", "value-weighted", "rollout")
    assert core.available_modes(60, True) == core.MODES
    assert core.available_modes(core.ROLLOUT_MAX_T + 1, True) == ("raw", "value-weighted", "difference")


def test_position_labels_name_position_and_token(data):
    v = core.detail_view(data, 0, 0, "raw")
    q, k = core.position_labels(v)
    assert q[0] == "0: 't'" and k[2] == f"2: {data.tokens()[2]!r}" and len(q) == len(TEXT)
    small = core.detail_view(data, 0, 0, "raw", max_side=16)
    q, _ = core.position_labels(small)
    assert q[0] == "0-3 (4 tokens)" and q[-1] == "56-59 (4 tokens)"


def test_top_keys_heaviest_first(model, data):
    row = AttentionProbe(model, TEXT).probs(1, [0])[0, 20].numpy()
    k = core.top_keys(data.probe, 1, 0, 20, k=5, tokens=data.tokens())
    want = np.argsort(-row, kind="stable")[:5]
    assert k.positions.tolist() == want.tolist() and k.query_label == f"20: {data.tokens()[20]!r}"
    np.testing.assert_allclose(k.weights, row[want], atol=1e-6)
    assert k.labels[0] == f"{want[0]}: {data.tokens()[want[0]]!r}"
    assert core.top_keys(data.probe, 1, 0, 2, k=10).positions.size == 3  # a query sees itself and what came before
    with pytest.raises(core.AttentionError, match="query must be a position 0..59"):
        core.top_keys(data.probe, 1, 0, 60)


def test_next_tokens_clean_then_ablated(model, data):
    nt = core.next_tokens(model, data.probe, (), k=5)
    assert nt.ablated is None and nt.result is None  # nothing ablated: nothing to draw in red
    logits = model.forward(torch.as_tensor(list(TEXT.encode()))[None]).logits[0, -1]
    p = logits.softmax(-1).detach().numpy()
    np.testing.assert_allclose(nt.base, np.sort(p)[::-1][:5], atol=1e-6)
    ab = core.next_tokens(model, data.probe, [(1, 2), (0, 0)], k=5)
    r = ablate_heads(model, TEXT, [(0, 0), (1, 2)], k=5)
    np.testing.assert_allclose(ab.ablated, np.exp(r.ablated[ab.ids]), atol=1e-6)
    np.testing.assert_allclose(ab.base, np.exp(r.base[ab.ids]), atol=1e-6)
    assert r.top[0][0] in ab.ids and len(set(ab.labels)) == len(ab.labels)


# --- long context --------------------------------------------------------------------------------------------------
def test_policy_choices_and_the_controls_they_use():
    assert core.make_policy("none") is None
    assert core.make_policy("dense").kind == "dense"
    assert core.make_policy("sliding", 8) == sliding_window(8)
    assert core.make_policy("lambda", 16, 2) == lambda_mask(2, 16)
    assert core.POLICY_USES["sliding"] == {"window"} and core.POLICY_USES["dense"] == frozenset()
    with pytest.raises(PolicyError, match="window"):
        core.make_policy("sliding", 0)
    with pytest.raises(PolicyError, match="long context"):
        core.make_policy("streaming")
    assert core.policy_choice(None)[0] == "none"
    assert core.policy_choice(sliding_window(6))[:2] == ("sliding", 6)
    choice, window, n_global, note = core.policy_choice(streaming(4, 32))
    assert (choice, window, n_global) == ("lambda", 32, 4) and "StreamingLLM" in note


def test_over_the_context_the_message_names_the_control():
    m = attention_gpt("rope", block_size=32)
    with pytest.raises(ContextLengthError) as e:
        core.compute(m, "x" * 40)
    msg = str(e.value)
    assert "40 tokens exceed the model's context of 32" in msg and "'long context' menu" in msg
    assert "policy=" not in msg and "dense()" not in msg  # no Python argument the widget has no control for
    assert core.compute(m, "x" * 40, policy=core.make_policy("sliding", 8)).probe.T == 40
    learned = attention_gpt("learned", block_size=32)
    with pytest.raises(ContextLengthError, match="learned positions.*no 'long context' policy helps"):
        core.compute(learned, "x" * 40)


def test_compare_model_must_have_the_same_heads(model):
    with pytest.raises(core.AttentionError, match=r"same layers x heads as the model \(2x3\), got 2x2"):
        core.compute(model, TEXT, compare_model=attention_gpt("rope"))


# --- pictures ------------------------------------------------------------------------------------------------------
def test_pictures():
    img = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    np.testing.assert_array_equal(core.rgb(img), to_rgb(img, 0.0, 1.0))
    d = np.array([[0.0, 0.01], [-0.01, 0.005]])
    px = core.rgb(d, core.colour_scale(d, diverging=True))
    assert tuple(px[0, 0]) == (255, 255, 255) and tuple(px[0, 1]) == (255, 0, 0) and tuple(px[1, 0]) == (0, 0, 255)
    assert core.png_scale(60) == 4 and core.png_scale(1000) == 1


# --- the checkpoint scrubber ---------------------------------------------------------------------------------------
def test_scaled_loss():
    class Run:
        loss_second = np.array([4.0, 2.0, 5.0])

    np.testing.assert_allclose(core.scaled_loss(Run()), [1.0, 0.5, 1.0])
