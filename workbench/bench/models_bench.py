"""TinyGPT against a plain-PyTorch GPT of the same architecture: training tokens/s, cached vs uncached decoding, memory.

Each measurement runs in a fresh subprocess so its peak RSS is its own. Targets (foundation issue):
training throughput ratio >= 0.95 against the reference, and a cached decoding step at least 5x faster
than recomputing the whole sequence at T = 256.

Lesson: ``notebooks/00_tour.ipynb``.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from ..models import GPTConfig, TinyGPT
from ..models.make_pretrained import RECIPES
from ..models.reference import ReferenceGPT

# The shipped docs-byte shape (without dropout, which the reference does not model).
SHAPE = dict(vocab_size=257, **{k: v for k, v in RECIPES["docs-byte"]["config"].items() if k != "dropout"})
#: Tokens decoded one by one after a prefill, as generation does (steps follow steps, caches warm).
DECODE_STEPS = 8


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _train_tps(kind: str, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    cfg = GPTConfig(**SHAPE)
    tiny = TinyGPT(cfg)
    model = tiny if kind == "tinygpt" else ReferenceGPT(cfg, sdpa=(kind == "reference-sdpa")).load_tinygpt(tiny)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size + 1), generator=g)

    def step():
        out = model(x[:, :-1])
        logits = out.logits if kind == "tinygpt" else out
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"tokens_per_s": batch * cfg.block_size / med, "step_ms": med * 1e3, "peak_mb": _peak_mb()}


@torch.no_grad()
def _decode(T: int, reps: int) -> dict:
    torch.manual_seed(0)
    m = TinyGPT(GPTConfig(**SHAPE)).eval()
    ref = ReferenceGPT(m.config, sdpa=True).load_tinygpt(m).eval()  # the plain-PyTorch GPT has no cache
    ids = torch.randint(0, 257, (1, T))
    cached, full, ref_full = [], [], []
    k = DECODE_STEPS
    for _ in range(reps):
        cache = m.new_cache(1)
        m.step(ids[:, : T - k], cache)
        for t in range(T - k, T):
            t0 = time.perf_counter()
            m.step(ids[:, t : t + 1], cache)
            cached.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        m(ids)
        full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref(ids)
        ref_full.append(time.perf_counter() - t0)
    c, f, r = statistics.median(cached), statistics.median(full), statistics.median(ref_full)
    return {"cached_ms": c * 1e3, "recompute_ms": f * 1e3, "speedup": f / c, "reference_recompute_ms": r * 1e3,
            "speedup_vs_reference": r / c, "peak_mb": _peak_mb()}


#: A shipped model loads offline within this.
LOAD_TARGET_S = 2.0


def load_times() -> dict[str, float]:
    """Seconds to load each shipped model (best of two; the first load may read the files from disk)."""
    from ..models import available, load_pretrained

    out = {}
    for name in available():
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            load_pretrained(name)
            best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


def _worker(args) -> None:
    if args.worker == "decode":
        out = _decode(args.T, args.reps)
    else:
        out = _train_tps(args.worker, args.steps, args.batch)
    print(json.dumps(out))


def _run(worker: str, args) -> dict:
    cmd = [sys.executable, "-m", "workbench.bench.models_bench", "--worker", worker, "--steps", str(args.steps),
           "--batch", str(args.batch), "--T", str(args.T), "--reps", str(args.reps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m workbench.bench models", description=__doc__)
    p.add_argument("--steps", type=int, default=10, help="timed training steps per model")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--T", type=int, default=256, help="sequence length for the decoding comparison")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (the best of each is kept)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)
    print(f"TinyGPT {SHAPE} vs a plain-PyTorch GPT of the same shape; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    best: dict[str, dict] = {}
    for _ in range(args.rounds):  # alternate so a busy moment hurts both sides alike
        for kind in ("tinygpt", "reference-sdpa", "reference-explicit"):
            r = _run(kind, args)
            if kind not in best or r["tokens_per_s"] > best[kind]["tokens_per_s"]:
                best[kind] = r
    tiny = best["tinygpt"]
    print(f"\ntraining (batch {args.batch} x {SHAPE['block_size']} tokens, median step):")
    for kind, r in best.items():
        print(f"  {kind:20s} {r['tokens_per_s']:10,.0f} tokens/s  {r['step_ms']:8.1f} ms/step  peak RSS {r['peak_mb']:6.0f} MB")
    for kind in ("reference-sdpa", "reference-explicit"):
        ratio = tiny["tokens_per_s"] / best[kind]["tokens_per_s"]
        verdict = "meets" if ratio >= 0.95 else "MISSES"
        print(f"  ratio TinyGPT / {kind}: {ratio:.2f}  ({verdict} the >= 0.95 target)")
    d = _run("decode", args)
    verdict = "meets" if min(d["speedup"], d["speedup_vs_reference"]) >= 5 else "MISSES"
    print(f"\ndecoding at T={args.T} (median one-token step over the last {DECODE_STEPS} tokens): TinyGPT cached "
          f"{d['cached_ms']:.2f} ms vs recomputing all {args.T} tokens: TinyGPT {d['recompute_ms']:.2f} ms = "
          f"{d['speedup']:.1f}x, plain-PyTorch reference {d['reference_recompute_ms']:.2f} ms = "
          f"{d['speedup_vs_reference']:.1f}x  ({verdict} the >= 5x target); peak RSS {d['peak_mb']:.0f} MB")
    loads = load_times()
    verdict = "meets" if max(loads.values(), default=0.0) < LOAD_TARGET_S else "MISSES"
    print("\nloading the shipped models offline: " + ", ".join(f"{n} {s:.2f} s" for n, s in loads.items())
          + f"  ({verdict} the < {LOAD_TARGET_S:.0f} s target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
