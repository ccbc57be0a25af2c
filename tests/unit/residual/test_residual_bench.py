"""Plumbing of ``python -m workbench.bench residual`` at a tiny size (the real run builds a 124M GPT-2)."""
import json
import os

import numpy as np
import pytest

from workbench.bench import residual_bench as R

pytest.importorskip("transformer_lens")


def spec(tmp_path, job, impl, T=24):
    return dict(job=job, impl=impl, T=T, n_positions=64, shape=R.TINY, threads=1, at=T // 2,
                out=str(tmp_path / f"{job}-{impl}.npy"))


def test_a_row_runs_in_a_fresh_process(tmp_path):
    r = R.run_one(spec(tmp_path, "patch", "ours"))
    assert "error" not in r, r
    assert r["pid"] != os.getpid()  # its own interpreter, so its peak RSS is its own
    assert r["peak_mb"] >= r["rss_model_mb"] > 0 and r["time_s"] > 0 and r["cpu_s"] > 0
    # both layers before the changed token (12), and layer 0 after it (same token, same position: same embedding)
    assert r["skipped"] == 2 * 12 + (24 - 13)
    assert np.load(r["out"]).shape == (2, 24)


def test_ours_and_transformer_lens_give_the_same_numbers(tmp_path):
    rows = {}
    for job, impl in (("patch", "tl"), ("patch", "ours-noskip"), ("patch", "ours-batch"), ("lens", "tl"),
                      ("lens", "ours"), ("lens", "ours-core")):
        rows[job, impl] = R.worker(spec(tmp_path, job, impl))
    for impl in ("ours-noskip", "ours-batch"):
        assert R._max_diff(rows["patch", impl]["out"], rows["patch", "tl"]["out"], "patch") < 1e-4
    for impl in ("ours", "ours-core"):
        assert R._max_diff(rows["lens", impl]["out"], rows["lens", "tl"]["out"], "lens") < 1e-6
    lens = np.load(rows["lens", "ours"]["out"])
    assert lens.shape == (3, 24, 10)  # (L + 1, T, top-5 ids then top-5 probabilities)


def test_a_lens_difference_in_the_top_ids_is_infinite(tmp_path):
    a, b = np.zeros((2, 3, 4)), np.zeros((2, 3, 4))
    b[0, 0, 1] = 7  # a top id differs
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    assert R._max_diff(tmp_path / "a.npy", tmp_path / "b.npy", "lens") == float("inf")


def test_main_prints_every_row_and_the_verdicts(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(R, "run_one", R.worker)  # in this process: the plumbing of main, report and JSON
    monkeypatch.setattr(R, "shipped_clicks", lambda threads: dict(model="docs-byte", T=31, n_layer=4, lens_ms=10.0,
                                                                    dla_ms=12.0, patching_ms=250.0))
    out = tmp_path / "rows.json"
    assert R.main(["--tiny", "--lens-T", "20", "--patch-T", "16", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert sorted((r["job"], r["impl"]) for r in data["rows"]) == [
        ("lens", "ours"), ("lens", "ours-core"), ("lens", "tl"), ("patch", "ours"), ("patch", "ours-batch"),
        ("patch", "ours-noskip"), ("patch", "tl")]
    text = capsys.readouterr().out
    assert "x TL" in text and "max |diff| vs TL" in text and "peak RSS" in text
    assert "patching:  250.0 ms  goal < 200 ms: NOT met" in text and "lens:   10.0 ms  goal < 200 ms: met" in text


def test_verdict_against_the_goals():
    base = dict(job="patch", T=32, rss_model_mb=600, peak_mb=1000)
    rows = [dict(base, impl="tl", time_s=10.0, cpu_s=9.0),
            dict(base, impl="ours", time_s=4.0, cpu_s=3.0, max_diff=1e-6),
            dict(base, impl="ours-noskip", time_s=6.0, cpu_s=3.0, max_diff=1e-6, peak_mb=2100),
            dict(base, impl="ours-batch", time_s=4.0, cpu_s=5.0, max_diff=1e-6)]
    text = R.report(rows, None)
    assert "2.50x TL" in text and "3.00x TL" in text and "goal (>= 2x, peak < 2 GB): met" in text
    assert text.count("NOT met") == 2  # a 2.05 GB peak; 2.5x on the wall clock but 1.8x in CPU time


def test_shipped_clicks_time_each_action():
    c = R.shipped_clicks(threads=1, repeats=1)
    assert c["model"] == "docs-byte" and c["T"] > 10
    assert all(c[k + "_ms"] > 0 for k in ("lens", "dla", "patching"))
