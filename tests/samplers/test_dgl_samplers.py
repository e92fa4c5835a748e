"""DGL's sampler arguments and block surface: full-neighbour blocks against the CSC
arrays, argument handling, ``int()``/``long()``, DGL's size names and frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphsys as dgl
from graphsys import CSCGraph
from graphsys.graph.frame import Frame
from graphsys.samplers import (
    Block,
    MultiLayerFullNeighborSampler,
    MultiLayerNeighborSampler,
    NeighborSampler,
)


def _graph() -> CSCGraph:
    rng = np.random.default_rng(4)
    src = np.concatenate([rng.integers(0, 80, 700), [3, 3, 9]])
    dst = np.concatenate([rng.integers(5, 80, 700), [3, 9, 9]])  # 0..4: no in-edges
    return CSCGraph.from_edges(src, dst, 80)


def test_full_neighbor_blocks_hold_every_in_edge_of_their_destinations() -> None:
    g = _graph()
    indptr, indices = g.indptr.numpy(), g.indices.numpy()
    _, out, blocks = MultiLayerFullNeighborSampler(3).sample(g, [0, 3, 9, 40, 41])
    assert out.tolist() == [0, 3, 9, 40, 41] and len(blocks) == 3
    for block in blocks:
        for d, v in enumerate(block.dst_nodes.tolist()):
            want = sorted(indices[indptr[v]:indptr[v + 1]].tolist())  # multiset of sources
            local = block.indices[block.indptr[d]:block.indptr[d + 1]]
            assert sorted(block.src_nodes[local].tolist()) == want
        assert block.num_edges() == int(sum(indptr[v + 1] - indptr[v]
                                            for v in block.dst_nodes.tolist()))
    # The layers chain: each block's sources are the next one's destinations.
    for a, b in zip(blocks, blocks[1:]):
        assert torch.equal(a.dst_nodes, b.src_nodes)


def test_dgl_arguments_in_dgl_order() -> None:
    s = NeighborSampler([10, 5], "in", None, None, True, ["feat"], ["label"], None, "cpu",
                        False)
    assert s.replace and s.prefetch_node_feats == ("feat",) and s.prefetch_labels == ("label",)
    assert s.output_device == torch.device("cpu") and s.prefetch_edge_feats == ()
    assert MultiLayerNeighborSampler is NeighborSampler
    assert dgl.dataloading.MultiLayerNeighborSampler is NeighborSampler
    full = dgl.dataloading.MultiLayerFullNeighborSampler(2, prefetch_node_feats=["feat"])
    assert full.fanouts == [-1, -1] and full.prefetch_node_feats == ("feat",)
    # fused has no effect: the same samples either way
    g = _graph()
    a = NeighborSampler([3, 3], fused=True).sample(g, [10, 20], key=1)
    b = NeighborSampler([3, 3], fused=False).sample(g, [10, 20], key=1)
    assert all(torch.equal(x.indices, y.indices) for x, y in zip(a.blocks, b.blocks))


@pytest.mark.parametrize("kwargs, match", [
    ({"edge_dir": "out"}, "g.reverse"),
    ({"prefetch_node_feats": {"paper": ["feat"]}}, "heterogeneous"),
])
def test_unsupported_arguments_say_so(kwargs, match) -> None:
    with pytest.raises(NotImplementedError, match=match):
        NeighborSampler([4, 4], **kwargs)


def test_block_dgl_sizes_idtype_and_frames() -> None:
    g = _graph()
    _, _, blocks = NeighborSampler([4, 3]).sample(g, [7, 8, 9], key=0)
    block = blocks[0]
    assert block.number_of_src_nodes() == block.num_src_nodes("_N") == block.num_src_nodes()
    assert block.number_of_dst_nodes() == block.num_dst_nodes("_N") == block.num_dst_nodes()
    assert block.number_of_edges() == block.num_edges(None) == block.num_edges()
    assert block.is_block and block.device == torch.device("cpu")
    assert block.srcnodes().tolist() == list(range(block.num_src_nodes()))
    assert block.dstnodes().tolist() == list(range(block.num_dst_nodes()))
    for frame in (block.srcdata, block.dstdata, block.edata):
        assert isinstance(frame, Frame)
    block.srcdata["h"] = torch.ones(block.num_src_nodes(), 2)
    with pytest.raises(ValueError, match="srcdata"):
        block.srcdata["bad"] = torch.ones(block.num_src_nodes() + 1)
    with pytest.raises(ValueError, match="dstdata"):
        block.dstdata["bad"] = torch.ones(block.num_src_nodes() + 1)
    assert block.idtype == torch.int64
    narrow = block.int()
    assert narrow.idtype == torch.int32 and narrow.indices.dtype == torch.int32
    assert torch.equal(narrow.indices.long(), block.indices)
    assert torch.equal(narrow.indptr, block.indptr) and narrow.srcdata["h"] is block.srcdata["h"]
    assert [t.tolist() for t in narrow.edges()] == [t.tolist() for t in block.edges()]
    assert narrow.int() is narrow and narrow.long().idtype == torch.int64
    assert narrow.to("cpu").idtype == torch.int32
    assert torch.equal(narrow.in_degrees(), block.in_degrees())
    assert torch.equal(narrow.out_degrees(), block.out_degrees())


def test_int_blocks_run_through_the_layers() -> None:
    g = _graph()
    _, _, blocks = NeighborSampler([4]).sample(g, [7, 8, 9], key=0)
    x = torch.randn(blocks[0].num_src_nodes(), 5)
    conv = dgl.nn.SAGEConv(5, 3, "mean")
    assert torch.allclose(conv(blocks[0].int(), x), conv(blocks[0], x))


def test_block_constructor_still_takes_plain_tensors() -> None:
    b = Block(torch.tensor([0, 2, 3]), torch.tensor([1, 2, 0]), torch.tensor([7, 3, 9]), num_dst=2)
    assert b.number_of_src_nodes() == 3 and b.dstdata["_ID"].tolist() == [7, 3]
