"""Decoding through the fused kernels: which pipelines they take, the same distributions, automatic use on CuPy.

Without a GPU the kernels' torch reference runs (it draws the same tokens as the CUDA kernels for a seed), so the
plumbing and the statistics are checked here; the kernels themselves are checked against that reference on a GPU
in tests/unit/kernels.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from tests.unit.decoding.decoding_helpers import chi_square, counts_two, joint_first_two
from tests.factories import peaked_gpt
from workbench import kernels
from workbench.decoding import DecodingError, Pipeline, sample, speculative_decode
from workbench.decoding import fused
from workbench.decoding.strategies import sample_batch

torch.set_num_threads(1)
PROMPT = [1, 2, 3]
HF = Pipeline.preset("hf", temperature=0.9, top_k=10, top_p=0.9, min_p=0.02)


def test_which_pipelines_the_kernels_express():
    assert fused.kernel_params(HF) == {"temperature": 0.9, "top_k": 10, "top_p": 0.9, "min_p": 0.02}
    assert fused.kernel_params(Pipeline([])) == {"temperature": 1.0}
    assert fused.kernel_params(Pipeline.preset("hf", top_p=0.5)) == {"temperature": 1.0, "top_p": 0.5}
    assert fused.kernel_params(Pipeline.preset("vllm", min_p=0.1, top_k=5)) is None  # min-p before top-k
    assert fused.kernel_params(Pipeline.preset("llamacpp", temperature=0.5, top_k=5)) is None  # temperature last
    assert fused.kernel_params(Pipeline.preset("hf", temperature=0.9, repetition_penalty=1.2)) is None
    assert fused.kernel_params(Pipeline.preset("hf", typical=0.9)) is None
    assert fused.kernel_params(Pipeline.preset("hf", top_k=5, min_tokens_to_keep=2)) is None


def test_resolving_the_draw(monkeypatch):
    assert fused.resolve_draw("noise", HF, True) is None
    assert fused.resolve_draw("kernel", Pipeline.preset("hf", temperature=0.0), True) is None  # greedy: no draw
    assert fused.resolve_draw("kernel", HF, False) == fused.kernel_params(HF)
    with pytest.raises(DecodingError, match="fused kernels apply temperature, top_k, top_p, min_p"):
        fused.resolve_draw("kernel", Pipeline.preset("hf", typical=0.9), False)
    with pytest.raises(DecodingError, match="draw must be one of"):
        fused.resolve_draw("gpu", HF, True)
    assert fused.resolve_draw("auto", HF, False) is None  # CPU tensors: the plain path
    assert fused.resolve_draw("auto", HF, True) is None  # no CuPy back-end here
    # as on a GPU machine (or with cupy forced): the back-end module answers "cupy"
    monkeypatch.setattr(importlib.import_module("workbench.kernels.backend"), "backend", lambda: "cupy")
    assert fused.resolve_draw("auto", HF, False) is None  # still the plain path for CPU tensors, no error
    assert fused.resolve_draw("auto", HF, True) == fused.kernel_params(HF)
    assert fused.resolve_draw("auto", Pipeline.preset("hf", temperature=0.9, repetition_penalty=1.2), True) is None


def test_kernel_distribution_equals_the_pipeline():
    """Switching to the kernels changes the noise, never the distribution: same kept set, same probabilities."""
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        logits = torch.randn(3, 257, generator=g) * 3
        params = {"temperature": float(torch.rand(1, generator=g)) + 0.2}
        if trial % 2:
            params["top_k"] = int(torch.randint(1, 60, (1,), generator=g))
        if trial % 3:
            params["top_p"] = float(torch.rand(1, generator=g)) * 0.9 + 0.05
        if trial % 5:
            params["min_p"] = float(torch.rand(1, generator=g)) * 0.3
        want = Pipeline.preset("hf", **params).probs(logits)
        got = fused.kernel_probs(logits, fused.kernel_params(Pipeline.preset("hf", **params)))
        assert torch.equal(got > 0, want > 0), params
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_kernel_sampling_has_the_target_distribution():
    model = peaked_gpt(0, scale=0.25)
    toks = sample_batch(model, PROMPT, 2, 20_000, HF, seed=3, draw="kernel")
    p_val, _ = chi_square(counts_two(toks, 16), joint_first_two(model, PROMPT, HF))
    assert p_val > 0.01
    # power: the untruncated distribution is rejected
    p_wrong, _ = chi_square(counts_two(toks, 16), joint_first_two(model, PROMPT, Pipeline.preset("hf", temperature=0.9)))
    assert p_wrong < 1e-6
    # row 0 of the batch is the one-sequence run with the same seed
    assert sample(model, PROMPT, 2, HF, seed=3, draw="kernel").tokens == toks[0].tolist()


def test_kernel_speculative_decoding_has_the_target_distribution():
    """The verification kernel's acceptance and residual draws keep the target's distribution (first token of
    3,000 one-token-draft rounds, each with its own seed)."""
    target, draft = peaked_gpt(0, scale=0.25), peaked_gpt(1, scale=0.25)
    pipe = Pipeline.preset("hf", temperature=1.0)
    n = 3000
    first = [speculative_decode(target, draft, PROMPT, 2, gamma=1, pipeline=pipe, seed=s, trace=False,
                                draw="kernel").tokens[0] for s in range(n)]
    obs = np.bincount(first, minlength=16)
    p1 = pipe.probs(target.forward(torch.tensor([PROMPT])).logits[0, -1].detach()).double().numpy()
    q1 = pipe.probs(draft.forward(torch.tensor([PROMPT])).logits[0, -1].detach()).double().numpy()
    assert chi_square(obs, p1)[0] > 0.01
    assert chi_square(obs, q1)[0] < 1e-6  # the draft's own distribution is clearly different


def test_auto_uses_the_kernels_when_the_backend_is_cupy(monkeypatch):
    """With CuPy and CUDA logits, sample and speculative decoding call the fused kernels (stood in for here by
    the reference back-end, which draws the same tokens), and give what draw='kernel' gives."""
    target, draft = peaked_gpt(0, scale=0.25), peaked_gpt(1, scale=0.25)
    calls = {"sample": 0, "verify": 0}
    real_sample, real_verify = kernels.sample, kernels.verify_speculative

    def rec_sample(*a, **k):
        calls["sample"] += 1
        return real_sample(*a, **k, backend="reference")

    def rec_verify(*a, **k):
        calls["verify"] += 1
        return real_verify(*a, **k, backend="reference")

    want_s = sample(target, PROMPT, 12, HF, seed=4, draw="kernel").tokens
    want_v = speculative_decode(target, draft, PROMPT, 12, gamma=3, pipeline=HF, seed=4, draw="kernel").tokens
    assert want_s != sample(target, PROMPT, 12, HF, seed=4, draw="noise").tokens  # other noise, other tokens

    monkeypatch.setattr(kernels, "sample", rec_sample)
    monkeypatch.setattr(kernels, "verify_speculative", rec_verify)
    # as on a GPU machine with CUDA logits (the recorders still run the reference, which a CPU can)
    monkeypatch.setattr(kernels, "kernels_run_for", lambda is_cuda: True)
    assert sample(target, PROMPT, 12, HF, seed=4).tokens == want_s
    assert calls["sample"] == 12
    r = speculative_decode(target, draft, PROMPT, 12, gamma=3, pipeline=HF, seed=4)
    assert r.tokens == want_v and calls["verify"] == r.stats.target_calls
    assert all(rd.accept_prob for rd in r.rounds[:-1])  # the trace still shows p/q ratios
    for rd in r.rounds:  # and the residual the kernel's new token came from
        if rd.kind == "residual":
            assert rd.residual_top and sum(pr for _, pr in rd.residual_top) <= 1 + 1e-6
    # a pipeline the kernels cannot express stays on the plain path
    calls["sample"] = 0
    sample(target, PROMPT, 5, Pipeline.preset("hf", temperature=0.9, repetition_penalty=1.3), seed=4)
    assert calls["sample"] == 0
