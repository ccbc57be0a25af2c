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
* every tensor argument is run in a copy with 4 KiB of canary bytes on each side, a pattern that
  reads as NaN in float32/float64: reads past the ends give NaN, writes past them raise
  :class:`EmulationError` (unless they happen to write the pattern itself);
* arguments are checked against the kernel's C signature (count, byte size, pointer / integer /
  floating point) and the launch geometry against CUDA's limits;
* the code is built with UBSan's array-bounds, alignment, shift and signed-overflow checks, handled
  by the emulator itself: each one stops the launch with an :class:`EmulationError` naming the
  thread (every time, not once per process as with the UBSan runtime).

What it cannot say: anything about the hardware (timings, real races between warps, the PTX
itself, which ``nvcc -ptx`` and NVRTC check). Results can differ from a GPU's in the last bits:
CPU ``expf``/``logf`` round differently from CUDA's, g++ here does not fuse multiply-adds where
nvcc does, and the emulated ``mma`` sums in double and rounds once. Equal tokens in the emulator
therefore make equal tokens on a GPU likely, not certain (the GPU tests allow rare ties).

The launchers of :mod:`workbench.kernels.cupy_ops` send CPU tensors here (this module stands in
for ``cupy.RawModule``), so the same launch code runs; the usual way in is the back-end::

    kernels.set_backend("emulator")                  # or backend="emulator" per call
    out = kernels.attention(q, k, v)                 # q, k, v: CPU tensors
    out, _ = cupy_ops.attention(q, k, v, impl="mma")  # a chosen kernel, CPU float16 tensors

Builds are cached (keyed by the sources, flags and compiler) under ``$WORKBENCH_CACHE`` or
``~/.cache/lm-workbench``; the first build of attention.cu takes about 5 s.

Lesson: ``notebooks/05_gpu_kernels.ipynb`` (2. The fused attention kernel).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..backend import KernelError

__all__ = ["EmulationError", "available", "build", "load", "kernel_names", "EmulatedModule"]

# Compile flags. Frame pointers: the scheduler identifies a synchronisation by its call path, so no
# pass may copy a call to a barrier (jump threading, cross-jumping, tail merging: a correct kernel would
# seem to wait at two barriers) or turn it into a jump (sibling calls: a divergent one would seem to
# wait at one). Hidden visibility and no GNU-unique symbols: each library keeps its own statics (its
# __shared__ memory) even when variants of one kernel are loaded side by side. The sanitizer checks call
# the emulator's own handlers (cuda_on_cpu.h); the link step adds no UBSan runtime.
CXX_FLAGS = ("-std=c++20", "-O2", "-fPIC", "-Wno-unknown-pragmas", "-fno-omit-frame-pointer",
             "-fno-thread-jumps", "-fno-optimize-sibling-calls", "-fno-crossjumping", "-fno-tree-tail-merge",
             "-fno-gnu-unique", "-fvisibility=hidden", "-fvisibility-inlines-hidden",
             "-fsanitize=bounds,alignment,shift,signed-integer-overflow")
LINK_FLAGS = ("-shared", "-Wl,--no-undefined")
PAD = 4096          # canary bytes on each side of every buffer argument
_ALIGN = 256        # copies keep the original pointer's address modulo this
# Canary bytes F7 7F repeated: NaN as float16 and bfloat16 (0x7FF7), float32 (0x7FF77FF7) and float64,
# and no small integer (-1 = 0xFF... written past the end is caught).
_CANARY = np.frombuffer(bytes([0xF7, 0x7F]), dtype=np.uint8)
_memcmp = ctypes.CDLL(None).memcmp
_memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_LAUNCH = threading.Lock()   # the emulator's launch state is process-wide: one launch at a time


class EmulationError(KernelError, RuntimeError):
    """The emulated kernel broke a CUDA rule, wrote out of bounds, or could not be built."""


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++")


def _header() -> Path:
    return Path(str(resources.files("workbench.kernels.emulator").joinpath("cuda_on_cpu.h")))


