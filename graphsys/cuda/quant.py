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
perform the same float32 operations in the same order (no fused multiply-add, edges in
CSC order, the zero points summed separately and added last, the division last), so
their results are bitwise equal.

Quantization and dequantization are elementwise torch (identical on CPU and GPU); the
aggregation is a fused kernel: one warp per destination stages its in-edges' source ids,
scales and zero points 32 at a time (one coalesced load, then warp shuffles), reads the
code rows of its in-edges, accumulates ``scale_j * q_jc`` in float32 registers, adds ``sum_j zero_j``
once and divides by the degree for a mean. No dequantized matrix exists at any point:
an INT8 feature table takes a quarter of the float32 memory and bus traffic.

**Validation.** :class:`QuantizedRows` checks its tensors' dtypes, shapes and devices
when built (and :func:`aggregate` again, as attributes may be reassigned): codes uint8
``[N, dim]`` (INT8) or ``[N, ceil(dim / 2)]`` (INT4), scale and zero point float
``[N]``. :func:`aggregate` checks ``indptr``/``indices`` before any kernel: 1-D integer
tensors and, with ``check=True``, ``indptr[0] == 0``, non-decreasing, ``indptr[-1] ==
len(indices)`` and every index in ``[0, N)`` -- vectorised torch, one sync.
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

