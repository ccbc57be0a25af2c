"""Decoding memory and step time against the length so far: the recurrent model (constant-size state) vs TinyGPT
(a KV cache that grows with every token), at T = 256, 4,096 and 16,384 by default, both in one run.

Targets (issue #16): the recurrent step stays flat, its time at T = 16,384 at most 1.2 times its time at T = 256,
while attention's grows. The two models have about the same number of parameters (printed).

How: each model gets a cache holding ``T`` tokens, then ``--steps`` single-token decoding steps are timed (the
median; the best median of ``--rounds`` alternating rounds, so a busy moment hurts both alike). By default
the caches are *filled* rather than prefilled: TinyGPT's keys and values are random numbers in a KV cache of
length ``T``, the recurrent model's states random matrices, since a step's cost depends on the length and not on
the numbers (and a TinyGPT prefill of 16,384 tokens is a quadratic attention pass, far costlier than the steps
measured); ``--prefill`` feeds real tokens instead. Cache bytes: TinyGPT's keys and values of the ``T`` cached tokens (``2 L H T Dh`` floats); the recurrent
model's states (``L H Dk Dv`` floats), and in brackets with the ring of past states kept for ``crop``.

Lesson: ``notebooks/08_memory_and_icl.ipynb``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from ..models import GPTConfig, RecurrentConfig, RecurrentLM, TinyGPT

#: Both models at the shipped docs-byte width: 4 layers, 4 heads, width 128, byte vocabulary. The recurrent one
#: has a key dimension of 32 per head (its state per head is 32 x 32).
SHAPE = dict(vocab_size=257, n_layer=4, n_head=4, n_embd=128)
TINY_SHAPE = dict(vocab_size=31, n_layer=2, n_head=2, n_embd=16)
LENGTHS = (256, 4096, 16384)
#: The recurrent step at the longest length may take at most this multiple of its time at the shortest.
FLAT_TARGET = 1.2


@dataclass
class Row:
    """One (model, length) measurement: median step time (ms) and cache bytes (``ring_bytes``: with the states
    kept for crop; equal to ``cache_bytes`` for TinyGPT)."""

    model: str
    T: int
    step_ms: float
    cache_bytes: int
    ring_bytes: int


def build(shape: dict, max_T: int):
    """The two models, seeded, in eval mode: TinyGPT with rotary positions (no learned table to run out of)."""
    torch.manual_seed(0)
    tiny = TinyGPT(GPTConfig(**shape, block_size=max_T, pos="rope")).eval()
    torch.manual_seed(0)
    rec = RecurrentLM(RecurrentConfig(**shape, d_state=shape["n_embd"] // shape["n_head"])).eval()
    return tiny, rec


def _filled_cache(model, T: int, extra: int, prefill: bool):
    g = torch.Generator().manual_seed(T)
    if isinstance(model, TinyGPT):
        cache = model.new_cache(1, max_len=T + extra)
    else:
        cache = model.new_cache(1)
    if prefill:
        model.step(torch.randint(0, model.config.vocab_size, (1, T), generator=g), cache)
    elif isinstance(model, TinyGPT):
        cache.k[:, :, :, :T].normal_(generator=g)
        cache.v[:, :, :, :T].normal_(generator=g)
        cache.length = T
    else:
        cache.states = [torch.randn(s.shape, generator=g) * 0.1 for s in cache.states]
        cache.length = T
    return cache


def _kv_bytes(cache) -> int:
    """Bytes of the keys and values of the cached tokens (the preallocated rest is not counted)."""
    per_token = cache.k.numel() // cache.max_len * cache.k.element_size()
    return 2 * per_token * cache.length


@torch.no_grad()
def measure(model, name: str, T: int, steps: int, prefill: bool = False) -> Row:
    cache = _filled_cache(model, T, steps + 1, prefill)
    if isinstance(model, TinyGPT):
        nbytes = ring = _kv_bytes(cache)
    else:
        ring = cache.nbytes  # states + the ring, which fills during the steps below
        nbytes = sum(s.numel() * s.element_size() for s in cache.states)
    tok = torch.tensor([[1]])
    model.step(tok, cache)  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.step(tok, cache)
        times.append(time.perf_counter() - t0)
    if not isinstance(model, TinyGPT):
        ring = cache.nbytes
    return Row(name, T, statistics.median(times) * 1e3, nbytes, ring)


def run(lengths=LENGTHS, steps: int = 20, rounds: int = 3, shape: dict | None = None,
        prefill: bool = False) -> list[Row]:
    """Rows for both models at every length: the best (lowest) median step of ``rounds`` alternating rounds."""
    tiny, rec = build(shape or SHAPE, max(lengths) + steps + 2)
    best: dict[tuple[str, int], Row] = {}
    for _ in range(rounds):
        for T in lengths:
            for name, model in (("tinygpt", tiny), ("recurrent", rec)):
                r = measure(model, name, T, steps, prefill)
                if (name, T) not in best or r.step_ms < best[name, T].step_ms:
                    best[name, T] = r
    return [best[name, T] for name in ("tinygpt", "recurrent") for T in lengths]


def ratios(rows: list[Row]) -> dict[str, float]:
    """Step time at the longest length over that at the shortest, per model."""
    out = {}
    for name in ("tinygpt", "recurrent"):
        mine = sorted((r for r in rows if r.model == name), key=lambda r: r.T)
        out[name] = mine[-1].step_ms / mine[0].step_ms
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m workbench.bench memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, nargs="+", default=list(LENGTHS), help="cached lengths to measure at")
    p.add_argument("--steps", type=int, default=20, help="timed decoding steps per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (the best median of each is kept)")
    p.add_argument("--prefill", action="store_true", help="feed T real tokens instead of filling the caches")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the plumbing test's size
    args = p.parse_args(argv)
    shape = TINY_SHAPE if args.tiny else SHAPE
    tiny, rec = build(shape, 8)
    print(f"decoding step vs cached length; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"caches {'prefilled' if args.prefill else 'filled (see the module docstring)'}")
    print(f"  tinygpt   {tiny.config.n_layer} layers, width {tiny.config.n_embd}, {tiny.config.n_head} heads, RoPE: "
          f"{tiny.num_params(non_embedding=False):,} parameters")
    print(f"  recurrent {rec.config.n_layer} layers, width {rec.config.n_embd}, {rec.config.n_head} heads, d_state "
          f"{rec.config.d_state}: {rec.num_params(non_embedding=False):,} parameters")
    rows = run(args.T, args.steps, args.rounds, shape, args.prefill)
    print(f"\n  {'model':10s} {'T':>7s} {'step ms':>9s} {'cache bytes':>14s}  (with the crop ring)")
    for r in rows:
        ring = f"({r.ring_bytes:,})" if r.ring_bytes != r.cache_bytes else ""
        print(f"  {r.model:10s} {r.T:7,d} {r.step_ms:9.3f} {r.cache_bytes:14,d}  {ring}")
    lo, hi = min(args.T), max(args.T)
    rat = ratios(rows)
    for name in ("tinygpt", "recurrent"):
        print(f"  {name}: step time at T = {hi:,} / at T = {lo:,}: {rat[name]:.2f}")
    verdict = "meets" if rat["recurrent"] <= FLAT_TARGET else "MISSES"
    print(f"  recurrent ratio {rat['recurrent']:.2f} ({verdict} the <= {FLAT_TARGET} target); "
          f"attention's grows {rat['tinygpt']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
