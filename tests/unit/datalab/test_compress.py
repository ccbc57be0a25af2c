"""Model-driven compression (workbench.datalab.compress): lossless on any bytes, size against the model's own loss
computed independently (a full forward pass over each segment), and every kind of bad blob refused."""
import math
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import tiny_gpt
from workbench.datalab.compress import (
    BlobHeader, compress, compress_report, decompress, read_header, to_bytes, to_tokens,
)
from workbench.datalab.errors import (
    BlobError, CorruptBlobError, MachineMismatchError, ModelMismatchError, SettingError, TruncatedBlobError,
    UnsupportedInputError,
)
from workbench.models import LMOutput, load_pretrained
from workbench.tokenizers import ByteTokenizer


@pytest.fixture(scope="module")
def byte_model():
    return load_pretrained("docs-byte")


@pytest.fixture(scope="module")
def bpe_model():
    return load_pretrained("docs-bpe")


@pytest.fixture(scope="module")
def tiny_bos():
    """A random byte model with a BOS and a context of 12: many segments from little data."""
    return tiny_gpt(ByteTokenizer(bos=True), seed=3, name="tiny-bos", n_layer=1, n_head=2, n_embd=16,
                    block_size=12, pos="rope", weight_std=0.3)


@pytest.fixture(scope="module")
def tiny_plain():
    """A random byte model without a BOS (each segment's first byte is coded as uniform), learned positions."""
    return tiny_gpt(ByteTokenizer(), seed=4, name="tiny-plain", n_layer=1, n_head=2, n_embd=16, block_size=10,
                    pos="learned", weight_std=0.3)


DOC = (b"The for statement in Python differs a bit from what you may be used to in C or Pascal. "
       b"Rather than always iterating over an arithmetic progression of numbers, Python's for statement "
       b"iterates over the items of any sequence (a list or a string), in the order that they appear. ")


def reference_bits(model, data: bytes, segment_len: int) -> float:
    """sum(-log2 p) of every token under the model's full forward pass on each segment separately (BOS + the
    segment), the independent reference for the coder's ideal and for its size."""
    tokens = to_tokens(model.tokenizer, data)
    bos = model.tokenizer.bos_id
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(tokens), segment_len):
            seg = tokens[s : s + segment_len]
            ids = torch.tensor([[bos] + seg[:-1]])
            lp = torch.log_softmax(model.forward(ids).logits[0].double(), -1)
            total -= float(lp[torch.arange(len(seg)), torch.tensor(seg)].sum()) / math.log(2)
    return total


# -- lossless ----------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=80), seg=st.integers(1, 12), batch=st.integers(1, 4))
def test_round_trip_any_bytes_tiny_bos(tiny_bos, data, seg, batch):
    blob = compress(tiny_bos, data, segment_len=seg, batch_size=batch)
    assert decompress(tiny_bos, blob) == data
    h = read_header(blob)
    assert (h.n_bytes, h.segment_len, h.batch_size, h.model_name) == (len(data), seg, batch, "tiny-bos")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=60), seg=st.integers(1, 11), batch=st.integers(1, 3))
def test_round_trip_any_bytes_without_bos(tiny_plain, data, seg, batch):
    assert decompress(tiny_plain, compress(tiny_plain, data, segment_len=seg, batch_size=batch)) == data


@pytest.mark.parametrize("data", [b"", b"\x00", bytes(range(0, 256, 3)), b"\xff\xfe\x80 not UTF-8 \xc3",
                                  "h\u00e9llo w\u00f6rld \u2603 <|endoftext|> <bos>".encode()])
def test_round_trip_shipped_models(byte_model, bpe_model, data):
    for m in (byte_model, bpe_model):
        assert decompress(m, compress(m, data, segment_len=32)) == data


def test_longer_than_the_context_in_several_batches(tiny_bos):
    data = DOC  # 277 bytes: 24 segments of 12, coded 5 at a time
    r = compress_report(tiny_bos, data, batch_size=5)
    assert decompress(tiny_bos, r.blob) == data
    assert len(r.token_bits) == len(data)
    assert r.header.segment_len == tiny_bos.config.block_size  # the default: the whole context


def test_bpe_tokens_stand_for_the_bytes(bpe_model):
    data = "caf\u00e9 <|endoftext|> x".encode() + b"\xe9\xff" + b"def f(x):\n    return x\n"
    ids = to_tokens(bpe_model.tokenizer, data)
    assert to_bytes(bpe_model.tokenizer, ids) == data
    assert len(ids) < len(data)  # merges were used
    assert bpe_model.tokenizer.special_tokens["<|endoftext|>"] in ids


# -- size: the model's loss, in bits ------------------------------------------------------------------------


