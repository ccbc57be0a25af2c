"""``workbench.models.encode.encode_one``: the one text-or-ids conversion the attention and residual labs share,
each with its own error classes."""
import numpy as np
import pytest
import torch

from workbench.attention.capture import encode_input
from workbench.attention.errors import AttentionError, EmptyInputError, IndexOutOfRangeError
from workbench.models import GPTConfig, TinyGPT
from workbench.models.encode import encode_one
from workbench.residual.errors import OutOfRangeError, ResidualError
from workbench.residual.run import encode
from workbench.tokenizers import ByteTokenizer


@pytest.fixture(scope="module")
def model():
    return TinyGPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8), ByteTokenizer()).eval()


@pytest.mark.parametrize("given", ["hi", [104, 105], np.array([104, 105]), torch.tensor([104, 105]),
                                   torch.tensor([[104, 105]])])
def test_every_form_gives_the_same_ids(model, given):
    assert encode_one(model, given).tolist() == [[104, 105]]
    assert encode_input(model, given).tolist() == [104, 105]  # the attention lab: (T,)
    assert encode(model, given).tolist() == [[104, 105]]      # the residual lab: (1, T) on the model's device


@pytest.mark.parametrize("given, attention, residual, message", [
    ("", EmptyInputError, ResidualError, "text is empty"),
    ([], EmptyInputError, ResidualError, "id sequence is empty"),
    ([3, 257], IndexOutOfRangeError, OutOfRangeError, r"token id 257 at position 1 is out of range \[0, 257\)"),
    (torch.zeros(2, 3, dtype=torch.long), AttentionError, ResidualError, "one sequence at a time, got a batch of 2"),
    (np.array([1.5, 2.0]), AttentionError, ResidualError, "ids must be integers"),
])
def test_each_lab_raises_its_own_classes(model, given, attention, residual, message):
    with pytest.raises(attention, match=message):
        encode_input(model, given)
    with pytest.raises(residual, match=message):
        encode(model, given)
    with pytest.raises(ValueError, match=message):  # the default: plain ValueError
        encode_one(model, given)


def test_text_needs_a_tokenizer_and_residual_checks_the_context(model):
    bare = TinyGPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8))
    with pytest.raises(AttentionError, match="no tokenizer"):
        encode_input(bare, "hi")
    assert encode_input(model, "a" * 20).shape == (20,)  # capture reads past the context; the residual lab does not
    with pytest.raises(ResidualError, match="20 tokens is longer than the model's context of 8"):
        encode(model, "a" * 20)
