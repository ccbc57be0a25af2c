"""``python -m workbench.bench scaling``: the batched full-grid Chinchilla fit against a plain scipy loop.

Both fit the same 240 replay points (Besiroglu et al. 2024, five highest losses dropped) from the same
4,500 starts of Hoffmann et al.'s grid, in the same process, one after the other. The baseline is the
straightforward approach: ``scipy.optimize.minimize(method="L-BFGS-B")`` once per start with scipy's
default tolerances (enough for the summed loss: its best start lands within 1e-12 of the optimum) and the
analytic gradient (a fair baseline; finite differences would be several times slower still).
``--baseline-tol strict`` uses the strict tolerances the batched fit polishes with instead (much slower:
starts that cannot meet them spend thousands of evaluations in line searches). Reported: wall time of each, the ratio, and the
difference between the two best objectives (the target is a ratio >= 10 with |difference| <= 1e-9).

Both run with one BLAS thread (see :func:`main`): scipy's L-BFGS-B calls BLAS on 5-element vectors, and
a multi-threaded OpenBLAS spends time (and a second core) on thread hand-offs there, which inflates the
baseline badly (10x and more) when other processes compete for the CPUs.

Lesson: ``notebooks/04_scaling_laws.ipynb``.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def _cpu_note() -> str:
    try:
        load = os.getloadavg()[0]
        return f"{os.cpu_count()} CPU(s), load average {load:.2f}"
    except OSError:
        return f"{os.cpu_count()} CPU(s)"


_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def main(argv=None) -> int:
    """Entry point for ``python -m workbench.bench scaling``.

    BLAS thread counts are fixed when numpy loads, so unless they are set already (or ``--threads-as-is``
    is given) the benchmark re-runs itself in a child process with one BLAS thread: both contenders then
    run single-threaded, which is the comparison that means something on a shared machine.
    """
    import subprocess
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--threads-as-is" not in argv and not all(v in os.environ for v in _BLAS_VARS):
        env = dict(os.environ, **{v: os.environ.get(v, "1") for v in _BLAS_VARS})
        return subprocess.call([sys.executable, "-m", "workbench.bench.scaling_bench", *argv, "--threads-as-is"],
                               env=env)
    run([a for a in argv if a != "--threads-as-is"])
    return 0


def run(argv=None) -> dict:
    """Run the benchmark, print a report, and return the measured numbers as a dict."""
    from workbench.scaling import chinchilla_grid, fit_chinchilla, load_chinchilla

    ap = argparse.ArgumentParser(prog="python -m workbench.bench scaling", description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="batched fits to time (the best is reported)")
    ap.add_argument("--baseline-every", type=int, default=1,
                    help="run the scipy loop on every k-th start only and scale its time by k (default 1: "
                         "all 4,500; anything else is marked as an extrapolation)")
    ap.add_argument("--baseline-tol", choices=("default", "strict"), default="default",
                    help="tolerances of the scipy loop (default: scipy's own)")
    args = ap.parse_args(argv)

    d = load_chinchilla(drop_highest=5)
    starts = chinchilla_grid("full")
    print(f"scaling bench: Chinchilla replay, {len(d)} points, {len(starts)} starts; "
          f"{platform.python_implementation()} {platform.python_version()}, {_cpu_note()}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")

    times, cpus, fit = [], [], None
    for _ in range(max(1, args.repeat)):
        t0, c0 = time.perf_counter(), time.process_time()
        fit = fit_chinchilla(d.N, d.D, d.loss, grid=starts, backend="batched")
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    best = int(np.argmin(times))
    t_batched, c_batched = times[best], cpus[best]
    print(f"  batched fit_chinchilla (all starts at once + scipy polish): best {t_batched:.2f} s wall, "
          f"{c_batched:.2f} s CPU, of {len(times)} (all wall: {', '.join(f'{t:.2f}' for t in times)})")

    sub = starts[:: args.baseline_every]
    scale = len(starts) / len(sub)
    t0, c0 = time.perf_counter(), time.process_time()
    base = fit_chinchilla(d.N, d.D, d.loss, grid=sub, backend="scipy", tol=args.baseline_tol)
    t_loop = (time.perf_counter() - t0) * scale
    c_loop = (time.process_time() - c0) * scale
    note = "" if args.baseline_every == 1 else f" (EXTRAPOLATED from {len(sub)} starts)"
    print(f"  loop of scipy.optimize.minimize(L-BFGS-B, {args.baseline_tol} tolerances) over {len(sub)} starts: "
          f"{t_loop:.2f} s wall, {c_loop:.2f} s CPU{note}")

    ratio = t_loop / t_batched
    cpu_ratio = c_loop / c_batched
    diff = fit.objective - base.objective
    print(f"  speed-up: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU time (target >= 10x; on a shared machine the "
          f"CPU-time ratio is the steadier one)")
    print(f"  best objective: batched {fit.objective:.15e}, scipy loop {base.objective:.15e}, "
          f"difference {diff:+.3e} (target |diff| <= 1e-9)")
    print(f"  batched optimum: E={fit.E:.4f} A={fit.A:.2f} B={fit.B:.2f} alpha={fit.alpha:.4f} "
          f"beta={fit.beta:.4f}")
    print(f"  scipy optimum:   E={base.E:.4f} A={base.A:.2f} B={base.B:.2f} alpha={base.alpha:.4f} "
          f"beta={base.beta:.4f}")
    ok = ratio >= 10 and abs(diff) <= 1e-9
    print(f"  {'PASS' if ok else 'MISS'}: ratio {'>=' if ratio >= 10 else '<'} 10, "
          f"objective {'within' if abs(diff) <= 1e-9 else 'outside'} 1e-9")
    return {"batched_s": t_batched, "scipy_loop_s": t_loop, "ratio": ratio, "batched_cpu_s": c_batched,
            "scipy_loop_cpu_s": c_loop, "cpu_ratio": cpu_ratio, "objective_diff": diff,
            "baseline_extrapolated": args.baseline_every != 1, "baseline_tol": args.baseline_tol, "ok": ok}


if __name__ == "__main__":
    raise SystemExit(main())
