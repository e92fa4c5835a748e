"""Row-wise INT8/INT4 quantization and fused quantized aggregation.

Each row ``x`` is stored as unsigned ``bits``-bit codes ``q`` with a float32 ``scale``
and zero point ``zero`` (the value of code 0, the row's minimum):

    x_hat = zero + scale * q,   scale = (max(x) - min(x)) / (2**bits - 1),
    q = round((x - zero) / scale)  in [0, 2**bits - 1]

INT4 packs two codes a byte (column ``c`` in byte ``c // 2``, low nibble first).
This is graphsys's only per-row quantiser: the frozen-layer caches'
INT8/INT4 codecs (:mod:`graphsys.storage.codecs`) are these rows laid out as bytes.

**Error bound.** Each element is off by at most half a step, ``|x - x_hat| <= scale/2``
(plus float32 rounding of the affine map, ~1e-7 relative). The fused aggregation over the
in-edges ``j -> i`` of a block then satisfies, per destination ``i`` and column ``c``:

    |sum_hat - sum| <= sum_j scale_j / 2  +  eps_acc
    |mean_hat - mean| <= (sum_j scale_j / 2) / deg_i  +  eps_acc / deg_i

where ``eps_acc <= deg_i * 2**-23 * sum_j |x_jc|`` bounds float32 accumulation
(:func:`aggregation_error_bound` computes it). The CUDA kernel and the numba CPU path
perform the same float32 operations in the same order (no fused multiply-add), so
they agree far inside that bound, usually bitwise.

Quantization and dequantization are elementwise torch (identical on CPU and GPU); the
aggregation is a fused kernel: one warp per destination reads the code rows of its
in-edges, accumulates ``scale_j * q_jc`` in float32 registers, adds ``sum_j zero_j``
once and divides by the degree for a mean. No dequantized matrix exists at any point:
an INT8 feature table takes a quarter of the float32 memory and bus traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from graphsys._bits import pack_nibbles, unpack_nibbles
from graphsys.cuda import _runtime
from graphsys.cuda.gather import gather_rows

Bits = Literal[8, 4]
Reduce = Literal["sum", "mean"]

SOURCE = r"""
// One warp per destination; lane l accumulates columns l, l+32, ... in registers,
// COLS_PER_LANE at a time, so a destination with D columns takes ceil(D / (32 *
// COLS_PER_LANE)) passes over its in-edges.
#define COLS_PER_LANE 8

template <int BITS>
__device__ __forceinline__ float code_at(const unsigned char* row, long long c) {
    if (BITS == 8) return (float)row[c];
    const unsigned char b = row[c >> 1];
    return (float)((c & 1) ? (b >> 4) : (b & 15));
}

template <int BITS>
__device__ void aggregate_rows(const long long* __restrict__ indptr,
                               const long long* __restrict__ indices,
                               const unsigned char* __restrict__ codes,
                               const float* __restrict__ scale,
                               const float* __restrict__ zero,
                               long long num_dst, long long dim, long long row_bytes,
                               int mean, float* __restrict__ out) {
    const int lane = threadIdx.x & 31;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; i < num_dst;
         i += warps) {
        const long long start = indptr[i], end = indptr[i + 1];
        float zsum = 0.0f;
        for (long long e = start; e < end; ++e) zsum = __fadd_rn(zsum, zero[indices[e]]);
        for (long long base = 0; base < dim; base += 32 * COLS_PER_LANE) {
            float acc[COLS_PER_LANE];
#pragma unroll
            for (int k = 0; k < COLS_PER_LANE; ++k) acc[k] = 0.0f;
            for (long long e = start; e < end; ++e) {
                const long long j = indices[e];
                const float s = scale[j];
                const unsigned char* row = codes + j * row_bytes;
#pragma unroll
                for (int k = 0; k < COLS_PER_LANE; ++k) {
                    const long long c = base + k * 32 + lane;
                    if (c < dim) acc[k] = __fadd_rn(acc[k], __fmul_rn(s, code_at<BITS>(row, c)));
                }
            }
            const long long deg = end - start;
#pragma unroll
            for (int k = 0; k < COLS_PER_LANE; ++k) {
                const long long c = base + k * 32 + lane;
                if (c < dim) {
                    float v = __fadd_rn(acc[k], zsum);
                    if (mean && deg > 0) v = __fdiv_rn(v, (float)deg);
                    out[i * dim + c] = v;
                }
            }
        }
    }
}

