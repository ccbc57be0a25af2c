"""Benchmark rows measured in a fresh interpreter, so that each row's peak resident memory is its own.

A bench module that uses this has a ``worker(spec) -> dict`` that measures one row in the current process, and a
``main`` whose parser comes from :func:`worker_parser`; :func:`run_worker` runs ``python -m <module> --worker
<spec as JSON>`` and reads back the dict the worker printed (:func:`serve_worker`). Used by ``real_bench`` (the
AttentionLab on a GPT-2-sized model) and ``residual_bench`` (the residual lab against TransformerLens).

>>> peak_mb() > rss_mb() / 2 > 0  # the high-water mark is at least what is held now (the kernel updates it lazily)
True
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

#: The repository root (``workbench/bench/measure.py`` -> three levels up): where the worker interpreter starts.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rss_mb() -> float:
    """This process's resident memory now, in MiB (``VmRSS`` of ``/proc/self/status``; NaN where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_mb() -> float:
    """This process's peak resident memory so far, in MiB (``ru_maxrss``, which Linux gives in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(module: str, spec: dict, timeout: float, **env: str) -> dict:
    """Run ``python -m <module> --worker <spec>`` in a fresh interpreter from the repository root and return the
    last JSON object line it printed, or ``{**spec, "error": [last line of its output]}`` when it printed none.
    ``env`` adds environment variables (``PYTHONUNBUFFERED`` and ``TOKENIZERS_PARALLELISM=false`` always)."""
    cmd = [sys.executable, "-m", module, "--worker", json.dumps(spec)]
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", **env)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {**spec, "error": (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit {p.returncode}"]}


def worker_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """An argument parser for a bench's ``main`` (description: the first line of ``doc``) with the hidden
    ``--worker SPEC`` option that :func:`run_worker` passes."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    return ap


def serve_worker(args, worker) -> bool:
    """When ``args.worker`` holds a spec, print ``worker(spec)`` as one JSON line (what :func:`run_worker`
    reads) and return True; otherwise return False."""
    if not args.worker:
        return False
    print(json.dumps(worker(json.loads(args.worker))), flush=True)
    return True
