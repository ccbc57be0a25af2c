"""DecodingLab driven from Python: set controls, click buttons, assert on the bokeh data sources."""
from __future__ import annotations

import ipywidgets as W
import pytest
import torch

pytest.importorskip("jupyter_bokeh")
from widgets.decoding_lab import DecodingLab  # noqa: E402
from workbench.decoding import Pipeline, beam_search, greedy, sample, speculative_decode  # noqa: E402
from tests.factories import byte_gpt  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models():
    return byte_gpt(0, 2), byte_gpt(1, 1)


@pytest.fixture
def lab(models):
    return DecodingLab(models[0], models[1], prompt="abc", max_new_tokens=12, debounce=0)


def test_sampling_steps_show_each_stage(lab, models):
    model = models[0]
    lab.top_k.value = 5
    lab.top_p.value = 0.8
    pipe = Pipeline.preset("hf", temperature=1.0, top_k=5, top_p=0.8)
    want = sample(model, model.tokenizer.encode("abc"), 12, pipe, seed=0)
    assert lab.result.tokens == want.tokens
    d = lab.stage_source.data
    stages = set(d["stage"])
    assert stages == {"raw", "temperature=1", "top_k=5", "top_p=0.8"}
    # what each stage removed: at most 5 candidates non-zero after top_k
    after_k = [p for st, p in zip(d["stage"], d["prob"]) if st == "top_k=5"]
    assert sum(p > 0 for p in after_k) <= 5
    assert lab.cursor == 1 and len(lab.timeline_source.data["step"]) == 1
    lab.step_button.click()
    lab.step_button.click()
    assert lab.cursor == 3
    tl = lab.timeline_source.data
    assert tl["surprisal"] == pytest.approx([s.surprisal for s in want.steps[:3]])
    lab.play_button.click()
    assert lab.cursor == 12 and len(lab.timeline_source.data["step"]) == 12
    lab.reset_button.click()
    assert lab.cursor == 1
    assert lab.timings["render"] > 0  # timed; the speed target lives in `python -m workbench.bench decoding`


def test_greedy_and_seed(lab, models):
    model = models[0]
    lab.strategy.value = "greedy"
    assert lab.result.tokens == greedy(model, model.tokenizer.encode("abc"), 12).tokens
    lab.strategy.value = "sample"
    first = list(lab.result.tokens)
    lab.seed.value = 5
    assert lab.result.tokens != first


def test_beam_tree(lab, models):
    model = models[0]
    lab.num_beams.value = 3
    lab.strategy.value = "beam"
    want = beam_search(model, model.tokenizer.encode("abc"), 3, 12)
    assert lab.result.best.tokens == want.best.tokens
    lab.play_button.click()
    n = lab.beam_nodes.data
    assert len(n["x"]) == len(want.nodes)
    assert n["status"].count("finished") == 3
    assert len(lab.beam_edges.data["x0"]) == len(want.nodes) - 1
    lab.reset_button.click()
    assert max(lab.beam_nodes.data["x"]) == 0  # only the first step's candidates and the root (step -1)


def test_speculative_view(lab, models):
    target, draft = models
    lab.gamma.value = 3
    lab.strategy.value = "speculative"
    want = speculative_decode(target, draft, target.tokenizer.encode("abc"), 12, gamma=3,
                              pipeline=Pipeline.preset("hf", temperature=1.0), seed=0)
    assert lab.result.tokens == want.tokens
    lab.play_button.click()
    s = lab.spec_source.data
    assert len(s["x"]) == sum(len(r.draft_tokens) for r in want.rounds)
    assert s["status"].count("accepted") == want.stats.accepted
    assert s["status"].count("rejected") == sum(r.kind == "residual" and len(r.draft_tokens) > 0
                                                for r in want.rounds)
    a = lab.alpha_source.data
    assert a["alpha"][-1] == pytest.approx(want.stats.alpha)
    g = 3
    assert a["expected"][-1] == pytest.approx((1 - want.stats.alpha ** (g + 1)) / (1 - want.stats.alpha)
                                              if want.stats.alpha < 1 else g + 1)


