"""Choosing the kernel back-end: CuPy (GPU kernels from ``cu/*.cu``) or the torch reference.

The choice is made once, lazily, the first time it is needed:

* ``WORKBENCH_KERNELS`` environment variable, if set: ``auto`` (default), ``cupy``, ``emulator``
  or ``reference``;
* ``auto`` picks ``cupy`` when ``import cupy`` works *and* ``cupy.is_available()`` says a CUDA
  device is usable (both inside one ``try``: a machine without a driver imports CuPy fine and only
  fails on first device use), otherwise ``reference``.
* ``emulator`` (never picked by ``auto``) runs the same ``.cu`` kernels on CPU tensors, compiled
  with g++ (:mod:`workbench.kernels.emulator`): slow, for reading and checking a kernel where no
  GPU is present.

``set_backend("cupy")`` on a machine without a usable GPU raises :class:`BackendUnavailableError`
with the reason (``"emulator"`` likewise without g++). Importing :mod:`workbench.kernels` never
touches CuPy or the GPU.

Lesson: ``notebooks/05_gpu_kernels.ipynb`` (Running the GPU half).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

BACKENDS = ("auto", "cupy", "emulator", "reference")
KERNEL_BACKENDS = ("cupy", "emulator")   # the back-ends that run the .cu kernels
ENV_VAR = "WORKBENCH_KERNELS"


class KernelError(Exception):
    """Base class of the errors raised by :mod:`workbench.kernels`."""


class KernelInputError(KernelError, ValueError):
    """Bad input to a kernel: shapes, dtypes, head dims, parameter ranges."""


class BackendUnavailableError(KernelError, RuntimeError):
    """A back-end was requested that cannot run on this machine."""


@dataclass(frozen=True)
class BackendInfo:
    """What was chosen and why.

    name: ``"cupy"``, ``"emulator"`` or ``"reference"``.
    requested: what the user or environment asked for (``auto``/``cupy``/``emulator``/``reference``).
    reason: a sentence explaining the choice (e.g. why CuPy is not usable).
    device: the CUDA device name when ``name == "cupy"``, ``"CPU (emulated)"`` for the emulator,
        else ``None``.
    """

    name: str
    requested: str
    reason: str
    device: str | None = None


_state: BackendInfo | None = None


def probe_cupy() -> tuple[bool, str, str | None]:
    """Return ``(usable, reason, device_name)`` for CuPy on this machine. Never raises."""
    try:
        import cupy  # noqa: F401  (ImportError when the `gpu` extra is not installed)

        if not cupy.is_available():
            return False, "cupy is installed but no usable CUDA device was found", None
        try:
            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            name = props["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # pragma: no cover - name is cosmetic
            name = "CUDA device"
        return True, f"cupy {cupy.__version__} with a CUDA device", name
    except ImportError as exc:
        return False, f"cupy is not installed ({exc}); install the extra: pip install -e .[gpu]", None
    except Exception as exc:  # CUDARuntimeError and friends: driver missing, no device
        return False, f"cupy could not use a CUDA device: {type(exc).__name__}: {exc}", None


_probe_cache: tuple[bool, str, str | None] | None = None


def _probe() -> tuple[bool, str, str | None]:
    """:func:`probe_cupy`, remembered (it is called on every forced-cupy kernel call)."""
    global _probe_cache
    if _probe_cache is None:
        _probe_cache = probe_cupy()
    return _probe_cache


def _resolve(requested: str, fresh: bool = False) -> BackendInfo:
    requested = requested.strip().lower()
    if requested not in BACKENDS:
        raise KernelInputError(
            f"unknown kernel back-end {requested!r}; supported: {', '.join(BACKENDS)}"
        )
    if requested == "reference":
        return BackendInfo("reference", requested, "reference back-end requested")
    if requested == "emulator":
        from .emulator import available

        ok, why = available()
        if not ok:
            raise BackendUnavailableError(f"the emulator back-end cannot run here: {why}")
        return BackendInfo("emulator", requested, f"the .cu kernels run on the CPU: {why}", "CPU (emulated)")
    global _probe_cache
    if fresh:
        _probe_cache = None
    usable, reason, device = _probe()
    if usable:
        return BackendInfo("cupy", requested, reason, device)
    if requested == "cupy":
        raise BackendUnavailableError(
            f"the cupy kernel back-end was requested but cannot run here: {reason}. "
            "It needs the `gpu` extra (cupy-cuda12x) and a CUDA device (compute capability 8.0+); "
            "use set_backend('reference') or set_backend('auto') on this machine."
        )
    return BackendInfo("reference", requested, reason)


def backend_info() -> BackendInfo:
    """The chosen back-end with the reason (decided on first call, then cached)."""
    global _state
    if _state is None:
        _state = _resolve(os.environ.get(ENV_VAR, "auto") or "auto")
    return _state


def backend() -> str:
    """Name of the active back-end: ``"cupy"``, ``"emulator"`` or ``"reference"``."""
    return backend_info().name


def set_backend(name: str) -> BackendInfo:
    """Force a back-end: ``"auto"``, ``"cupy"``, ``"emulator"`` or ``"reference"``.

    Probes CuPy afresh. Raises :class:`BackendUnavailableError` for ``"cupy"`` without a usable
    GPU (the previous choice stays in place), :class:`KernelInputError` for an unknown name.
    """
    global _state
    _state = _resolve(name, fresh=True)
    return _state


def _serves(name: str, tensor_is_cuda: bool) -> bool:
    """cupy runs the kernels on CUDA tensors, the emulator on CPU tensors."""
    return name == ("cupy" if tensor_is_cuda else "emulator")


def kernels_run_for(tensor_is_cuda: bool) -> bool:
    """Whether the kernels, not their reference, serve tensors on CUDA (``tensor_is_cuda``) or on the CPU
    by default: callers that choose between a kernel route and their own use this; it never raises (a
    back-end that cannot be had, e.g. ``WORKBENCH_KERNELS=cupy`` without a GPU, means the caller's own route;
    the kernel calls themselves still report it)."""
    try:
        name = backend()
    except KernelError:
        return False
    return _serves(name, tensor_is_cuda)


def resolve_for(tensor_is_cuda: bool, override: str | None = None) -> str:
    """Back-end for one call: ``"cupy"`` (CUDA tensors), ``"emulator"`` (CPU tensors) or ``"reference"``.

    ``override`` (a per-call ``backend=`` argument) is ``None``, ``"cupy"``, ``"emulator"`` or
    ``"reference"``. With a kernel back-end forced (globally or per call) and tensors on the other
    device, raises :class:`KernelInputError`; with ``auto`` they quietly take the reference path.
    """
    if override is not None:
        override = override.strip().lower()
        if override not in ("cupy", "emulator", "reference"):
            raise KernelInputError(
                f"unknown per-call back-end {override!r}; supported: 'cupy', 'emulator', 'reference' or None"
            )
        if override == "reference":
            return "reference"
        info = _resolve(override)  # raises BackendUnavailableError where it cannot run
        forced = True
    else:
        info = backend_info()
        forced = info.requested in KERNEL_BACKENDS
    if info.name == "reference":
        return "reference"
    if not _serves(info.name, tensor_is_cuda):
        if forced:
            raise KernelInputError(
                "the cupy back-end runs on CUDA tensors only; got CPU tensors. Move them with .cuda() or "
                "use the 'reference' back-end." if info.name == "cupy" else
                "the emulator back-end runs the kernels on CPU tensors only; got CUDA tensors. Move them "
                "with .cpu() or use the 'cupy' or 'reference' back-end."
            )
        return "reference"
    return info.name
