"""``python -m workbench.bench kernels``: the workbench kernels side by side with PyTorch.

On a GPU (CuPy back-end usable):
  * attention, fp16, causal, T in {512, 2048, 8192}, head dim 64 and 128: time, TFLOP/s and peak
    extra memory of the fused kernel (the tensor-core one that ``kernels.attention`` picks for fp16)
    vs ``torch.nn.functional.scaled_dot_product_attention`` and vs naive PyTorch (matmul + mask +
    softmax + matmul), with ratios; plus the time of the SIMT kernel for comparison;
  * sampling, batch 64, vocab 32k and 128k: the fused top-p kernel vs a sort-based PyTorch
    top-p (softmax, sort, cumsum, mask, multinomial), with the ratio and the achieved memory
    bandwidth (one read of the logits) as a fraction of the device's peak.
Without a GPU it times the CPU reference paths on small sizes and says that no GPU was present.

``main(["--json", "out.json"])`` also writes the rows as JSON; ``--quick`` trims the sizes.

Lesson: ``notebooks/05_gpu_kernels.ipynb`` (2. The fused attention kernel).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from workbench import kernels
from workbench.kernels.backend import probe_cupy


# ----------------------------------------------------------------------------------------------
# timing helpers
# ----------------------------------------------------------------------------------------------
def _time_gpu(fn, repeats: int, warmup: int = 2) -> float:
    """Median seconds per call, CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def _time_cpu(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_extra_bytes(fn) -> int:
    """Peak CUDA memory allocated by one call beyond what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return int(peak)


def _peak_bandwidth_bytes_per_s() -> float | None:
    """Theoretical DRAM bandwidth of device 0 from CuPy's device properties, if reported."""
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        clock_khz, bus_bits = props.get("memoryClockRate"), props.get("memoryBusWidth")
        if clock_khz and bus_bits:
            return 2.0 * clock_khz * 1e3 * bus_bits / 8.0
    except Exception:
        pass
    return None


# ----------------------------------------------------------------------------------------------
# the compared implementations
# ----------------------------------------------------------------------------------------------
def naive_attention(q, k, v, mask):
    """matmul + mask + softmax + matmul in the input dtype: materialises (B, H, T, T)."""
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def torch_top_p(logits, top_p, temperature=1.0, generator=None):
    """Sort-based top-p sampling as commonly done in PyTorch serving code."""
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_p, idx = torch.sort(probs, dim=-1, descending=True)
    cum = torch.cumsum(sorted_p, dim=-1)
    sorted_p = sorted_p.masked_fill(cum - sorted_p > top_p, 0.0)   # keep the crossing token
    choice = torch.multinomial(sorted_p, 1, generator=generator)
    return idx.gather(-1, choice)[:, 0]


def _attn_flops(B, H, T, D, causal=True):
    full = 4.0 * B * H * T * T * D          # two matmuls, 2 flops per multiply-add
    return full / 2 if causal else full


# ----------------------------------------------------------------------------------------------
# GPU benchmark
# ----------------------------------------------------------------------------------------------
def bench_attention_gpu(seqlens, dims, heads=16, tokens=8192, repeats=10):
    from workbench.kernels import cupy_ops

    rows = []
    for D in dims:
        for T in seqlens:
            B = max(1, tokens // T)
            g = torch.Generator(device="cuda").manual_seed(T + D)
            q, k, v = (torch.randn(B, heads, T, D, generator=g, device="cuda", dtype=torch.float16)
                       for _ in range(3))
            mask = torch.ones(T, T, dtype=torch.bool, device="cuda").tril()
            methods = {
                "workbench": lambda: kernels.attention(q, k, v, backend="cupy"),   # tensor cores
                "simt": lambda: cupy_ops.attention(q, k, v, impl="simt")[0],       # CUDA cores
                "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                "naive": lambda: naive_attention(q, k, v, mask),
            }
            ref = methods["sdpa"]()
            err = (methods["workbench"]().float() - ref.float()).abs().max().item()
            flops = _attn_flops(B, heads, T, D)
            row = {"B": B, "H": heads, "T": T, "D": D, "max_abs_err_vs_sdpa": err}
            for name, fn in methods.items():
                try:
                    t = _time_gpu(fn, repeats)
                    mem = _peak_extra_bytes(fn)
                except torch.cuda.OutOfMemoryError:
                    t, mem = float("nan"), float("nan")
                    torch.cuda.empty_cache()
                row[f"{name}_ms"] = t * 1e3
                row[f"{name}_tflops"] = flops / t / 1e12
                row[f"{name}_peak_mib"] = mem / 2 ** 20
            row["speed_vs_sdpa"] = row["sdpa_ms"] / row["workbench_ms"]
            row["speed_vs_naive"] = row["naive_ms"] / row["workbench_ms"]
            rows.append(row)
            del q, k, v, mask, ref
            torch.cuda.empty_cache()
    return rows


def bench_sampling_gpu(vocabs, batch=64, top_p=0.9, repeats=20):
    rows = []
    peak_bw = _peak_bandwidth_bytes_per_s()
    for V in vocabs:
        g = torch.Generator(device="cuda").manual_seed(V)
        x = torch.randn(batch, V, generator=g, device="cuda") * 3
        gen = torch.Generator(device="cuda").manual_seed(0)
        ours = lambda: kernels.sample(x, temperature=1.0, top_p=top_p, seed=1, backend="cupy")  # noqa: E731
        base = lambda: torch_top_p(x, top_p, generator=gen)                                  # noqa: E731
        t_ours, t_base = _time_gpu(ours, repeats), _time_gpu(base, repeats)
        ours_k = lambda: kernels.sample(x, temperature=1.0, top_k=50, top_p=top_p, seed=1,   # noqa: E731
                                        backend="cupy")
        t_ours_k = _time_gpu(ours_k, repeats)
        bytes_min = batch * V * 4
        bw = bytes_min / t_ours
        rows.append({
            "B": batch, "V": V, "top_p": top_p,
            "workbench_ms": t_ours * 1e3, "workbench_topk_topp_ms": t_ours_k * 1e3,
            "torch_sort_ms": t_base * 1e3, "speedup_vs_torch": t_base / t_ours,
            "achieved_GBps": bw / 1e9,
            "bandwidth_fraction": (bw / peak_bw) if peak_bw else None,
        })
    return rows


# ----------------------------------------------------------------------------------------------
# CPU fallback
# ----------------------------------------------------------------------------------------------
def bench_cpu(quick: bool):
    seqlens = [128, 256] if quick else [128, 512]
    att = []
    for T in seqlens:
        q, k, v = (torch.randn(1, 4, T, 64, generator=torch.Generator().manual_seed(i))
                   for i in range(3))
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        ref_t = _time_cpu(lambda: kernels.attention(q, k, v, backend="reference"), 3)
        sdpa_t = _time_cpu(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), 3)
        naive_t = _time_cpu(lambda: naive_attention(q, k, v, mask), 3)
        att.append({"B": 1, "H": 4, "T": T, "D": 64, "reference_ms": ref_t * 1e3,
                    "sdpa_ms": sdpa_t * 1e3, "naive_ms": naive_t * 1e3})
    samp = []
    x = torch.randn(8, 32000, generator=torch.Generator().manual_seed(0)) * 3
    gen = torch.Generator().manual_seed(0)
    ref_t = _time_cpu(lambda: kernels.sample(x, top_p=0.9, seed=1, backend="reference"), 3)
    base_t = _time_cpu(lambda: torch_top_p(x, 0.9, generator=gen), 3)
    samp.append({"B": 8, "V": 32000, "reference_ms": ref_t * 1e3, "torch_sort_ms": base_t * 1e3})
    return att, samp


# ----------------------------------------------------------------------------------------------
def _table(rows, cols):
    head = "| " + " | ".join(h for h, _, _ in cols) + " |"
    sep = "|" + "|".join("---:" for _ in cols) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for _, key, fmt in cols:
            val = r.get(key)
            cells.append("n/a" if val is None or (isinstance(val, float) and math.isnan(val))
                         else format(val, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workbench.bench kernels", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--seqlens", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--vocabs", type=int, nargs="+", default=[32000, 128256])
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)

    usable, reason, device = probe_cupy()
    gpu = usable and torch.cuda.is_available()
    result = {"torch": torch.__version__, "python": platform.python_version(), "gpu": gpu}
    if gpu:
        import cupy

        result.update(device=device, cupy=cupy.__version__)
        print(f"# workbench kernels on {device} (cupy {cupy.__version__}, torch {torch.__version__})\n")
        seqlens = args.seqlens[:2] if args.quick else args.seqlens
        repeats = 3 if args.quick else 10
        att = bench_attention_gpu(seqlens, args.dims, repeats=repeats)
        print("## Causal attention forward, fp16, H=16, B*T=8192 tokens\n")
        print(_table(att, [("T", "T", "d"), ("D", "D", "d"), ("B", "B", "d"),
                           ("workbench ms", "workbench_ms", ".3f"), ("TFLOP/s", "workbench_tflops", ".1f"),
                           ("SDPA ms", "sdpa_ms", ".3f"), ("SDPA TFLOP/s", "sdpa_tflops", ".1f"),
                           ("naive ms", "naive_ms", ".3f"), ("SIMT kernel ms", "simt_ms", ".3f"),
                           ("x SDPA speed", "speed_vs_sdpa", ".2f"), ("x naive speed", "speed_vs_naive", ".2f"),
                           ("peak MiB (ours)", "workbench_peak_mib", ".1f"),
                           ("peak MiB (SDPA)", "sdpa_peak_mib", ".1f"),
                           ("peak MiB (naive)", "naive_peak_mib", ".1f"),
                           ("max err vs SDPA", "max_abs_err_vs_sdpa", ".1e")]))
        samp = bench_sampling_gpu(args.vocabs, repeats=5 if args.quick else 20)
        print("\n## Sampling (temperature 1, top-p 0.9), batch 64\n")
        print(_table(samp, [("V", "V", "d"), ("workbench ms", "workbench_ms", ".3f"),
                            ("+top-k 50 ms", "workbench_topk_topp_ms", ".3f"),
                            ("torch sort ms", "torch_sort_ms", ".3f"),
                            ("x torch speed", "speedup_vs_torch", ".2f"),
                            ("GB/s (1 read)", "achieved_GBps", ".0f"),
                            ("fraction of peak", "bandwidth_fraction", ".2f")]))
        result.update(attention=att, sampling=samp)
    else:
        print(f"No GPU present ({reason}).")
        print("Timing the CPU reference paths only; the CuPy kernels were not run.\n")
        att, samp = bench_cpu(args.quick)
        print("## Attention (CPU, fp32, causal): reference online softmax vs torch\n")
        print(_table(att, [("T", "T", "d"), ("D", "D", "d"), ("reference ms", "reference_ms", ".2f"),
                           ("SDPA ms", "sdpa_ms", ".2f"), ("naive ms", "naive_ms", ".2f")]))
        print("\n## Sampling (CPU, top-p 0.9)\n")
        print(_table(samp, [("B", "B", "d"), ("V", "V", "d"), ("reference ms", "reference_ms", ".2f"),
                            ("torch sort ms", "torch_sort_ms", ".2f")]))
        result.update(reason=reason, attention=att, sampling=samp)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