def _compile(cxx: str, main: Path, out: Path) -> subprocess.CompletedProcess:
    """Compile ``main`` with the emulator's flags, then link it into the shared library ``out``."""
    obj = out.with_suffix(".o")
    res = subprocess.run([cxx, *CXX_FLAGS, "-I", str(main.parent), "-c", str(main), "-o", str(obj)],
                         capture_output=True, text=True)
    if res.returncode == 0:
        res = subprocess.run([cxx, *LINK_FLAGS, str(obj), "-o", str(out)], capture_output=True, text=True)
    return res


_PROBE = 'extern "C" __global__ void wb_probe(float* x) { __syncthreads(); x[threadIdx.x] += 1.0f; }\n'


@lru_cache(maxsize=None)
def available() -> tuple[bool, str]:
    """``(ok, reason)``: can this machine build emulated kernels (g++ with C++20 and ``_Float16``, nm)?"""
    cxx = _compiler()
    if cxx is None:
        return False, "no C++ compiler: install g++ (12 or newer) to run the kernels on the CPU"
    if shutil.which("nm") is None:
        return False, "nm (binutils) not found"
    with tempfile.TemporaryDirectory() as d:
        main = Path(d) / "main.cpp"
        main.write_text(f'#include "{_header()}"\n{_PROBE}WB_EMU_EXPORT(WB_EMU_KERNEL(wb_probe))\n')
        res = _compile(cxx, main, Path(d) / "probe.so")
    if res.returncode != 0:
        return False, f"{cxx} cannot build the emulator (needs C++20 and _Float16): {res.stderr[-400:]}"
    return True, f"{cxx} builds the CPU emulator"


def _private_dir(path: Path) -> bool:
    """Make ``path`` (mode 0700) or accept it if it exists, belongs to this user and no one else can write it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022 and os.access(path, os.W_OK)


def _cache_dir() -> Path:
    """Where built libraries are kept: a directory only this user can write (the libraries are loaded
    into the process). Falls back to a per-user directory under the temporary directory."""
    root = os.environ.get("WORKBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lm-workbench")
    first = Path(root) / "kernel-emulator"
    for path in (first, Path(tempfile.gettempdir()) / f"lm-workbench-{os.getuid()}" / "kernel-emulator"):
        if _private_dir(path.parent) and _private_dir(path):
            if path is not first:
                warnings.warn(f"{first} is not a private writable directory (others may write it, or it is "
                              f"read-only): emulator builds go to {path}", stacklevel=3)
            return path
    raise EmulationError(f"no private writable directory for emulator builds (tried {root} and the "
                         "temporary directory)")


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
    key = hashlib.sha256("\0".join([source, _header().read_text(), " ".join(CXX_FLAGS + LINK_FLAGS), version])
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
        res = _compile(cxx, Path(d) / "main.cpp", tmp)
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
        n = lib.wb_emu_kernel_n_args(index)
        self.arg_sizes = [lib.wb_emu_kernel_arg_size(index, a) for a in range(n)]
        self.arg_kinds = [chr(lib.wb_emu_kernel_arg_kind(index, a)) for a in range(n)]

    def _geometry(self, grid, block) -> tuple[tuple, tuple]:
        """Grid and block as 3-tuples, within CUDA's limits."""
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        block = tuple(int(b) for b in block) + (1,) * (3 - len(block))
        if len(grid) != 3 or not (1 <= grid[0] < 2 ** 31 and 1 <= grid[1] <= 65535 and 1 <= grid[2] <= 65535):
            raise EmulationError(f"{self.name}: grid {grid} outside CUDA's limits (x < 2**31, y, z <= 65535, all >= 1)")
        if (len(block) != 3 or min(block) < 1 or block[0] > 1024 or block[1] > 1024 or block[2] > 64
                or block[0] * block[1] * block[2] > 1024):
            raise EmulationError(f"{self.name}: block {block} outside CUDA's limits (x, y <= 1024, z <= 64, "
                                 "at most 1024 threads)")
        return grid, block

    def _marshal(self, i: int, a, box: _Sandbox) -> bytes:
        """The bytes of argument ``i`` as the C parameter holds them, after checking its kind and size."""
        kind, size = self.arg_kinds[i], self.arg_sizes[i]
        where = f"{self.name} argument {i}"
        if isinstance(a, torch.Tensor):
            if kind != "p":
                raise EmulationError(f"{where}: a tensor given for a non-pointer parameter")
            if a.is_cuda:
                raise EmulationError(f"{where}: the emulator runs on CPU tensors")
            return np.array([box.pointer(a, i)], dtype=np.uint64).tobytes()
        a = np.asarray(a)
        if kind == "p" and not (a.dtype.kind in "iu" and a.ndim == 0 and int(a) == 0):
            raise EmulationError(f"{where}: a pointer parameter takes a tensor or a null (0), got {a!r}")
        if kind == "f" and a.dtype.kind != "f" or kind == "i" and a.dtype.kind not in "iub":
            raise EmulationError(f"{where}: {a.dtype} given for a {'floating-point' if kind == 'f' else 'integer'} "
                                 "parameter")
        raw = a.tobytes()
        if len(raw) != size:
            raise EmulationError(f"{where}: {len(raw)} bytes given for a {size}-byte parameter ({a.dtype})")
        return raw

    def __call__(self, grid, block, args, **kwargs):
        if kwargs:
            raise EmulationError(f"{self.name}: launch options {sorted(kwargs)} are not emulated")
        grid, block = self._geometry(grid, block)
        if len(args) != len(self.arg_sizes):
            raise EmulationError(f"{self.name} takes {len(self.arg_sizes)} arguments, got {len(args)}")
        with _LAUNCH, _Sandbox() as box:
            holders = [ctypes.create_string_buffer(raw, len(raw))
                       for raw in (self._marshal(i, a, box) for i, a in enumerate(args))]
            argv = (ctypes.c_void_p * max(1, len(holders)))(*(ctypes.addressof(h) for h in holders))
            err = ctypes.create_string_buffer(2048)
            rc = self.module.lib.wb_emu_launch(self.index, (ctypes.c_uint * 3)(*grid),
                                               (ctypes.c_uint * 3)(*block), argv, err, len(err))
            if rc != 0:
                raise EmulationError(f"{self.name}: {err.value.decode(errors='replace')}")
            box.check(self.name)