def test_compare_and_errors(lab):
    lab.temperature.value = 1.5
    lab.min_p.value = 0.3
    lab.compare_with.value = ("hf order", "vllm order", "llamacpp order", "greedy")
    lab.compare_button.click()
    c = lab.comparison
    assert c.names == ["sample, hf order", "sample, vllm order", "sample, llamacpp order", "greedy"]
    assert c.tokens[0] == c.tokens[1]  # temperature then min_p in both HF and vLLM: same noise, same tokens
    d = c.first_divergence
    assert d is not None and f"first divergence at step {d}" in lab.compare_view.value
    assert len({tuple(t[:d]) for t in c.tokens}) == 1 and len({t[d] for t in c.tokens}) > 1
    lab.compare_with.value = ("greedy", "prompt lookup", "speculative")
    lab.compare_button.click()
    assert lab.comparison.tokens[0] == lab.comparison.tokens[1]  # prompt lookup is exact greedy
    assert lab.comparison.names[2].startswith("speculative")
    lab.compare_with.value = ("greedy",)
    lab.compare_button.click()
    assert "2 to 4" in lab.info.value
    lab.prompt.value = ""
    assert "type a prompt" in lab.info.value and lab.result is None
    assert lab.stage_source.data["x"] == []


def test_repr_is_stable(lab):
    assert repr(lab) == "DecodingLab(model='t0', strategy='sample')"
    lab.strategy.value = "beam"
    assert repr(lab) == "DecodingLab(model='t0', strategy='beam')"
    # the front-end finds the widget's class by these traits: a lab attribute must never shadow them
    state = lab.get_state()
    assert (state["_model_name"], state["_view_name"]) == ("VBoxModel", "VBoxView")


# ------------------------------------------------------------------------------------------------ issue 13 items
def test_strategy_control_uses_the_compare_vocabulary(lab):
    from workbench.decoding.compare import KINDS

    assert [v for _, v in lab.strategy.options] == list(KINDS)
    assert dict(lab.strategy.options)["diverse beam"] == "diverse_beam"
    lab.strategy.value = "diverse_beam"
    assert lab.result.num_groups == lab.num_groups.value and lab.tabs.selected_index == 1
    assert "diverse beam" in lab.beam_figure.title.text


def test_controls_that_do_not_apply_are_disabled_and_never_recompute(lab):
    beamish = (lab.num_beams, lab.num_groups, lab.diversity, lab.gamma)
    assert lab.strategy.value == "sample"
    assert all(w.disabled for w in beamish) and not lab.temperature.disabled
    before = lab.result
    for w, v in ((lab.num_beams, 2), (lab.num_groups, 3), (lab.diversity, 2.5), (lab.gamma, 2)):
        w.value = v
    assert lab.result is before  # no recompute
    lab.compare_with.value = ("greedy", "beam")  # a ticked comparison reads num_beams: usable, still no recompute
    assert not lab.num_beams.disabled and lab.gamma.disabled and lab.num_groups.disabled
    lab.num_beams.value = 3
    assert lab.result is before
    lab.strategy.value = "greedy"
    assert lab.temperature.disabled and lab.seed.disabled and lab.top_k.disabled
    lab.strategy.value = "diverse_beam"
    assert not any(w.disabled for w in beamish[:3]) and lab.gamma.disabled
    lab.strategy.value = "speculative"
    assert not lab.gamma.disabled and not lab.temperature.disabled and lab.num_groups.disabled
    assert lab.mask_undecodable.disabled  # a byte model: every id has text


def test_control_change_keeps_the_step(lab):
    for _ in range(4):
        lab.step()
    assert lab.cursor == 5
    lab.temperature.value = 0.7  # same prompt, same kind of step: stays on step 5
    assert lab.cursor == 5 and lab.timeline_source.data["step"] == [1, 2, 3, 4, 5]
    lab.strategy.value = "greedy"
    assert lab.cursor == 5
    lab.strategy.value = "beam"  # beam steps are generated positions too
    assert lab.cursor == 5 and max(lab.beam_nodes.data["x"]) == 4
    lab.strategy.value = "speculative"  # a step is now a round: back to the first
    assert lab.cursor == 1
    lab.strategy.value = "sample"
    lab.play()
    assert lab.cursor == lab.n_steps == 12
    lab.max_new_tokens.value = 8  # at the end stays at the end
    assert lab.cursor == 8
    lab.step()
    lab.prompt.value = "xyz"  # another prompt: step 1
    assert lab.cursor == 1


