"""The DecodingLab's headless core (workbench.decoding.lab): one strategy vocabulary, dispatch through Strategy,
which controls apply, the cursor rule, and every number the lab draws checked against the decoding results."""
from __future__ import annotations

import math

import pytest
import torch

from workbench.decoding import (
    DecodingError, Pipeline, beam_search, diverse_beam_search, expected_tokens_per_call, greedy, prompt_lookup,
    sample, speculative_decode,
)
from workbench.decoding.trace import DecodingResult
from workbench.decoding import lab as L
from workbench.decoding.compare import KINDS
from tests.factories import byte_gpt  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models():
    return byte_gpt(0), byte_gpt(1, 1)


@pytest.fixture(scope="module")
def ids(models):
    return L.prompt_ids(models[0], "abc", 10)


# ------------------------------------------------------------------------------------------ vocabulary, controls
def test_one_strategy_vocabulary():
    assert tuple(L.LABELS) == KINDS and set(L.USES) == set(KINDS) and set(L.UNITS) == set(KINDS)
    assert L.kind_of("diverse beam") == "diverse_beam" == L.kind_of("diverse_beam")
    assert L.kind_of("prompt lookup") == "prompt_lookup"
    assert L.LabSettings(strategy="diverse beam").strategy == "diverse_beam"
    with pytest.raises(DecodingError, match="unknown strategy 'nucleus'"):
        L.kind_of("nucleus")


def test_which_controls_apply():
    beamish = {"num_beams", "num_groups", "diversity", "gamma"}
    on = L.enabled_controls("sample")
    assert not beamish & on and {"temperature", "top_k", "seed", "order"} <= on
    for c in beamish:
        assert not L.affects(c, "sample")
    assert L.enabled_controls("beam") & (L.PIPELINE_CONTROLS | beamish) == {"num_beams"}
    assert L.enabled_controls("diverse_beam") >= {"num_beams", "num_groups", "diversity"}
    assert "gamma" in L.enabled_controls("speculative") and L.affects("temperature", "speculative")
    assert L.enabled_controls("greedy") == L.COMMON_CONTROLS
    # a ticked comparison makes its controls usable, but they still do not change the main result
    on = L.enabled_controls("sample", ("beam", "speculative"))
    assert {"num_beams", "gamma"} <= on and not {"num_groups", "diversity"} & on
    assert not L.affects("num_beams", "sample")
    for kind in KINDS:  # the prompt and the common controls always recompute
        assert L.affects("prompt", kind) and L.affects("max_new_tokens", kind) and L.affects("mask_undecodable", kind)
    with pytest.raises(DecodingError, match="unknown comparison choice"):
        L.enabled_controls("sample", ("nucleus",))


def test_pipeline_and_compare_choices():
    s = L.LabSettings(temperature=0.7, top_k=5, top_p=0.9, min_p=0.0, typical=1.0, order="vllm")
    assert [st.label() for st in s.pipeline().stages] == [st.label() for st in Pipeline.preset(
        "vllm", temperature=0.7, top_k=5, top_p=0.9).stages]
    strategies = s.compare_strategies(L.COMPARE_CHOICES)
    assert [x.kind for x in strategies] == ["sample"] * 4 + ["greedy", "beam", "prompt_lookup", "speculative"]
    assert strategies[0].name == "sample, vllm order" and strategies[1].name == "sample, hf order"
    assert strategies[5].params == {"num_beams": 4} and strategies[7].params == {"gamma": 4}
    assert L.LabSettings(num_beams=7, num_groups=3).diverse_shape() == (6, 3)
    assert L.LabSettings(num_beams=1, num_groups=3).diverse_shape() == (3, 3)


# ------------------------------------------------------------------------------------------ dispatch
def test_run_dispatches_like_the_strategy_functions(models, ids):
    m, d = models
    pipe = Pipeline.preset("hf", temperature=1.0, top_k=5)
    r = L.run(m, d, ids, L.LabSettings(strategy="sample", top_k=5, seed=3, max_new_tokens=10))
    assert r.tokens == sample(m, ids, 10, pipe, seed=3).tokens and r.strategy == "sample"
    assert L.run(m, d, ids, L.LabSettings(strategy="greedy", max_new_tokens=10)).tokens == greedy(m, ids, 10).tokens
    b = L.run(m, d, ids, L.LabSettings(strategy="beam", num_beams=3, max_new_tokens=10))
    assert b.best.tokens == beam_search(m, ids, 3, 10).best.tokens
    db = L.run(m, d, ids, L.LabSettings(strategy="diverse_beam", num_beams=5, num_groups=2, diversity=0.5,
                                        max_new_tokens=10))
    want = diverse_beam_search(m, ids, 4, 10, num_groups=2, diversity_penalty=0.5)
    assert db.num_beams == 4 and [h.tokens for h in db.hypotheses] == [h.tokens for h in want.hypotheses]
    assert L.run(m, d, ids, L.LabSettings(strategy="prompt_lookup", max_new_tokens=10)).tokens == \
        prompt_lookup(m, ids, 10).tokens
    sp = L.run(m, d, ids, L.LabSettings(strategy="speculative", gamma=3, seed=2, max_new_tokens=10))
    assert sp.tokens == speculative_decode(m, d, ids, 10, gamma=3, pipeline=Pipeline.preset("hf", temperature=1.0),
                                           seed=2).tokens
    with pytest.raises(DecodingError, match="needs a draft model"):
        L.run(m, None, ids, L.LabSettings(strategy="speculative"))


