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
