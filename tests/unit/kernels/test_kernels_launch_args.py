"""The CuPy launchers pass arguments that match the kernels' C signatures, checked without a GPU.

CPU tensors take the launchers' emulator route (the device index is ``EMULATED``); a stand-in for
the emulator's module records each launch instead of running it. The recorded arguments are
compared, position by position, with the parameter lists parsed from the ``.cu`` sources (count,
scalar widths, pointer element types), and the launch geometry with ``__launch_bounds__``. A
mismatch here would be silent memory corruption on a GPU. (The emulator itself checks argument
sizes too; this checks types.)
"""
import re
import sys
import types

import numpy as np
import pytest
import torch

from workbench import kernels
from workbench.kernels import cupy_ops, emulator


# ---------------------------------------------------------------- signatures from the sources
def _params(plist: str, T: str | None = None):
    out = []
    for p in plist.replace("\\", " ").split(","):
        p = " ".join(p.split())
        if T is not None:
            p = re.sub(r"\bT\b", T, p)
        p = p.replace("__restrict__", "").replace("const ", "").strip()
        ctype = p.rsplit(" ", 1)[0].replace(" *", "*").strip()
        if p.split()[-1].startswith("*"):
            ctype += "*"
        out.append(" ".join(ctype.split()))
    return out


def kernel_signatures():
    sigs = {}
    att = kernels.kernel_source("attention.cu")
    for macro, tparam in (("WB_ATTN_ENTRY", True), ("WB_MMA_ENTRY", False)):
        body = re.search(r"#define " + macro + r"\(([^)]*)\)(.*?)\{", att, re.S)
        plist = re.search(r"NAME\((.*)\)", body.group(2), re.S).group(1)
        bounds = re.search(r"__launch_bounds__\(([^)]*)\)", body.group(2)).group(1)
        for m in re.finditer(macro + r"\((wb_\w+),\s*(\w+),\s*(\d+)(?:,\s*(\d+))?\)", att):
            name, T, D, BM = m.groups()
            threads = int(BM) * 4 if "BM" in bounds else int(bounds)
            sigs[name] = (_params(plist, T if tparam else None), threads)
    smp = kernels.kernel_source("sampling.cu")
    for m in re.finditer(r'extern "C" __global__ void __launch_bounds__\((\w+)\) (\w+)\((.*?)\)\s*\{',
                         smp, re.S):
        bounds, name, plist = m.groups()
        plist = re.sub(r"//[^\n]*", "", plist)
        sigs[name] = (_params(plist), 1024 if bounds == "WB_THREADS" else int(bounds))
    return sigs


SIGS = kernel_signatures()

SCALAR = {"int": np.int32, "long long": np.int64, "float": np.float32,
          "unsigned long long": np.uint64}
POINTEE = {"float*": {torch.float32}, "int*": {torch.int32}, "long long*": {torch.int64},
           "unsigned short*": {torch.int16}, "wb_f16*": {torch.int16}, "wb_bf16*": {torch.int16}}


# ---------------------------------------------------------------- a recording stand-in
class _Fn:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def __call__(self, grid, block, args, **kw):
        assert not kw, f"unexpected launch keywords {kw}"
        self.log.append((self.name, grid, block, args))


@pytest.fixture
def launches(monkeypatch):
    log = []

    class Module:
        def __init__(self, code, tag):
            self.code = code

        def get_function(self, name):
            assert re.search(r"\b" + name + r"\b", self.code), f"{name} is not in the source"
            return _Fn(name, log)

    monkeypatch.setattr(emulator, "load", Module)
    for f in (cupy_ops._module, cupy_ops._function, cupy_ops._external_stream):
        f.cache_clear()
    yield log
    for f in (cupy_ops._module, cupy_ops._function, cupy_ops._external_stream):
        f.cache_clear()


def check_launch(entry):
    name, grid, block, args = entry
    params, threads = SIGS[name]
    assert len(args) == len(params), f"{name}: {len(args)} args for {len(params)} parameters"
    for i, (a, ctype) in enumerate(zip(args, params)):
        where = f"{name} argument {i} ({ctype})"
        if ctype.endswith("*"):
            if isinstance(a, np.uint64):
                assert int(a) == 0, f"{where}: a non-null raw integer"
            else:
                assert isinstance(a, torch.Tensor), f"{where}: got {type(a).__name__}"
                assert a.dtype in POINTEE[ctype], f"{where}: tensor of {a.dtype}"
        else:
            assert type(a) is SCALAR[ctype], f"{where}: got {type(a).__name__}"
    assert block == (threads,), f"{name}: block {block}, kernel is built for {threads} threads"
    assert all(isinstance(g, int) and g >= 1 for g in grid)
    return dict(zip(range(len(args)), args))


