"""Token-level cascades (workbench.decoding.cascade): the end points, a brute-force cascade, every threshold of
the curve against its definition, and the bad inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.factories import byte_gpt, peaked_gpt, tiny_gpt
from workbench.decoding import DecodingError, greedy_fast
from workbench.decoding.cascade import (
    RULES, cascade_curve, cascade_generate, cascade_scores, curve_at, curve_for_rule, uncertainty,
)
from workbench.decoding.uncertainty import token_scores

PROMPT = "x = 1\n"
TEXT = "for i in range(10):\n    print(i)\n" * 3


@pytest.fixture(scope="module")
def pair():
    return byte_gpt(1, n_layer=1, n_embd=16), byte_gpt(2)


def test_uncertainty_rules_on_hand_built_distribution():
    lg = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log()
    H = -(0.5 * math.log2(0.5) + 0.3 * math.log2(0.3) + 0.2 * math.log2(0.2))
    assert uncertainty(lg, "entropy").item() == pytest.approx(H, abs=1e-12)
    assert uncertainty(lg, "margin").item() == pytest.approx(1 - 0.2, abs=1e-12)
    assert uncertainty(lg, "max_prob").item() == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_threshold_zero_is_the_large_model_and_inf_the_small(pair, rule):
    small, large = pair
    n = 24
    big = cascade_generate(small, large, PROMPT, n, rule=rule, threshold=0)
    assert big.ids == greedy_fast(large, PROMPT, n)
    assert all(big.deferred) and big.large_calls == n and big.deferral == 1.0
    alone = cascade_generate(small, large, PROMPT, n, rule=rule, threshold=math.inf)
    assert alone.ids == greedy_fast(small, PROMPT, n)
    assert not any(alone.deferred) and alone.large_calls == 0


def brute_cascade(small, large, prompt_ids, n, rule, thr):
    """The cascade by definition: full forwards, no caches."""
    seq, out, dfr = list(prompt_ids), [], []
    with torch.no_grad():
        for _ in range(n):
            ls = small(torch.tensor([seq])).logits[0, -1]
            d = uncertainty(ls, rule).item() >= thr
            lg = large(torch.tensor([seq])).logits[0, -1] if d else ls
            out.append(int(lg.argmax()))
            dfr.append(d)
            seq.append(out[-1])
    return out, dfr


@pytest.mark.parametrize("rule", RULES)
def test_cascade_matches_brute_force(pair, rule):
    # peaked models (the random byte models are near uniform) and a threshold in the middle of the small model's
    # own uncertainties, so some tokens are deferred and some not
    small, large = peaked_gpt(1), peaked_gpt(2, n_layer=2)
    prompt = [1, 2, 3]
    thr = float(np.median(cascade_generate(small, large, prompt, 28, rule=rule, threshold=math.inf).uncertainty))
    r = cascade_generate(small, large, prompt, 28, rule=rule, threshold=thr)
    ids, dfr = brute_cascade(small, large, prompt, 28, rule, thr)
    assert r.ids == ids and r.deferred == dfr
    assert 0 < sum(dfr) < 28, "pick a threshold that defers some tokens, not all"
    # one large call per deferred token (each catching up on the tokens it had not seen)
    assert r.large_calls == sum(dfr)
    text_r = cascade_generate(*pair, PROMPT, 5, rule=rule, threshold=0.0)
    assert text_r.text == pair[0].tokenizer.decode(text_r.ids)


def test_scores_are_each_models_token_scores(pair):
    small, large = pair
    s = cascade_scores(small, large, [small.tokenizer.encode(TEXT[:60])])
    ts, tl = token_scores(small, TEXT[:60]), token_scores(large, TEXT[:60])
    np.testing.assert_allclose(s.small_bits, ts.surprisal, rtol=1e-9)
    np.testing.assert_allclose(s.large_bits, tl.surprisal, rtol=1e-9)
    np.testing.assert_allclose(s.uncertainty["max_prob"], 1 - ts.max_prob, rtol=1e-9)
    with torch.no_grad():
        ids = torch.tensor([small.tokenizer.encode(TEXT[:60])])
        agree = (small(ids).logits[0, :-1].argmax(-1) == large(ids).logits[0, :-1].argmax(-1)).numpy()
    np.testing.assert_array_equal(s.agree, agree)


@pytest.mark.parametrize("rule", RULES)
def test_curve_is_every_threshold_by_definition(pair, rule):
    small, large = pair
    s = cascade_scores(small, large, TEXT, chars=40)
    c = curve_for_rule(s, rule)
    assert c.deferral[0] == 0 and c.deferral[-1] == 1 and c.thresholds[0] == math.inf
    assert np.all(np.diff(c.deferral) > 0)
    assert c.bits_per_byte[0] == pytest.approx(s.small_bits.sum() / s.n_bytes)
    assert c.bits_per_byte[-1] == pytest.approx(s.large_bits.sum() / s.n_bytes)
    assert c.agreement[-1] == 1.0 and c.agreement[0] == pytest.approx(s.agree.mean())
    for t, d, b, a in zip(c.thresholds, c.deferral, c.bits_per_byte, c.agreement):
        if rule != "entropy" and 1 < t < math.inf:
            continue
        d2, b2, a2 = curve_at(s, rule, t)
        assert (d, b, a) == pytest.approx((d2, b2, a2), abs=1e-12)
    # no threshold between two curve points gives a point off the curve
    u = np.unique(s.uncertainty[rule])
    for t in (u[:-1] + u[1:])[::7] / 2:
        d2, _, _ = curve_at(s, rule, t)
        assert np.isclose(c.deferral, d2).any()


def test_oracle_bounds_every_rule_and_random_is_the_chord(pair):
    small, large = pair
    comp = cascade_curve(small, large, TEXT, chars=40)
    o = comp.curves["oracle"]
    n = comp.n_tokens
    for r in RULES:
        c = comp.curves[r]
        j = np.rint(c.deferral * n).astype(int)
        assert np.all(o.bits_per_byte[j] <= c.bits_per_byte + 1e-12)
        assert o.area <= c.area + 1e-12
    rnd = comp.curves["random"]
    assert rnd.area == pytest.approx((comp.small_bpb + comp.large_bpb) / 2)
    assert [row["rule"] for row in comp.table()] == [*RULES, "oracle", "random"]


def test_timed_points(pair):
    small, large = pair
    comp = cascade_curve(small, large, TEXT, chars=40, prompts=[PROMPT], max_new_tokens=8,
                         timed_deferrals=(0.0, 1.0))
    for rule in RULES:
        pts = [p for p in comp.timed if p.rule == rule]
        assert [p.threshold for p in pts][0] == math.inf and pts[0].deferral == 0 and pts[0].large_calls == 0
        assert pts[-1].deferral == 1.0 and pts[-1].large_calls == 8
        assert all(p.wall_s > 0 and p.large_alone_s > 0 for p in pts)


@pytest.mark.parametrize("rule, thr, match", [
    ("entropy", -0.1, ">= 0"), ("max_prob", float("nan"), ">= 0"), ("margin", 1.5, r"\[0, 1\]"),
    ("max_prob", 2, r"\[0, 1\]"), ("entropy", "1", "a number"), ("median", 0.5, "unknown deferral rule"),
])
def test_bad_threshold_or_rule(pair, rule, thr, match):
    with pytest.raises(DecodingError, match=match):
        cascade_generate(*pair, PROMPT, 4, rule=rule, threshold=thr)


def test_empty_prompt(pair):
    with pytest.raises(DecodingError, match="prompt is empty"):
        cascade_generate(*pair, "", 4)
    with pytest.raises(DecodingError, match="prompt is empty"):
        cascade_generate(*pair, [], 4)
    with pytest.raises(DecodingError, match="evaluation text is empty"):
        cascade_curve(*pair, "  ")


def test_different_tokenizers_are_refused(pair):
    from workbench.tokenizers import ByteTokenizer

    small, _ = pair
    other_size = tiny_gpt(vocab_size=300, n_layer=1, n_head=2, n_embd=16, block_size=64)
    with pytest.raises(DecodingError, match="different vocabularies"):
        cascade_generate(small, other_size, PROMPT, 4)
    renamed = tiny_gpt(ByteTokenizer(special_tokens=("<|pad|>",)), n_layer=1, n_head=2, n_embd=16, block_size=64)
    assert renamed.config.vocab_size == small.config.vocab_size
    with pytest.raises(DecodingError, match="different tokenizers"):
        cascade_generate(small, renamed, PROMPT, 4)
    with pytest.raises(DecodingError, match="different tokenizers"):
        cascade_curve(small, renamed, TEXT)


# ------------------------------------------------------------------------------------------------ the views
def test_cascade_view_draws_the_core_curves(pair):
    from widgets.cascade_view import CascadeView

    v = CascadeView(*pair, text=TEXT)
    comp = v.comparison
    for name, c in comp.curves.items():
        assert v.sources[name].data["deferral"] == c.deferral.tolist()
        assert v.sources[name].data["quality"] == c.bits_per_byte.tolist()
    v.quality.value = "agreement"
    assert v.sources["max_prob"].data["quality"] == comp.curves["max_prob"].agreement.tolist()
    assert "oracle" in v.table.value and v.pair.layout.display == "none"


def test_cascade_view_reports_bad_pairs_in_its_notice(pair):
    from workbench.tokenizers import ByteTokenizer
    from widgets.cascade_view import CascadeView

    renamed = tiny_gpt(ByteTokenizer(special_tokens=("<|pad|>",)), n_layer=1, n_head=2, n_embd=16, block_size=64)
    v = CascadeView(pair[0], renamed, text=TEXT)
    assert v.comparison is None and "different tokenizers" in v.info.value


def test_decoding_lab_has_a_lazy_cascade_tab(pair):
    import widgets

    lab = widgets.DecodingLab(pair[1], draft=pair[0], prompt=PROMPT, strategy="greedy", max_new_tokens=4)
    tab = lab.tabs.children[-1]
    assert lab.tabs.get_title(len(lab.tabs.children) - 1) == "cascade" and tab is lab.cascade_view
    assert tab.comparison is None and tab.plot_box.children == ()   # nothing computed (or drawn) until asked
    tab.text_value = TEXT
    tab.compute_button.click()
    assert tab.comparison.small_name == pair[0].name and tab.comparison.large_name == pair[1].name
    assert tab.plot_box.children == (tab.pane,) and len(tab.sources["entropy"].data["deferral"]) > 2


def test_uncertainty_view_shades_by_the_chosen_score(pair):
    from widgets.cascade_view import UncertaintyView, shade_levels

    v = UncertaintyView(pair[1], text="hello world")
    # one hover title per scored token, plus the unscored first token's
    assert v.view.value.count(" title=") == len(v.scores.surprisal) + 1
    worst = int(np.argmax(v.scores.surprisal))
    assert shade_levels(v.scores.surprisal, "surprisal")[worst] == 1.0
    # margin reads the other way: the token with the smallest margin is the darkest
    assert shade_levels(v.scores.margin, "margin")[int(np.argmin(v.scores.margin))] == 1.0
    v.score.value = "rank"
    assert "log scale" in v.view.value
    v.text.value = ""
    assert "empty" in v.info.value and v.view.value == ""


def test_bench_cascade_rows_reach_their_quality():
    """Plumbing of the decoding bench's cascade part on the shipped bpe pair (few tokens)."""
    from workbench.bench.decoding_cascade_bench import cascade_costs, report
    from workbench.decoding.cascade import shipped_pair_curve

    rows = cascade_costs(("bpe",), max_new_tokens=3, prompts=["The "])
    comp = shipped_pair_curve("bpe")
    assert [r["rule"] for r in rows] == list(RULES)
    for r in rows:
        c = comp.curves[r["rule"]]
        assert r["target_bpb"] == pytest.approx(r["small_bpb"] - 0.9 * (r["small_bpb"] - r["large_bpb"]))
        i = int(np.flatnonzero(c.thresholds == r["threshold"])[0])
        assert c.bits_per_byte[i] <= r["target_bpb"] + 1e-12 and c.deferral[i] == r["deferral"]
        assert r["oracle_deferral"] <= r["deferral"]
        assert r["speedup"] == pytest.approx(r["large_alone_s"] / r["cascade_s"])
    assert "never reached" not in report(rows)


