"""Row gather: ``out[i] = src[ids[i]]``, zero-copy from pinned host memory (UVA).

On the GPU path the threads of a warp read one row each time: consecutive lanes read
consecutive 16-, 8-, 4-, 2- or 1-byte words (the widest that the row size and both base
addresses allow), so a row of 512 B is one 128-byte request per 8 lanes and every PCIe
read carries whole cache lines. Rows narrower than a warp's width share a warp
(``threads_per_row`` lanes each, a power of two), so 128-byte rows still keep all 32
lanes busy. ``src`` may be a CUDA tensor or a pinned host tensor; the kernel reads the
latter over the bus directly, with no staging copy. Any dtype and row width: the kernel
moves bytes.

The CPU path is ``torch.index_select``; on the GPU without CuPy the same torch call runs
on the GPU (after copying a pinned source's needed rows there). Results are bitwise equal.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from graphsys.cuda import _runtime

SOURCE = r"""
#define COPY_ROWS(NAME, T)                                                              \
extern "C" __global__ void NAME(unsigned long long src_addr,                           \
                                unsigned long long src_ids_addr,                       \
                                unsigned long long dst_addr,                           \
                                unsigned long long dst_ids_addr,                       \
                                long long n, long long words_per_row,                  \
                                int threads_per_row) {                                 \
    const T* __restrict__ src = (const T*)src_addr;                                    \
    T* __restrict__ dst = (T*)dst_addr;                                                \
    const long long* __restrict__ src_ids = (const long long*)src_ids_addr;            \
    const long long* __restrict__ dst_ids = (const long long*)dst_ids_addr;            \
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;            \
    const long long groups = ((long long)gridDim.x * blockDim.x) / threads_per_row;    \
    const int lane = (int)(tid % threads_per_row);                                     \
    for (long long r = tid / threads_per_row; r < n; r += groups) {                    \
        const long long s = src_ids ? src_ids[r] : r;                                  \
        const long long d = dst_ids ? dst_ids[r] : r;                                  \
        const T* from = src + s * words_per_row;                                       \
        T* to = dst + d * words_per_row;                                               \
        for (long long c = lane; c < words_per_row; c += threads_per_row) {            \
            to[c] = from[c];                                                           \
        }                                                                              \
    }                                                                                  \
}

