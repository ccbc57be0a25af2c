"""A language model is a compressor: ``compress(model, data) -> blob`` and ``decompress(model, blob) -> data``.

The model predicts each next token; :mod:`.coder` spends ``-log2 p`` bits on the token that came. So the blob's
size is the model's loss on the data, in bits, and bits per byte of a model *is* its compression ratio (Delétang
et al., "Language Modeling Is Compression"; Huang et al., "Compression Represents Intelligence Linearly").

How the data are laid out (encoder and decoder both, so that they compute the same probabilities):

* bytes -> tokens with the model's tokenizer, losslessly for any bytes (a byte model: one token per byte; a
  byte-level BPE: valid UTF-8 runs through ``encode``, each byte of invalid UTF-8 as its byte token);
* tokens are cut into independent segments of ``segment_len`` tokens (default: the context, ``block_size``),
  each starting fresh: after the tokenizer's BOS when it has one, else its first token is coded as uniform over
  the vocabulary (so a segment never needs more context than the model has);
* segments are coded ``batch_size`` at a time, and each batch is cut into ``lanes`` runs of consecutive segments
  (default 2). A lane runs in lockstep: one cached ``model.step`` per position ``(n, 1)`` -> logits ``(n, V)``
  (through TinyGPT's chunked KV cache, read as one block of memory); a float64 softmax quantised to integer
  frequencies summing to ``2**total_bits`` (:func:`frequencies`); then the symbols of that position, row by row.
  The decoder makes exactly the same calls with exactly the same shapes and inputs (it feeds what it decoded).
* each lane index has its own arithmetic-coded stream: stream ``j`` codes lane ``j`` of every batch, batch after
  batch. Streams are independent, so ``workers`` workers code them at once, each lane's model calls on one BLAS
  and one torch thread: forked worker processes on Linux (a step is ~100 small NumPy calls and the coding a
  Python loop, so threads would queue on the interpreter lock), threads elsewhere. The bits depend on the lanes,
  never on the number of workers or where they run.

Exactness: the integer coder is exact anywhere, but the logits are floats. The same calls on the same machine
with the same torch, BLAS and thread settings give the same bits; another machine may not (see the README's
"Compression: what is portable"). The header therefore carries the torch version and a *probe*: a hash of the
quantised frequencies of a fixed probe input run through the same lane shape. A decoder whose probe differs
refuses up front (:class:`MachineMismatchError`) instead of decoding garbage; a CRC-32 of the data catches what
the probe cannot.

Blob layout (little-endian): magic ``LMAC``, format version (1 byte), header fields (:class:`BlobHeader`), CRC-32 of
the header, then the payload: the byte length of every stream but the last (varints), then the streams.
"""
from __future__ import annotations

import hashlib
import os
import re
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .coder import ArithmeticDecoder, ArithmeticEncoder
from .errors import (
    CorruptBlobError, DataLabError, FrequencyError, MachineMismatchError, ModelMismatchError, SettingError,
    TruncatedBlobError, UnsupportedInputError,
)

MAGIC = b"LMAC"
FORMAT_VERSION = 3  # 3: lanes step through the chunked KV cache (2: lanes, 1: one call per batch)
DEFAULT_BATCH = 256  # segments in flight: wide lanes (two of 128) use the CPU best; the decoder holds 256 KV caches
DEFAULT_LANES = 2  # lanes per batch: two cores busy, each model call as wide as it can be
DEFAULT_TOTAL_BITS = 24
_PROBE_STEPS = 4


