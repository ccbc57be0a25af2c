"""Run scipy's L-BFGS-B on one BLAS thread.

``scipy.optimize.minimize(method="L-BFGS-B")`` calls BLAS on vectors of five numbers at every iteration. A
multi-threaded OpenBLAS wakes its thread pool for each of those calls: measured on a busy 2-core machine
(scipy 1.17, OpenBLAS 0.3.31) that cost about 4 ms per iteration against 0.09 ms on one thread, so a plain
loop of scipy fits over 243 starts took 56 s instead of 1.3 s. :func:`single_blas_thread` sets every loaded
OpenBLAS to one thread for the duration of a block and restores the previous count afterwards (it is
process-wide while it lasts). Where no OpenBLAS is found (another BLAS, not Linux) it does nothing.

Lesson: ``notebooks/04_scaling_laws.ipynb``.
"""
from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager

_GET = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
        "openblas_get_num_threads")
_SET = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
        "openblas_set_num_threads")
_LOCK = threading.RLock()
_DEPTH = 0
_SAVED: list = []


_LIBS: list | None = None


def _openblas_libs() -> list[tuple]:
    """(get, set) function pairs of every OpenBLAS mapped into this process (looked up once)."""
    global _LIBS
    if _LIBS is None:
        _LIBS = _find_openblas()
    return _LIBS


def _find_openblas() -> list[tuple]:
    try:
        with open("/proc/self/maps") as fh:
            fields = [line.split() for line in fh]
        paths = {f[-1] for f in fields if len(f) >= 6 and "openblas" in os.path.basename(f[-1]).lower()
                 and ".so" in os.path.basename(f[-1])}
    except OSError:
        return []
    out = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0))   # only libraries already loaded
        except OSError:
            continue
        get = next((getattr(lib, n) for n in _GET if hasattr(lib, n)), None)
        set_ = next((getattr(lib, n) for n in _SET if hasattr(lib, n)), None)
        if get is not None and set_ is not None:
            get.restype, set_.restype = ctypes.c_int, None
            set_.argtypes = [ctypes.c_int]
            out.append((get, set_))
    return out


@contextmanager
def single_blas_thread():
    """Within the block every loaded OpenBLAS runs on one thread (nested blocks are fine)."""
    global _DEPTH, _SAVED
    with _LOCK:
        if _DEPTH == 0:
            _SAVED = []
            for get, set_ in _openblas_libs():
                n = int(get())
                _SAVED.append((set_, n))
                if n != 1:
                    set_(1)
        _DEPTH += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH -= 1
            if _DEPTH == 0:
                for set_, n in _SAVED:
                    if n != 1:
                        set_(n)
                _SAVED = []
