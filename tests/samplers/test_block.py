"""Block and MiniBatch: structure accessors agree with a dense adjacency; moves keep data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphsys import CSCGraph
from graphsys.samplers import NID, Block, MiniBatch, NeighborSampler


def dense_from_csc(block: Block) -> torch.Tensor:
    """``[num_src, num_dst]`` edge counts, read straight from ``indptr``/``indices``."""
    dense = torch.zeros(block.num_src_nodes(), block.num_dst_nodes(), dtype=torch.int64)
    for d in range(block.num_dst_nodes()):
        for s in block.indices[block.indptr[d] : block.indptr[d + 1]].tolist():
            dense[s, d] += 1
    return dense


def dense_from_edges(src: torch.Tensor, dst: torch.Tensor, shape: tuple[int, int]):
    dense = torch.zeros(shape, dtype=torch.int64)
    dense.index_put_((src, dst), torch.ones_like(src), accumulate=True)
    return dense


def sampled_blocks() -> list[Block]:
    """Blocks from a random multigraph with self loops and isolated nodes."""
    rng = np.random.default_rng(0)
    src = np.concatenate([rng.integers(0, 40, 300), [5, 5, 5, 7]])
    dst = np.concatenate([rng.integers(3, 40, 300), [5, 6, 6, 7]])  # 0..2: no in-edges
    graph = CSCGraph.from_edges(src, dst, 40)
    batch = NeighborSampler([4, -1, 2]).sample(graph, [0, 5, 6, 7, 20, 1], key=0)
    return [*batch.blocks, Block(torch.tensor([0, 3, 3]), torch.tensor([1, 2, 1]),
                                 torch.tensor([7, 3, 9]), num_dst=2)]


@pytest.mark.parametrize("index", range(4))
def test_structure_matches_dense_adjacency(index):
    block = sampled_blocks()[index]
    nd, ns = block.num_dst_nodes(), block.num_src_nodes()
    dense = dense_from_csc(block)
    assert block.indptr.shape == (nd + 1,)
    assert bool(torch.all(block.indptr[1:] >= block.indptr[:-1]))
    assert block.num_edges() == int(dense.sum()) == int(block.indptr[-1])
    src, dst = block.edges()
    assert src.shape == dst.shape == (block.num_edges(),)
    assert torch.equal(dense_from_edges(src, dst, (ns, nd)), dense)
    assert torch.equal(block.edge_index, torch.stack([src, dst]))
    assert torch.equal(block.in_degrees(), dense.sum(0))
    assert torch.equal(block.out_degrees(), dense.sum(1))
    assert torch.equal(block.dst_of_edges(), dst)
    assert block.dst_of_edges() is block.dst_of_edges()  # cached
    indptr, indices, eids = block.adj_sparse("csc")
    assert indptr is block.indptr and indices is block.indices
    assert torch.equal(eids, torch.arange(block.num_edges()))
    assert torch.equal(block.srcdata[NID][:nd], block.dstdata[NID])
    assert block.src_nodes is block.srcdata[NID] and block.dst_nodes is block.dstdata[NID]
    assert block.device == torch.device("cpu")


def test_docstring_example():
    b = Block(torch.tensor([0, 2, 3]), torch.tensor([1, 2, 0]), torch.tensor([7, 3, 9]),
              num_dst=2)
    assert (b.num_src_nodes(), b.num_dst_nodes(), b.num_edges()) == (3, 2, 3)
    assert [t.tolist() for t in b.edges()] == [[1, 2, 0], [0, 0, 1]]
    assert b.dstdata[NID].tolist() == [7, 3]
    assert b.in_degrees().tolist() == [2, 1] and b.out_degrees().tolist() == [1, 1, 1]
    assert repr(b) == "Block(num_src_nodes=3, num_dst_nodes=2, num_edges=3)"


def test_empty_block():
    b = Block(torch.zeros(3, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
              torch.tensor([4, 2]), num_dst=2)
    assert b.num_edges() == 0
    assert [t.numel() for t in b.edges()] == [0, 0]
    assert b.in_degrees().tolist() == [0, 0] and b.out_degrees().tolist() == [0, 0]


def test_constructor_checks():
    with pytest.raises(ValueError, match="indptr"):
        Block(torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([1, 2]), num_dst=2)
    with pytest.raises(ValueError, match="num_dst"):
        Block(torch.tensor([0, 0, 0, 0]), torch.zeros(0, dtype=torch.int64),
              torch.tensor([1, 2]), num_dst=3)


def test_adj_sparse_only_csc():
    with pytest.raises(ValueError, match="csc"):
        sampled_blocks()[0].adj_sparse("coo")


def test_to_copies_structure_and_data():
    block = sampled_blocks()[0]
    block.srcdata["feat"] = torch.randn(block.num_src_nodes(), 3)
    block.dstdata["label"] = torch.arange(block.num_dst_nodes())
    block.edata["w"] = torch.rand(block.num_edges())
    block.edges()  # fill the cache
    moved = block.to("cpu", non_blocking=True)
    assert moved is not block
    assert set(moved.srcdata) == {NID, "feat"} and set(moved.dstdata) == {NID, "label"}
    assert set(moved.edata) == {"w"}
    for name in ("srcdata", "dstdata", "edata"):
        for key, value in getattr(block, name).items():
            assert torch.equal(getattr(moved, name)[key], value)
    assert torch.equal(moved.indptr, block.indptr) and torch.equal(moved.indices, block.indices)
    assert [t.tolist() for t in moved.edges()] == [t.tolist() for t in block.edges()]
    assert torch.equal(moved.dstdata[NID], moved.srcdata[NID][: moved.num_dst_nodes()])
    moved.srcdata["extra"] = torch.zeros(moved.num_src_nodes())  # frames check rows, as DGL
    assert "extra" not in block.srcdata  # separate dicts


def test_minibatch_is_a_three_tuple_and_moves():
    blocks = sampled_blocks()[:3]
    blocks[0].srcdata["feat"] = torch.ones(blocks[0].num_src_nodes(), 2)
    batch = MiniBatch(blocks[0].src_nodes, blocks[-1].dst_nodes, blocks)
    input_nodes, output_nodes, got = batch
    assert got is blocks and batch._fields == ("input_nodes", "output_nodes", "blocks")
    moved = batch.to("cpu")
    assert isinstance(moved, MiniBatch) and len(moved) == 3
    assert torch.equal(moved.input_nodes, input_nodes)
    assert torch.equal(moved.output_nodes, output_nodes)
    assert "feat" in moved.blocks[0].srcdata
    assert all(a is not b for a, b in zip(moved.blocks, blocks, strict=True))


def test_to_cuda_and_pin_memory(cuda_device):
    block = sampled_blocks()[0]
    block.srcdata["feat"] = torch.randn(block.num_src_nodes(), 3)
    pinned = block.pin_memory()
    assert pinned.indices.is_pinned() and pinned.srcdata["feat"].is_pinned()
    assert torch.equal(pinned.dstdata[NID], pinned.srcdata[NID][: pinned.num_dst_nodes()])
    moved = block.to("cuda", non_blocking=True)
    assert moved.device.type == "cuda" and moved.srcdata["feat"].is_cuda
    assert torch.equal(moved.edge_index.cpu(), block.edge_index)