// The warp walks a destination's in-edges 32 at a time: lane l loads edge (e + l)'s
// source row j, scale and zero point once, and __shfl_sync hands them to every lane in
// edge order. Each lane still adds its columns' terms one edge after another, in CSC
// order, so the float32 sums are the CPU path's operation for operation (bitwise);
// a hub's edges are thus read with coalesced loads by the whole warp, not re-read by
// each lane. Splitting one destination's edges over several warps would reorder the
// sums, so it is not done.
template <int BITS>
__device__ void aggregate_rows(const long long* __restrict__ indptr,
                               const long long* __restrict__ indices,
                               const unsigned char* __restrict__ codes,
                               const float* __restrict__ scale,
                               const float* __restrict__ zero,
                               long long num_dst, long long dim, long long row_bytes,
                               int mean, float* __restrict__ out) {
    const unsigned FULL = 0xffffffffu;
    const int lane = threadIdx.x & 31;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    // Every lane of a warp has the same i (blockDim is a multiple of 32), so the loops
    // below are warp-uniform and every __shfl_sync sees all 32 lanes.
    for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; i < num_dst;
         i += warps) {
        const long long start = indptr[i], end = indptr[i + 1];
        const long long deg = end - start;
        float zsum = 0.0f;
        for (long long base = 0; base < dim; base += 32 * COLS_PER_LANE) {
            float acc[COLS_PER_LANE];
#pragma unroll
            for (int k = 0; k < COLS_PER_LANE; ++k) acc[k] = 0.0f;
            for (long long e0 = start; e0 < end; e0 += 32) {
                const long long mine = e0 + lane;
                long long my_j = 0;
                float my_s = 0.0f, my_z = 0.0f;
                if (mine < end) {
                    my_j = indices[mine];
                    my_s = scale[my_j];
                    my_z = zero[my_j];
                }
                const int batch = (int)(end - e0 < 32 ? end - e0 : 32);
                for (int t = 0; t < batch; ++t) {
                    const long long j = __shfl_sync(FULL, my_j, t);
                    const float s = __shfl_sync(FULL, my_s, t);
                    if (base == 0) zsum = __fadd_rn(zsum, __shfl_sync(FULL, my_z, t));
                    const unsigned char* row = codes + j * row_bytes;
#pragma unroll
                    for (int k = 0; k < COLS_PER_LANE; ++k) {
                        const long long c = base + k * 32 + lane;
                        if (c < dim)
                            acc[k] = __fadd_rn(acc[k], __fmul_rn(s, code_at<BITS>(row, c)));
                    }
                }
            }
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

    ``codes`` is uint8 ``[N, dim]`` for INT8, ``[N, ceil(dim / 2)]`` for INT4; ``scale``
    and ``zero`` are float ``[N]``, all on one device. Checked when built
    (:meth:`validate`; ``TypeError`` for dtypes, ``ValueError`` for the rest).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    dim: int
    bits: int

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise unless the codes, scales and zero points fit ``dim`` and ``bits``.

        Shapes, dtypes and devices only: no device sync, no pass over the data.
        """
        bits = _check_bits(self.bits)
        for name in ("codes", "scale", "zero"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise TypeError(f"QuantizedRows.{name} must be a tensor, "
                                f"got {type(getattr(self, name)).__name__}")
        if isinstance(self.dim, bool) or not isinstance(self.dim, (int, np.integer)) \
                or self.dim < 0:
            raise ValueError(f"QuantizedRows.dim must be an int >= 0, got {self.dim!r}")
        codes, scale, zero = self.codes, self.scale, self.zero
        if codes.dtype != torch.uint8:
            raise TypeError(f"QuantizedRows.codes must be uint8, got {codes.dtype}")
        if codes.dim() != 2:
            raise ValueError(f"QuantizedRows.codes must be 2-D, got {tuple(codes.shape)}")
        width = int(self.dim) if bits == 8 else (int(self.dim) + 1) // 2
        if codes.shape[1] != width:
            raise ValueError(f"INT{bits} codes of dim {self.dim} need {width} bytes a row, "
                             f"got {codes.shape[1]}")
        for name, t in (("scale", scale), ("zero", zero)):
            if not t.dtype.is_floating_point:
                raise TypeError(f"QuantizedRows.{name} must be float, got {t.dtype}")
            if t.dim() != 1 or t.shape[0] != codes.shape[0]:
                raise ValueError(f"QuantizedRows.{name} must be [{codes.shape[0]}] (one per "
                                 f"row), got {tuple(t.shape)}")
            if t.device != codes.device:
                raise ValueError(f"QuantizedRows.{name} is on {t.device}, the codes on "
                                 f"{codes.device}")

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
    # A tensor divisor, not a Python number: torch's CUDA kernel multiplies by the
    # reciprocal of a scalar divisor, which is 1 ulp off the CPU's true division
    # for some rows; both devices divide exactly by a tensor (bitwise-equal scales).
    scale = (high - low) / torch.full_like(high, float(levels))
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


def _check_block(indptr: torch.Tensor, indices: torch.Tensor, num_rows: int) -> None:
    """Raise unless ``indptr``/``indices`` (int64, on one device) form a valid CSC block
    over ``num_rows`` source rows; one sync, a message naming the first fault."""
    steps = indptr[1:] - indptr[:-1]
    faults = torch.stack((
        indptr[0] != 0,
        indptr[-1] != indices.numel(),
        (steps < 0).any() if steps.numel() else indptr.new_zeros((), dtype=torch.bool),
        ((indices < 0) | (indices >= num_rows)).any() if indices.numel()
        else indptr.new_zeros((), dtype=torch.bool),
    )).tolist()  # the one sync
    if faults[0]:
        raise ValueError(f"indptr must start at 0, got {int(indptr[0])}")
    if faults[1]:
        raise ValueError(f"indptr must end at len(indices) = {indices.numel()}, "
                         f"got {int(indptr[-1])}")
    if faults[2]:
        at = int(torch.nonzero(steps < 0)[0])
        raise ValueError(f"indptr must be non-decreasing; indptr[{at + 1}] = "
                         f"{int(indptr[at + 1])} < indptr[{at}] = {int(indptr[at])}")
    if faults[3]:
        low, high = int(indices.min()), int(indices.max())
        raise IndexError(f"indices must lie in [0, {num_rows}) (the quantized rows), "
                         f"found {low if low < 0 else high}")


def aggregate(indptr: torch.Tensor, indices: torch.Tensor, q: QuantizedRows,
              reduce: Reduce = "mean", *, check: bool = True) -> torch.Tensor:
    """Sum or mean of the dequantized source rows over each destination's in-edges.

    Args:
        indptr: int ``[num_dst + 1]`` CSC offsets of a block.
        indices: int ``[num_edges]`` source rows of ``q``.
        q: quantized source rows.
        reduce: ``'sum'`` or ``'mean'`` (zero for a destination without in-edges).
        check: validate ``indptr`` (starts at 0, non-decreasing, ends at
            ``len(indices)``) and the range of ``indices`` (vectorised, one device sync
            on the GPU path). ``check=False`` trusts them, as for a sampler's block,
            which is valid by construction; dtypes and shapes are checked either way.

    Returns float32 ``[num_dst, q.dim]`` on ``q``'s device, within
    :func:`aggregation_error_bound` of the float32 aggregation of the original rows.

    Example:
        >>> q = quantize(torch.tensor([[0.0, 2.0], [4.0, 6.0]]))
        >>> aggregate(torch.tensor([0, 2]), torch.tensor([0, 1]), q).tolist()
        [[2.0, 4.0]]
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    if not isinstance(q, QuantizedRows):
        raise TypeError(f"q must be QuantizedRows, got {type(q).__name__}")
    q.validate()
    device = q.device
    for name, t in (("indptr", indptr), ("indices", indices)):
        if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point \
                or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got "
                            f"{getattr(t, 'dtype', type(t).__name__)}")
        if t.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    indptr = indptr.to(device=device, dtype=torch.int64).contiguous()
    indices = indices.to(device=device, dtype=torch.int64).contiguous()
    num_dst = indptr.numel() - 1
    if num_dst < 0:
        raise ValueError("indptr must have at least one entry")
    if check:
        _check_block(indptr, indices, len(q))
    out = torch.empty(num_dst, q.dim, dtype=torch.float32, device=device)
    if num_dst == 0 or q.dim == 0:
        return out
    codes = q.codes.contiguous()
    scale = q.scale.float().contiguous()
    zero = q.zero.float().contiguous()
    if _runtime.use_gpu(codes):
        kernel = _runtime.function(SOURCE, f"quant_aggregate_{q.bits}", OPTIONS, device=device)
        blocks = min(-(-num_dst * 32 // _THREADS), 65535)
        _runtime.launch(kernel, blocks, _THREADS, device=device, args=(
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