# ---------------------------------------------------------------- the launchers
def test_signatures_were_parsed():
    assert len([n for n in SIGS if n.startswith("wb_attn_fwd")]) == 12
    assert len([n for n in SIGS if n.startswith("wb_attn_mma")]) == 8
    assert {"wb_sample_rows", "wb_verify_speculative"} <= set(SIGS)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("D", [16, 32, 64, 128])
@pytest.mark.parametrize("probs", [None, [1]])
def test_attention_launch(launches, dtype, D, probs):
    q = torch.randn(2, 3, 70, D).to(dtype)
    k = torch.randn(2, 3, 90, D).to(dtype)
    out, p = cupy_ops.attention(q, k, k, window=16, sinks=2, probs_heads=probs)
    (entry,) = launches
    name, grid, block, args = entry
    want = "mma" if dtype != torch.float32 and probs is None else "fwd"
    assert name.startswith(f"wb_attn_{want}_") and name.endswith(f"_d{D}")
    check_launch(entry)
    bm = cupy_ops.MMA_BLOCK_M if want == "mma" else cupy_ops.ATTN_BLOCK_M[D]
    assert grid == (-(-70 // bm), 3, 2)
    assert args[3].data_ptr() == out.data_ptr()
    if probs is not None:
        assert p.shape == (2, 1, 70, 90) and args[4].data_ptr() == p.data_ptr()


def test_sample_launch(launches):
    x = torch.randn(5, 300)
    cupy_ops.sample(x, temperature=0.5, top_k=7, top_p=0.9, min_p=0.1, seed=2 ** 63 + 5)
    args = check_launch(launches[0])
    assert launches[0][1] == (5,)
    assert float(args[3]) == 0.5 and float(args[4]) == np.float32(2.0)
    assert int(args[5]) == 7 and int(args[8]) == 2 ** 63 + 5


@pytest.mark.parametrize("G", [0, 3])
@pytest.mark.parametrize("given_u", [False, True])
def test_verify_launch(launches, G, given_u):
    p = torch.rand(4, G + 1, 50)
    q = torch.rand(4, G, 50)
    d = torch.zeros(4, G, dtype=torch.int64)
    u = torch.rand(4, G) if given_u else None
    cupy_ops.verify_speculative(p, q, d, seed=1, uniforms=u)
    args = check_launch(launches[0])
    assert launches[0][1] == (4,)
    assert isinstance(args[3], np.uint64) == (u is None or G == 0)


# ---------------------------------------------------------------- the CUDA branch of the launcher
def test_cuda_launch_runs_on_torchs_stream_with_arguments_made_inside(monkeypatch):
    """On a GPU, _launch enters the device and torch's current stream (as a CuPy stream), builds the DLPack
    arguments inside them and launches there; CPU tensors are routed to the emulator instead."""
    events = []

    class Ctx:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            events.append(("enter", self.name))

        def __exit__(self, *exc):
            events.append(("exit", self.name))

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(Device=lambda i: Ctx(f"device {i}"),
                                      ExternalStream=lambda ptr, dev: Ctx(f"stream {ptr} on {dev}"))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: types.SimpleNamespace(cuda_stream=1234))
    cupy_ops._external_stream.cache_clear()

    def make_args():
        events.append("arguments")
        return (1, 2)

    try:
        cupy_ops._launch(lambda grid, block, args: events.append(("launch", grid, block, args)), (3,), (128,),
                         make_args, torch.device("cuda", 1), 1)
    finally:
        cupy_ops._external_stream.cache_clear()
    assert events == [("enter", "device 1"), ("enter", "stream 1234 on 1"), "arguments",
                      ("launch", (3,), (128,), (1, 2)), ("exit", "stream 1234 on 1"), ("exit", "device 1")]
    assert cupy_ops._device_index(torch.device("cuda", 2)) == 2
    assert cupy_ops._device_index(torch.device("cpu")) == cupy_ops.EMULATED