# -- header ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobHeader:
    """What a blob says about itself. ``fingerprint``: 8 bytes of a hash of the model's weights, shape and
    tokenizer; ``probe``: 4 bytes of a hash of the quantised frequencies of a fixed input (the machine check);
    ``start_id``: the token each segment starts after (-1: none, the first token is coded as uniform);
    ``lanes``: how many model calls a batch's segments are split into (each batch into this many lanes);
    ``data_crc``: CRC-32 of the original bytes."""

    model_name: str
    fingerprint: bytes
    probe: bytes
    torch_version: str
    n_bytes: int
    n_tokens: int
    segment_len: int
    batch_size: int
    total_bits: int
    start_id: int
    payload_len: int
    data_crc: int
    lanes: int = 1
    version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        name = self.model_name.encode("utf-8")[:255]
        tv = self.torch_version.encode("ascii", "replace")[:255]
        body = (MAGIC + bytes([self.version]) + self.fingerprint + self.probe
                + bytes([len(name)]) + name + bytes([len(tv)]) + tv
                + b"".join(_varint(v) for v in (self.n_bytes, self.n_tokens, self.segment_len, self.batch_size,
                                                self.lanes, self.start_id + 1, self.payload_len))
                + bytes([self.total_bits]) + struct.pack("<I", self.data_crc))
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def parse(cls, blob: bytes) -> tuple["BlobHeader", int]:
        """``(header, offset of the payload)``; a :class:`BlobError` subclass for anything that is not a whole,
        intact header of this format."""
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise UnsupportedInputError(f"a blob must be bytes, got {type(blob).__name__}")
        blob = bytes(blob)
        if len(blob) < len(MAGIC) + 1:
            if MAGIC.startswith(blob[: len(MAGIC)]):
                raise TruncatedBlobError(f"the blob has {len(blob)} bytes, fewer than a header")
            raise CorruptBlobError("not a compressed blob of this format (its first bytes are not 'LMAC')")
        if blob[:4] != MAGIC:
            raise CorruptBlobError(f"not a compressed blob of this format (it starts {blob[:4]!r}, not {MAGIC!r})")
        version = blob[4]
        if version != FORMAT_VERSION:
            raise CorruptBlobError(f"blob format version {version}; this workbench reads version {FORMAT_VERSION}")
        r = _Reader(blob, 5)
        fingerprint, probe = r.take(8), r.take(4)
        name = r.take(r.byte()).decode("utf-8", "replace")
        tv = r.take(r.byte()).decode("ascii", "replace")
        n_bytes, n_tokens, seg, batch, lanes, start, payload_len = (r.varint() for _ in range(7))
        total_bits = r.byte()
        (crc,) = struct.unpack("<I", r.take(4))
        end = r.pos
        (hcrc,) = struct.unpack("<I", r.take(4))
        if zlib.crc32(blob[:end]) != hcrc:
            raise CorruptBlobError("the blob's header is corrupted (its CRC-32 does not match)")
        h = cls(name, fingerprint, probe, tv, n_bytes, n_tokens, seg, batch, total_bits, start - 1, payload_len,
                crc, lanes, version)
        if len(blob) - r.pos < payload_len:
            raise TruncatedBlobError(f"the blob is truncated: its payload has {len(blob) - r.pos} of "
                                     f"{payload_len} bytes")
        if len(blob) - r.pos > payload_len:
            raise CorruptBlobError(f"{len(blob) - r.pos - payload_len} unexpected bytes after the payload")
        return h, r.pos