def test_play_toggles_to_pause_and_never_runs_twice(lab):
    import asyncio

    lab.play_interval = 0.02

    async def main():
        lab.reset()
        lab.play_button.click()
        assert lab.playing and lab.play_button.description == "pause" and lab.play_button.icon == "pause"
        assert lab.cursor == 2  # the first tick happens at once
        lab.play()  # a second play while playing does nothing: no extra step, one pending timer
        assert lab.cursor == 2
        handle = lab._play_handle
        lab.play()
        assert lab._play_handle is handle
        await asyncio.sleep(0.07)
        c = lab.cursor
        assert 2 < c < 12
        lab.play_button.click()  # second click pauses
        assert not lab.playing and lab.play_button.description == "play"
        await asyncio.sleep(0.06)
        assert lab.cursor == c
        lab.play_button.click()  # resumes from there and stops by itself at the end
        for _ in range(200):
            if not lab.playing:
                break
            await asyncio.sleep(0.01)
        assert lab.cursor == 12 and not lab.playing and lab.play_button.description == "play"
        lab.play_button.click()  # at the end: plays again from the start
        assert lab.cursor == 1 and lab.playing
        lab.temperature.value = 0.9  # a recompute stops play
        assert not lab.playing and lab.play_button.description == "play"

    asyncio.run(main())


def _label(item) -> str:
    return getattr(item.label, "value", item.label)


def test_keys_axes_and_legends(lab):
    from bokeh.models import Legend, LogScale, SingleIntervalTicker

    lab.configure(top_k=5, top_p=0.8, min_p=0.05)
    sf = lab.stage_figure
    stages = list(dict.fromkeys(lab.stage_source.data["stage"]))
    for fig, legend in ((sf, lab._stage_legend), (lab.stage_log_figure, lab._stage_log_legend)):
        assert legend in fig.right  # outside the data area
        shown = [i for i in legend.items if i.visible]
        assert [_label(i).split(" (kept")[0] for i in shown] == stages
        assert legend.items[:len(stages)] == shown
    # every stage's bars are drawn by the renderer its key names; hidden entries draw nothing
    for k, item in enumerate(lab._stage_legend.items):
        src = item.renderers[0].data_source
        assert set(src.data["stage"]) == ({stages[k]} if item.visible else set())
    assert sum(len(s.data["x"]) for s in lab._stage_bars.values()) == len(lab.stage_source.data["x"])
    assert sf.y_range.end == pytest.approx(max(0.02, min(1.0, 1.12 * max(lab.stage_source.data["prob"]))))
    assert sf.xaxis.ticker.ticks == list(range(len(set(lab.stage_source.data["candidate"]))))
    assert sf.xaxis.major_label_overrides[0] == lab.stage_source.data["token"][0] + (
        " *" if lab.stage_source.data["chosen"][0] else "")
    assert isinstance(lab.stage_log_figure.y_scale, LogScale)
    before = lab.result
    lab.stage_log.value = True  # a view option: swaps the figure, no recompute
    assert lab._step_box.children[0] is lab._stage_log_pane and lab.result is before
    lab.stage_log.value = False
    assert lab._step_box.children[0] is lab._stage_pane
    tl = lab.timeline_figure
    assert any(isinstance(a, Legend) for a in tl.right) and isinstance(tl.xaxis.ticker, SingleIntervalTicker)
    assert tl.xaxis.ticker.interval == 2 and tl.center[-1:] != [Legend]  # integer ticks over the run's 12 steps

    lab.configure(strategy="beam", num_beams=3, max_new_tokens=12)
    lab.play()
    bf = lab.beam_figure
    (legend,) = [a for a in bf.right if isinstance(a, Legend)]
    assert [_label(i) for i in legend.items] == ["root", "running", "finished", "ended", "pruned"]
    for item in legend.items:
        assert set(item.renderers[0].data_source.data["status"]) <= {_label(item)}
    ys = lab.beam_nodes.data["y"]
    assert bf.y_range.end < min(ys) - 0.5 and bf.y_range.start > max(ys)  # top row (rank 0) inside, on top
    assert bf.x_range.start < -1 and bf.x_range.end > max(lab.beam_nodes.data["x"])
    assert all(t == "" for t, s in zip(lab.beam_nodes.data["text"], lab.beam_nodes.data["status"]) if s == "pruned")

    lab.strategy.value = "speculative"
    lab.play()
    pf = lab.spec_figure
    (legend,) = [a for a in pf.right if isinstance(a, Legend)]
    assert [_label(i) for i in legend.items] == ["accepted", "rejected", "not verified", "draft q"]
    for item in legend.items[:3]:
        assert set(item.renderers[0].data_source.data["status"]) <= {_label(item)}
    s = lab.spec_source.data
    assert pf.y_range.end == pytest.approx(min(1.05, max(0.02, 1.12 * max(s["p"] + s["q"]))))
    assert isinstance(lab.alpha_figure.xaxis.ticker, SingleIntervalTicker)


def test_compare_list_shows_every_option(lab):
    assert lab.compare_with.rows == len(lab.compare_with.options) == 8


