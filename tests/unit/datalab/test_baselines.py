"""The compression table (workbench.datalab.baselines): baselines are real, reversible compressions at the
named settings, model rows are the blob sizes, and the shipped byte model beats gzip on held-out docs."""
import bz2
import gzip
import lzma
import os

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factories import tiny_gpt
from workbench.datalab.baselines import (
    BASELINES, CompressionTable, baseline_rows, compression_table, held_out_docs, python_source,
)
from workbench.datalab.compress import compress
from workbench.datalab.errors import SettingError, UnsupportedInputError
from workbench.tokenizers import ByteTokenizer

DECOMPRESS = {"gzip -9": gzip.decompress, "bz2 -9": bz2.decompress, "xz -9": lzma.decompress,
              "zstd -19": lambda b: zstandard.ZstdDecompressor().decompress(b)}


@settings(max_examples=8, deadline=None)
@given(st.binary(max_size=2000))
def test_baselines_are_reversible_and_sized_right(data):
    for name, fn in BASELINES.items():
        blob = fn(data)
        assert DECOMPRESS[name](blob) == data
    for row in baseline_rows(data, "x"):
        assert row.size == len(BASELINES[row.method](data))  # deterministic (gzip's mtime is fixed)
        assert row.bits_per_byte == pytest.approx(8 * row.size / max(len(data), 1))


def test_baselines_use_the_strongest_settings():
    data = held_out_docs()[:20000]
    assert len(BASELINES["gzip -9"](data)) <= len(gzip.compress(data, compresslevel=1))
    assert len(BASELINES["xz -9"](data)) == len(lzma.compress(data, preset=9))
    assert len(BASELINES["zstd -19"](data)) < len(zstandard.ZstdCompressor(level=1).compress(data))


def test_random_bytes_do_not_compress_and_repeats_do():
    rnd = os.urandom(4000)
    rep = b"abcd" * 1000
    for r in baseline_rows(rnd):
        assert r.bits_per_byte > 7.9
    for r in baseline_rows(rep):
        assert r.bits_per_byte < 0.5


def test_table_rows_are_blob_sizes():
    m = tiny_gpt(ByteTokenizer(bos=True), seed=1, name="tiny", n_layer=1, n_head=2, n_embd=16, block_size=16)
    corpora = {"a": b"hello world " * 10, "b": bytes(range(50))}
    t = compression_table([m], corpora, batch_size=4)
    assert t.corpora == ["a", "b"] and t.methods == ["tiny", *BASELINES]
    for c, data in corpora.items():
        row = t.row("tiny", c)
        assert row.size == len(compress(m, data, batch_size=4))
        assert row.n_bytes == len(data) and row.kind == "model"
        assert t.bits_per_byte("gzip -9", c) == pytest.approx(8 * len(BASELINES["gzip -9"](data)) / len(data))
    text = t.to_text()
    assert all(name in text for name in t.methods)
    with pytest.raises(KeyError, match="no row"):
        t.row("tiny", "c")
    assert compression_table([m], corpora, max_bytes=5).row("tiny", "a").n_bytes == 5


def test_shipped_byte_model_beats_gzip_on_held_out_docs():
    docs = held_out_docs()
    t = compression_table(["docs-byte"], {"docs": docs[5000:5600]})
    row = t.row("docs-byte", "docs")
    assert row.bits_per_byte < t.bits_per_byte("gzip -9", "docs")
    assert row.val_bpb == pytest.approx(1.647, abs=0.01)  # the shipped model's recorded validation loss


def test_corpora_are_the_held_out_parts():
    from workbench.data import load_corpus

    docs, src = held_out_docs(), python_source()
    full = load_corpus("python-docs").encode()
    assert full.endswith(docs) and 0.09 < len(docs) / len(full) < 0.11
    assert load_corpus("python-code").encode().endswith(src)


def test_bad_corpora():
    with pytest.raises(SettingError):
        compression_table([], {})
    with pytest.raises(UnsupportedInputError, match="bytes"):
        compression_table([], {"a": "text"})
    assert isinstance(compression_table([], {"a": b"x"}), CompressionTable)


def test_chart_draws_every_row_with_a_key():
    from bokeh.models import Legend

    from widgets.compression_view import chart_source, compression_chart

    t = CompressionTable()
    corpora = {"a": b"hello world " * 20, "b": bytes(range(60))}
    for c, data in corpora.items():
        t.rows.extend(baseline_rows(data, c))
    fig = compression_chart(t)
    src = fig.renderers[0].data_source.data
    assert list(src["x"]) == [(r.corpus, r.method) for r in t.rows]
    assert src["bpb"] == [r.bits_per_byte for r in t.rows]
    assert len(set(src["colour"])) == len(t.methods)  # one colour per method ...
    legend = fig.select_one(Legend)
    assert [i.label["value"] for i in legend.items] == t.methods  # ... each keyed
    assert legend in fig.right  # outside the data
    assert fig.width <= 900
    with pytest.raises(UnsupportedInputError):
        chart_source(CompressionTable())