def test_prompt_ids_errors(models):
    m = models[0]
    with pytest.raises(DecodingError, match="type a prompt"):
        L.prompt_ids(m, "", 10)
    with pytest.raises(DecodingError, match="no room for a prompt"):
        L.prompt_ids(m, "abc", 64)
    assert L.prompt_ids(m, "x" * 100, 10) == m.tokenizer.encode("x" * 100)[-54:]


# ------------------------------------------------------------------------------------------ cursor
@pytest.mark.parametrize("cursor, old, new, unit, prompt, want", [
    (5, 12, 12, True, True, 5),     # a setting changed: same step
    (5, 12, 3, True, True, 3),      # the new run is shorter: its last step
    (12, 12, 20, True, True, 20),   # at the end stays at the end
    (5, 12, 12, False, True, 1),    # positions -> speculative rounds: a step means something else
    (5, 12, 12, True, False, 1),    # another prompt
    (5, 0, 12, True, True, 1),      # after an error
    (0, 12, 12, True, True, 1),
    (5, 12, 0, True, True, 0),      # nothing to show
])
def test_cursor_rule(cursor, old, new, unit, prompt, want):
    assert L.next_cursor(cursor, old, new, same_unit=unit, same_prompt=prompt) == want


# ------------------------------------------------------------------------------------------ views
def test_stage_view_is_the_trace(models, ids):
    m = models[0]
    r = L.run(m, None, ids, L.LabSettings(strategy="sample", temperature=0.8, top_k=5, top_p=0.8,
                                          max_new_tokens=10))
    lab = m.tokenizer.token_str
    assert L.stage_view(r, 0, lab).rows["prob"] == []
    v = L.stage_view(r, 4, lab)
    st = r.steps[3]
    assert v.step == 3 and v.stages == [s.name for s in st.stages] == ["raw", "temperature=0.8", "top_k=5",
                                                                      "top_p=0.8"]
    S, C = len(st.stages), len(st.candidates)
    assert len(v.rows["prob"]) == S * C and v.ticks == list(range(C))
    for i, (j, k, p, x, w) in enumerate(zip(v.rows["candidate"], v.rows["stage_index"], v.rows["prob"],
                                            v.rows["x"], v.rows["width"])):
        assert p == pytest.approx(st.stages[k].probs[j])
        assert abs(x - j) + w / 2 < 0.5  # a candidate's bars stay inside its own slot: no overlap with neighbours
        assert v.rows["kept"][i] == st.stages[k].kept and v.rows["token"][i] == lab(st.candidates[j])
    assert v.labels[st.candidates.index(st.chosen)].endswith(" *")
    assert max(v.rows["prob"]) <= v.y_max <= 1.0
    nz = [p for p in v.rows["prob"] if p > 0]
    assert v.log_floor <= min(nz) and all(p >= v.log_floor for p in v.rows["prob_log"])
    assert "step 4:" in v.title and f"{st.chosen_prob:.3f}" in v.title  # numbered like the cursor


def test_axis_helpers():
    assert L.y_top([0.01, 0.02]) == pytest.approx(0.0224) and L.y_top([0.9]) == 1.0 and L.y_top([]) == 0.02
    assert L.y_top([0.99, 1.0], cap=1.05) == 1.05 and L.y_top([0.001]) == 0.02
    assert L.log_floor([0.0, 0.3, 0.03]) == pytest.approx(0.01) and L.log_floor([0.0]) == 0.1
    assert [L.tick_interval(n) for n in (0, 3, 10, 12, 40, 100)] == [1, 1, 1, 2, 5, 10]
    assert L.tick_interval(40, 20) == 2
    assert L.short_label("abcdefghij", 4) == "abc\u2026" and L.short_label("ab", 4) == "ab"


