"""Back-end selection and bad input: each error is specific and says what is supported."""
import subprocess
import sys
import types

import pytest
import torch

from tests.factories import tiny_gpt
from workbench import kernels
from workbench.kernels import BackendUnavailableError, KernelInputError


def qkv(B=1, H=2, T=8, D=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(B, H, T, D, generator=g).to(dtype) for _ in range(3))


# ---------------------------------------------------------------- back-end selection
def test_import_does_not_touch_cupy():
    code = "import sys, workbench.kernels as k; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_backend_is_reported(restore_backend):
    name = kernels.backend()
    assert name in ("cupy", "reference")   # auto never picks the emulator
    info = kernels.backend_info()
    assert info.name == name and info.reason


def test_reference_can_be_forced(restore_backend):
    assert kernels.set_backend("reference").name == "reference"
    assert kernels.backend() == "reference"


def test_unknown_backend_name(restore_backend):
    with pytest.raises(KernelInputError, match="supported: auto, cupy, emulator, reference"):
        kernels.set_backend("triton")
    with pytest.raises(KernelInputError, match="per-call back-end"):
        kernels.attention(*qkv(), backend="cuda")


def _fake_cupy(monkeypatch, available):
    fake = types.ModuleType("cupy")
    fake.__version__ = "0.fake"

    def is_available():
        if isinstance(available, Exception):
            raise available
        return available

    fake.is_available = is_available
    monkeypatch.setitem(sys.modules, "cupy", fake)


@pytest.mark.parametrize("situation", ["missing", "no-device", "driver-error"])
def test_forced_cupy_without_gpu_is_a_specific_error(restore_backend, monkeypatch, situation):
    if situation == "missing":
        monkeypatch.setitem(sys.modules, "cupy", None)          # import cupy -> ImportError
        reason = "not installed"
    elif situation == "no-device":
        _fake_cupy(monkeypatch, False)
        reason = "no usable CUDA device"
    else:
        _fake_cupy(monkeypatch, RuntimeError("cudaErrorInsufficientDriver"))
        reason = "cudaErrorInsufficientDriver"
    with pytest.raises(BackendUnavailableError, match=reason) as exc:
        kernels.set_backend("cupy")
    assert "reference" in str(exc.value) and "gpu" in str(exc.value)
    with pytest.raises(BackendUnavailableError):
        kernels.attention(*qkv(), backend="cupy")
    with pytest.raises(BackendUnavailableError):
        kernels.sample(torch.zeros(1, 4), backend="cupy")
    # auto quietly falls back and says why
    assert kernels.set_backend("auto").name == "reference"
    assert reason in kernels.backend_info().reason
    assert kernels.attention(*qkv()).shape == (1, 2, 8, 16)


@pytest.mark.parametrize("setting", ["cupy", "no-such-backend"])
def test_an_unusable_setting_leaves_the_labs_on_their_own_routes(restore_backend, monkeypatch, setting):
    """WORKBENCH_KERNELS naming a back-end this machine lacks (or a typo) must not break CPU inference, which
    only asks whether the kernels serve it; a kernel call itself still says what is wrong."""

    monkeypatch.setitem(sys.modules, "cupy", None)           # no cupy, whatever this machine has
    monkeypatch.setenv(restore_backend.ENV_VAR, setting)
    assert kernels.kernels_run_for(False) is False and kernels.kernels_run_for(True) is False
    m = tiny_gpt(seed=None, vocab_size=16, n_layer=1, n_head=2, n_embd=32, block_size=8)
    with torch.no_grad():
        assert m(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 16)
    with pytest.raises((BackendUnavailableError, KernelInputError)):
        kernels.attention(*qkv())


def test_forced_emulator_without_a_compiler_is_a_specific_error(restore_backend, monkeypatch):
    from workbench.kernels import emulator

    monkeypatch.setattr(emulator, "available", lambda: (False, "no C++ compiler: install g++ (12 or newer)"))
    with pytest.raises(BackendUnavailableError, match="emulator back-end cannot run here: no C.. compiler"):
        kernels.set_backend("emulator")
    with pytest.raises(BackendUnavailableError, match="install g.. .12 or newer"):
        kernels.attention(*qkv(), backend="emulator")
    assert kernels.backend() == "reference"   # the previous choice stays


def test_environment_variable(restore_backend, monkeypatch):
    monkeypatch.setenv("WORKBENCH_KERNELS", "reference")
    assert kernels.backend() == "reference"
    assert kernels.backend_info().requested == "reference"


def test_forced_cupy_with_cpu_tensors(restore_backend, monkeypatch):
    """With a working cupy back-end forced, CPU tensors are rejected (not silently moved)."""
    monkeypatch.setattr(restore_backend, "probe_cupy", lambda: (True, "fake", "Fake GPU"))
    kernels.set_backend("cupy")
    with pytest.raises(KernelInputError, match="CUDA tensors only"):
        kernels.attention(*qkv())
    kernels.set_backend("auto")
    assert kernels.attention(*qkv()).shape == (1, 2, 8, 16)   # auto: CPU tensors -> reference


