"""``python -m workbench.tokenizers.make_counting``: train the counting pair and write the lesson's numbers.

Trains the byte model and the BPE model of :data:`workbench.tokenizers.counting.RECIPE` (same text, shape, steps,
batch and seed; 2,500 steps each, 4-8 minutes in all on one thread), asks each 30 fresh examples of every length from 1 to
10, and writes accuracy by length, the BPE model's accuracy split by whether the counted letter is hidden inside a
multi-letter token, and a sample of failures with their token boundaries to :data:`RESULT_FILE` (a few KB; the
weights are not shipped: this command remakes everything).

Lesson: ``notebooks/01_tokenization.ipynb`` (8. Counting letters).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .counting import RECIPE, evaluate_counting, make_examples, train_pair

RESULT_FILE = Path(__file__).parent / "results" / "counting.json"


def summarise(results, recipe) -> dict:
    out = {"recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in recipe.items()}, "models": {}}
    for res in results:
        recs = res.records
        hidden = [r for r in recs if r.hidden > 0]
        visible = [r for r in recs if r.hidden == 0 and r.count > 0]
        out["models"][res.name] = {
            "accuracy": res.accuracy,
            "by_length": {str(k): v for k, v in res.accuracy_by_length().items()},
            "accuracy_letter_hidden_in_longer_tokens": sum(r.correct for r in hidden) / max(1, len(hidden)),
            "n_hidden": len(hidden),
            "accuracy_letter_only_in_single_letter_tokens": sum(r.correct for r in visible) / max(1, len(visible)),
            "n_visible": len(visible),
            "failures": [{"string": r.string, "letter": r.letter, "count": r.count, "given": r.given,
                          "pieces": "|".join(r.pieces)} for r in res.failures()[:12]],
        }
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=RECIPE["steps"])
    p.add_argument("--per-length", type=int, default=30)
    p.add_argument("--out", default=str(RESULT_FILE))
    p.add_argument("--byte-block", type=int, default=None,
                   help="the byte model's window in bytes (default: the recipe's byte_block_size)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    recipe = dict(RECIPE, steps=a.steps)
    if a.byte_block:
        recipe["byte_block_size"] = a.byte_block
    t0 = time.perf_counter()
    byte_model, bpe_model = train_pair(recipe, progress=True)
    train_s = time.perf_counter() - t0
    lengths = sorted(set(recipe["train_lengths"]))
    test = [e for n in lengths for e in make_examples(a.per_length, [n], recipe["alphabet"], seed=10_000 + n)]
    results = [evaluate_counting(m, test) for m in (byte_model, bpe_model)]
    out = summarise(results, recipe)
    text = "".join(e.line() for e in make_examples(2000, recipe["train_lengths"], recipe["alphabet"], 1))
    out["examples_per_window"] = {m.name: m.config.block_size * len(text.splitlines()) / len(m.tokenizer.encode(text))
                                  for m in (byte_model, bpe_model)}
    out.update({"train_seconds": train_s, "per_length": a.per_length,
                "command": "python -m workbench.tokenizers.make_counting"})
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    for name, m in out["models"].items():
        print(name, f"accuracy {m['accuracy']:.3f}", m["by_length"])
    return out


if __name__ == "__main__":
    main()
