"""Blocks against DGL itself; runs where DGL imports (bench/.dgl-venv), skips elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphsys
from graphsys.graph.csc import CSCGraph
from graphsys.nn import GraphConv, SAGEConv

dgl = pytest.importorskip("dgl")
dglnn = pytest.importorskip("dgl.nn")


@pytest.fixture
def graph() -> CSCGraph:
    rng = np.random.default_rng(0)
    return CSCGraph.from_edges(rng.integers(0, 300, 3000), rng.integers(0, 300, 3000),
                               num_nodes=300)


def test_to_dgl_keeps_structure_and_ids(graph: CSCGraph) -> None:
    batch = graphsys.NeighborSampler([4, 3], seed=1).sample(graph, torch.arange(0, 40))
    for block in batch.blocks:
        dblock = block.to_dgl()
        assert dblock.is_block
        assert dblock.num_src_nodes() == block.num_src_nodes()
        assert dblock.num_dst_nodes() == block.num_dst_nodes()
        assert dblock.num_edges() == block.num_edges()
        src, dst = dblock.edges()
        ours = sorted(zip(*[t.tolist() for t in block.edges()], strict=True))
        assert sorted(zip(src.tolist(), dst.tolist(), strict=True)) == ours
        assert torch.equal(dblock.srcdata[dgl.NID], block.srcdata["_ID"])
        assert torch.equal(dblock.dstdata[dgl.NID], block.dstdata["_ID"])


@pytest.mark.parametrize("aggregator", ["mean", "gcn", "pool"])
def test_sageconv_matches_dgl(graph: CSCGraph, aggregator: str) -> None:
    torch.manual_seed(0)
    block = graphsys.NeighborSampler([5], seed=2).sample(graph, torch.arange(30)).blocks[0]
    h = torch.randn(block.num_src_nodes(), 8)
    ours = SAGEConv(8, 6, aggregator)  # DGL's positional signature and state_dict keys
    theirs = dglnn.SAGEConv(8, 6, aggregator)
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(block, h), theirs(block.to_dgl(), h))


def test_graphconv_matches_dgl(graph: CSCGraph) -> None:
    torch.manual_seed(0)
    block = graphsys.NeighborSampler([5], seed=3).sample(graph, torch.arange(30)).blocks[0]
    h = torch.randn(block.num_src_nodes(), 8)
    ours = GraphConv(8, 6, norm="both", allow_zero_in_degree=True)
    theirs = dglnn.GraphConv(8, 6, norm="both", allow_zero_in_degree=True)
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(block, h), theirs(block.to_dgl(), h))


def test_dataloader_accepts_a_dgl_graph(graph: CSCGraph) -> None:
    src, dst = graph.edges()
    g = dgl.graph((src, dst), num_nodes=graph.num_nodes())
    loader = graphsys.DataLoader(g, torch.arange(50), graphsys.NeighborSampler([3]),
                                 batch_size=25, seed=0)
    edge_set = set(zip(src.tolist(), dst.tolist(), strict=True))
    for _inp, _out, blocks in loader:
        s, d = blocks[0].edges()
        gs, gd = blocks[0].src_nodes[s], blocks[0].dst_nodes[d]
        assert set(zip(gs.tolist(), gd.tolist(), strict=True)) <= edge_set
