"""The tokenizers benchmark runs end to end on a small slice and its cross-checks hold."""
from workbench.bench.tokenizers_bench import floor_encode, floor_train, main
from workbench.tokenizers import BPETokenizer


def test_floor_matches_bpetokenizer(docs_text):
    text = docs_text[:8000]
    tok = BPETokenizer.train(text, 256 + 40, progress=False)
    assert floor_train(text, 40) == tok.merge_list()
    assert floor_encode(tok, docs_text[8000:12000]) == tok.encode(docs_text[8000:12000])


def test_bench_main_small(capsys):
    r = main(["--chars", "30000", "--vocab", "400", "--floor-chars", "5000", "--floor-merges", "10", "--repeat", "1",
              "--lab-chars", "50000"])
    out = capsys.readouterr().out
    assert "HF BpeTrainer" in out and "floor train" in out and "MB/s" in out
    assert r["merges_identical_to_hf"] and r["ids_identical_to_hf"]
    assert r["floor_merges_identical"] and r["floor_encode_identical"]
    assert r["train_ours_s"] > 0 and r["encode_hf_mb_s"] > 0
    assert r["lab_refresh_s"] > 0 and r["lab_big_chars"] == 50_000 and "TokenizerLab refresh" in out
