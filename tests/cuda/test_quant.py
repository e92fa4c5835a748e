from __future__ import annotations

import pytest
import torch
from _gpu_marks import gpu

from graphsys.cuda import aggregate, aggregation_error_bound, dequantize, quantize
from graphsys.cuda.quant import unpack_codes


def random_block(num_dst=30, num_src=60, max_deg=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    deg = torch.randint(0, max_deg + 1, (num_dst,), generator=g)
    deg[0] = 0  # a destination without in-edges
    indptr = torch.zeros(num_dst + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(deg, 0)
    indices = torch.randint(0, num_src, (int(indptr[-1]),), generator=g)
    return indptr, indices


def dense_aggregate(indptr, indices, x, reduce):
    deg = indptr[1:] - indptr[:-1]
    dst = torch.repeat_interleave(torch.arange(deg.numel()), deg)
    out = torch.zeros(deg.numel(), x.shape[1], dtype=torch.float64).index_add_(
        0, dst, x.double()[indices])
    return out / deg.clamp(min=1)[:, None] if reduce == "mean" else out


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("width", [1, 7, 64, 129])
def test_quantization_error_within_half_a_step(bits, width) -> None:
    x = torch.randn(50, width, generator=torch.Generator().manual_seed(width)) * 3 + 1
    x[3] = 2.5  # a constant row: scale 0, reconstructed exactly
    q = quantize(x, bits)
    assert q.codes.dtype == torch.uint8
    assert q.codes.shape == (50, width if bits == 8 else (width + 1) // 2)
    assert int(unpack_codes(q).max()) <= (1 << bits) - 1
    err = (dequantize(q) - x).abs()
    bound = q.scale[:, None] / 2 * (1 + 1e-5) + 1e-6 * x.abs()
    assert bool((err <= bound).all())
    assert torch.equal(dequantize(q)[3], x[3])
    # the bound is tight enough to mean something: the worst error uses most of it
    if width > 1:
        assert float((err / q.scale.clamp(min=1e-12)[:, None]).max()) > 0.3


def test_quantized_rows_memory_is_a_quarter_and_an_eighth() -> None:
    x = torch.randn(1000, 128)
    assert quantize(x, 8).nbytes() / x.nbytes < 0.27
    assert quantize(x, 4).nbytes() / x.nbytes < 0.15  # 1/8 plus scale and zero point


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("width", [1, 5, 64, 300])
def test_fused_aggregation_within_the_stated_bound(bits, reduce, width) -> None:
    indptr, indices = random_block(seed=width)
    x = torch.randn(60, width, generator=torch.Generator().manual_seed(1)) * 2
    q = quantize(x, bits)
    out = aggregate(indptr, indices, q, reduce)
    exact = dense_aggregate(indptr, indices, x, reduce)
    bound = aggregation_error_bound(indptr, indices, q, x, reduce)
    assert out.dtype == torch.float32 and out.shape == (30, width)
    assert bool(((out.double() - exact).abs() <= bound.double()).all())
    assert torch.equal(out[0], torch.zeros(width))  # no in-edges
    # equal to aggregating the dequantized rows (same values, another operation order)
    deq = dense_aggregate(indptr, indices, dequantize(q), reduce)
    assert torch.allclose(out.double(), deq, rtol=1e-5, atol=1e-5)


def test_aggregation_of_empty_blocks_and_bad_input() -> None:
    q = quantize(torch.randn(4, 3))
    assert aggregate(torch.tensor([0]), torch.tensor([], dtype=torch.int64), q).shape == (0, 3)
    out = aggregate(torch.tensor([0, 0, 0]), torch.tensor([], dtype=torch.int64), q)
    assert torch.equal(out, torch.zeros(2, 3))
    with pytest.raises(IndexError):
        aggregate(torch.tensor([0, 1]), torch.tensor([4]), q)
    with pytest.raises(ValueError, match="reduce"):
        aggregate(torch.tensor([0, 1]), torch.tensor([0]), q, "max")
    with pytest.raises(ValueError, match="bits"):
        quantize(torch.randn(2, 2), 3)


@gpu
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("width", [1, 5, 64, 300])
def test_gpu_aggregation_equals_the_cpu_path(bits, reduce, width) -> None:
    indptr, indices = random_block(seed=width)
    x = torch.randn(60, width, generator=torch.Generator().manual_seed(1)) * 2
    q = quantize(x, bits)
    q_gpu = quantize(x.cuda(), bits)
    for a, b in ((q_gpu.codes, q.codes), (q_gpu.scale, q.scale), (q_gpu.zero, q.zero)):
        assert torch.equal(a.cpu(), b)
    cpu = aggregate(indptr, indices, q, reduce)
    gpu_out = aggregate(indptr.cuda(), indices.cuda(), q_gpu, reduce).cpu()
    bound = aggregation_error_bound(indptr, indices, q, x, reduce)
    assert bool(((gpu_out - cpu).abs() <= bound).all())
    assert torch.allclose(gpu_out, cpu, rtol=0, atol=1e-6)