# ---------------------------------------------------------------- attention input checks
@pytest.mark.parametrize("make,match", [
    (lambda: (torch.zeros(2, 8, 16), *qkv()[1:]), r"q must have shape \(B, H, Tq, D\)"),
    (lambda: (qkv()[0], torch.zeros(1, 3, 8, 16), qkv()[2]), r"k must have shape"),
    (lambda: (*qkv()[:2], torch.zeros(1, 2, 9, 16)), r"v must have the shape of k"),
    (lambda: qkv(D=48), r"head dim D=48 is not supported; supported: 16, 32, 64, 128"),
    (lambda: qkv(dtype=torch.float64), r"dtype torch.float64; supported: float16, bfloat16, float32"),
    (lambda: (qkv()[0], qkv()[1].half(), qkv()[2]), r"must share a dtype"),
    (lambda: ([[1.0]], *qkv()[1:]), r"must be a torch.Tensor"),
])
def test_attention_bad_shapes_and_dtypes(make, match):
    with pytest.raises(KernelInputError, match=match):
        kernels.attention(*make())


def test_attention_bad_options():
    q, k, v = qkv()
    with pytest.raises(KernelInputError, match="Tq <= Tk"):
        kernels.attention(torch.zeros(1, 2, 9, 16), k, v)
    with pytest.raises(KernelInputError, match="window must be None or >= 1"):
        kernels.attention(q, k, v, window=0)
    with pytest.raises(KernelInputError, match="needs causal=True"):
        kernels.attention(q, k, v, causal=False, window=4)
    with pytest.raises(KernelInputError, match="sinks must be >= 0"):
        kernels.attention(q, k, v, window=4, sinks=-1)
    with pytest.raises(KernelInputError, match="out of range for H=2"):
        kernels.attention(q, k, v, return_probs_heads=[2])
    with pytest.raises(KernelInputError, match="duplicates"):
        kernels.attention(q, k, v, return_probs_heads=[1, -1])
    with pytest.raises(KernelInputError, match="window must be an int"):
        kernels.attention(q, k, v, window=2.5)


def test_non_contiguous_inputs_are_handled():
    """Strided views work (batch/head/row strides are passed to the kernel; a non-unit last-dim
    stride gets a contiguous copy) and give the same numbers as contiguous input."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 10, 2, 32, generator=g)              # (qkv, B, T, H, D) layout
    q, k, v = (t.transpose(1, 2) for t in x)                   # (B, H, T, D) views
    assert not q.is_contiguous()
    want = kernels.attention(q.contiguous(), k.contiguous(), v.contiguous())
    assert torch.allclose(kernels.attention(q, k, v), want, atol=1e-6)
    wide = torch.randn(1, 2, 10, 64, generator=g)
    q2 = wide[..., ::2]                                        # last-dim stride 2
    assert q2.stride(-1) == 2
    assert torch.allclose(kernels.attention(q2, q2, q2), kernels.attention(*(q2.contiguous(),) * 3))


# ---------------------------------------------------------------- sampling input checks
@pytest.mark.parametrize("kw,match", [
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(top_k=-3), "top_k must be None, 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(min_p=2.0), r"min_p must be in \[0, 1\]"),
    (dict(seed=-1), r"seed must be in \[0, 2\*\*64\)"),
    (dict(seed=1.5), "seed must be an int"),
])
def test_sampling_bad_parameters(kw, match):
    with pytest.raises(KernelInputError, match=match):
        kernels.sample(torch.zeros(2, 5), **kw)


def test_sampling_bad_logits():
    with pytest.raises(KernelInputError, match=r"logits must have shape \(B, V\)"):
        kernels.sample(torch.zeros(5))
    with pytest.raises(KernelInputError, match="supported: float16, bfloat16, float32"):
        kernels.sample(torch.zeros(2, 5, dtype=torch.int64))
    assert kernels.sample(torch.zeros(2, 5), top_k=0).shape == (2,)   # 0 = off
    x = torch.randn(6, 4).t()                                          # non-contiguous rows
    assert torch.equal(kernels.sample(x, seed=3), kernels.sample(x.contiguous(), seed=3))


# ---------------------------------------------------------------- speculative input checks
def test_verify_bad_input():
    p = torch.softmax(torch.randn(2, 4, 6), -1)
    q = torch.softmax(torch.randn(2, 3, 6), -1)
    d = torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(KernelInputError, match=r"q must have shape \(B, G, V\) = \(2, 3, 6\)"):
        kernels.verify_speculative(p, q[:, :2], d)
    with pytest.raises(KernelInputError, match=r"draft_tokens must have shape \(B, G\)"):
        kernels.verify_speculative(p, q, d[:, :2])
    with pytest.raises(KernelInputError, match="integer tensor"):
        kernels.verify_speculative(p, q, d.float())
    with pytest.raises(KernelInputError, match=r"must lie in \[0, V\)"):
        kernels.verify_speculative(p, q, d + 6)
    with pytest.raises(KernelInputError, match=r"uniforms must have shape"):
        kernels.verify_speculative(p, q, d, uniforms=torch.zeros(2, 2))
    with pytest.raises(KernelInputError, match="dtype torch.int64"):
        kernels.verify_speculative(p.long(), q, d)
