"""Run this package's CUDA kernels (``cu/*.cu``) on a CPU, by compiling their own source with g++.

Where no GPU is lent, this still executes the kernels' real code: the same indexing, tiling,
barriers, warp shuffles and tensor-core fragment bookkeeping that the GPU runs, with the few
inline PTX instructions (16-bit conversions, ``mma.sync`` m16n8k16, ``ldmatrix``) implemented in
C++ from the PTX ISA's fragment layouts (``cuda_on_cpu.h``). It is slow (every CUDA thread is a
fiber, a block's threads take turns at each barrier) and strict:

* a ``__syncthreads`` or warp collective that not every thread reaches, or reaches at different
  call sites, stops the launch with :class:`EmulationError` instead of hanging;
* shared memory is filled with 0xFF bytes (NaN floats) before every block, so a kernel that reads
  it before writing shows NaNs;
* every tensor argument is run in a copy with 4 KiB of 0xFF bytes on each side: reads past the
  ends give NaN, writes past them raise :class:`EmulationError`;
* the code is built with UBSan's array-bounds, alignment, shift and signed-overflow checks, and a
  report becomes an :class:`EmulationError`.

What it cannot say: anything about the hardware (timings, real races between warps, the PTX
itself, which ``nvcc -ptx`` and NVRTC check), and CPU ``expf``/``logf`` round slightly
differently from CUDA's.

The launchers of :mod:`workbench.kernels.cupy_ops` send CPU tensors here (this module stands in
for ``cupy.RawModule``), so the same launch code runs; the usual way in is the back-end::

    kernels.set_backend("emulator")                  # or backend="emulator" per call
    out = kernels.attention(q, k, v)                 # q, k, v: CPU tensors
    out, _ = cupy_ops.attention(q, k, v, impl="mma")  # a chosen kernel, CPU float16 tensors

Builds are cached (keyed by the sources, flags and compiler) under ``$WORKBENCH_CACHE`` or
``~/.cache/lm-workbench``; the first build of attention.cu takes about 5 s.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..backend import KernelError

__all__ = ["EmulationError", "available", "build", "load", "kernel_names", "EmulatedModule"]

CXX_FLAGS = ("-std=c++20", "-O2", "-fPIC", "-shared", "-Wno-unknown-pragmas",
             "-fsanitize=bounds,alignment,shift,signed-integer-overflow")
PAD = 4096          # canary bytes on each side of every buffer argument
_ALIGN = 256        # copies keep the original pointer's address modulo this


class EmulationError(KernelError, RuntimeError):
    """The emulated kernel broke a CUDA rule, wrote out of bounds, or could not be built."""


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++")


def _header() -> Path:
    return Path(str(resources.files("workbench.kernels.emulator").joinpath("cuda_on_cpu.h")))


@lru_cache(maxsize=None)
def available() -> tuple[bool, str]:
    """``(ok, reason)``: can this machine build emulated kernels (g++ with C++20, nm, UBSan)?"""
    cxx = _compiler()
    if cxx is None:
        return False, "no C++ compiler: install g++ (12 or newer) to run the kernels on the CPU"
    if shutil.which("nm") is None:
        return False, "nm (binutils) not found"
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "probe.cpp"
        src.write_text('#include <bit>\nextern "C" int f(float x) { return std::bit_cast<int>(x) '
                       '+ (int)(float)(_Float16)x; }\n')
        res = subprocess.run([cxx, *CXX_FLAGS, str(src), "-o", str(Path(d) / "probe.so")],
                             capture_output=True, text=True)
    if res.returncode != 0:
        return False, f"{cxx} cannot build the emulator (needs C++20, _Float16, UBSan): {res.stderr[-400:]}"
    return True, f"{cxx} builds the CPU emulator"


def _cache_dir() -> Path:
    """Where built libraries are kept; the temporary directory when the home directory is read-only."""
    root = os.environ.get("WORKBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lm-workbench")
    for path in (Path(root) / "kernel-emulator", Path(tempfile.gettempdir()) / "lm-workbench-kernel-emulator"):
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    raise EmulationError(f"no writable directory for emulator builds (tried {root} and the temporary directory)")


def kernel_names(source: str) -> list[str]:
    """The ``extern "C" __global__`` kernels a ``.cu`` text defines, directly or through
    entry macros (``#define M(NAME, ...) extern "C" __global__ ... NAME(``)."""
    names = re.findall(r'extern "C" __global__ void (?:__launch_bounds__\([^)]*\)\s*)?(\w+)\s*\(', source)
    names = [n for n in names if n != "NAME"]
    for macro in re.findall(r"#define (\w+)\(NAME\b[^\n]*\\\n\s*extern \"C\" __global__", source):
        names += re.findall(r"^" + macro + r"\((\w+)\s*,", source, re.M)
    return names


def build(source: str, tag: str = "kernel") -> Path:
    """Compile a ``.cu`` text for the CPU emulator; returns the shared library (cached)."""
    ok, reason = available()
    if not ok:
        raise EmulationError(reason)
    names = kernel_names(source)
    if not names:
        raise EmulationError(f"no extern \"C\" __global__ kernels found in {tag}")
    cxx = _compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([source, _header().read_text(), " ".join(CXX_FLAGS), version])
                         .encode()).hexdigest()[:20]
    lib = _cache_dir() / f"{tag}-{key}.so"
    if lib.exists():
        return lib
    main = (f'#include "{_header()}"\n#include "{tag}.cu"\n'
            f"WB_EMU_EXPORT({', '.join(f'WB_EMU_KERNEL({n})' for n in names)})\n")
    with tempfile.TemporaryDirectory(dir=_cache_dir()) as d:
        (Path(d) / f"{tag}.cu").write_text(source)
        (Path(d) / "main.cpp").write_text(main)
        tmp = Path(d) / "out.so"
        res = subprocess.run([cxx, *CXX_FLAGS, f"-ffile-prefix-map={d}/=", "-I", d, str(Path(d) / "main.cpp"),
                              "-o", str(tmp)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise EmulationError(f"g++ could not build {tag} for the CPU emulator:\n{res.stderr[-3000:]}")
        os.replace(tmp, lib)   # atomic: a half-written library never sits at the cached name
    return lib


class EmulatedKernel:
    """One kernel of an :class:`EmulatedModule`, called like a CuPy ``RawKernel``:
    ``kernel(grid, block, args)`` with torch tensors (or stand-in arrays) and numpy scalars."""

    def __init__(self, module: EmulatedModule, index: int, name: str):
        self.module, self.index, self.name = module, index, name
        lib = module.lib
        self.arg_sizes = [lib.wb_emu_kernel_arg_size(index, a) for a in range(lib.wb_emu_kernel_n_args(index))]

    def __call__(self, grid, block, args, **kwargs):
        if kwargs:
            raise EmulationError(f"{self.name}: launch options {sorted(kwargs)} are not emulated")
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        block = tuple(int(b) for b in block) + (1,) * (3 - len(block))
        if len(args) != len(self.arg_sizes):
            raise EmulationError(f"{self.name} takes {len(self.arg_sizes)} arguments, got {len(args)}")
        with _Sandbox() as box:
            holders = []
            for i, (a, size) in enumerate(zip(args, self.arg_sizes)):
                if isinstance(a, torch.Tensor):
                    if a.is_cuda:
                        raise EmulationError(f"{self.name} argument {i}: the emulator runs on CPU tensors")
                    raw = np.array([box.pointer(a, i)], dtype=np.uint64).tobytes()
                else:
                    raw = np.asarray(a).tobytes()
                if len(raw) != size:
                    raise EmulationError(f"{self.name} argument {i}: {len(raw)} bytes given for a "
                                         f"{size}-byte parameter ({type(a).__name__})")
                holders.append(ctypes.create_string_buffer(raw, len(raw)))
            argv = (ctypes.c_void_p * max(1, len(holders)))(*(ctypes.addressof(h) for h in holders))
            err = ctypes.create_string_buffer(2048)
            with _sanitizer_reports(self.name):
                rc = self.module.lib.wb_emu_launch(self.index, (ctypes.c_uint * 3)(*grid),
                                                   (ctypes.c_uint * 3)(*block), argv, err, len(err))
            if rc != 0:
                raise EmulationError(f"{self.name}: {err.value.decode(errors='replace')}")
            box.check(self.name)


@contextlib.contextmanager
def _sanitizer_reports(kernel: str):
    """UBSan writes its reports to file descriptor 2 (its report-path setting is not honoured for them
    here): catch fd 2 during a launch, raise on a report, pass anything else through."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    if "runtime error:" in text:
        raise EmulationError(f"{kernel}: UBSan report:\n{text[-3000:]}")
    if text:
        os.write(2, text.encode())


class _Sandbox(contextlib.AbstractContextManager):
    """Copies of the tensors' storages with canary bytes around them; written back on success."""

    def __init__(self):
        self.copies = {}   # storage pointer -> (raw array, start offset, storage, nbytes, arg index)

    def pointer(self, t: torch.Tensor, arg: int) -> int:
        st = t.untyped_storage()
        sp, n = st.data_ptr(), st.nbytes()
        if sp not in self.copies:
            raw = np.full(n + 2 * PAD + _ALIGN, 0xFF, dtype=np.uint8)
            base = raw.ctypes.data
            start = PAD + (sp - base - PAD) % _ALIGN
            ctypes.memmove(base + start, sp, n)
            self.copies[sp] = (raw, start, n, arg)
        raw, start, _, _ = self.copies[sp]
        return raw.ctypes.data + start + (t.data_ptr() - sp)

    def check(self, name: str):
        for sp, (raw, start, n, arg) in self.copies.items():
            before = np.flatnonzero(raw[:start] != 0xFF)
            after = np.flatnonzero(raw[start + n:] != 0xFF)
            if before.size or after.size:
                where = (f"{start - before[0]} bytes before" if before.size
                         else f"{after[-1] + 1} bytes past the end of")
                raise EmulationError(f"{name} wrote outside argument {arg}: up to {where} its buffer")
        for sp, (raw, start, n, _) in self.copies.items():
            ctypes.memmove(sp, raw.ctypes.data + start, n)

    def __exit__(self, *exc):
        self.copies.clear()
        return None


class EmulatedModule:
    """A ``.cu`` text built for the CPU: ``get_function(name)`` like ``cupy.RawModule``."""

    def __init__(self, source: str, tag: str = "kernel"):
        path = build(source, tag)
        self.lib = ctypes.CDLL(str(path))
        lib = self.lib
        lib.wb_emu_kernel_name.restype = ctypes.c_char_p
        lib.wb_emu_add_shared.argtypes = [ctypes.c_void_p, ctypes.c_long]
        lib.wb_emu_launch.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        self.kernels = {lib.wb_emu_kernel_name(i).decode(): i for i in range(lib.wb_emu_n_kernels())}
        self.shared = self._register_shared(path)

    def _register_shared(self, path: Path) -> dict[str, int]:
        """Find the kernels' ``__shared__`` variables in the symbol table (the emulator makes them
        function-local statics: data symbols named ``_ZZ...``, outside its own namespace and std),
        so that they can be filled with stale bytes before each block."""
        out = subprocess.run(["nm", "--defined-only", "-S", str(path)], capture_output=True,
                             text=True, check=True).stdout
        table, shared = {}, {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                size = int(parts[1], 16) if len(parts) == 4 else 0
                table[parts[-1]] = (int(parts[0], 16), size, parts[-2])
        anchor = ctypes.cast(self.lib.wb_emu_n_kernels, ctypes.c_void_p).value
        base = anchor - table["wb_emu_n_kernels"][0]
        for name, (addr, size, kind) in table.items():
            if (name.startswith("_ZZ") and kind in "bBdDuvV" and size > 0
                    and not name.startswith(("_ZZN6wb_emu", "_ZZNSt", "_ZZSt"))):
                self.lib.wb_emu_add_shared(base + addr, size)
                shared[name] = size
        return shared

    def get_function(self, name: str) -> EmulatedKernel:
        if name not in self.kernels:
            raise EmulationError(f"no kernel {name!r}; this module has {sorted(self.kernels)}")
        return EmulatedKernel(self, self.kernels[name], name)


@lru_cache(maxsize=8)
def load(source: str, tag: str = "kernel") -> EmulatedModule:
    """The emulated module for a ``.cu`` text (built and loaded once per process)."""
    return EmulatedModule(source, tag)
