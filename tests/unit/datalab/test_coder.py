"""The arithmetic coder (workbench.datalab.coder) against the information content of the message and against
constriction's range coder on the same integer frequencies.

What is compared with constriction: the *size* of the output for the same symbols under the same quantised
distributions (constriction's ``Categorical`` is given our frequencies divided by the total; it re-quantises them
at its own 24-bit precision, so its bits are not ours and decoding one coder's output with the other is not
expected). Both must land within a few bytes of ``sum(-log2 f / total)``, and of each other. Our decoder must give
back the exact symbols.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.datalab.coder import (
    MAX_TOTAL, ArithmeticDecoder, ArithmeticEncoder, check_frequencies, cumulative, decode_symbols, encode_symbols,
    information_bits, quantise,
)
from workbench.datalab.errors import DataLabError, FrequencyError, SymbolError


@st.composite
def messages(draw, max_v=40, max_n=60, max_f=1 << 20):
    """(symbols, per-symbol frequency tables)"""
    v = draw(st.integers(1, max_v))
    n = draw(st.integers(0, max_n))
    freqs = draw(st.lists(st.lists(st.integers(1, max_f), min_size=v, max_size=v), min_size=n, max_size=n))
    syms = draw(st.lists(st.integers(0, v - 1), min_size=n, max_size=n))
    return syms, (np.array(freqs, dtype=np.int64).reshape(n, v))


@settings(max_examples=150, deadline=None)
@given(messages())
def test_round_trip_and_size_bound(msg):
    syms, freqs = msg
    if len(syms) == 0:
        assert encode_symbols([], np.ones(3, np.int64)) == b""
        assert decode_symbols(b"", np.ones(3, np.int64), 0) == []
        return
    data = encode_symbols(syms, freqs)
    assert decode_symbols(data, freqs) == syms
    info = information_bits(syms, freqs)
    # two termination bits, up to 7 bits of padding, and the 32-bit coder's rounding (far below 0.01 bit/symbol)
    assert 8 * len(data) <= info + 9 + 0.01 * len(syms)
    assert 8 * len(data) >= info - 1e-6


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30), st.lists(st.integers(0, 2), min_size=1, max_size=40))
def test_one_table_for_all_symbols_and_extreme_totals(bits, syms):
    """A single table for every symbol; totals from 2 up to the coder's limit 2**30, with one symbol of
    frequency 1 (the hardest case: the interval must never become empty)."""
    total = max(1 << bits, 3)
    table = np.array([1, 1, total - 2], dtype=np.int64)
    data = encode_symbols(syms, table)
    assert decode_symbols(data, table, len(syms)) == syms
    assert 8 * len(data) <= information_bits(syms, table) + 9 + 0.01 * len(syms)


def test_information_bits_by_hand():
    # 1/4 * 3/4 * 2/4: -log2 = 2 + log2(4/3) + 1
    assert information_bits([0, 1, 1], [[1, 3], [1, 3], [2, 2]]) == pytest.approx(3 + math.log2(4 / 3))


def test_matches_constriction_range_coder_size():
    constriction = pytest.importorskip("constriction")
    rng = np.random.default_rng(0)
    n, v = 4000, 258
    logits = torch.from_numpy(rng.standard_normal((n, v)) * 3.0)
    probs = torch.softmax(logits, -1)
    freqs = quantise(probs, 24)
    syms = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(0))[:, 0].numpy().astype(np.int32)
    ours = encode_symbols(syms.tolist(), freqs)
    assert decode_symbols(ours, freqs) == syms.tolist()

    q = (freqs.double() / (1 << 24)).numpy()
    enc = constriction.stream.queue.RangeEncoder()
    model = constriction.stream.model.Categorical(perfect=False)
    enc.encode(syms, model, q)
    theirs = enc.get_compressed()  # uint32 words
    dec = constriction.stream.queue.RangeDecoder(theirs)
    assert (dec.decode(model, q) == syms).all()  # the reference works on this input

    info = information_bits(syms.tolist(), freqs)
    theirs_bits = 32 * len(theirs)
    assert abs(8 * len(ours) - info) <= 16
    assert abs(8 * len(ours) - theirs_bits) <= 0.001 * info + 64


def test_encoder_decoder_step_api():
    """The low-level API: encode takes [low, high) of total; decode finds the symbol in a cumulative table."""
    tables = [[0, 3, 4], [0, 3, 4], [0, 1, 2, 4]]
    symbols = [0, 1, 1]
    enc = ArithmeticEncoder()
    for cum, s in zip(tables, symbols):
        enc.encode(cum[s], cum[s + 1], cum[-1])
    data = enc.finish()
    assert enc.finish() == data  # finishing twice gives the same bytes
    dec = ArithmeticDecoder(data)
    assert [dec.decode(cum) for cum in tables] == symbols
    with pytest.raises(SymbolError):
        enc.encode(0, 1, 4)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300), st.integers(10, 30))
def test_quantise_properties(weights, bits):
    p = torch.tensor(weights, dtype=torch.float64)
    if p.sum() == 0:
        p = p + 1
    p = p / p.sum()
    if 2 * len(weights) > (1 << bits):
        with pytest.raises(FrequencyError):
            quantise(p, bits)
        return
    f = quantise(p[None], bits)[0]
    total, v = 1 << bits, len(weights)
    assert int(f.sum()) == total and int(f.min()) >= 1
    # each frequency is within V + 1 counts of p * total (the reserve of 1 per symbol and the floor)
    assert float((f.double() - p * total).abs().max()) <= v + 1 + 1e-6 * total


def test_quantise_of_a_float32_softmax_is_deterministic():
    logits = torch.randn(64, 258)
    a = quantise(torch.softmax(logits.double(), -1))
    b = quantise(torch.softmax(logits.clone().double(), -1))
    assert torch.equal(a, b)
    assert torch.equal(cumulative(a)[:, -1], torch.full((64,), 1 << 24))


# -- bad input ----------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=20))
def test_tables_with_entries_below_one_are_refused(row):
    if min(row) >= 1:
        assert check_frequencies(row).shape == (1, len(row))
        return
    with pytest.raises(FrequencyError, match="at least 1"):
        encode_symbols([0], row)


@pytest.mark.parametrize("bad, match", [
    ([0.5, 0.5], "integers"),
    ([[1, 2], [3]], "rectangular"),
    ([], "V >= 1"),
    ([MAX_TOTAL, 1], "2\\*\\*30"),
])
def test_bad_tables(bad, match):
    with pytest.raises(FrequencyError, match=match):
        encode_symbols([0], bad)


def test_bad_symbols_and_intervals():
    with pytest.raises(SymbolError, match="outside the alphabet"):
        encode_symbols([0, 3], [1, 1, 1])
    with pytest.raises(SymbolError):
        encode_symbols([-1], [1, 1, 1])
    with pytest.raises(FrequencyError, match="tables for"):
        encode_symbols([0, 1, 0], [[1, 1], [1, 1]])
    enc = ArithmeticEncoder()
    with pytest.raises(FrequencyError, match="empty"):
        enc.encode(2, 2, 4)
    with pytest.raises(FrequencyError):
        enc.encode(0, 5, 4)
    with pytest.raises(FrequencyError):
        enc.encode(0, 1, MAX_TOTAL * 2)
    with pytest.raises(DataLabError):
        quantise(torch.tensor([0.5, float("nan")]))
    with pytest.raises(FrequencyError):
        quantise(torch.tensor([1, 2]))


@settings(max_examples=100, deadline=None)
@given(messages(max_f=1 << 22), st.data())
def test_batched_encode_and_decode_are_the_one_symbol_calls(msg, data):
    """``encode_many`` and ``decode_rows`` (one loop over a lane's tokens, as the compressor codes) give exactly
    the bytes and symbols of one ``encode``/``decode`` call per symbol, in any grouping."""
    syms, freqs = msg
    cum = np.concatenate([np.zeros((len(syms), 1), np.int64), np.cumsum(freqs, 1)], 1)
    one = ArithmeticEncoder()
    for r, s in enumerate(syms):
        one.encode(int(cum[r, s]), int(cum[r, s + 1]), int(cum[r, -1]))
    many = ArithmeticEncoder()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(syms)), max_size=4)))
    for a, b in zip([0] + cuts, cuts + [len(syms)]):
        rows = np.arange(a, b)
        s = np.array(syms[a:b], dtype=np.int64)
        many.encode_many(cum[rows, s].tolist(), cum[rows, s + 1].tolist(), cum[rows, -1].tolist())
    blob = one.finish()
    assert many.finish() == blob and many.n_symbols == len(syms)
    dec_one, dec_rows = ArithmeticDecoder(blob), ArithmeticDecoder(blob)
    got = []
    for a, b in zip([0] + cuts, cuts + [len(syms)]):
        got += dec_rows.decode_rows(cum, range(a, b))
    assert got == [dec_one.decode(cum[r]) for r in range(len(syms))] == syms
    assert (dec_rows.low, dec_rows.high, dec_rows.value, dec_rows.bits_read) == (
        dec_one.low, dec_one.high, dec_one.value, dec_one.bits_read)


def test_batched_calls_refuse_what_the_one_symbol_calls_refuse():
    enc = ArithmeticEncoder()
    with pytest.raises(FrequencyError, match="empty"):
        enc.encode_many([0, 3], [2, 3], [4, 4])
    assert enc.n_symbols == 1  # the first symbol was coded, the bad one was not
    enc.finish()
    with pytest.raises(SymbolError, match="finished"):
        enc.encode_many([0], [1], [2])
    with pytest.raises(FrequencyError, match="totals"):
        ArithmeticDecoder(b"\x00").decode_rows(np.array([[0, 1, 1 << 31]], dtype=np.int64), [0])