def test_ideal_is_the_models_loss_and_the_size_is_within_the_bound(byte_model):
    data = DOC
    r = compress_report(byte_model, data, segment_len=64, batch_size=3)
    ref = reference_bits(byte_model, data, 64)
    assert r.ideal_bits == pytest.approx(ref, rel=1e-5)
    assert r.payload_bytes <= 1.005 * ref / 8 + 16
    assert r.payload_bytes >= r.quantised_bits / 8 - 1e-6  # no coder beats the coded distributions
    assert r.bits_per_byte == pytest.approx(8 * len(r.blob) / len(data))
    assert r.header_bytes + r.payload_bytes == len(r.blob)
    # per-token code lengths add up, and each byte token stands for one byte
    assert float(r.token_bits.sum()) == pytest.approx(r.ideal_bits)
    assert r.token_nbytes == [1] * len(data)


@pytest.mark.parametrize("seg", [1, 5, 12])
def test_ideal_follows_the_segmentation(tiny_bos, seg):
    r = compress_report(tiny_bos, DOC[:100], segment_len=seg, batch_size=4)
    assert r.ideal_bits == pytest.approx(reference_bits(tiny_bos, DOC[:100], seg), rel=1e-5)
    assert r.payload_bytes <= 1.005 * r.ideal_bits / 8 + 16


def test_bpe_bits_per_byte_counts_original_bytes(bpe_model):
    data = DOC
    r = compress_report(bpe_model, data)
    assert r.n_bytes == len(data)
    assert sum(r.token_nbytes) == len(data)
    assert r.ideal_bits_per_byte == pytest.approx(r.ideal_bits / len(data))
    assert r.payload_bytes <= 1.005 * r.ideal_bits / 8 + 16


def test_model_left_in_training_mode_is_coded_without_dropout(tiny_bos):
    m = tiny_gpt(ByteTokenizer(bos=True), seed=3, train=True, n_layer=1, n_head=2, n_embd=16, block_size=12,
                 pos="rope", dropout=0.5)
    blob = compress(m, DOC[:50])
    assert m.training  # the mode is restored
    assert decompress(m, blob) == DOC[:50]


# -- bad blobs ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def doc_blob(tiny_bos):
    return compress(tiny_bos, DOC[:120], batch_size=4)


def test_every_truncation_is_refused(tiny_bos, doc_blob):
    for cut in range(len(doc_blob)):
        with pytest.raises(BlobError):
            decompress(tiny_bos, doc_blob[:cut])
    with pytest.raises(TruncatedBlobError, match="payload"):
        decompress(tiny_bos, doc_blob[:-1])
    with pytest.raises(TruncatedBlobError):
        decompress(tiny_bos, doc_blob[:10])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(0, 10_000), xor=st.integers(1, 255))
def test_corruption_is_refused_or_harmless(tiny_bos, doc_blob, pos, xor):
    """Any changed byte gives a BlobError, or (a padding bit of the last byte) exactly the original data: never
    other bytes."""
    bad = bytearray(doc_blob)
    bad[pos % len(bad)] ^= xor
    try:
        out = decompress(tiny_bos, bytes(bad))
    except BlobError:
        return
    assert out == DOC[:120]


def test_payload_corruption_names_the_checksum(tiny_bos, doc_blob):
    _, off = BlobHeader.parse(doc_blob)
    bad = bytearray(doc_blob)
    bad[-3] ^= 0x80  # inside the last stream's code bits
    with pytest.raises(CorruptBlobError, match="CRC"):
        decompress(tiny_bos, bytes(bad))
    bad = bytearray(doc_blob)
    bad[off] ^= 0x80  # the first stream's length (the blob has two streams, one per lane)
    with pytest.raises(CorruptBlobError, match="streams add up to|table of stream lengths|CRC"):
        decompress(tiny_bos, bytes(bad))
    with pytest.raises(CorruptBlobError, match="header"):
        decompress(tiny_bos, doc_blob[:6] + bytes([doc_blob[6] ^ 1]) + doc_blob[7:])
    with pytest.raises(CorruptBlobError, match="not a compressed blob"):
        decompress(tiny_bos, b"PK\x03\x04" + doc_blob[4:])
    with pytest.raises(CorruptBlobError, match="unexpected bytes"):
        decompress(tiny_bos, doc_blob + b"\0")


def test_another_model_is_a_clear_error(byte_model):
    blob = compress(byte_model, DOC[:64], segment_len=32)
    draft = load_pretrained("docs-byte-draft")
    with pytest.raises(ModelMismatchError, match="'docs-byte'.*'docs-byte-draft'"):
        decompress(draft, blob)
    with pytest.raises(ModelMismatchError):
        decompress(load_pretrained("docs-bpe"), blob)


