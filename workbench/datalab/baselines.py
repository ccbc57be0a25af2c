"""Bits per byte of the shipped models as compressors, against gzip -9, bz2 -9, xz -9 (lzma) and zstd -19.

A model's size is the length of :func:`~workbench.datalab.compress.compress`'s blob (header included); its
``ideal`` is ``sum(-log2 p) / n_bytes``, the model's loss in bits per byte on the same bytes, which should sit next
to the validation loss the model was trained to (``model.meta["val_bpb"]``): bits per byte of a coder driven by a
model *is* that model's loss (the identity "Compression Represents Intelligence Linearly" builds on).

>>> t = compression_table(models=(), corpora={"abc": b"abc" * 100})
>>> [r.method for r in t.rows]
['gzip -9', 'bz2 -9', 'xz -9', 'zstd -19']
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from .compress import DEFAULT_BATCH, compress_report
from .errors import SettingError, UnsupportedInputError


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=19).compress(data)


#: the general-purpose compressors, each at its strongest common setting, as ``name -> compress(bytes) -> bytes``
BASELINES: dict[str, Callable[[bytes], bytes]] = {
    "gzip -9": lambda d: gzip.compress(d, compresslevel=9, mtime=0),
    "bz2 -9": lambda d: bz2.compress(d, compresslevel=9),
    "xz -9": lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, preset=9),
    "zstd -19": _zstd,
}


@dataclass
class CompressionRow:
    """One method on one corpus. ``size``: compressed bytes; for a model also ``ideal_bpb`` (its loss on these
    bytes, bits per byte), ``payload`` (blob without the header) and ``val_bpb`` (its training-time validation
    loss in bits per byte, None when unknown)."""

    method: str
    kind: str  # "model" or "baseline"
    corpus: str
    n_bytes: int
    size: int
    seconds: float
    ideal_bpb: float | None = None
    payload: int | None = None
    val_bpb: float | None = None

    @property
    def bits_per_byte(self) -> float:
        return 8 * self.size / max(self.n_bytes, 1)

    @property
    def kb_per_s(self) -> float:
        return self.n_bytes / 1000 / max(self.seconds, 1e-9)


@dataclass
class CompressionTable:
    """Rows of :class:`CompressionRow`, one per (method, corpus), in the order they were measured."""

    rows: list[CompressionRow] = field(default_factory=list)

    @property
    def corpora(self) -> list[str]:
        return list(dict.fromkeys(r.corpus for r in self.rows))

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))

    def row(self, method: str, corpus: str) -> CompressionRow:
        for r in self.rows:
            if r.method == method and r.corpus == corpus:
                return r
        raise KeyError(f"no row for {method!r} on {corpus!r} (methods {self.methods}, corpora {self.corpora})")

    def bits_per_byte(self, method: str, corpus: str) -> float:
        return self.row(method, corpus).bits_per_byte

    def to_text(self) -> str:
        """A plain-text table: bits per byte of each method (rows) on each corpus (columns)."""
        cs = self.corpora
        lines = [f"{'bits/byte':<18}" + "".join(f"{c[:22]:>24}" for c in cs)]
        for m in self.methods:
            cells = []
            for c in cs:
                try:
                    cells.append(f"{self.bits_per_byte(m, c):>24.3f}")
                except KeyError:
                    cells.append(f"{'-':>24}")
            lines.append(f"{m:<18}" + "".join(cells))
        return "\n".join(lines)


def held_out_docs() -> bytes:
    """The docs corpus's validation split (the last 10%, cut where the shipped models' training stopped)."""
    from workbench.models.make_pretrained import text_splits

    return text_splits()[1].encode("utf-8")


def python_source() -> bytes:
    """The last 10% of the Python standard-library source corpus (``load_corpus("python-code")``): text the docs
    models never saw, of another kind."""
    from workbench.data import load_corpus, train_val_split

    return train_val_split(load_corpus("python-code").encode("utf-8"), 0.1)[1]


def default_corpora(max_bytes: int | None = None) -> dict[str, bytes]:
    """``{"docs (held out)": ..., "python source": ...}``, each cut to its first ``max_bytes`` when given."""
    out = {"docs (held out)": held_out_docs(), "python source": python_source()}
    return {k: v[:max_bytes] if max_bytes else v for k, v in out.items()}


def baseline_rows(data: bytes, corpus: str = "data") -> list[CompressionRow]:
    """gzip, bz2, xz and zstd on ``data``: one row each."""
    rows = []
    for name, fn in BASELINES.items():
        t0 = time.perf_counter()
        size = len(fn(data))
        rows.append(CompressionRow(name, "baseline", corpus, len(data), size, time.perf_counter() - t0))
    return rows


def model_row(model, data: bytes, corpus: str = "data", batch_size: int = DEFAULT_BATCH) -> CompressionRow:
    """The model's blob size on ``data`` (see :func:`~workbench.datalab.compress.compress_report`)."""
    r = compress_report(model, data, batch_size=batch_size)
    name = str(getattr(model, "name", type(model).__name__))
    val = getattr(model, "meta", {}).get("val_bpb") if isinstance(getattr(model, "meta", None), dict) else None
    return CompressionRow(name, "model", corpus, len(data), len(r.blob), r.seconds, r.ideal_bits_per_byte,
                          r.payload_bytes, val)


def compression_table(models: Sequence = ("docs-byte", "docs-bpe", "docs-byte-draft", "docs-bpe-draft"),
                      corpora: Mapping[str, bytes] | None = None, *, max_bytes: int | None = None,
                      batch_size: int = DEFAULT_BATCH, progress: Callable[[str], None] | None = None
                      ) -> CompressionTable:
    """Every model (a shipped name or a model object) and every baseline on every corpus.

    ``corpora``: ``{name: bytes}`` (default :func:`default_corpora`, cut to ``max_bytes``). Models cost about
    ``n_bytes`` model steps spread over the batch, so ``max_bytes`` keeps a quick table quick. ``progress`` hears
    one line per finished row.
    """
    from workbench.models import load_pretrained

    if corpora is None:
        corpora = default_corpora(max_bytes)
    elif max_bytes:
        corpora = {k: v[:max_bytes] for k, v in corpora.items()}
    if not isinstance(corpora, Mapping) or not corpora:
        raise SettingError("corpora must be a non-empty mapping of name -> bytes")
    for k, v in corpora.items():
        if not isinstance(v, (bytes, bytearray)):
            raise UnsupportedInputError(f"corpus {k!r} must be bytes, got {type(v).__name__}")
    loaded = [load_pretrained(m) if isinstance(m, str) else m for m in models]
    table = CompressionTable()
    for corpus, data in corpora.items():
        data = bytes(data)
        for m in loaded:
            table.rows.append(model_row(m, data, corpus, batch_size))
            if progress:
                progress(f"{table.rows[-1].method} on {corpus}: {table.rows[-1].bits_per_byte:.3f} bits/byte")
        for row in baseline_rows(data, corpus):
            table.rows.append(row)
    return table