@pytest.fixture(scope="module")
def window_scores(pair):
    return cascade_scores(*pair, TEXT * 2, chars=30)


@pytest.mark.parametrize("how", ["sum", "mean", "quantile_0.8", "max"])
def test_sequence_curves_defer_whole_windows(window_scores, how):
    from workbench.decoding.cascade import aggregate, sequence_curves

    s = window_scores
    u, w = s.uncertainty["max_prob"], s.window
    n_win = int(w.max()) + 1
    assert n_win >= 5 and len(w) == len(u)
    c = sequence_curves(s, "max_prob", [how])[how]
    ref = {"sum": np.sum, "mean": np.mean, "max": np.max, "quantile_0.8": lambda x: np.quantile(x, 0.8)}[how]
    agg = np.array([ref(u[w == i]) for i in range(n_win)])
    assert [aggregate(u[w == i], how) for i in range(n_win)] == pytest.approx(agg.tolist())
    for j in range(n_win + 1):                           # defer the j most uncertain windows, by brute force
        d = np.isin(w, np.argsort(-agg, kind="stable")[:j])
        assert c.deferral[j] == pytest.approx(d.mean())
        assert c.bits_per_byte[j] == pytest.approx(np.where(d, s.large_bits, s.small_bits).sum() / s.n_bytes)
        assert c.agreement[j] == pytest.approx(np.where(d, True, s.agree).mean())
    with pytest.raises(DecodingError, match="unknown aggregate"):
        aggregate(u, "median")