COPY_ROWS(copy_rows_16, uint4)
COPY_ROWS(copy_rows_8, unsigned long long)
COPY_ROWS(copy_rows_4, unsigned int)
COPY_ROWS(copy_rows_2, unsigned short)
COPY_ROWS(copy_rows_1, unsigned char)
"""

KERNELS = ("copy_rows_16", "copy_rows_8", "copy_rows_4", "copy_rows_2", "copy_rows_1")
_THREADS = 256


def word_size(row_bytes: int, *addresses: int) -> int:
    """The widest load (16, 8, 4, 2 or 1 bytes) that divides the row size and addresses."""
    for width in (16, 8, 4, 2, 1):
        if row_bytes % width == 0 and all(a % width == 0 for a in addresses):
            return width
    return 1


def threads_per_row(words: int) -> int:
    """Lanes per row: the smallest power of two >= ``words``, at most a warp (32)."""
    lanes = 1
    while lanes < words and lanes < 32:
        lanes *= 2
    return lanes


def _check_ids(ids: torch.Tensor, num_rows: int, what: str, check: bool) -> torch.Tensor:
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{what} must be an integer tensor, got {ids.dtype}")
    ids = ids.reshape(-1).long()
    if check and ids.numel():
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= num_rows:
            raise IndexError(f"{what} contains {low if low < 0 else high}, outside "
                             f"[0, {num_rows})")
    return ids.contiguous()


def copy_rows(src: torch.Tensor, src_ids: torch.Tensor | None, dst: torch.Tensor,
              dst_ids: torch.Tensor | None, n: int) -> None:
    """``dst[dst_ids[i]] = src[src_ids[i]]`` for ``i < n`` with the CUDA kernel
    (``None`` ids: the identity).

    Both tensors must be contiguous with rows of equal byte size; ids int64 on the GPU.
    The kernel runs on the device of the CUDA tensors among them (``ValueError`` if
    those are on different GPUs). No other checks: the public wrappers validate once.
    """
    if n == 0:
        return
    device = _runtime.device_of(*(t for t in (src, src_ids, dst, dst_ids) if t is not None))
    row_bytes = math.prod(src.shape[1:]) * src.element_size()
    if row_bytes == 0:
        return
    width = word_size(row_bytes, src.data_ptr(), dst.data_ptr())
    words = row_bytes // width
    lanes = threads_per_row(words)
    kernel = _runtime.function(SOURCE, f"copy_rows_{width}", device=device)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    blocks = min(-(-n * lanes // _THREADS), sms * 32)
    zero = np.uint64(0)  # a null pointer: the kernel then uses the row number itself
    _runtime.launch(kernel, blocks, _THREADS, device=device, args=(
        _runtime.address(src), zero if src_ids is None else _runtime.address(src_ids),
        _runtime.address(dst), zero if dst_ids is None else _runtime.address(dst_ids),
        np.int64(n), np.int64(words), np.int32(lanes)))


def gather_rows(src: torch.Tensor, ids: torch.Tensor, out: torch.Tensor | None = None, *,
                check: bool = True) -> torch.Tensor:
    """Rows ``src[ids]`` (rows along dim 0), on ``ids``'s device.

    Args:
        src: the table: a CUDA tensor, a pinned host tensor (read zero-copy over the
            bus by the kernel), or any host tensor on the CPU path.
        ids: row ids (any integer dtype). On a GPU with CuPy, ``ids`` on the GPU select
            the kernel; host ``ids`` take the torch path.
        out: optional output ``[len(ids), *src.shape[1:]]`` of ``src``'s dtype.
        check: validate the id range (costs a device sync on the GPU path).

    Empty ``ids`` give an empty result ``[0, *src.shape[1:]]`` on every path, whatever
    ``src`` holds; non-empty ``ids`` into an empty ``src`` raise ``IndexError`` even
    with ``check=False`` (a free test, and the kernel would read out of bounds).

    Example:
        >>> table = torch.arange(12.0).view(4, 3)
        >>> gather_rows(table, torch.tensor([3, 0, 3])).tolist()
        [[9.0, 10.0, 11.0], [0.0, 1.0, 2.0], [9.0, 10.0, 11.0]]
    """
    if src.dim() == 0:
        raise ValueError("src must have at least one dimension (its rows)")
    if src.shape[0] == 0 and ids.numel():
        raise IndexError(f"ids index an empty table ({ids.numel()} ids, 0 rows)")
    ids = _check_ids(ids, src.shape[0], "ids", check)
    shape = (ids.numel(), *src.shape[1:])
    device = ids.device if ids.is_cuda else src.device
    if out is not None and (out.shape != shape or out.dtype != src.dtype
                            or out.device != device):
        raise ValueError(f"out must be {tuple(shape)} {src.dtype} on {device}, got "
                         f"{tuple(out.shape)} {out.dtype} on {out.device}")
    kernel_ok = ids.is_cuda and (src.is_cuda or src.is_pinned()) and src.is_contiguous()
    if kernel_ok and _runtime.use_gpu(ids):
        if src.is_cuda and src.device != ids.device:
            raise ValueError(f"src is on {src.device} but ids on {ids.device}")
        if out is None or not out.is_contiguous():
            result = torch.empty(shape, dtype=src.dtype, device=device)
        else:
            result = out
        copy_rows(src, ids, result, None, ids.numel())
        if out is not None and result is not out:
            out.copy_(result)
            return out
        return result
    if ids.is_cuda and not src.is_cuda:
        rows = src.index_select(0, ids.cpu()).to(device, non_blocking=src.is_pinned())
        return rows if out is None else out.copy_(rows)
    if src.is_cuda and not ids.is_cuda:
        ids = ids.to(src.device)
    return torch.index_select(src, 0, ids, out=out) if out is not None else \
        torch.index_select(src, 0, ids)
