"""Repeated seeds are kept, as DGL 2.1's CPU NeighborSampler keeps them.

Measured on DGL 2.1.0 (fused sampler, 2 threads): ``output_nodes`` and the last block's
destination nodes are the seeds as given; each copy has its own, independent draw; a
block's source nodes start with its destination nodes, repeats included; a source that
is a repeated node points at one of its copies (graphsys: the last). Every block is
held to a reference built from the graph, not from graphsys.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import CUDA

from graphsys import CSCGraph, DataLoader, NeighborSampler
from graphsys.cuda.sampling import GPUNeighborSampler
from graphsys.samplers import NID
from graphsys.samplers.duplicates import Copies, redraw_copies, restore_copies

NUM_NODES = 40


def graph_with_hubs(seed: int = 0) -> CSCGraph:
    """Random in-edges (some repeated), node 0 with none and node 1 with 30."""
    rng = np.random.default_rng(seed)
    pairs = [(int(u), 1) for u in rng.integers(0, NUM_NODES, 30)]
    for v in range(2, NUM_NODES):
        pairs += [(int(u), v) for u in rng.integers(0, NUM_NODES, rng.integers(0, 7))]
    src, dst = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True))
    return CSCGraph.from_edges(src, dst, NUM_NODES)


def in_neighbours(graph: CSCGraph, v: int) -> list[int]:
    return graph.indices[int(graph.indptr[v]):int(graph.indptr[v + 1])].tolist()


def check_block(graph: CSCGraph, block, dst: list[int], fanout: int, replace: bool) -> None:
    """``block`` against the graph, for destination nodes ``dst`` (repeats kept)."""
    nd = block.num_dst_nodes()
    src_ids = block.srcdata[NID].tolist()
    assert nd == len(dst) and src_ids[:nd] == dst
    others = src_ids[nd:]
    assert len(set(others)) == len(others) and not set(others) & set(dst)
    last_copy = {v: i for i, v in enumerate(dst)}
    local = block.indices.tolist()
    ptr = block.indptr.tolist()
    sources_in_order = []
    for i, v in enumerate(dst):
        got_local = local[ptr[i]:ptr[i + 1]]
        got = [src_ids[j] for j in got_local]
        sources_in_order += got
        have = in_neighbours(graph, v)
        if fanout == -1:
            assert Counter(got) == Counter(have)
        elif replace:
            assert len(got) == (fanout if have else 0) and set(got) <= set(have)
        else:
            assert len(got) == min(fanout, len(have)) and not Counter(got) - Counter(have)
        for j, u in zip(got_local, got, strict=True):  # a repeated node: its last copy
            assert j == last_copy.get(u, j)
    first_seen = list(dict.fromkeys(u for u in sources_in_order if u not in last_copy))
    assert others == first_seen, "new source nodes are not in order of first appearance"


@pytest.mark.parametrize(("fanouts", "replace"), [([3], False), ([-1], False), ([3, 2], False),
                                                  ([4, 4], True), ([2, -1, 3], False)])
def test_blocks_keep_repeated_seeds(fanouts, replace):
    graph = graph_with_hubs()
    seeds = [1, 5, 1, 0, 9, 5, 1, 33]
    for key in range(3):
        input_nodes, output_nodes, blocks = NeighborSampler(fanouts, replace=replace).sample(
            graph, torch.tensor(seeds), key=key)
        assert output_nodes.tolist() == seeds
        assert torch.equal(input_nodes, blocks[0].srcdata[NID])
        dst = seeds
        for block, fanout in zip(reversed(blocks), reversed(fanouts), strict=True):
            check_block(graph, block, dst, fanout, replace)
            dst = block.srcdata[NID].tolist()


def test_copies_draw_independently_and_first_copies_as_distinct_seeds():
    graph = graph_with_hubs()
    sampler = NeighborSampler([3])
    differ = 0
    for key in range(50):
        _, _, (block,) = sampler.sample(graph, [1, 7, 1], key=key)
        ptr, src = block.indptr.tolist(), block.srcdata[NID][block.indices].tolist()
        first, second = sorted(src[ptr[0]:ptr[1]]), sorted(src[ptr[2]:ptr[3]])
        differ += first != second
        # The first copies draw exactly what the distinct seeds [1, 7] draw.
        _, _, (plain,) = sampler.sample(graph, [1, 7], key=key)
        assert src[:ptr[2]] == plain.srcdata[NID][plain.indices].tolist()
    assert differ >= 40  # 3 of 30 in-edges: two independent draws rarely agree


@pytest.mark.parametrize("which", ["prob", "mask", "edge_feats"])
def test_repeated_seeds_record_edges(which):
    graph = graph_with_hubs()
    rng = np.random.default_rng(3)
    graph.edata["w"] = torch.from_numpy(rng.random(graph.num_edges()))
    graph.edata["m"] = torch.from_numpy(rng.random(graph.num_edges()) < 0.7)
    kwargs = {"prob": {"prob": "w"}, "mask": {"mask": "m"},
              "edge_feats": {"prefetch_edge_feats": ["w"]}}[which]
    seeds = [1, 4, 1, 1]
    _, _, (block,) = NeighborSampler([3], **kwargs).sample(graph, seeds, key=5)
    eid = block.edata["_ID"].tolist()
    ptr = block.indptr.tolist()
    src = block.srcdata[NID][block.indices].tolist()
    for i, v in enumerate(seeds):
        for e in range(ptr[i], ptr[i + 1]):
            assert int(graph.indptr[v]) <= eid[e] < int(graph.indptr[v + 1])
            assert int(graph.indices[eid[e]]) == src[e]
            if which == "mask":
                assert bool(graph.edata["m"][eid[e]])
    assert len(set(eid[ptr[0]:ptr[1]])) == ptr[1] - ptr[0]  # without replacement


def test_gpu_sampler_cpu_twin_keeps_repeats_like_the_cpu_sampler():
    graph = graph_with_hubs()
    seeds = torch.tensor([3, 1, 3, 3, 8])
    a = NeighborSampler([3, 2], seed=4).sample(graph, seeds, key=9)
    b = GPUNeighborSampler([3, 2], seed=4, device="cpu").sample(graph, seeds, key=9)
    assert torch.equal(a.input_nodes, b.input_nodes) and torch.equal(a.output_nodes, seeds)
    for x, y in zip(a.blocks, b.blocks, strict=True):
        assert torch.equal(x.indptr, y.indptr) and torch.equal(x.indices, y.indices)


@pytest.mark.parametrize("device", [CUDA])
def test_gpu_sampler_keeps_repeats_like_the_cpu_twin(device):
    graph = graph_with_hubs()
    seeds = torch.tensor([3, 1, 3, 3, 8, 1])
    a = GPUNeighborSampler([3, 2], seed=4, device="cpu").sample(graph, seeds, key=2)
    b = GPUNeighborSampler([3, 2], seed=4, device=device).sample(graph, seeds, key=2)
    assert torch.equal(a.input_nodes, b.input_nodes.cpu())
    for x, y in zip(a.blocks, b.blocks, strict=True):
        assert torch.equal(x.indptr, y.indptr.cpu()) and torch.equal(x.indices, y.indices.cpu())


def test_dataloader_keeps_repeated_seeds():
    graph = graph_with_hubs()
    labels = torch.arange(NUM_NODES) * 10
    seeds = [2, 2, 5, 1, 2, 5, 7]
    loader = DataLoader(graph, seeds, NeighborSampler([2, 2]), batch_size=3, labels=labels)
    got = []
    for _, output_nodes, blocks in loader:
        assert blocks[-1].num_dst_nodes() == len(output_nodes)
        assert torch.equal(blocks[-1].dstdata["label"], labels[output_nodes])
        got += output_nodes.tolist()
    assert got == seeds


def test_helpers_against_plain_python():
    seeds = torch.tensor([4, 2, 4, 4, 9, 2])
    copies = Copies.of(seeds)
    assert copies.ranks.tolist() == [0, 0, 1, 2, 0, 1]
    assert copies.first.tolist() == [0, 1, 0, 0, 4, 1]
    dst = torch.cat((seeds, torch.tensor([7, 3])))  # a lower layer: new nodes appended
    assert copies.first_copies(dst).tolist() == [4, 2, 9, 7, 3]
    # The usual relabelling of sources [7, 4, 2, 5, 7, 9] over the first copies ...
    src_nodes, local = torch.tensor([4, 2, 9, 7, 3, 5]), torch.tensor([3, 0, 1, 5, 3, 2])
    src_nodes, local = restore_copies(dst, copies, src_nodes, local)
    assert src_nodes.tolist() == [4, 2, 4, 4, 9, 2, 7, 3, 5]  # dst as given, then new
    assert local.tolist() == [6, 3, 5, 8, 6, 4]  # 4 and 2: their last copies

    def draw(nodes: torch.Tensor, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        counts = nodes % 3
        return counts, torch.repeat_interleave(nodes * 1000 + key % 997, counts)

    counts, values = draw(seeds, 5)
    redraw_copies(seeds, copies, counts, values, 5, draw)
    tags = [v % 1000 for v in values.tolist()]
    assert [v // 1000 for v in values.tolist()] == [4, 2, 2, 4, 4, 2, 2]
    assert tags[:3] == [5, 5, 5] and tags[3] != 5 and tags[4] not in (5, tags[3])
    assert tags[5] == tags[6] == tags[3]  # the second copies of 4 and 2: one key


def _in_edges_by_destination(src_ids: torch.Tensor, dst_local: torch.Tensor,
                             src_local: torch.Tensor, nd: int, k: int) -> dict:
    """Destination -> Counter of global sources; a destination is its position among the
    first ``k`` (the seeds, repeats kept) and its global id after them (new nodes, whose
    order DGL does not fix)."""
    out: dict = {}
    for i in range(nd):
        key = i if i < k else int(src_ids[i])
        out[key] = Counter(src_ids[src_local[dst_local == i]].tolist())
    return out


def test_same_blocks_as_dgl_where_dgl_is_installed():
    dgl = pytest.importorskip("dgl")
    from dgl.dataloading import neighbor_sampler as dgl_sampler

    if dgl_sampler.get_num_threads() < 2:
        pytest.skip("DGL fuses its CPU sampler (the behaviour compared) only with 2+ threads")
    graph = graph_with_hubs()
    src, dst = graph.edges()
    g = dgl.graph((src, dst), num_nodes=NUM_NODES)
    seeds = torch.tensor([1, 5, 1, 0, 9, 5, 1, 33])
    k = len(seeds)
    for fanouts in ([-1, -1], [3, 2]):
        theirs = dgl.dataloading.NeighborSampler(fanouts).sample_blocks(g, seeds)
        ours = NeighborSampler(fanouts).sample(graph, seeds)
        assert ours[1].tolist() == theirs[1].tolist() == seeds.tolist()
        for depth, (a, b) in enumerate(zip(reversed(ours[2]), reversed(theirs[2]),
                                           strict=True)):
            a_src, b_src = a.srcdata[NID], b.srcdata[dgl.NID]
            assert a_src[:k].tolist() == b_src[:k].tolist()  # the seeds, repeats kept
            nd = b.num_dst_nodes()
            b_u, b_v = b.edges()
            a_v = torch.repeat_interleave(torch.arange(a.num_dst_nodes()), torch.diff(a.indptr))
            if depth == 0:  # the seeds' block: one draw of the same size per copy
                assert a.num_dst_nodes() == nd == k
                assert torch.diff(a.indptr).tolist() == \
                    torch.bincount(b_v, minlength=nd).tolist()
            if fanouts == [-1, -1]:  # every in-edge: the same blocks up to new-node order
                assert a.num_dst_nodes() == nd and sorted(a_src.tolist()) == sorted(b_src.tolist())
                assert _in_edges_by_destination(a_src, a_v, a.indices, nd, k) == \
                    _in_edges_by_destination(b_src, b_v, b_u, nd, k)