def read_header(blob: bytes) -> BlobHeader:
    """The header of a blob (checked: magic, version, header CRC, payload length)."""
    return BlobHeader.parse(blob)[0]


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes, pos: int):
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise TruncatedBlobError(f"the blob is truncated inside its header ({len(self.data)} bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        v, shift = 0, 0
        while True:
            b = self.byte()
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7
            if shift > 63:
                raise CorruptBlobError("the blob's header has an impossible number in it")


# -- bytes <-> tokens -------------------------------------------------------------------------------------------

_ESCAPED = re.compile("([\udc80-\udcff]+)")


def to_tokens(tokenizer, data: bytes) -> list[int]:
    """Token ids that stand for exactly ``data`` (any bytes): a byte tokenizer gives the bytes; a byte-level BPE
    encodes valid UTF-8 runs and gives each byte of invalid UTF-8 its byte token; any other tokenizer must
    reproduce the bytes from ``encode`` of the (valid UTF-8) text, else :class:`UnsupportedInputError`."""
    from workbench.tokenizers import ByteTokenizer

    if isinstance(tokenizer, ByteTokenizer):
        return list(data)
    byte_ids = getattr(tokenizer, "byte_ids", None)
    if byte_ids is not None:
        text = data.decode("utf-8", "surrogateescape")
        ids: list[int] = []
        for i, part in enumerate(_ESCAPED.split(text)):
            if i % 2:  # bytes that are not UTF-8
                ids.extend(byte_ids[ord(c) - 0xDC00] for c in part)
            elif part:
                ids.extend(tokenizer.encode(part))
    else:
        try:
            ids = list(tokenizer.encode(data.decode("utf-8")))
        except UnicodeDecodeError:
            raise UnsupportedInputError("this model's tokenizer codes text only and the data are not valid UTF-8: "
                                        "use a byte-level model (docs-byte, docs-bpe)") from None
        bos = getattr(tokenizer, "bos_id", None)
        if bos is not None and ids[:1] == [bos]:
            ids = ids[1:]
    if to_bytes(tokenizer, ids) != data:
        raise UnsupportedInputError("this model's tokenizer does not give back the same bytes for these data, so "
                                    "they cannot be coded losslessly with it: use a byte-level model")
    return ids


def to_bytes(tokenizer, ids: list[int]) -> bytes:
    """The bytes that token ids stand for (:func:`to_tokens` inverted); a ``TokenizerError`` or ``ValueError`` for
    ids that stand for no bytes of data."""
    from workbench.tokenizers import ByteTokenizer

    if isinstance(tokenizer, ByteTokenizer):
        return bytes(ids)  # ValueError for a special token or the BOS: they stand for no data byte
    if hasattr(tokenizer, "decode_bytes"):
        return tokenizer.decode_bytes(ids)
    return b"".join(tokenizer.token_bytes(i) for i in ids)


# -- model identity and the machine probe ---------------------------------------------------------------------


def model_fingerprint(model) -> bytes:
    """8 bytes identifying the model: its weights and shape (``residual.tuned_lens.model_hash``), context and its
    tokenizer's vocabulary. Any other model or tokenizer gives other bytes."""
    from workbench.residual.tuned_lens import model_hash

    h = hashlib.sha256(model_hash(model).encode())
    h.update(f"block {model.config.block_size} vocab {model.config.vocab_size}".encode())
    vf = getattr(model.tokenizer, "vocab_fingerprint", None)
    h.update((vf() if vf is not None else repr(model.tokenizer)).encode())
    return h.digest()[:8]


def _start_id(model) -> int:
    bos = getattr(model.tokenizer, "bos_id", None)
    return -1 if bos is None else int(bos)


@contextmanager
def _inference(model):
    """Eval mode (no dropout) and no autograd for the duration; the model's mode is restored after."""
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            model.train()


def _probe(model, rows: int, total_bits: int, start_id: int) -> bytes:
    """4 bytes: a hash of the frequencies :func:`_step_lane` gives for a fixed input ``(rows, steps)``, in the shape
    of the data's first model call."""
    if rows == 0:
        return b"\0" * 4
    V = int(model.config.vocab_size)
    steps = max(1, min(_PROBE_STEPS, int(model.config.block_size)))
    cache = _lane_cache(model, rows, steps)
    step = _stepper(model, cache)
    h = hashlib.sha256()
    for t in range(steps):
        if t == 0 and start_id >= 0:
            x = np.full((rows, 1), start_id, dtype=np.int64)
        else:
            x = ((np.arange(rows, dtype=np.int64) * 7 + 13 * t + 1) % V).reshape(rows, 1)
        cum, _ = _step_lane(step, x, total_bits, logp=False)
        h.update(cum.astype("<i8").tobytes())
    return h.digest()[:4]


# -- the lockstep loop shared by encoder and decoder ----------------------------------------------------------


def _batches(n_tokens: int, segment_len: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """Segments ``(start, length)`` grouped into batches of at most ``batch_size`` consecutive segments."""
    segs = [(s, min(segment_len, n_tokens - s)) for s in range(0, n_tokens, segment_len)]
    return [segs[i : i + batch_size] for i in range(0, len(segs), batch_size)]


def default_workers() -> int:
    """Workers that code lanes at once by default: the cores this process may use, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


_controller = None


@contextmanager
def _one_thread():
    """One BLAS and one torch thread per model call for the duration, so a lane's arithmetic is the same wherever
    it runs (this process, a worker thread or a worker process) and however many run."""
    global _controller
    from threadpoolctl import ThreadpoolController

    if _controller is None:
        _controller = ThreadpoolController()
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _controller.limit(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(old)


def frequencies(logits, total_bits: int, logp: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits ``(n, V)`` -> cumulative integer frequencies ``(n, V + 1)`` (int64, from 0 to ``2**total_bits``) and
    the float64 log-probabilities ``(n, V)`` they quantise: what the coder codes with, computed in NumPy float64.

    The same rule as :func:`.coder.quantise` (``f = 1 + floor(p (2**total_bits - V))``, what is left of the total
    to the row's largest entry), without its checks on arbitrary input: every coded step goes through here, in the
    encoder and the decoder alike. ``logp=False``: None instead of the log-probabilities (the decoder's case)."""
    z = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(z).all():
        raise FrequencyError("the model gave non-finite logits (inf or NaN): its probabilities cannot be coded")
    n, V = z.shape
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    total_e = e.sum(-1, keepdims=True)
    total = 1 << total_bits
    f = np.floor(e * ((total - V) / total_e)).astype(np.int64)
    f += 1
    rows = np.arange(n)
    f[rows, f.argmax(-1)] += total - f.sum(-1)
    cum = np.zeros((n, V + 1), dtype=np.int64)
    np.cumsum(f, axis=1, out=cum[:, 1:])
    return cum, (z - np.log(total_e)) if logp else None


def _lane_cache(model, rows: int, max_len: int):
    """A lane's cache: the model's cache for one-token steps where it has one (TinyGPT's chunked cache, which the
    step reads as one block of memory), else its plain cache."""
    make = getattr(model, "new_step_cache", None) or model.new_cache
    return make(rows, max_len=max_len)


def _stepper(model, cache) -> Callable[[np.ndarray], np.ndarray]:
    """A lane's step ``ids`` ``(n, 1)`` int64 -> next-token logits ``(n, V)``: the model's own loop step where it has
    one (TinyGPT's :meth:`step_fn`: the same arithmetic as ``step`` without re-checking its weights and ids at every
    position), else ``model.step``."""
    fast = getattr(model, "step_fn", None)
    fast = fast(cache) if fast is not None else None
    if fast is not None:
        return fast

    def step(ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model.step(torch.from_numpy(ids), cache).logits[:, -1].float().numpy()

    return step


def _step_lane(step, x: np.ndarray, total_bits: int, logp: bool = True):
    """One cached step ``step`` (a lane's :func:`_stepper`) of ``x`` ``(n, 1)`` int64 -> :func:`frequencies` of its
    next-token logits."""
    return frequencies(np.asarray(step(x), dtype=np.float32), total_bits, logp)


def _streams(header: BlobHeader) -> list[list[list[tuple[int, int]]]]:
    """The lanes ``[(start, length), ...]`` each coded stream holds: stream ``j`` codes lane ``j`` of every batch,
    batch after batch (so a blob has ``lanes`` streams, however many batches, and each stream is one worker's job)."""
    out: list[list] = []
    for batch in _batches(header.n_tokens, header.segment_len, header.batch_size):
        width = -(-len(batch) // header.lanes)
        for j, i in enumerate(range(0, len(batch), width)):
            if j == len(out):
                out.append([])
            out[j].append(batch[i : i + width])
    return out


def _run_lane(model, header: BlobHeader, segs: list[tuple[int, int]], code: Callable, logp: bool = True) -> None:
    """Run the model over one lane's segments ``segs``, one position at a time, and let ``code(t, cum, logp)`` code
    (or decode) the tokens at position ``t`` from the cumulative frequencies ``cum`` ``(n, V + 1)`` (``logp``
    ``(n, V)``: the float64 log-probabilities behind them; None for a uniform first position); it returns the ``n``
    tokens to feed next (0 for a finished segment). The encoder and the decoder both come through here, so the
    model sees the same calls, shapes and inputs (``logp=False``: ``code`` gets None for ``logp``)."""
    V = int(model.config.vocab_size)
    n, L = len(segs), max(length for _, length in segs)
    first = 0
    if header.start_id >= 0:
        x = np.full((n, 1), header.start_id, dtype=np.int64)
    else:  # no start token: position 0 is uniform over the vocabulary
        x = _column(code(0, np.broadcast_to(np.arange(V + 1, dtype=np.int64), (n, V + 1)), None))
        first = 1
    if first >= L:
        return
    cache = _lane_cache(model, n, L - first)  # steps fed: the start token and tokens 0 .. L-2
    step = _stepper(model, cache)
    for t in range(first, L):
        cum, lp = _step_lane(step, x, header.total_bits, logp)
        x = code(t, cum, lp)
        if t + 1 < L:
            x = _column(x)


def _column(tokens) -> np.ndarray:
    return np.array(tokens, dtype=np.int64).reshape(-1, 1)


def _encode_stream(model, header: BlobHeader, lanes, tokens: np.ndarray):
    """One stream's bytes (its lanes coded one after another) and, for its tokens (at ``pos``), their ideal and
    quantised code lengths in bits."""
    enc = ArithmeticEncoder()
    pos_all, bits_all, qbits_all = [], [], []
    for segs in lanes:
        starts = np.array([s0 for s0, _ in segs], dtype=np.int64)
        lengths = np.array([length for _, length in segs], dtype=np.int64)

        def code(t, cum, logp):
            rows = np.flatnonzero(t < lengths)
            pos = starts[rows] + t
            syms = tokens[pos]
            lo, hi, tot = cum[rows, syms], cum[rows, syms + 1], cum[rows, -1]
            enc.encode_many(lo.tolist(), hi.tolist(), tot.tolist())
            pos_all.append(pos)
            qbits_all.append(np.log2(tot) - np.log2(hi - lo))
            bits_all.append(np.full(len(rows), np.log2(cum.shape[1] - 1)) if logp is None
                            else -logp[rows, syms] / np.log(2))
            feed = np.zeros(len(lengths), dtype=np.int64)  # finished segments are fed 0, as in the decoder
            feed[rows] = syms
            return feed

        _run_lane(model, header, segs, code)
    cat = np.concatenate if pos_all else (lambda _: np.zeros(0))
    return enc.finish(), cat(pos_all).astype(np.int64), cat(bits_all), cat(qbits_all)


def _decode_stream(model, header: BlobHeader, lanes, stream: bytes) -> list[tuple[int, list[int]]]:
    """``[(start, tokens), ...]`` of every segment of one stream's lanes."""
    decode_rows = ArithmeticDecoder(stream).decode_rows
    out = []
    for segs in lanes:
        toks = [[0] * length for _, length in segs]

        def code(t, cum, logp):
            rows = [r for r, seg in enumerate(toks) if t < len(seg)]
            x = [0] * len(toks)  # finished segments are fed 0
            for r, tok in zip(rows, decode_rows(cum, rows)):
                toks[r][t] = x[r] = tok
            return x

        _run_lane(model, header, segs, code, logp=False)
        out += [(s0, seg) for (s0, _), seg in zip(segs, toks)]
    return out


# Lanes run in worker *processes* where the platform forks (Linux): a lane's step is ~100 NumPy calls and its
# coding a Python loop, so worker threads serialise on the interpreter lock (two threads coded 1.4x one thread's
# bytes on the project's 2-core CPU, two processes 1.84x). A forked worker inherits the model and the data and
# runs the same calls with one BLAS and one torch thread, so the bits are the same. Elsewhere: threads.
_job = None


def _run_job(i: int):
    return _job(i)


def _child_init() -> None:
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _use_processes() -> bool:
    import multiprocessing as mp
    import sys

    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


#: Tokens from which worker processes are used (starting one costs tens of milliseconds; below this, threads).
PROCESS_MIN_TOKENS = 16_384


def _map_lanes(job: Callable[[int], object], n_jobs: int, workers: int, n_tokens: int) -> list:
    """``[job(0), ..., job(n_jobs - 1)]``, computed by up to ``workers`` workers (in this process for one)."""
    global _job
    workers = min(workers, n_jobs)
    with _one_thread():
        if workers <= 1:
            return [job(i) for i in range(n_jobs)]
        if n_tokens >= PROCESS_MIN_TOKENS and _use_processes():
            import multiprocessing as mp
            import warnings
            from concurrent.futures import ProcessPoolExecutor

            _job = job
            try:
                with warnings.catch_warnings():  # Python 3.12+ warns about fork with threads; the workers use none
                    warnings.simplefilter("ignore", DeprecationWarning)
                    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"),
                                             initializer=_child_init) as pool:
                        return list(pool.map(_run_job, range(n_jobs)))
            finally:
                _job = None
        with ThreadPoolExecutor(workers, thread_name_prefix="lm-coder") as pool:
            return list(pool.map(job, range(n_jobs)))


# -- results -------------------------------------------------------------------------------------------------


@dataclass
class CompressionResult:
    """A compressed blob and what it cost. Sizes in bytes, bits as floats.

    ``ideal_bits``: ``sum(-log2 p)`` of the coded tokens under the model's float64 softmax (the loss, in bits, that
    the size is measured against); ``quantised_bits``: the same under the integer frequencies actually coded (the
    coder's own target). ``token_ids`` ``(n_tokens,)``, ``token_bits`` ``(n_tokens,)`` (each token's ``-log2 p``)
    and ``token_nbytes`` ``(n_tokens,)`` (bytes each stands for) are for per-token views."""

    blob: bytes
    header: BlobHeader
    header_bytes: int
    ideal_bits: float
    quantised_bits: float
    seconds: float
    token_ids: list[int] = field(repr=False)
    token_bits: np.ndarray = field(repr=False)
    token_nbytes: list[int] = field(repr=False)

    @property
    def n_bytes(self) -> int:
        return self.header.n_bytes

    @property
    def payload_bytes(self) -> int:
        return self.header.payload_len

    @property
    def bits_per_byte(self) -> float:
        """The whole blob (header included), in bits per original byte."""
        return 8 * len(self.blob) / max(self.n_bytes, 1)

    @property
    def payload_bits_per_byte(self) -> float:
        return 8 * self.payload_bytes / max(self.n_bytes, 1)

    @property
    def ideal_bits_per_byte(self) -> float:
        """``sum(-log2 p) / n_bytes``: the model's loss in bits per byte on these data, with this segmentation."""
        return self.ideal_bits / max(self.n_bytes, 1)

    @property
    def gap_bytes(self) -> float:
        """Payload size minus the ideal ``sum(-log2 p) / 8`` (the header not counted)."""
        return self.payload_bytes - self.ideal_bits / 8

    @property
    def kb_per_s(self) -> float:
        return self.n_bytes / 1000 / max(self.seconds, 1e-9)


# -- compress / decompress ------------------------------------------------------------------------------------


def _check_settings(model, segment_len, batch_size, total_bits) -> tuple[int, int, int]:
    block = int(model.config.block_size)
    limit = block if _start_id(model) >= 0 else block + 1
    seg = limit if segment_len is None else segment_len
    for name, v in (("segment_len", seg), ("batch_size", batch_size), ("total_bits", total_bits)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise SettingError(f"{name} must be an int, got {type(v).__name__}")
    if not 1 <= seg <= limit:
        raise SettingError(f"segment_len must be in [1, {limit}] for this model (context {block}), got {seg}")
    if not 1 <= batch_size <= 1 << 16:
        raise SettingError(f"batch_size must be in [1, 65536], got {batch_size}")
    V = int(model.config.vocab_size)
    lo = max(1, (2 * V - 1).bit_length())
    if not lo <= total_bits <= 30:
        raise SettingError(f"total_bits must be in [{lo}, 30] for a vocabulary of {V}, got {total_bits}")
    return int(seg), int(batch_size), int(total_bits)


def _check_parallel(lanes, workers) -> tuple[int, int]:
    for name, v in (("lanes", lanes), ("workers", workers)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise SettingError(f"{name} must be an int, got {type(v).__name__}")
    if not 1 <= lanes <= 1 << 16:
        raise SettingError(f"lanes must be in [1, 65536] (model calls per batch), got {lanes}")
    workers = default_workers() if workers is None else workers
    if not 1 <= workers <= 64:
        raise SettingError(f"workers must be in [1, 64] (workers coding streams at once), got {workers}")
    return int(lanes), int(workers)


def _probe_rows(n_tokens: int, segment_len: int, batch_size: int, lanes: int) -> int:
    """Rows of the first model call of the data (the probe runs in the same shape)."""
    return -(-min(batch_size, -(-n_tokens // segment_len)) // lanes) if n_tokens else 0


def compress_report(model, data: bytes, *, segment_len: int | None = None, batch_size: int = DEFAULT_BATCH,
                    total_bits: int = DEFAULT_TOTAL_BITS, lanes: int = DEFAULT_LANES,
                    workers: int | None = None) -> CompressionResult:
    """Compress ``data`` with ``model`` and say what it cost (see :class:`CompressionResult`).

    ``segment_len``: tokens per independent segment (default and maximum: the context); ``batch_size``: segments
    in flight together (the decoder must hold as many KV caches); ``lanes``: model calls per batch (each batch is
    cut into this many runs of segments, and lane ``j`` of every batch goes to stream ``j``, which ``workers``
    workers code at once; default ``workers``: :func:`default_workers`); ``total_bits``: the frequency tables'
    precision. All but ``workers`` are stored in the header, so :func:`decompress` needs
    only the model; ``workers`` changes the speed, never the bits.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UnsupportedInputError(f"data must be bytes, got {type(data).__name__} (encode text as UTF-8 first)")
    data = bytes(data)
    seg, batch, total_bits = _check_settings(model, segment_len, batch_size, total_bits)
    t0 = time.perf_counter()
    tokens = to_tokens(model.tokenizer, data)
    n = len(tokens)
    lanes, workers = _check_parallel(lanes, workers)
    start = _start_id(model)
    bits = np.zeros(n, dtype=np.float64)
    qbits = np.zeros(n, dtype=np.float64)
    with _inference(model):
        with _one_thread():
            probe = _probe(model, _probe_rows(n, seg, batch, lanes), total_bits, start)
        header = BlobHeader(str(getattr(model, "name", type(model).__name__)), model_fingerprint(model), probe,
                            torch.__version__, len(data), n, seg, batch, total_bits, start, 0, zlib.crc32(data),
                            lanes)
        tokens_np = np.asarray(tokens, dtype=np.int64)
        streams = _streams(header)
        coded = _map_lanes(lambda j: _encode_stream(model, header, streams[j], tokens_np), len(streams), workers, n)
    for _, pos, b, q in coded:
        bits[pos], qbits[pos] = b, q
    payload = _join_streams([c[0] for c in coded])
    header = _replace(header, payload_len=len(payload))
    head = header.to_bytes()
    seconds = time.perf_counter() - t0
    from workbench.tokenizers import ByteTokenizer

    if isinstance(model.tokenizer, ByteTokenizer):
        lengths = [1] * n
    else:
        lengths = [len(to_bytes(model.tokenizer, [t])) for t in tokens]
    return CompressionResult(head + payload, header, len(head), float(bits.sum()), float(qbits.sum()), seconds,
                             tokens, bits, lengths)


def _join_streams(streams: list[bytes]) -> bytes:
    """The payload: the length of every stream but the last (varints), then the streams."""
    return b"".join(_varint(len(x)) for x in streams[:-1]) + b"".join(streams)


def _split_streams(payload: bytes, n: int) -> list[bytes]:
    """:func:`_join_streams` inverted for ``n`` streams; a :class:`CorruptBlobError` for lengths that do not fit."""
    if n == 0:
        if payload:
            raise CorruptBlobError(f"the blob codes no tokens but has a payload of {len(payload)} bytes")
        return []
    r = _Reader(payload, 0)
    try:
        lengths = [r.varint() for _ in range(n - 1)]
    except TruncatedBlobError:
        raise CorruptBlobError("the blob's table of stream lengths runs past its payload") from None
    rest = len(payload) - r.pos - sum(lengths)
    if rest < 0:
        raise CorruptBlobError(f"the blob's streams add up to {sum(lengths)} bytes, more than its payload")
    out, pos = [], r.pos
    for length in lengths + [rest]:
        out.append(payload[pos : pos + length])
        pos += length
    return out


def _replace(h: BlobHeader, **kw) -> BlobHeader:
    from dataclasses import replace

    return replace(h, **kw)


def compress(model, data: bytes, *, segment_len: int | None = None, batch_size: int = DEFAULT_BATCH,
             total_bits: int = DEFAULT_TOTAL_BITS, lanes: int = DEFAULT_LANES, workers: int | None = None) -> bytes:
    """``data`` (any bytes) -> a blob that :func:`decompress` with the same model turns back into ``data``.

    >>> from workbench.models import load_pretrained
    >>> m = load_pretrained("docs-byte")
    >>> blob = compress(m, b"The for statement iterates over the items of a sequence.")
    >>> decompress(m, blob)
    b'The for statement iterates over the items of a sequence.'
    """
    return compress_report(model, data, segment_len=segment_len, batch_size=batch_size, total_bits=total_bits,
                           lanes=lanes, workers=workers).blob


def decompress(model, blob: bytes, *, workers: int | None = None) -> bytes:
    """A blob made by :func:`compress` -> the original bytes, or a :class:`BlobError` subclass: truncated,
    corrupted, made with another model (:class:`ModelMismatchError`), or on a machine whose arithmetic differs
    (:class:`MachineMismatchError`). Never returns bytes that fail the blob's CRC-32. ``workers``: workers that
    decode the blob's streams at once (speed only)."""
    header, offset = BlobHeader.parse(blob)
    _, workers = _check_parallel(1, workers)
    fp = model_fingerprint(model)
    name = str(getattr(model, "name", type(model).__name__))
    if fp != header.fingerprint:
        raise ModelMismatchError(f"the blob was made with model {header.model_name!r} (fingerprint "
                                 f"{header.fingerprint.hex()}), not with this model {name!r} ({fp.hex()}): "
                                 "decode it with the model that made it")
    try:
        seg, batch, total_bits = _check_settings(model, header.segment_len, header.batch_size, header.total_bits)
        lanes, _ = _check_parallel(header.lanes, 1)
    except SettingError as e:
        raise CorruptBlobError(f"the blob's header has settings this model cannot use: {e}") from None
    if header.start_id != _start_id(model) or (header.n_tokens == 0) != (header.n_bytes == 0):
        raise CorruptBlobError("the blob's header does not fit this model (start token or lengths)")
    n = header.n_tokens
    payload = bytes(blob)[offset:]
    stream_lanes = _streams(header)
    streams = _split_streams(payload, len(stream_lanes))
    with _inference(model):
        with _one_thread():
            probe = _probe(model, _probe_rows(n, seg, batch, lanes), total_bits, header.start_id)
        if probe != header.probe:
            raise MachineMismatchError(
                f"this machine computes other probabilities than the one that made the blob (probe {probe.hex()} "
                f"vs {header.probe.hex()}; torch {torch.__version__} here, {header.torch_version} there): "
                "decoding would give garbage. Decode on the machine (torch, BLAS, threads) that encoded it")
        decoded = _map_lanes(lambda j: _decode_stream(model, header, stream_lanes[j], streams[j]),
                             len(stream_lanes), workers, n)
    tokens = [0] * n
    for segments in decoded:
        for s0, seg in segments:
            tokens[s0 : s0 + len(seg)] = seg
    try:
        data = to_bytes(model.tokenizer, tokens)
    except (ValueError, TypeError):
        data = None
    if data is None or len(data) != header.n_bytes or zlib.crc32(data) != header.data_crc:
        raise CorruptBlobError("the decoded data fail the blob's CRC-32: the payload is corrupted (or this machine's "
                               "arithmetic differs from the encoder's in a way the probe did not catch)")
    return data


__all__ = ["compress", "decompress", "compress_report", "read_header", "BlobHeader", "CompressionResult",
           "to_tokens", "to_bytes", "model_fingerprint", "DataLabError"]
