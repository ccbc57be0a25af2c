"""The issue's bad-input list: each a specific error or documented behaviour, never a silent wrong answer."""
from __future__ import annotations

import pytest
import torch

from tests.factories import peaked_gpt
from workbench.decoding import (
    DecodingError, Pipeline, beam_search, greedy, prompt_lookup, sample, sample_batch, speculative_decode,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return peaked_gpt(0)


@pytest.mark.parametrize("params,match", [
    (dict(top_p=0.0), "top_p must be in"), (dict(top_p=1.01), "top_p must be in"),
    (dict(top_k=0), "top_k must be an int >= 1"), (dict(top_k=-3), "top_k must be an int >= 1"),
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(typical=0.0), "typical mass must be in"), (dict(typical=1.0), "typical mass must be in"),
    (dict(min_p=-0.5), "min_p must be in"), (dict(min_p=2.0), "min_p must be in"),
    (dict(epsilon=1.0), "epsilon must be in"), (dict(eta=0.0), "eta epsilon must be in"),
    (dict(top_k=True), "top_k must be an int"), (dict(top_p="0.9"), "top_p must be a number"),
])
def test_bad_pipeline_parameters(params, match):
    with pytest.raises(DecodingError, match=match):
        Pipeline.preset("hf", **params)


def test_temperature_zero_means_greedy(model):
    """Documented: temperature 0 is greedy decoding (HF raises instead); every strategy that samples agrees."""
    want = greedy(model, [1, 2], 12).tokens
    pipe = Pipeline.preset("hf", temperature=0.0, top_k=5)
    assert pipe.greedy
    assert sample(model, [1, 2], 12, pipe, seed=99).tokens == want
    assert sample_batch(model, [1, 2], 12, 3, pipe, seed=1).tolist() == [want] * 3


def test_max_new_tokens_beyond_context(model):
    for call in (lambda: greedy(model, [1, 2, 3], 30), lambda: sample(model, [1] * 10, 23),
                 lambda: beam_search(model, [1], 2, 32), lambda: prompt_lookup(model, [1, 2], 31),
                 lambda: speculative_decode(model, model, [1], 32)):
        with pytest.raises(DecodingError, match="exceeds the model's context of 32"):
            call()
    assert len(greedy(model, [1, 2, 3], 29).tokens) == 29  # exactly filling the context is fine


def test_different_vocabularies(model):
    with pytest.raises(DecodingError, match="different vocabularies"):
        speculative_decode(model, peaked_gpt(1, vocab=17), [1, 2], 4)


def test_nan_logits_raise(model):
    bad = peaked_gpt(0)
    with torch.no_grad():
        bad.lm_head.weight[3, 0] = float("nan")  # tied to the embedding: the model's logits become NaN
    for call in (lambda: greedy(bad, [1, 2], 3), lambda: sample(bad, [1, 2], 3, {"top_p": 0.9}),
                 lambda: beam_search(bad, [1, 2], 2, 3), lambda: prompt_lookup(bad, [1, 2], 3),
                 lambda: speculative_decode(model, bad, [1, 2], 3),
                 lambda: sample(bad, [1, 2], 3, {"top_p": 0.9}, draw="kernel"),
                 lambda: speculative_decode(model, bad, [1, 2], 3, pipeline={"top_k": 5}, draw="kernel")):
        with pytest.raises(DecodingError, match="NaN"):
            call()


def test_check_logits_edge_shapes():
    from workbench.decoding.processors import check_logits

    assert check_logits(torch.zeros(0, 5)).shape == (0, 5)  # an empty batch has nothing wrong in it
    with pytest.raises(DecodingError, match=r"\+inf"):
        check_logits(torch.tensor([[0.0, float("inf")]], dtype=torch.bfloat16))
    assert check_logits(torch.full((2, 3), float("-inf"))).shape == (2, 3)  # -inf alone is a valid mask


@pytest.mark.parametrize("greedy_pipe", [True, False])
def test_bad_draw(model, greedy_pipe):
    pipe = {"temperature": 0.0} if greedy_pipe else None
    with pytest.raises(DecodingError, match="draw must be one of"):
        sample(model, [1], 2, pipe, draw="gpu")
    with pytest.raises(DecodingError, match="draw must be one of"):
        speculative_decode(model, model, [1], 2, pipeline=pipe, draw="cuda")


@pytest.mark.parametrize("prompt,match", [([], "prompt is empty"), ([1, 16], r"prompt ids must be in \[0, 16\)"),
                                          ([-1], "prompt ids must be in"), ([[1, 2], [3, 4]], "one prompt at a time")])
def test_bad_prompts(model, prompt, match):
    with pytest.raises(DecodingError, match=match):
        greedy(model, torch.tensor(prompt, dtype=torch.long), 3)


@pytest.mark.parametrize("n", [-1, 2.5, True])
def test_bad_max_new_tokens(model, n):
    with pytest.raises(DecodingError, match="max_new_tokens must be an int"):
        sample(model, [1], n)


def test_bad_eos(model):
    with pytest.raises(DecodingError, match="eos_id 99"):
        greedy(model, [1], 3, eos_id=99)
