"""Counting characters with a byte model and a BPE model trained the same way.

"Counting Ability of Large Language Models and Impact of Tokenization" (Zhang et al., 2024) finds that how a
string is tokenised changes how well a model counts its letters: when letters are merged into multi-letter tokens,
the model has to know what is inside each token, and counting gets worse; letter-level tokens count best.

The experiment here, small enough to train in a few minutes on one thread: examples ``"abcab:a=2\\n"`` (a string
of letters, a letter, how often it occurs), two TinyGPTs of the same shape trained with the same steps, batch, seed
and text, one over bytes and one over a BPE trained on the task's text (so it merges frequent letter runs). Each
answers fresh examples greedily; :class:`CountingResult` holds accuracy by string length and, for the BPE model,
each example's token boundaries, to see whether failures sit where the counted letter is hidden inside longer
tokens. ``python -m workbench.tokenizers.make_counting`` trains both and writes the numbers the lesson reads.

Lesson: ``notebooks/01_tokenization.ipynb`` (8. Counting letters).

>>> ex = CountExample("abcab", "a")
>>> ex.count, ex.prompt, ex.answer
(2, '\\nabcab:a=', '2')
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch


class CountingError(ValueError):
    """Bad input to the counting experiment (an empty alphabet, a letter outside it, a length below 1, ...)."""


@dataclass(frozen=True)
class CountExample:
    """One question: how many times does ``letter`` occur in ``string``."""

    string: str
    letter: str

    @property
    def count(self) -> int:
        return self.string.count(self.letter)

    @property
    def prompt(self) -> str:
        """What the model sees: a newline (the end of the previous example), the string, the letter, ``=``."""
        return f"\n{self.string}:{self.letter}="

    @property
    def answer(self) -> str:
        return str(self.count)

    def line(self) -> str:
        """The training form: ``string:letter=count`` and a newline."""
        return f"{self.string}:{self.letter}={self.count}\n"


def make_examples(n: int, lengths: Sequence[int], alphabet: str = "abcd", seed: int = 0) -> list[CountExample]:
    """``n`` random examples, each string's length drawn uniformly from ``lengths`` and its letters uniformly from
    ``alphabet``; the letter asked about is drawn from ``alphabet`` too (so a count of 0 happens)."""
    if not alphabet or len(set(alphabet)) != len(alphabet) or any(c in ":=\n" for c in alphabet):
        raise CountingError(f"alphabet must be distinct characters other than ':', '=' and newline, got {alphabet!r}")
    lengths = list(lengths)
    if not lengths or min(lengths) < 1:
        raise CountingError(f"lengths must be a non-empty list of lengths >= 1, got {lengths}")
    rng = random.Random(seed)
    return [CountExample("".join(rng.choice(alphabet) for _ in range(rng.choice(lengths))), rng.choice(alphabet))
            for _ in range(n)]


#: The recipe both models share (only the tokenizer differs).
RECIPE = dict(alphabet="abc", train_lengths=tuple(range(1, 11)), n_train=30_000, bpe_vocab=256 + 96,
              config=dict(n_layer=2, n_head=4, n_embd=64, block_size=32, pos="rope", dropout=0.0),
              steps=2500, batch_size=32, lr=3e-3, seed=0,
              # the byte model's window in bytes: 48 bytes hold as many examples (about 4.6) as 32 BPE tokens
              byte_block_size=48)


def train_pair(recipe: Optional[dict] = None, progress: bool = False):
    """Train the byte model and the BPE model of ``recipe`` (default :data:`RECIPE`) on the same text with the same
    shape, steps, batch and seed. Returns ``(byte_model, bpe_model)``.

    Windows are ``block_size`` *tokens*, so a BPE window holds more examples than a byte window; the recipe key
    ``byte_block_size`` gives the byte model a longer window (the same number of examples per window)."""
    from ..models import GPTConfig, TinyGPT, train
    from .bpe import BPETokenizer
    from .byte import ByteTokenizer

    r = dict(RECIPE, **(recipe or {}))
    text = "".join(e.line() for e in make_examples(r["n_train"], r["train_lengths"], r["alphabet"], r["seed"]))
    bpe = BPETokenizer.train(text, vocab_size=r["bpe_vocab"], pattern="gpt2", progress=False)
    models = []
    for name, tok in (("count-byte", ByteTokenizer(special_tokens=())), ("count-bpe", bpe)):
        ids = torch.tensor(tok.encode(text), dtype=torch.long)
        torch.manual_seed(r["seed"])
        config = dict(r["config"])
        if name == "count-byte" and r.get("byte_block_size"):  # a byte window as long as the BPE's in examples
            config["block_size"] = r["byte_block_size"]
        m = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, **config), tokenizer=tok, name=name)
        train(m, ids, r["steps"], r["batch_size"], r["lr"], seed=r["seed"], progress=progress, desc=name)
        models.append(m.eval())
    return tuple(models)


@torch.no_grad()
def answer(model, prompt: str, max_tokens: int = 4) -> str:
    """The model's greedy continuation of ``prompt`` up to the first newline (or ``max_tokens`` tokens)."""
    tok = model.tokenizer
    ids = tok.encode(prompt)
    out: list[int] = []
    for _ in range(max_tokens):
        logits = model.forward(torch.as_tensor([ids + out], dtype=torch.long)).logits[0, -1]
        out.append(int(logits.argmax()))
        if "\n" in tok.decode(out):
            break
    return tok.decode(out).split("\n")[0]


@dataclass
class CountRecord:
    """One answered example: the string, the letter, the true and the given count (as text), and the string's
    token pieces under the model's tokenizer (``"ab|ca|b"`` joined by ``|``)."""

    string: str
    letter: str
    count: int
    given: str
    pieces: list[str]

    @property
    def correct(self) -> bool:
        return self.given == str(self.count)

    @property
    def hidden(self) -> int:
        """How many occurrences of the letter sit inside a token of more than one character."""
        return sum(p.count(self.letter) for p in self.pieces if len(p) > 1)


@dataclass
class CountingResult:
    """A model's answers: ``records`` and accuracy by string length (``{length: accuracy}``)."""

    name: str
    records: list[CountRecord] = field(default_factory=list)

    def accuracy_by_length(self) -> dict[int, float]:
        out: dict[int, list[bool]] = {}
        for r in self.records:
            out.setdefault(len(r.string), []).append(r.correct)
        return {n: sum(v) / len(v) for n, v in sorted(out.items())}

    @property
    def accuracy(self) -> float:
        return sum(r.correct for r in self.records) / max(1, len(self.records))

    def failures(self) -> list[CountRecord]:
        return [r for r in self.records if not r.correct]


def pieces_of(tokenizer, string: str) -> list[str]:
    """How ``tokenizer`` cuts ``string`` (each token's text), as in the prompt (after a newline)."""
    ids = tokenizer.encode("\n" + string)
    texts = [tokenizer.token_bytes(i).decode("utf-8", errors="replace") for i in ids]
    if texts and texts[0] == "\n":
        texts = texts[1:]
    elif texts and texts[0].startswith("\n"):
        texts[0] = texts[0][1:]
    return texts


def evaluate_counting(model, examples: Sequence[CountExample], name: Optional[str] = None) -> CountingResult:
    """Ask ``model`` every example (greedy) and record the answers with the string's token pieces."""
    res = CountingResult(name or getattr(model, "name", "model"))
    for e in examples:
        res.records.append(CountRecord(e.string, e.letter, e.count, answer(model, e.prompt),
                                       pieces_of(model.tokenizer, e.string)))
    return res