def test_configure_recomputes_once_and_quietly(lab, monkeypatch):
    calls = []
    real = lab.recompute
    monkeypatch.setattr(lab, "recompute", lambda: (calls.append(1), real()))
    # the observers call self.recompute, so a reacting observer would be counted here too
    lab.configure(strategy="beam", num_beams=2, max_new_tokens=6, temperature=0.5)
    assert len(calls) == 1 and lab.result.num_beams == 2 and len(lab.result.best.tokens) <= 6
    assert lab.num_beams.value == 2 and not lab.num_beams.disabled and lab.num_groups.disabled and lab.gamma.disabled
    assert not lab.is_quiet
    with pytest.raises(Exception, match="unknown controls"):
        lab.configure(beams=3)


def test_error_path_and_recovery(lab):
    lab.step()
    lab.prompt.value = ""
    assert "#b00020" in lab.info.value and "type a prompt" in lab.info.value
    assert lab.result is None and lab.cursor == 0 and lab.stage_source.data["x"] == []
    assert all(len(s.data["x"]) == 0 for s in lab._stage_bars.values())
    assert not any(i.visible for i in lab._stage_legend.items)
    lab.step_button.click()  # buttons on an empty view do nothing harmful
    lab.play_button.click()
    assert lab.cursor == 0 and not lab.playing
    lab.prompt.value = "abc"
    assert "#b00020" not in lab.info.value and lab.cursor == 1 and len(lab.stage_source.data["x"]) > 0
    lab.max_new_tokens.value = 64  # no room left for the prompt in a 64-token context
    assert "no room for a prompt" in lab.info.value and lab.result is None
    lab.max_new_tokens.value = 12
    assert lab.result is not None and lab.cursor == 1


def test_quietly_is_the_base_mechanism():
    from widgets.base import WorkbenchWidget

    w = WorkbenchWidget()
    seen = []
    h = w.reacting(lambda *a: seen.append(a))
    h(1)
    with w.quietly():
        assert w.is_quiet
        with w.quietly():
            h(2)
        h(3)
    h(4)
    assert seen == [(1,), (4,)] and not w.is_quiet
    try:
        with w.quietly():
            raise ValueError
    except ValueError:
        pass
    assert not w.is_quiet


def test_tabs_that_do_not_apply_say_what_they_need(lab):
    """No empty axes: under 'sample' the beam-tree and speculative tabs say which strategy draws them; switching
    strategy brings the figures back and puts the note in the step tab."""
    beam, spec = lab.tabs.children[1], lab.tabs.children[2]
    assert isinstance(beam, W.HTML) and "'beam'" in beam.value
    assert isinstance(spec, W.HTML) and "'speculative'" in spec.value
    assert lab.tabs.children[0] is lab._step_box
    lab.strategy.value = "beam"
    assert lab.tabs.children[1] is lab._beam_pane and isinstance(lab.tabs.children[0], W.HTML)
    assert len(lab.beam_nodes.data["x"]) > 0
    lab.strategy.value = "sample"
    assert lab.tabs.children[0] is lab._step_box and isinstance(lab.tabs.children[1], W.HTML)


def test_first_step_is_visible_and_numbered_like_the_cursor(lab):
    """At step 1 the timeline shows a point (markers, not only a line) on an x axis from 0.5 over the run's
    steps, the stage chart's title and the text both say step 1, and the compare tab says what to do before a
    comparison is run (siblings of issue 13 item 6)."""
    assert lab.cursor == 1 and lab.n_steps == 12
    tf = lab.timeline_figure
    assert lab.timeline_source.data["step"] == [1]
    markers = [r for r in tf.renderers if r.glyph.__class__.__name__ == "Scatter" and r.glyph.y == "entropy"]
    assert markers and markers[0].data_source is lab.timeline_source  # a one-point entropy line still shows
    assert (tf.x_range.start, tf.x_range.end) == (0.5, 12.5)
    assert lab.stage_figure.title.text.startswith("step 1:") and "step 1 / 12" in lab.text_view.value
    for _ in range(3):
        lab.step()
    assert lab.stage_figure.title.text.startswith("step 4:") and "step 4 / 12" in lab.text_view.value
    assert lab.timeline_source.data["step"] == [1, 2, 3, 4] and tf.x_range.end == 12.5
    compare_tab = lab.tabs.children[3]
    assert "No comparison yet" in compare_tab.value and "'compare' button" in compare_tab.value
    lab.run_compare()
    assert "No comparison yet" not in lab.compare_view.value and "first divergence" in lab.compare_view.value \
        or "all outputs identical" in lab.compare_view.value
