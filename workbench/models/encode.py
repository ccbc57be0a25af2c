"""Text or token ids -> one ``(1, T)`` sequence of ids a model can take, with errors in the caller's own classes.

The labs (attention, residual stream) each accept a string, a list of ids, a NumPy array or a ``(T,)``/``(1, T)``
tensor for one sequence, and each reports bad input with its own error classes; :func:`encode_one` is the one
conversion they share, told which class to raise for which fault.

>>> from workbench.models import TinyGPT, GPTConfig
>>> from workbench.tokenizers import ByteTokenizer
>>> m = TinyGPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8), ByteTokenizer())
>>> encode_one(m, "hi").tolist()
[[104, 105]]
>>> encode_one(m, [300])
Traceback (most recent call last):
...
ValueError: token id 300 at position 0 is out of range [0, 257)
"""
from __future__ import annotations

import numpy as np
import torch

from .interface import ModelError, as_batch


def encode_one(model, text_or_ids, *, error: type[Exception] = ValueError, empty: type[Exception] | None = None,
               out_of_range: type[Exception] | None = None) -> torch.Tensor:
    """Text (through ``model.tokenizer``) or ids -> ``(1, T)`` long ids, on the device they came on (CPU for text,
    lists and arrays), each checked against ``[0, model.config.vocab_size)``.

    Raises ``empty`` for empty text, an empty id sequence or text that encodes to no token, ``out_of_range`` for
    an id outside the vocabulary (the message gives the id and its position), and ``error`` for the rest (no
    tokenizer for text, not integers, not 1-D or 2-D, a batch of more than one sequence). ``empty`` and
    ``out_of_range`` default to ``error``.
    """
    empty = empty or error
    out_of_range = out_of_range or error
    if isinstance(text_or_ids, str):
        if not text_or_ids:
            raise empty("the text is empty: give at least one character")
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            raise error("this model has no tokenizer: pass token ids instead of text")
        ids = tok.encode(text_or_ids)
    else:
        ids = text_or_ids
        if isinstance(ids, np.ndarray):
            ids = torch.from_numpy(ids)
    if not isinstance(ids, torch.Tensor):
        ids = list(getattr(ids, "tolist", lambda: ids)())
        if not ids:
            raise empty("the id sequence is empty (zero tokens): give at least one token")
    try:
        t = as_batch(ids)
    except ModelError as e:
        raise error(str(e)) from None
    if t.size(0) != 1:
        raise error(f"one sequence at a time, got a batch of {t.size(0)}")
    if t.size(1) == 0:
        raise empty("the input encodes to zero tokens: give at least one token")
    vocab = model.config.vocab_size
    bad = (t < 0) | (t >= vocab)
    if bool(bad.any()):
        j = int(bad.nonzero()[0, 1])
        raise out_of_range(f"token id {int(t[0, j])} at position {j} is out of range [0, {vocab})")
    return t