def test_timeline_rows(models, ids):
    m = models[0]
    r = L.run(m, None, ids, L.LabSettings(strategy="sample", max_new_tokens=10))
    t = L.timeline_rows(r, 6, m.tokenizer.token_str)
    assert t["step"] == [1, 2, 3, 4, 5, 6]  # numbered from 1, like the cursor
    assert t["entropy"] == pytest.approx(r.entropies[:6]) and t["surprisal"] == pytest.approx(r.surprisals[:6])
    assert t["token"] == [m.tokenizer.token_str(s.chosen) for s in r.steps[:6]]


def test_beam_layout(models, ids):
    m = models[0]
    r = L.run(m, None, ids, L.LabSettings(strategy="beam", num_beams=3, max_new_tokens=10))
    lay = L.beam_layout(r, r.search_steps, m.tokenizer.token_str)
    n = lay.nodes
    assert len(n["id"]) == len(r.nodes) and len(lay.edges["x0"]) == len(r.nodes) - 1
    assert lay.last_step == r.search_steps - 1
    for step in set(n["x"]):  # ranks within a step are 0..k-1, best cumulative score on top (one group)
        rows = sorted((y, s) for x, y, s in zip(n["x"], n["y"], n["score"]) if x == step)
        assert [y for y, _ in rows] == list(range(len(rows)))
        assert [s for _, s in rows] == sorted((s for _, s in rows), reverse=True)
    assert lay.n_rows == max(sum(1 for x in n["x"] if x == s) for s in set(n["x"]))
    for st, text, tok in zip(n["status"], n["text"], n["token"]):
        assert (text == "") == (st in ("pruned", "root")) and (text == "" or tok.startswith(text.rstrip("\u2026")))
    assert n["status"].count("finished") == 3
    partial = L.beam_layout(r, 2, m.tokenizer.token_str)
    assert max(partial.nodes["x"]) == 1 and partial.last_step == 1


def test_speculative_rows_and_running_acceptance(models, ids):
    m, d = models
    r = L.run(m, d, ids, L.LabSettings(strategy="speculative", gamma=3, max_new_tokens=10))
    rows = L.spec_rows(r, len(r.rounds), m.tokenizer.token_str)
    assert len(rows["x"]) == sum(len(rd.draft_tokens) for rd in r.rounds)
    assert rows["status"].count("accepted") == r.stats.accepted
    assert rows["status"].count("rejected") + rows["status"].count("accepted") == r.stats.verified
    assert len(set(rows["x"])) == len(rows["x"])  # every drafted token its own position
    a = L.acceptance_curve(r, len(r.rounds))
    acc = ver = 0
    for i, rd in enumerate(r.rounds):  # running figures written out by hand
        acc += rd.n_accepted
        ver += len(rd.accepted)
        alpha = acc / ver if ver else 0.0
        assert a["alpha"][i] == pytest.approx(alpha)
        assert a["expected"][i] == pytest.approx(expected_tokens_per_call(alpha, 3))
        assert a["tokens_per_call"][i] == pytest.approx(sum(len(x.emitted) for x in r.rounds[: i + 1]) / (i + 1))
    assert a["alpha"][-1] == pytest.approx(r.stats.alpha)
    alpha = r.stats.alpha
    assert a["expected"][-1] == pytest.approx((1 - alpha ** 4) / (1 - alpha) if alpha < 1 else 4)
    assert L.acceptance_curve(r, 1)["round"] == [1] and L.spec_rows(r, 0)["x"] == []


def test_steps_shown_tokens_and_describe(models, ids):
    m, d = models
    s = L.run(m, d, ids, L.LabSettings(strategy="sample", max_new_tokens=10))
    b = L.run(m, d, ids, L.LabSettings(strategy="beam", max_new_tokens=10))
    sp = L.run(m, d, ids, L.LabSettings(strategy="speculative", max_new_tokens=10))
    assert all(isinstance(r, DecodingResult) for r in (s, b, sp))
    assert (s.view, b.view, sp.view) == ("steps", "beam", "spec")
    assert L.n_steps(s) == 10 and L.n_steps(b) == b.search_steps and L.n_steps(sp) == len(sp.rounds)
    assert L.n_steps(None) == 0 and not hasattr(b, "steps")  # DecodeTrace.steps (a list) is the only .steps
    assert L.shown_tokens(s, 3) == s.tokens[:3]
    assert L.shown_tokens(b, b.search_steps - 1) == [] and L.shown_tokens(b, b.search_steps) == b.best.tokens
    assert L.shown_tokens(sp, len(sp.rounds)) == sp.tokens
    assert L.describe(s).startswith("sample: 10 tokens")
    assert L.describe(b).startswith("beam: best of") and "speculative: alpha=" in L.describe(sp)
    assert not math.isnan(sp.stats.alpha)
