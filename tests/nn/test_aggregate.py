"""Neighbour reductions against a dense adjacency product, on every path they take."""

from __future__ import annotations

import pytest
import torch

from graphsys.nn._aggregate import mean_neighbours, sum_neighbours, weighted_sum_neighbours
from graphsys.samplers.block import Block


def _block(num_dst: int, num_src: int, dtype: torch.dtype, seed: int = 0) -> Block:
    g = torch.Generator().manual_seed(seed)
    deg = torch.randint(0, 6, (num_dst,), generator=g)
    if num_dst:
        deg[0] = 0  # a destination with no in-edges
    indptr = torch.zeros(num_dst + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(deg, 0)
    indices = torch.randint(0, num_src, (int(indptr[-1]),), generator=g)
    indices[:2] = indices[2] if indices.numel() > 2 else indices[:2]  # repeated sources
    return Block(indptr.to(dtype), indices.to(dtype), torch.arange(num_src), num_dst=num_dst)


def _dense(block: Block, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``A[dst, src]`` with one entry per edge (duplicates add), built edge by edge."""
    a = torch.zeros(block.num_dst_nodes(), block.num_src_nodes(), dtype=torch.float64)
    for d in range(block.num_dst_nodes()):
        for e in range(int(block.indptr[d]), int(block.indptr[d + 1])):
            a[d, int(block.indices[e])] += 1.0 if weight is None else float(weight[e])
    return a


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("shape", [(16,), (3, 4)])
def test_sums_and_means_equal_the_dense_product_with_its_gradient(dtype, shape) -> None:
    block = _block(12, 30, dtype)
    x = torch.randn(30, *shape, generator=torch.Generator().manual_seed(1),
                    requires_grad=True)
    a = _dense(block)
    flat = x.detach().double().reshape(30, -1)
    ref = (a @ flat).reshape(12, *shape)
    out = sum_neighbours(block, x)
    assert out.shape == (12, *shape)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    deg = a.sum(1).clamp(min=1).reshape(-1, *[1] * len(shape))
    torch.testing.assert_close(mean_neighbours(block, x).double(), ref / deg, rtol=1e-6,
                               atol=1e-6)
    upstream = torch.randn(12, *shape, generator=torch.Generator().manual_seed(2))
    out.backward(upstream)
    grad = (a.t() @ upstream.double().reshape(12, -1)).reshape(30, *shape)
    torch.testing.assert_close(x.grad.double(), grad, rtol=1e-6, atol=1e-6)


def test_weighted_sums_with_and_without_a_weight_gradient() -> None:
    block = _block(10, 20, torch.int64, seed=3)
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(4))
    w = torch.rand(block.num_edges(), generator=torch.Generator().manual_seed(5))
    ref = _dense(block, w) @ x.double()
    torch.testing.assert_close(weighted_sum_neighbours(block, x, w).double(), ref,
                               rtol=1e-6, atol=1e-6)
    w = w.clone().requires_grad_(True)  # attention-like weights take the gather path
    out = weighted_sum_neighbours(block, x, w)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    out.sum().backward()
    src = block.indices.long()
    torch.testing.assert_close(w.grad, x[src].sum(1))  # d(sum)/dw_e = sum_f x[src_e, f]


def test_empty_blocks_reduce_to_zeros() -> None:
    for num_dst in (0, 5):
        indptr = torch.zeros(num_dst + 1, dtype=torch.int64)
        block = Block(indptr, torch.zeros(0, dtype=torch.int64), torch.arange(7), num_dst)
        x = torch.randn(7, 4)
        assert torch.equal(sum_neighbours(block, x), torch.zeros(num_dst, 4))
        assert torch.equal(mean_neighbours(block, x), torch.zeros(num_dst, 4))
