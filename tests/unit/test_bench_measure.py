"""``workbench.bench.measure``: the fresh-process plumbing that ``real_bench`` and ``residual_bench`` share."""
import json
import os

from workbench.bench.measure import peak_mb, rss_mb, run_worker, serve_worker, worker_parser


def test_memory_readings():
    before = peak_mb()
    block = bytearray(64 * 1024 * 1024)  # 64 MiB, touched so that it is resident
    block[::4096] = b"x" * len(block[::4096])
    assert rss_mb() > 60 and peak_mb() >= max(before, rss_mb()) - 1
    del block


def test_worker_round_trip(capsys):
    ap = worker_parser("python -m workbench.bench demo", "Demo bench.\n\nMore text.")
    assert ap.description == "Demo bench."
    assert not serve_worker(ap.parse_args([]), lambda s: 1 / 0)  # no --worker: main carries on
    args = ap.parse_args(["--worker", json.dumps({"T": 3})])
    assert serve_worker(args, lambda s: {**s, "double": 2 * s["T"]})
    assert json.loads(capsys.readouterr().out) == {"T": 3, "double": 6}


def test_run_worker_reports_a_failed_process():
    r = run_worker("workbench.bench.no_such_bench_module", {"T": 1}, timeout=60, EXTRA_FLAG="1")
    assert r["T"] == 1 and "No module named" in r["error"][0]


def test_run_worker_reads_the_workers_line():
    """A real worker (real_bench at a tiny size) in its own process: its pid differs, its dict comes back."""
    spec = dict(dtype="float32", T=24, n_positions=32, threads=1, widget=False,
                shape=dict(n_layer=1, n_head=2, n_embd=32, vocab_size=600))
    r = run_worker("workbench.bench.real_bench", spec, timeout=300)
    assert "error" not in r, r
    assert r["pid"] != os.getpid() and r["T"] == 24 and r["peak_mb"] >= r["rss_model_mb"] > 0
