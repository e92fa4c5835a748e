from __future__ import annotations

import numpy as np
import pytest
import torch

from graphsys.cuda import (
    QuantizedRows,
    aggregate,
    aggregation_error_bound,
    dequantize,
    quantize,
)
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


def hub_block(num_dst=40, num_src=300, seed=0):
    """Some hubs (hundreds of in-edges, more than a warp's 32 per pass), some leaves."""
    g = torch.Generator().manual_seed(seed)
    deg = torch.randint(0, 5, (num_dst,), generator=g)
    deg[0], deg[3], deg[7] = 0, 700, 33
    indptr = torch.zeros(num_dst + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(deg, 0)
    return indptr, torch.randint(0, num_src, (int(indptr[-1]),), generator=g)


def sequential_reference(indptr, indices, q, reduce):
    """The documented operation order in numpy float32: per column, terms added one
    edge after another in CSC order; zero points summed apart and added last."""
    codes = unpack_codes(q).numpy().astype(np.float32)
    scale, zero = q.scale.numpy(), q.zero.numpy()
    out = np.zeros((indptr.numel() - 1, q.dim), np.float32)
    for i in range(out.shape[0]):
        acc = np.zeros(q.dim, np.float32)
        zsum = np.float32(0)
        for e in range(int(indptr[i]), int(indptr[i + 1])):
            j = int(indices[e])
            acc = acc + scale[j] * codes[j]
            zsum = np.float32(zsum + zero[j])
        v = acc + zsum
        deg = int(indptr[i + 1] - indptr[i])
        if reduce == "mean" and deg > 0:
            v = v / np.float32(deg)
        out[i] = v
    return torch.from_numpy(out)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("width", [1, 5, 64, 300])
def test_aggregation_equals_the_sequential_order_bitwise(device, bits, reduce, width) -> None:
    """CPU (numba) and GPU (warp-shuffle kernel) both follow the documented order, so
    each equals the sequential float32 reference bitwise, hubs included."""
    for indptr, indices in (random_block(seed=width), hub_block(seed=width)):
        num_src = int(indices.max()) + 1
        x = torch.randn(num_src, width, generator=torch.Generator().manual_seed(1)) * 2
        q = quantize(x, bits)
        q_dev = quantize(x.to(device), bits)
        for a, b in ((q_dev.codes, q.codes), (q_dev.scale, q.scale), (q_dev.zero, q.zero)):
            assert torch.equal(a.cpu(), b)
        got = aggregate(indptr.to(device), indices.to(device), q_dev, reduce)
        assert got.device.type == device
        assert torch.equal(got.cpu(), sequential_reference(indptr, indices, q, reduce))
        bound = aggregation_error_bound(indptr, indices, q, x, reduce)
        exact = dense_aggregate(indptr, indices, x, reduce)
        assert bool(((got.cpu().double() - exact).abs() <= bound.double()).all())


def test_gpu_aggregation_equals_the_cpu_path(cuda_device) -> None:
    indptr, indices = hub_block()
    x = torch.randn(300, 77, generator=torch.Generator().manual_seed(3))
    for bits in (8, 4):
        q = quantize(x, bits)
        for reduce in ("mean", "sum"):
            cpu = aggregate(indptr, indices, q, reduce)
            gpu_out = aggregate(indptr.cuda(), indices.cuda(), q.to("cuda"), reduce)
            assert torch.equal(gpu_out.cpu(), cpu)


def test_quantized_rows_are_validated(device) -> None:
    q = quantize(torch.randn(6, 5, device=device), 4)
    with pytest.raises(ValueError, match="need 3 bytes"):
        QuantizedRows(q.codes[:, :2], q.scale, q.zero, 5, 4)
    with pytest.raises(ValueError, match="need 5 bytes"):
        QuantizedRows(q.codes, q.scale, q.zero, 5, 8)
    with pytest.raises(TypeError, match="uint8"):
        QuantizedRows(q.codes.int(), q.scale, q.zero, 5, 4)
    with pytest.raises(ValueError, match="one per"):
        QuantizedRows(q.codes, q.scale[:5], q.zero, 5, 4)
    with pytest.raises(ValueError, match="one per"):
        QuantizedRows(q.codes, q.scale, q.zero[:, None], 5, 4)
    with pytest.raises(TypeError, match="float"):
        QuantizedRows(q.codes, q.scale, q.zero.long(), 5, 4)
    with pytest.raises(ValueError, match="bits"):
        QuantizedRows(q.codes, q.scale, q.zero, 5, 2)
    with pytest.raises(ValueError, match="dim"):
        QuantizedRows(q.codes, q.scale, q.zero, -1, 4)
    with pytest.raises(ValueError, match="2-D"):
        QuantizedRows(q.codes.reshape(-1), q.scale, q.zero, 5, 4)
    q.scale = q.scale[:3]  # reassigned after construction: aggregate checks again
    with pytest.raises(ValueError, match="one per"):
        aggregate(torch.tensor([0, 1]), torch.tensor([0]), q)


@pytest.mark.parametrize(("indptr", "indices", "error", "message"), [
    ([1, 2], [0, 1], ValueError, "start at 0"),
    ([0, 1], [0, 1], ValueError, "end at len"),
    ([0, 3], [0, 1], ValueError, "end at len"),
    ([0, 2, 1, 2], [0, 1], ValueError, "non-decreasing"),
    ([0, 2], [0, 6], IndexError, "found 6"),
    ([0, 2], [-1, 0], IndexError, "found -1"),
    ([], [], ValueError, "at least one"),
])
def test_aggregate_validates_the_block_before_any_kernel(device, indptr, indices, error,
                                                         message) -> None:
    q = quantize(torch.randn(6, 3, device=device))
    with pytest.raises(error, match=message):
        aggregate(torch.tensor(indptr, dtype=torch.int64, device=device),
                  torch.tensor(indices, dtype=torch.int64, device=device), q)


def test_aggregate_rejects_tensors_of_the_wrong_kind(device) -> None:
    q = quantize(torch.randn(6, 3, device=device))
    with pytest.raises(TypeError, match="indptr must be an integer"):
        aggregate(torch.tensor([0.0, 1.0]), torch.tensor([0]), q)
    with pytest.raises(TypeError, match="indices must be an integer"):
        aggregate(torch.tensor([0, 1]), torch.tensor([True]), q)
    with pytest.raises(ValueError, match="indptr must be 1-D"):
        aggregate(torch.tensor([[0, 1]]), torch.tensor([0]), q)
    with pytest.raises(TypeError, match="QuantizedRows"):
        aggregate(torch.tensor([0, 1]), torch.tensor([0]), torch.randn(6, 3))
