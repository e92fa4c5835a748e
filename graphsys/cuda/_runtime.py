"""CuPy plumbing shared by the kernels: the one GPU probe, compilation, launches.

Nothing here touches CuPy or CUDA at import time. :func:`gpu_ready` asks once (through
:func:`graphsys._compat.probe_cupy`) and remembers the answer; every kernel wrapper calls
it before choosing its CUDA path, so a machine without CuPy or without a GPU runs the CPU
path of each kernel.

Kernels receive raw device addresses (``tensor.data_ptr()`` as ``unsigned long long``)
rather than CuPy arrays. That is zero-copy for GPU tensors and, through unified virtual
addressing, for pinned host tensors too (a pinned page's host address is its device
address), which DLPack cannot express. Every launch names the device its tensors live
on (:func:`device_of`): the kernel is loaded on that device and runs on torch's current
stream *of that device*, so it is ordered with the torch operations around it even when
the caller's current device is another GPU.
"""

from __future__ import annotations

import functools
import threading
import warnings
from typing import Any

import numpy as np
import torch

#: NVRTC options for every module: C++17, fast integer code, no fast-math (the float
#: kernels must match their CPU paths to the stated bound, so no flush-to-zero tricks).
NVRTC_OPTIONS: tuple[str, ...] = ("--std=c++17",)

_lock = threading.Lock()
_modules: dict[tuple[str, tuple[str, ...], int], Any] = {}
_functions: dict[tuple[str, tuple[str, ...], int, str], Any] = {}
_streams: dict[tuple[int, int], Any] = {}


@functools.cache
def gpu_ready() -> bool:
    """Whether the CUDA kernels can run: torch sees a GPU and CuPy imports and sees one."""
    if not torch.cuda.is_available():
        return False
    from graphsys._compat import probe_cupy

    return probe_cupy().available


def use_gpu(*tensors: torch.Tensor) -> bool:
    """Take the CUDA path when a tensor lives on a GPU and the kernels can run there.

    GPU tensors without CuPy fall back to the torch path, which runs on the GPU too.
    """
    return any(t.is_cuda for t in tensors) and gpu_ready()


def address(t: torch.Tensor) -> np.uint64:
    """``t``'s first byte as a kernel argument (``unsigned long long``)."""
    return np.uint64(t.data_ptr())


def device_of(*tensors: torch.Tensor) -> torch.device:
    """The one CUDA device of the CUDA tensors among ``tensors`` (with its index).

    Host tensors (pinned, read over the bus) do not count. Raises ``ValueError`` when
    the CUDA tensors sit on different GPUs and when none is on a GPU.
    """
    found = {t.device for t in tensors if t.is_cuda}
    if not found:
        raise ValueError("no CUDA tensor among the kernel's arguments")
    if len(found) > 1:
        names = ", ".join(sorted(str(d) for d in found))
        raise ValueError(f"the kernel's tensors are on different GPUs: {names}")
    (device,) = found
    return device if device.index is not None else torch.device(
        "cuda", torch.cuda.current_device())


def _index(device: torch.device | str | int) -> int:
    device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"kernels launch on a CUDA device, got {device}")
    return device.index if device.index is not None else torch.cuda.current_device()


def module(source: str, options: tuple[str, ...] = (), *,
           device: torch.device | str | int) -> Any:
    """The ``cupy.RawModule`` for ``source``, compiled once per process and loaded on
    ``device`` (a module's functions belong to the device they were loaded on)."""
    index = _index(device)
    key = (source, options, index)
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            import cupy

            with cupy.cuda.Device(index):
                mod = cupy.RawModule(code=source, options=NVRTC_OPTIONS + options)
                mod.compile()  # load now, on this device
            _modules[key] = mod
        return mod


def function(source: str, name: str, options: tuple[str, ...] = (), *,
             device: torch.device | str | int) -> Any:
    """Kernel ``name`` of ``source`` loaded on ``device`` (looked up once per device)."""
    index = _index(device)
    key = (source, options, index, name)
    fn = _functions.get(key)
    if fn is None:
        import cupy

        mod = module(source, options, device=index)
        with _lock, cupy.cuda.Device(index):
            fn = _functions.setdefault(key, mod.get_function(name))
    return fn


def launch(kernel: Any, grid: int, block: int, args: tuple, *,
           device: torch.device | str | int, shared_mem: int = 0) -> None:
    """Launch ``kernel`` on ``device`` (the device of its tensors, see :func:`device_of`)
    on torch's current stream of that device, whatever the current device is."""
    index = _index(device)
    if grid <= 0:
        return
    import cupy

    stream = _cupy_stream(torch.cuda.current_stream(index).cuda_stream, index)
    with cupy.cuda.Device(index), stream:
        kernel((int(grid),), (int(block),), args, shared_mem=shared_mem)


class _StreamHandle:
    """A raw ``cudaStream_t`` behind the CUDA stream protocol, for CuPy to wrap."""

    __slots__ = ("handle",)

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.handle)


def _cupy_stream(handle: int, index: int) -> Any:
    """CuPy's view of torch stream ``handle`` on GPU ``index``, made once per stream.

    Building one per launch cost a DeprecationWarning each time (CuPy 14 deprecates
    ``ExternalStream``), tens of thousands per test run, and the warnings machinery on
    the hot path. ``Stream.from_external`` is CuPy 14's spelling; older CuPy has only
    ``ExternalStream``.
    """
    key = (handle, index)
    stream = _streams.get(key)
    if stream is None:
        import cupy

        with cupy.cuda.Device(index):
            try:
                stream = cupy.cuda.Stream.from_external(_StreamHandle(handle))
            except (AttributeError, TypeError):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    stream = cupy.cuda.ExternalStream(handle, index)
        with _lock:
            stream = _streams.setdefault(key, stream)
    return stream


def compile_only(source: str, options: tuple[str, ...] = (), arch: str = "compute_80") -> str:
    """Compile ``source`` to PTX with NVRTC alone, no GPU needed; return the PTX.

    Tests use this to check every kernel compiles on machines with CuPy and the NVRTC
    library but no GPU. Raises ``RuntimeError`` with NVRTC's log when compilation fails.
    """
    from cupy_backends.cuda.libs import nvrtc

    prog = nvrtc.createProgram(source, "graphsys_kernel.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, [*NVRTC_OPTIONS, *options, f"-arch={arch}"])
        except Exception as exc:
            raise RuntimeError(f"NVRTC rejected the kernel:\n{nvrtc.getProgramLog(prog)}") from exc
        ptx = nvrtc.getPTX(prog)
        return ptx.decode() if isinstance(ptx, bytes) else ptx
    finally:
        nvrtc.destroyProgram(prog)
