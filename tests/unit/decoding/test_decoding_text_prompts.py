"""Every public decoding entry point takes text (encoded with the model's tokenizer) or ids, with the same result."""
from __future__ import annotations

import pytest
import torch

from workbench.decoding import (
    DecodingError, beam_search, compare, diverse_beam_search, greedy, greedy_fast, prompt_lookup, sample,
    sample_batch, speculative_decode, speculative_sample_batch,
)
from tests.factories import tiny_gpt
from workbench.tokenizers import ByteTokenizer

torch.set_num_threads(1)
TEXT = "for x in é"


def _model(seed):
    return tiny_gpt(ByteTokenizer(), seed=seed, n_layer=1, n_head=2, n_embd=16, block_size=48, weight_std=0.3)


@pytest.fixture(scope="module")
def pair():
    return _model(0), _model(1)


CALLS = {
    "greedy": lambda m, d, p: greedy(m, p, 6).tokens,
    "greedy_fast": lambda m, d, p: greedy_fast(m, p, 6),
    "sample": lambda m, d, p: sample(m, p, 6, {"top_k": 20}, seed=3).tokens,
    "sample_batch": lambda m, d, p: sample_batch(m, p, 4, 3, seed=3).tolist(),
    "beam_search": lambda m, d, p: [h.tokens for h in beam_search(m, p, 3, 5).hypotheses],
    "diverse_beam_search": lambda m, d, p: [h.tokens for h in diverse_beam_search(m, p, 4, 5).hypotheses],
    "prompt_lookup": lambda m, d, p: prompt_lookup(m, p, 6).tokens,
    "speculative_decode": lambda m, d, p: speculative_decode(m, d, p, 6, gamma=2, seed=1).tokens,
    "speculative_sample_batch": lambda m, d, p: speculative_sample_batch(m, d, p, 4, 2, 3, seed=1).tolist(),
    "compare": lambda m, d, p: compare(m, p, ["greedy", "beam", "speculative"], 5, draft=d).tokens,
}


@pytest.mark.parametrize("name", list(CALLS))
def test_text_prompt_equals_its_ids(pair, name):
    m, d = pair
    ids = m.tokenizer.encode(TEXT)
    assert len(ids) == 11  # é is two bytes
    by_text = CALLS[name](m, d, TEXT)
    assert by_text == CALLS[name](m, d, ids) == CALLS[name](m, d, torch.tensor(ids))


def test_results_record_the_encoded_prompt(pair):
    m, d = pair
    ids = m.tokenizer.encode(TEXT)
    assert greedy(m, TEXT, 2).prompt == ids
    assert beam_search(m, TEXT, 2, 2).prompt == ids
    assert speculative_decode(m, d, TEXT, 3).prompt == ids
    assert compare(m, TEXT, ["greedy", "sample"], 3).prompt == ids


@pytest.mark.parametrize("prompt,match", [
    (b"bytes", "the prompt is bytes"), (["a", "b"], "must be text \\(str\\) or integer token ids"),
    ("", "prompt is empty"), (None, "must be text \\(str\\) or integer token ids"),
])
def test_bad_prompt_kinds_are_specific(pair, prompt, match):
    m, d = pair
    for call in (lambda: greedy(m, prompt, 2), lambda: beam_search(m, prompt, 2, 2),
                 lambda: speculative_decode(m, d, prompt, 2)):
        with pytest.raises(DecodingError, match=match):
            call()
