"""DecodingLab driven from Python: set controls, click buttons, assert on the bokeh data sources."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("jupyter_bokeh")
from widgets.decoding_lab import DecodingLab  # noqa: E402
from workbench.decoding import Pipeline, beam_search, greedy, sample, speculative_decode  # noqa: E402
from workbench.models import GPTConfig, TinyGPT  # noqa: E402
from workbench.tokenizers import ByteTokenizer  # noqa: E402

torch.set_num_threads(1)


def _model(seed, n_layer, n_embd):
    tok = ByteTokenizer()
    torch.manual_seed(seed)
    m = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=n_layer, n_head=2, n_embd=n_embd, block_size=64,
                          pos="rope"), tokenizer=tok, name=f"t{seed}").eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)
    return m


@pytest.fixture(scope="module")
def models():
    return _model(0, 2, 32), _model(1, 1, 32)


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
    assert lab.timings["render"] < 0.1


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
