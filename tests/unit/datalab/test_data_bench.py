"""``python -m workbench.bench data``: registered, runs end to end on a small slice, and its numbers agree with
each other and with the compressors they name."""
import json

import pytest

from workbench.bench import __main__ as bench_main
from workbench.datalab.baselines import BASELINES, default_corpora
from workbench.models import load_pretrained


def test_area_is_registered():
    assert "data" in bench_main.AREAS


def test_bench_runs_and_its_numbers_agree(tmp_path, capsys):
    out = tmp_path / "data.json"
    assert bench_main.main(["data", "--bytes", "100", "--models", "docs-byte-draft", "--batch", "4",
                            "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "docs (held out)" in text and "python source" in text and "zstd -19" in text
    res = json.loads(out.read_text())["results"]
    corpora = default_corpora(100)
    for corpus, e in res.items():
        data = corpora[corpus]
        assert e["n_bytes"] == len(data) == 100
        for name, fn in BASELINES.items():
            assert e["baselines"][name]["size"] == len(fn(data))
        r = e["models"]["docs-byte-draft"]
        assert r["lossless"] is True
        assert r["size"] == r["payload"] + r["header"]
        assert r["bpb"] == pytest.approx(8 * r["size"] / 100)
        for name in BASELINES:
            assert r["ratio"][name] == pytest.approx(r["size"] / e["baselines"][name]["size"])
        assert r["gap_bytes"] <= r["bound_bytes"]
        assert r["encode_kb_s"] > 0 and r["decode_kb_s"] > 0
        assert r["val_bpb"] == pytest.approx(load_pretrained("docs-byte-draft").meta["val_bpb"])


def test_thread_speedup_is_a_ratio_of_two_timed_runs():
    from workbench.bench.data_bench import thread_speedup

    s = thread_speedup(0.05)
    assert 0.3 < s < 2.6  # two threads do twice the work: at most about 2x one thread's rate, never far below 1


def test_target_line_names_the_slowest_direction():
    from workbench.bench.data_bench import target_line

    res = {"a": {"models": {"docs-byte": {"encode_kb_s": 25.0, "decode_kb_s": 19.0}}},
           "b": {"models": {"docs-byte": {"encode_kb_s": 30.0, "decode_kb_s": 31.0}}}}
    line = target_line(res)
    assert "19.0 KB/s" in line and "NOT met" in line
    res["a"]["models"]["docs-byte"]["decode_kb_s"] = 21.0
    assert "21.0 KB/s, met" in target_line(res)
    assert "not measured" in target_line(res, "docs-bpe")
