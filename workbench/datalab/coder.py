"""Arithmetic coding on integer frequencies: the coder that turns a model's predictions into bits.

A message of symbols ``s_1 .. s_n``, each drawn from its own table of integer frequencies ``f_i`` (summing to a
``total``), is coded as one number in ``[0, 1)``: start from the interval ``[0, 1)``, and for every symbol shrink
the interval to the sub-interval that symbol owns, ``[cum(s) / total, (cum(s) + f(s)) / total)`` of the current
one. The final width is the product of the symbols' probabilities, so a number inside it needs about
``sum(-log2 f(s_i) / total)`` bits: the information content of the message under the tables, plus 2 bits.

Real numbers are replaced by 32-bit integers ``low .. high`` (Witten, Neal and Cleary, "Arithmetic coding for
data compression", CACM 1987). Whenever both ends agree on the leading bit, that bit is final: it is written and
the interval doubled. When the interval straddles the middle but has shrunk into the second and third quarters,
the next bit is not known yet, only that the bit after it will be its opposite: the interval is doubled around
the middle and the "pending" count grows; the pending bits are written once the next bit is known. After every
symbol the interval is wider than a quarter of the 32-bit range, so any ``total`` up to ``2**30`` gives every
symbol with a frequency of at least 1 a non-empty interval: frequencies of zero cannot be coded.

The decoder repeats the encoder's arithmetic exactly. Given the same frequency tables in the same order, it
finds which symbol's interval holds the code number, and then updates ``low``, ``high`` and its window on the
code bits the same way the encoder did. Encoder and decoder must see bit-identical tables: this module only does
integer arithmetic, so the question of agreeing tables belongs to whoever computes them (see
:mod:`workbench.datalab.compress`).

>>> freqs = [[3, 1], [1, 3], [2, 2]]          # one table per symbol, each summing to 4
>>> data = encode_symbols([0, 1, 1], freqs)
>>> decode_symbols(data, freqs)
[0, 1, 1]
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import FrequencyError, SymbolError

STATE_BITS = 32
_FULL = (1 << STATE_BITS) - 1
_HALF = 1 << (STATE_BITS - 1)
_QUARTER = 1 << (STATE_BITS - 2)
_THREE_QUARTERS = _HALF + _QUARTER
#: the largest frequency total the coder accepts: after renormalisation the interval holds more than 2**30
#: values, so every symbol of frequency >= 1 keeps a non-empty sub-interval
MAX_TOTAL = _QUARTER


def _check_total(total: int) -> None:
    if not 1 <= total <= MAX_TOTAL:
        raise FrequencyError(f"the frequency total must be in [1, 2**30], got {total}")


def _settle(lo: int, hi: int, pending: int, bits: list[int]) -> tuple[int, int, int]:
    """The encoder's renormalisation after narrowing to ``[lo, hi]``: while the leading bit is settled, write it to
    ``bits`` (and the pending opposites) and double the interval; while it sits in the middle half, double it around
    the middle and count one more pending bit. Returns ``(lo, hi, pending)``."""
    while True:
        if hi < _HALF:  # both ends start with 0: write it (and the pending opposites)
            bits.append(0)
            if pending:
                bits.extend([1] * pending)
                pending = 0
        elif lo >= _HALF:  # both ends start with 1
            bits.append(1)
            if pending:
                bits.extend([0] * pending)
                pending = 0
            lo -= _HALF
            hi -= _HALF
        elif lo >= _QUARTER and hi < _THREE_QUARTERS:  # straddles the middle, inside the middle half
            pending += 1
            lo -= _QUARTER
            hi -= _QUARTER
        else:
            return lo, hi, pending
        lo, hi = 2 * lo, 2 * hi + 1


class ArithmeticEncoder:
    """Codes symbols given as intervals ``[low, high)`` of a frequency ``total``; :meth:`finish` gives the bytes.

    Each :meth:`encode` call takes the symbol's cumulative frequency before it (``low``), after it (``high``) and
    the table's ``total`` (``0 <= low < high <= total <= 2**30``). The output is a whole number of bytes:
    about ``sum(-log2 (high - low) / total)`` bits plus 2 termination bits, rounded up to a byte.
    """

    def __init__(self) -> None:
        self.low, self.high, self.pending = 0, _FULL, 0
        self._bits: list[int] = []
        self._finished = False
        self.n_symbols = 0

    def encode(self, low: int, high: int, total: int) -> None:
        """Narrow the interval to the symbol owning ``[low, high)`` of ``total``."""
        if not 0 <= low < high <= total <= MAX_TOTAL:
            if high <= low:
                raise FrequencyError(f"symbol interval [{low}, {high}) is empty: every coded symbol needs a "
                                     "frequency of at least 1")
            raise FrequencyError(f"symbol interval [{low}, {high}) of total {total} is not inside [0, total] "
                                 f"with total <= 2**30")
        if self._finished:
            raise SymbolError("the encoder is finished: start a new one")
        r = self.high - self.low + 1
        self.high = self.low + r * high // total - 1
        self.low = self.low + r * low // total
        self.n_symbols += 1
        self._renormalise()

    def encode_many(self, lows: Sequence[int], highs: Sequence[int], totals: Sequence[int]) -> None:
        """:meth:`encode` of each ``(low, high, total)`` in turn: the same arithmetic in one loop (the compressor
        codes a whole lane's position at once)."""
        if self._finished:
            raise SymbolError("the encoder is finished: start a new one")
        lo, hi, pending, bits = self.low, self.high, self.pending, self._bits
        try:
            for low, high, total in zip(lows, highs, totals):
                if not 0 <= low < high <= total <= MAX_TOTAL:
                    self.encode(low, high, total)  # its error
                width = hi - lo + 1
                self.n_symbols += 1
                lo, hi, pending = _settle(lo + width * low // total, lo + width * high // total - 1, pending, bits)
        finally:
            self.low, self.high, self.pending = lo, hi, pending

    def _renormalise(self) -> None:
        self.low, self.high, self.pending = _settle(self.low, self.high, self.pending, self._bits)

    def finish(self) -> bytes:
        """Write the two bits that pick a quarter inside the final interval, pad with zeros to a byte, return
        all the bytes. (The decoder reads zeros past the end, which lands on that quarter's start.)"""
        if not self._finished:
            self._finished = True
            self.pending += 1
            first = 0 if self.low < _QUARTER else 1
            self._bits.append(first)
            self._bits.extend([1 - first] * self.pending)
            self.pending = 0
        if self.n_symbols == 0:
            return b""  # nothing to decode: no bytes needed
        return np.packbits(np.array(self._bits, dtype=np.uint8)).tobytes()

    @property
    def n_bits(self) -> int:
        """Bits written so far (before :meth:`finish`, pending bits are not counted)."""
        return len(self._bits)


def _narrow(lo: int, hi: int, value: int, pos: int, bits: list[int]) -> tuple[int, int, int, int]:
    """The decoder's renormalisation after narrowing to ``[lo, hi]``: double the interval (and the code window
    ``value``, reading the next bit at ``pos``; zeros past the end) while its leading bit is settled or it sits in
    the middle half, as the encoder did. Returns ``(lo, hi, value, pos)``."""
    n = len(bits)
    while True:
        if hi < _HALF:
            pass
        elif lo >= _HALF:
            lo -= _HALF
            hi -= _HALF
            value -= _HALF
        elif lo >= _QUARTER and hi < _THREE_QUARTERS:
            lo -= _QUARTER
            hi -= _QUARTER
            value -= _QUARTER
        else:
            return lo, hi, value, pos
        lo, hi = 2 * lo, 2 * hi + 1
        value = 2 * value + (bits[pos] if pos < n else 0)
        pos += 1


class ArithmeticDecoder:
    """Reads symbols back from an encoder's bytes, given the same frequency tables in the same order.

    For each symbol: :meth:`target` (the count in ``[0, total)`` that the code number points at), find the symbol
    whose ``[low, high)`` holds it, then :meth:`consume` that interval. :meth:`decode` does all three for a
    cumulative table. Bits past the end of the data read as 0, as the encoder's termination assumes.
    """

    def __init__(self, data: bytes) -> None:
        self._bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8)).tolist()
        self._pos = 0
        self.low, self.high = 0, _FULL
        value = 0
        for _ in range(STATE_BITS):
            value = 2 * value + self._next_bit()
        self.value = value

    def _next_bit(self) -> int:
        pos = self._pos
        self._pos = pos + 1
        return self._bits[pos] if pos < len(self._bits) else 0

    @property
    def bits_read(self) -> int:
        """How many code bits the decoder has looked at (more than were written means it read the zero padding)."""
        return self._pos

    def target(self, total: int) -> int:
        """The count in ``[0, total)`` whose symbol comes next."""
        _check_total(total)
        r = self.high - self.low + 1
        return ((self.value - self.low + 1) * total - 1) // r

    def consume(self, low: int, high: int, total: int) -> None:
        """Narrow the interval exactly as the encoder did for the symbol owning ``[low, high)``."""
        if not 0 <= low < high <= total <= MAX_TOTAL:
            raise FrequencyError(f"symbol interval [{low}, {high}) of total {total} is empty or outside [0, total]")
        r = self.high - self.low + 1
        self.low, self.high, self.value, self._pos = _narrow(
            self.low + r * low // total, self.low + r * high // total - 1, self.value, self._pos, self._bits)

    def decode_rows(self, cumulative: np.ndarray, rows: Sequence[int]) -> list[int]:
        """:meth:`decode` with the tables ``cumulative[r]`` (``(n, V + 1)`` int64) of each row ``r`` of ``rows`` in
        turn: the same arithmetic in one loop with its state in local variables, since the decoder is a Python
        loop over every coded token."""
        totals = cumulative[:, -1]
        if len(totals) and not (1 <= int(totals.min()) and int(totals.max()) <= MAX_TOTAL):
            raise FrequencyError(f"frequency totals must be in [1, 2**30], got {int(totals.min())} .. "
                                 f"{int(totals.max())}")
        totals = totals.tolist()
        low, high, value, pos, bits = self.low, self.high, self.value, self._pos, self._bits
        out = []
        for r in rows:
            row, total = cumulative[r], totals[r]
            width = high - low + 1
            s = int(row.searchsorted(((value - low + 1) * total - 1) // width, "right")) - 1
            low, high, value, pos = _narrow(low + width * int(row[s]) // total,
                                            low + width * int(row[s + 1]) // total - 1, value, pos, bits)
            out.append(s)
        self.low, self.high, self.value, self._pos = low, high, value, pos
        return out

    def decode(self, cumulative: Sequence[int] | np.ndarray) -> int:
        """Decode one symbol with the cumulative table ``cumulative`` (``V + 1`` non-decreasing counts from 0 to
        the total; symbol ``s`` owns ``[cumulative[s], cumulative[s + 1])``)."""
        total = int(cumulative[-1])
        t = self.target(total)
        s = int(np.searchsorted(cumulative, t, side="right")) - 1
        self.consume(int(cumulative[s]), int(cumulative[s + 1]), total)
        return s


# -- frequency tables -------------------------------------------------------------------------------------


def check_frequencies(freqs) -> np.ndarray:
    """``freqs`` as an int64 array ``(n, V)`` (a single table ``(V,)`` becomes ``(1, V)``), or a
    :class:`FrequencyError` saying what is wrong: not integers, an entry below 1, or a total above ``2**30``."""
    try:
        a = np.asarray(freqs.cpu().numpy() if isinstance(freqs, torch.Tensor) else freqs)
    except ValueError:
        raise FrequencyError("frequencies must be a rectangular table of integers (rows of equal length)") from None
    if a.size == 0:
        raise FrequencyError(f"frequencies must be (V,) or (n, V) with V >= 1, got shape {a.shape}")
    if a.dtype == object or not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise FrequencyError(f"frequencies must be integers, got dtype {a.dtype}")
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] == 0:
        raise FrequencyError(f"frequencies must be (V,) or (n, V) with V >= 1, got shape {a.shape}")
    a = a.astype(np.int64)
    if a.size and a.min() < 1:
        row, col = np.argwhere(a < 1)[0]
        raise FrequencyError(f"frequency {a[row, col]} for symbol {col} of table {row}: every symbol needs at "
                             "least 1 (a symbol of frequency 0 could never be coded)")
    totals = a.sum(axis=1)
    if a.size and totals.max() > MAX_TOTAL:
        raise FrequencyError(f"a table sums to {int(totals.max())}, above the coder's limit of 2**30")
    return a


def quantise(probs: torch.Tensor, total_bits: int = 24) -> torch.Tensor:
    """Integer frequencies ``(..., V)`` int64 summing to ``2**total_bits`` per row, every entry at least 1, from
    probabilities ``(..., V)`` (rows summing to about 1).

    ``f = 1 + floor(p * (2**total_bits - V))`` in float64, then what is left of the total goes to the row's
    largest entry. Every symbol stays codable (a model's zero probability would otherwise make a byte uncodable),
    and the cost of the reserve is at most ``-log2(1 - V / 2**total_bits)`` bits per symbol (about 2e-5 bits for
    a byte model at 24 bits). Deterministic: the same probabilities give the same frequencies.
    """
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point() or probs.dim() < 1:
        raise FrequencyError("probabilities must be a floating-point tensor (..., V)")
    if not 1 <= int(total_bits) <= 30:
        raise FrequencyError(f"total_bits must be in [1, 30], got {total_bits}")
    total, V = 1 << int(total_bits), probs.shape[-1]
    if 2 * V > total:
        raise FrequencyError(f"a vocabulary of {V} needs total_bits of at least {(2 * V - 1).bit_length()}")
    if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()):
        raise FrequencyError("probabilities must be finite and non-negative")
    p = probs.double()
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-300)
    f = torch.floor(p * (total - V)).long().clamp_min(0) + 1
    rest = total - f.sum(-1, keepdim=True)  # >= 0 up to rounding; the largest entry absorbs it either way
    top = f.argmax(-1, keepdim=True)
    return f.scatter_add(-1, top, rest)


def cumulative(freqs: torch.Tensor) -> torch.Tensor:
    """``(..., V)`` frequencies -> ``(..., V + 1)`` cumulative counts starting at 0 (symbol ``s`` owns
    ``[c[s], c[s + 1])``)."""
    c = freqs.cumsum(-1)
    return torch.cat([torch.zeros_like(c[..., :1]), c], -1)


# -- whole messages (the lesson's and the tests' entry points) ----------------------------------------------


def encode_symbols(symbols: Sequence[int], freqs) -> bytes:
    """Code ``symbols`` (length ``n``) with frequency tables ``freqs``: one table ``(V,)`` for all of them, or one
    per symbol ``(n, V)``. Returns the coded bytes; see :func:`decode_symbols`."""
    table = check_frequencies(freqs)
    syms = [int(s) for s in symbols]
    if table.shape[0] not in (1, len(syms)):
        raise FrequencyError(f"{table.shape[0]} frequency tables for {len(syms)} symbols: give one, or one each")
    cum = np.concatenate([np.zeros((table.shape[0], 1), np.int64), table.cumsum(axis=1)], axis=1)
    V = table.shape[1]
    enc = ArithmeticEncoder()
    for i, s in enumerate(syms):
        if not 0 <= s < V:
            raise SymbolError(f"symbol {s} at position {i} is outside the alphabet [0, {V})")
        row = cum[i if cum.shape[0] > 1 else 0]
        enc.encode(int(row[s]), int(row[s + 1]), int(row[-1]))
    return enc.finish()


def decode_symbols(data: bytes, freqs, n: int | None = None) -> list[int]:
    """Decode ``n`` symbols (default: one per table of ``freqs``) coded by :func:`encode_symbols` with the same
    tables. The coder cannot tell where a message ends: ``n`` must be known (a compressed format stores it)."""
    table = check_frequencies(freqs)
    n = table.shape[0] if n is None else int(n)
    if table.shape[0] not in (1, n):
        raise FrequencyError(f"{table.shape[0]} frequency tables for {n} symbols: give one, or one each")
    cum = np.concatenate([np.zeros((table.shape[0], 1), np.int64), table.cumsum(axis=1)], axis=1)
    dec = ArithmeticDecoder(data)
    return [dec.decode(cum[i if cum.shape[0] > 1 else 0]) for i in range(n)]


def information_bits(symbols: Sequence[int], freqs) -> float:
    """``sum(-log2 f(s_i) / total_i)``: the ideal code length in bits under the tables (what the coder gets
    within 2 bits plus byte padding of, and 32-bit rounding)."""
    table = check_frequencies(freqs)
    syms = np.asarray(list(symbols), dtype=np.int64)
    rows = np.arange(len(syms)) if table.shape[0] > 1 else np.zeros(len(syms), np.int64)
    f = table[rows, syms].astype(np.float64)
    return float(-(np.log2(f) - np.log2(table.sum(axis=1)[rows].astype(np.float64))).sum())