#define AGG(NAME, BITS)                                                                 \
extern "C" __global__ void NAME(unsigned long long indptr, unsigned long long indices,   \
                                unsigned long long codes, unsigned long long scale,      \
                                unsigned long long zero, long long num_dst,              \
                                long long dim, long long row_bytes, int mean,            \
                                unsigned long long out) {                                \
    aggregate_rows<BITS>((const long long*)indptr, (const long long*)indices,           \
                         (const unsigned char*)codes, (const float*)scale,               \
                         (const float*)zero, num_dst, dim, row_bytes, mean,             \
                         (float*)out);                                                   \
}

AGG(quant_aggregate_8, 8)
AGG(quant_aggregate_4, 4)
"""

KERNELS = ("quant_aggregate_8", "quant_aggregate_4")
#: No fused multiply-add: the CPU path rounds the product and the sum separately.
OPTIONS = ("--fmad=false",)
_THREADS = 256


@dataclass
class QuantizedRows:
    """Rows stored as ``bits``-bit codes with a per-row ``scale`` and ``zero`` point.

    ``codes`` is uint8 ``[N, dim]`` for INT8, ``[N, ceil(dim / 2)]`` for INT4.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    dim: int
    bits: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.codes.shape[0], self.dim)

    @property
    def device(self) -> torch.device:
        return self.codes.device

    def __len__(self) -> int:
        return self.codes.shape[0]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale, self.zero))

    def index_select(self, ids: torch.Tensor) -> QuantizedRows:
        """The rows ``ids`` (gathered with :func:`~graphsys.cuda.gather.gather_rows`)."""
        # One range check for the three gathers of the same ids.
        scale = gather_rows(self.scale, ids)
        return QuantizedRows(gather_rows(self.codes, ids, check=False), scale,
                             gather_rows(self.zero, ids, check=False), self.dim, self.bits)

    def __getitem__(self, rows: slice) -> QuantizedRows:
        if not isinstance(rows, slice):
            raise TypeError("index QuantizedRows with a slice, or use index_select(ids)")
        return QuantizedRows(self.codes[rows], self.scale[rows], self.zero[rows], self.dim,
                             self.bits)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> QuantizedRows:
        return QuantizedRows(*(t.to(device, non_blocking=non_blocking)
                               for t in (self.codes, self.scale, self.zero)),
                             self.dim, self.bits)

    def dequantize(self) -> torch.Tensor:
        return dequantize(self)


def _check_bits(bits: int) -> int:
    if bits not in (8, 4):
        raise ValueError(f"bits must be 8 or 4, got {bits!r}")
    return int(bits)


def quantize(x: torch.Tensor, bits: Bits = 8) -> QuantizedRows:
    """Quantize the rows of a 2-D float tensor (any device).

    Example:
        >>> q = quantize(torch.tensor([[0.0, 1.0, 2.0]]), bits=8)
        >>> q.codes.tolist(), dequantize(q).tolist()
        ([[0, 127, 255]], [[0.0, 0.9960784912109375, 2.0]])
    """
    bits = _check_bits(bits)
    if x.dim() != 2 or not x.dtype.is_floating_point:
        raise ValueError(f"quantize takes a 2-D float tensor, got {x.dim()}-D {x.dtype}")
    x = x.detach().float()
    levels = (1 << bits) - 1
    if x.shape[1] == 0:
        low = high = x.new_zeros(x.shape[0])
    else:
        low, high = x.amin(1), x.amax(1)
    scale = (high - low) / levels
    inv = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
    q = torch.round((x - low[:, None]) * inv[:, None]).clamp_(0, levels).to(torch.uint8)
    if bits == 4:
        q = pack_nibbles(q)
    return QuantizedRows(q.contiguous(), scale.contiguous(), low.contiguous(), x.shape[1], bits)


def unpack_codes(q: QuantizedRows) -> torch.Tensor:
    """The codes as uint8 ``[N, dim]`` (INT4 unpacked)."""
    return q.codes if q.bits == 8 else unpack_nibbles(q.codes, q.dim)


