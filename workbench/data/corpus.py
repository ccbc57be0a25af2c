"""Embedded corpora that need no download: CPython's own documentation text and standard library source.

Lesson: ``notebooks/00_tour.ipynb`` (Train your own micro model).
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

EMBEDDED = ("python-docs", "python-code")

# A fixed, ordered selection of pure-Python standard library modules (present in CPython 3.10+),
# so "python-code" is the same text wherever the same CPython version runs.
_CODE_MODULES = (
    "abc.py", "argparse.py", "base64.py", "bisect.py", "calendar.py", "colorsys.py", "contextlib.py",
    "copy.py", "csv.py", "dataclasses.py", "difflib.py", "enum.py", "fnmatch.py", "fractions.py",
    "functools.py", "glob.py", "gzip.py", "heapq.py", "hmac.py", "inspect.py", "ipaddress.py",
    "keyword.py", "linecache.py", "locale.py", "numbers.py", "operator.py", "optparse.py",
    "pprint.py", "queue.py", "random.py", "sched.py", "secrets.py", "selectors.py", "shlex.py",
    "shutil.py", "statistics.py", "string.py", "textwrap.py", "threading.py", "timeit.py",
    "tokenize.py", "trace.py", "types.py", "typing.py", "uuid.py", "warnings.py", "weakref.py",
    "zipfile.py",
)


class CorpusError(ValueError):
    """A corpus that cannot be loaded: unknown name, missing file, or bytes that are not UTF-8."""


def _python_docs() -> str:
    from pydoc_data.topics import topics

    # Sorted by topic name so the text does not depend on dict order.
    return "\n\n".join(topics[k].strip() for k in sorted(topics)) + "\n"


def _python_code() -> str:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in _CODE_MODULES:
        path = stdlib / name
        if path.exists():  # a module removed in some future CPython is skipped, not fatal
            parts.append(f"# ---- {name} ----\n" + _read_utf8(path))
    if not parts:
        raise CorpusError(f"no standard library source found under {stdlib}")
    return "\n".join(parts)


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"{path} is not UTF-8: byte 0x{data[e.start]:02x} at byte offset {e.start} "
            f"cannot be decoded ({e.reason})"
        ) from None


def load_corpus(name_or_path: str | os.PathLike) -> str:
    """Return corpus text: ``"python-docs"``, ``"python-code"``, or a path to a UTF-8 text file.

    >>> len(load_corpus("python-docs")) > 100_000
    True
    """
    if isinstance(name_or_path, str) and name_or_path in EMBEDDED:
        return _python_docs() if name_or_path == "python-docs" else _python_code()
    path = Path(name_or_path)
    if not path.exists():
        raise CorpusError(
            f"no corpus named {str(name_or_path)!r}: use one of {list(EMBEDDED)} or a path to an existing UTF-8 file"
        )
    if path.is_dir():
        raise CorpusError(f"{path} is a directory; give a path to a UTF-8 text file")
    return _read_utf8(path)


def train_val_split(data, val_fraction: float = 0.1):
    """Split a sequence (text, list of ids or a 1-D tensor) into (train, val): the last ``val_fraction`` is validation.

    Deterministic and contiguous, so no validation text leaks into training windows.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(data)
    if n < 2:
        raise ValueError(f"need at least 2 items to split, got {n}")
    cut = min(max(1, int(round(n * (1.0 - val_fraction)))), n - 1)
    return data[:cut], data[cut:]
