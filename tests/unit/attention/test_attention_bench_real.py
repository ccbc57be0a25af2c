"""Plumbing of ``python -m workbench.bench real`` at a tiny size (the real run builds a 124M GPT-2)."""
from workbench.bench import real_bench as R


TINY = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=600)


def test_a_row_runs_in_a_fresh_process():
    import os

    r = R.run_one(dict(dtype="bfloat16", T=40, n_positions=64, threads=1, shape=TINY, widget=False))
    assert "error" not in r, r
    assert r["pid"] != os.getpid()  # its own interpreter, so its peak RSS is its own
    assert r["T"] == 40 and r["peak_mb"] >= r["rss_model_mb"] > 0 and r["metrics_s"] > 0 and "open_s" not in r


def test_main_prints_every_row(tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setattr(R, "run_one", R.worker)  # in this process: the plumbing of main, table and JSON
    out = tmp_path / "rows.json"
    assert R.main(["--tiny", "--lengths", "48", "--dtypes", "float32", "bfloat16", "--long", "0",
                   "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["dtype"], r["T"]) for r in rows] == [("float32", 48), ("bfloat16", 48)]
    assert all(r["open_s"] > 0 and r["click_s"] > 0 and r["peak_open_mb"] > 0 for r in rows)
    assert all(r["params_m"] > 0 and r["forward_s"] > 0 and r["view_s"] > 0 for r in rows)
    text = capsys.readouterr().out
    assert "bfloat16 |    48 |" in text and "peak RSS" in text


def test_verdict_against_the_goals():
    row = dict(dtype="bfloat16", T=1024, params_m=124, open_s=2.0, forward_s=1.0, metrics_s=0.5, click_s=0.05,
               rss_model_mb=600, peak_open_mb=1000, peak_mb=1100, view_s=0.05)
    assert R._verdict(row).startswith("met")
    assert R._verdict({**row, "peak_open_mb": 1300}).startswith("NOT met")
    assert R._verdict({**row, "open_s": 3.5}).startswith("NOT met")
    assert R._verdict({**row, "T": 512}) == "-"
    assert "NOT met (open >= 3 s" in R.report([{**row, "open_s": 3.5}])