def dequantize(q: QuantizedRows) -> torch.Tensor:
    """Float32 rows ``zero + scale * q``."""
    return q.zero[:, None] + q.scale[:, None] * unpack_codes(q).float()


def aggregation_error_bound(indptr: torch.Tensor, indices: torch.Tensor, q: QuantizedRows,
                            x: torch.Tensor, reduce: Reduce = "mean") -> torch.Tensor:
    """Per destination, the bound on ``|aggregate(q) - aggregate(x)|`` stated above."""
    indptr, indices = indptr.long(), indices.long()
    deg = (indptr[1:] - indptr[:-1])
    dst = torch.repeat_interleave(torch.arange(deg.numel(), device=deg.device), deg)
    half_steps = torch.zeros(deg.numel(), device=x.device).index_add_(
        0, dst, q.scale[indices] / 2)
    abs_sum = torch.zeros(deg.numel(), x.shape[1], device=x.device).index_add_(
        0, dst, x.float().abs()[indices])
    rounding = deg[:, None].float() * 2.0 ** -23 * (abs_sum + half_steps[:, None])
    bound = half_steps[:, None] * (1 + 1e-5) + rounding + 1e-7
    if reduce == "mean":
        bound = bound / deg.clamp(min=1)[:, None]
    return bound


def aggregate(indptr: torch.Tensor, indices: torch.Tensor, q: QuantizedRows,
              reduce: Reduce = "mean", *, check: bool = True) -> torch.Tensor:
    """Sum or mean of the dequantized source rows over each destination's in-edges.

    Args:
        indptr: int ``[num_dst + 1]`` CSC offsets of a block.
        indices: int ``[num_edges]`` source rows of ``q``.
        q: quantized source rows.
        reduce: ``'sum'`` or ``'mean'`` (zero for a destination without in-edges).
        check: validate the range of ``indices`` (two device syncs on the GPU path;
            a block's indices are valid by construction).

    Returns float32 ``[num_dst, q.dim]`` on ``q``'s device, within
    :func:`aggregation_error_bound` of the float32 aggregation of the original rows.

    Example:
        >>> q = quantize(torch.tensor([[0.0, 2.0], [4.0, 6.0]]))
        >>> aggregate(torch.tensor([0, 2]), torch.tensor([0, 1]), q).tolist()
        [[2.0, 4.0]]
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    device = q.device
    indptr = indptr.to(device=device, dtype=torch.int64).contiguous()
    indices = indices.to(device=device, dtype=torch.int64).contiguous()
    num_dst = indptr.numel() - 1
    if num_dst < 0:
        raise ValueError("indptr must have at least one entry")
    if check and indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= len(q)):
        raise IndexError(f"indices must lie in [0, {len(q)}) (the quantized rows)")
    out = torch.empty(num_dst, q.dim, dtype=torch.float32, device=device)
    if num_dst == 0 or q.dim == 0:
        return out
    codes = q.codes.contiguous()
    scale = q.scale.float().contiguous()
    zero = q.zero.float().contiguous()
    if _runtime.use_gpu(codes):
        kernel = _runtime.module(SOURCE, OPTIONS).get_function(f"quant_aggregate_{q.bits}")
        blocks = min(-(-num_dst * 32 // _THREADS), 65535)
        _runtime.launch(kernel, blocks, _THREADS, (
            _runtime.address(indptr), _runtime.address(indices), _runtime.address(codes),
            _runtime.address(scale), _runtime.address(zero), np.int64(num_dst),
            np.int64(q.dim), np.int64(codes.shape[1]), np.int32(reduce == "mean"),
            _runtime.address(out)))
        return out
    if device.type != "cpu":  # a GPU without CuPy: dequantize per edge with torch
        x = dequantize(q)
        deg = indptr[1:] - indptr[:-1]
        dst = torch.repeat_interleave(torch.arange(num_dst, device=device), deg)
        out.zero_().index_add_(0, dst, x[indices])
        return out / deg.clamp(min=1)[:, None] if reduce == "mean" else out
    from graphsys.cuda import _quant_cpu

    _quant_cpu.aggregate(indptr.numpy(), indices.numpy(), codes.numpy(), scale.numpy(),
                         zero.numpy(), q.dim, q.bits, reduce == "mean", out.numpy())
    return out