def test_a_machine_with_other_arithmetic_is_detected_up_front(tiny_bos):
    """Same weights, but the decoder's logits differ in the last bits (as another BLAS could make them): the
    probe in the header catches it before any decoding."""
    blob = compress(tiny_bos, DOC[:60], batch_size=2)
    m = tiny_gpt(ByteTokenizer(bos=True), seed=3, name="tiny-bos", n_layer=1, n_head=2, n_embd=16,
                 block_size=12, pos="rope", weight_std=0.3)
    assert decompress(m, blob) == DOC[:60]  # a fresh copy of the same model decodes it
    step, step_fn = m.step, m.step_fn
    m.step = lambda ids, cache, capture=False: LMOutput(step(ids, cache).logits * (1 + 1e-6))
    m.step_fn = lambda cache: None  # the coder's loop then calls m.step
    with pytest.raises(MachineMismatchError, match="probe"):
        decompress(m, blob)
    m.step = step
    m.step_fn = lambda cache: (lambda f: (lambda ids: f(ids) * (1 + 1e-6)))(step_fn(cache))  # the loop step itself
    with pytest.raises(MachineMismatchError, match="probe"):
        decompress(m, blob)


def test_header_fields_are_checked_against_the_model(tiny_bos, tiny_plain):
    blob = compress(tiny_bos, DOC[:30])
    h, off = BlobHeader.parse(blob)
    import dataclasses

    forged = dataclasses.replace(h, segment_len=500).to_bytes() + blob[off:]
    with pytest.raises(CorruptBlobError, match="segment_len"):
        decompress(tiny_bos, forged)
    forged = dataclasses.replace(h, start_id=-1).to_bytes() + blob[off:]
    with pytest.raises(CorruptBlobError, match="start token"):
        decompress(tiny_bos, forged)


# -- lanes, streams and workers -----------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [False, True])
@pytest.mark.parametrize("lanes", [1, 2, 3, 7])
def test_the_bits_do_not_depend_on_the_workers(tiny_bos, lanes, processes, monkeypatch):
    """A batch is cut into lanes with their own caches and model calls, lane ``j`` of every batch in stream ``j``:
    the blob is the same whether one worker or several (threads, or forked processes where the platform has them)
    code the streams, and any number of workers decodes it."""
    from workbench.datalab import compress as C

    monkeypatch.setattr(C, "PROCESS_MIN_TOKENS", 0 if processes else 10**9)
    if processes and not C._use_processes():
        pytest.skip("this platform does not fork: the coder's workers are threads")
    data = DOC * 2  # 46 segments of 12: two batches of 20 and one of 6, several lanes each
    blobs = {compress(tiny_bos, data, batch_size=20, lanes=lanes, workers=w) for w in (1, 2, 3)}
    assert len(blobs) == 1
    blob = blobs.pop()
    assert read_header(blob).lanes == lanes
    assert len(C._streams(read_header(blob))) == lanes  # one stream per lane index, whatever the batches
    assert {decompress(tiny_bos, blob, workers=w) for w in (1, 2, 4)} == {data}


def test_every_split_into_lanes_round_trips(byte_model):
    """Lanes are the model calls' shapes (recorded in the header, so the decoder makes the same calls): every
    split round-trips, including more lanes than segments; by default a batch is split in two."""
    data = DOC * 3
    assert compress_report(byte_model, data, segment_len=64, workers=2).header.lanes == 2
    for k in (1, 4, 20):
        blob = compress(byte_model, data, segment_len=64, lanes=k)
        assert read_header(blob).lanes == k and decompress(byte_model, blob) == data


def test_frequencies_follow_the_quantisation_rule():
    """The coder's NumPy float64 path gives what :func:`quantise` gives for the same probabilities (up to the one
    count its renormalisation may move), every entry at least 1, rows summing to the total; non-finite logits
    are refused."""
    import numpy as np

    from workbench.datalab.coder import cumulative, quantise
    from workbench.datalab.compress import frequencies
    from workbench.datalab.errors import FrequencyError

    logits = torch.randn(6, 258, generator=torch.Generator().manual_seed(0)) * 4
    cum, logp = frequencies(logits.numpy(), 24)
    assert cum.shape == (6, 259) and (cum[:, 0] == 0).all() and (cum[:, -1] == 1 << 24).all()
    assert (np.diff(cum, axis=1) >= 1).all()
    ref = cumulative(quantise(torch.softmax(logits.double(), -1), 24)).numpy()
    assert np.abs(np.diff(cum, axis=1) - np.diff(ref, axis=1)).max() <= 1
    assert np.allclose(logp, torch.log_softmax(logits.double(), -1).numpy(), atol=1e-12)
    bad = logits.clone()
    bad[2, 5] = float("nan")
    with pytest.raises(FrequencyError, match="non-finite"):
        frequencies(bad.numpy(), 24)