class _Sandbox(contextlib.AbstractContextManager):
    """Copies of the tensors' storages with canary bytes around them. After a clean launch, the storages the
    kernel changed are written back (only those: inputs, possibly read-only, are left alone)."""

    def __init__(self):
        self.copies = {}   # storage pointer -> (raw bytes, canary pattern, start offset, nbytes, arg index)

    def pointer(self, t: torch.Tensor, arg: int) -> int:
        st = t.untyped_storage()
        sp, n = st.data_ptr(), st.nbytes()
        if sp not in self.copies:
            size = n + 2 * PAD + _ALIGN
            pattern = np.resize(_CANARY, size)
            raw = pattern.copy()
            base = raw.ctypes.data
            start = PAD + (sp - base - PAD) % _ALIGN
            ctypes.memmove(base + start, sp, n)
            self.copies[sp] = (raw, pattern, start, n, arg)
        raw, _, start, _, _ = self.copies[sp]
        return raw.ctypes.data + start + (t.data_ptr() - sp)

    def check(self, name: str):
        for sp, (raw, pattern, start, n, arg) in self.copies.items():
            before = np.flatnonzero(raw[:start] != pattern[:start])
            after = np.flatnonzero(raw[start + n:] != pattern[start + n:])
            if before.size or after.size:
                where = (f"{start - before[0]} bytes before" if before.size
                         else f"{after[-1] + 1} bytes past the end of")
                raise EmulationError(f"{name} wrote outside argument {arg}: up to {where} its buffer")
        for sp, (raw, _, start, n, _) in self.copies.items():
            if n and _memcmp(sp, raw.ctypes.data + start, n) != 0:
                ctypes.memmove(sp, raw.ctypes.data + start, n)

    def __exit__(self, *exc):
        self.copies.clear()
        return None


class EmulatedModule:
    """A ``.cu`` text built for the CPU: ``get_function(name)`` like ``cupy.RawModule``."""

    def __init__(self, source: str, tag: str = "kernel"):
        path = build(source, tag)
        self.path = str(path)
        self.lib = ctypes.CDLL(self.path)
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