# -- bad settings and data ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, match", [
    (dict(segment_len=0), "segment_len"), (dict(segment_len=13), "segment_len"),
    (dict(batch_size=0), "batch_size"), (dict(batch_size=2.0), "batch_size"),
    (dict(total_bits=8), "total_bits"), (dict(total_bits=31), "total_bits"),
    (dict(lanes=0), "lanes"), (dict(lanes=1.5), "lanes"),
    (dict(workers=0), "workers"), (dict(workers="2"), "workers"), (dict(workers=True), "workers"),
])
def test_bad_settings(tiny_bos, kw, match):
    with pytest.raises(SettingError, match=match):
        compress(tiny_bos, b"abc", **kw)


def test_bad_data(tiny_bos):
    with pytest.raises(UnsupportedInputError, match="bytes"):
        compress(tiny_bos, "text, not bytes")
    with pytest.raises(UnsupportedInputError, match="bytes"):
        decompress(tiny_bos, "not a blob")


# -- the per-token heat view ------------------------------------------------------------------------------------


def test_code_length_view_shades_each_token_by_its_bits(tiny_bos):
    from bokeh.models import ColorBar

    from widgets.compression_view import code_length_view

    text = "ab\ncd\u00e9 " * 3
    r = compress_report(tiny_bos, text.encode())
    fig = code_length_view(tiny_bos, text)
    src = fig.renderers[0].data_source.data
    assert src["bits"] == pytest.approx(r.token_bits.tolist())
    assert src["text"][:4] == ["a", "b", "\u21b5", "c"] and src["text"][5:7] == ["\\xc3", "\\xa9"]
    assert src["y"][3] == 1  # the newline started a new line
    bar = fig.select_one(ColorBar)
    assert bar.color_mapper.high == pytest.approx(max(r.token_bits))  # the key spans these tokens' range
    assert fig.width <= 900
    with pytest.raises(SettingError, match="max_bytes"):
        code_length_view(tiny_bos, "x" * 50, max_bytes=10)
    with pytest.raises(UnsupportedInputError):
        code_length_view(tiny_bos, 12)


def test_another_code_path_is_caught_by_the_probe(byte_model):
    """TinyGPT's NumPy fast path and its torch path round differently: a blob made with one and decoded with the
    other is refused up front (what another BLAS or CPU would look like)."""
    blob = compress(byte_model, DOC[:40], segment_len=32)
    m = load_pretrained("docs-byte")
    m._numpy_step_for = lambda *a: None  # force the torch path
    with pytest.raises(MachineMismatchError, match="probe"):
        decompress(m, blob)


def test_lanes_step_through_the_chunked_cache(byte_model, monkeypatch):
    """The coder's lanes read their keys and values as one block (TinyGPT's ChunkedKVCache), the path the README's
    throughput numbers are measured on; a blob's format version names that path."""
    from workbench.datalab import compress as C
    from workbench.models.numpy_step import ChunkedKVCache

    seen = []
    real = C._lane_cache
    monkeypatch.setattr(C, "_lane_cache", lambda *a: seen.append(real(*a)) or seen[-1])
    blob = compress(byte_model, DOC[:300], segment_len=100)
    assert seen and all(type(c) is ChunkedKVCache for c in seen)
    assert decompress(byte_model, blob) == DOC[:300]
    old = bytearray(blob)
    old[4] = C.FORMAT_VERSION - 1  # a blob of the format before the chunked cache: its bits came another way
    with pytest.raises(CorruptBlobError, match=f"version {C.FORMAT_VERSION - 1}; this workbench reads version "
                                               f"{C.FORMAT_VERSION}"):
        decompress(byte_model, bytes(old))


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "qwen2", "qwen3", "mistral", "gemma2", "phi", "opt"])
def test_hf_families_round_trip_through_worker_processes(family, monkeypatch):
    """A tiny random HF model of each common family (loaded back with from_hf) has no NumPy loop step: its lanes run
    through ``model.step`` with its own cache, in forked worker processes as in threads, with the same bits."""
    from tests import hf_families as F
    from workbench.datalab import compress as C

    m = F.loaded(family)
    data = ("def add(a, b):\n    return a + b\n" * 30).encode() + "h\u00e9llo w\u00f6rld".encode()
    monkeypatch.setattr(C, "PROCESS_MIN_TOKENS", 0)
    r = compress_report(m, data, workers=2)
    assert len(C._streams(r.header)) == 2
    assert decompress(m, r.blob, workers=2) == data
    monkeypatch.setattr(C, "PROCESS_MIN_TOKENS", 10**9)
    assert compress(m, data, workers=2) == compress(m, data, workers=1) == r.blob
    assert r.payload_bytes <= 1.005 * r.ideal_bits / 8 + 16
