"""NeighborSampler: every sampled block checked against the graph it came from."""

from __future__ import annotations

from collections import Counter

import numba
import numpy as np
import pytest
import torch
from scipy import stats

from graphsys import CSCGraph
from graphsys.samplers import NID, MiniBatch, NeighborSampler

NUM_NODES = 60


def mixed_graph(index_dtype: type = np.int32, seed: int = 0) -> CSCGraph:
    """A random graph whose first nodes cover every sampler branch for fanout 3.

    Node 0 has no in-edges, 1 has 2 (< fanout), 2 has 3 (= fanout), 3 has 10 (reservoir),
    4 has 40 (Floyd: >= 8 * fanout), 5 has multi-edges (6 three times, 7 twice, plus one
    more), 6 has a self loop twice plus others; the rest are random, some with repeats.
    """
    rng = np.random.default_rng(seed)
    pairs = [(10, 1), (11, 1), (12, 2), (13, 2), (14, 2)]
    pairs += [(int(u), 3) for u in rng.choice(np.arange(8, NUM_NODES), 10, replace=False)]
    pairs += [(int(u), 4) for u in rng.integers(0, NUM_NODES, 40)]
    pairs += [(6, 5)] * 3 + [(7, 5)] * 2 + [(20, 5)]
    pairs += [(6, 6), (6, 6), (21, 6), (22, 6), (23, 6), (5, 6)]
    for v in range(7, NUM_NODES):
        pairs += [(int(u), v) for u in rng.integers(0, NUM_NODES, rng.integers(0, 9))]
    src, dst = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True))
    perm = rng.permutation(len(src))  # edge order must not matter
    graph = CSCGraph.from_edges(src[perm], dst[perm], NUM_NODES)
    indices = graph.indices.long() if index_dtype is np.int64 else graph.indices.int()
    return CSCGraph(graph.indptr, indices)


def in_neighbours(graph: CSCGraph, v: int) -> list[int]:
    start, stop = int(graph.indptr[v]), int(graph.indptr[v + 1])
    return graph.indices[start:stop].tolist()


def sampled_in_edges(block) -> dict[int, list[int]]:
    """Global dst id -> list of global src ids of its sampled in-edges."""
    src, dst = block.edges()
    gsrc = block.srcdata[NID][src].tolist()
    gdst = block.dstdata[NID][dst].tolist()
    out: dict[int, list[int]] = {v: [] for v in block.dstdata[NID].tolist()}
    for u, v in zip(gsrc, gdst, strict=True):
        out[v].append(u)
    return out


def check_minibatch(graph: CSCGraph, seeds, fanouts, replace: bool, batch: MiniBatch) -> None:
    """Hold every block of ``batch`` to ``graph``; raise AssertionError on any mismatch."""
    input_nodes, output_nodes, blocks = batch
    seeds = torch.as_tensor(np.asarray(seeds), dtype=torch.int64)
    assert torch.equal(output_nodes, seeds)
    assert len(blocks) == len(fanouts)
    assert torch.equal(input_nodes, blocks[0].srcdata[NID])
    assert torch.equal(blocks[-1].dstdata[NID], seeds)
    for lower, upper in zip(blocks[:-1], blocks[1:], strict=True):
        assert torch.equal(lower.dstdata[NID], upper.srcdata[NID])
    for block, fanout in zip(blocks, fanouts, strict=True):
        nd, ns = block.num_dst_nodes(), block.num_src_nodes()
        src_ids = block.srcdata[NID]
        assert src_ids.dtype == torch.int64 and block.indices.dtype == torch.int64
        assert torch.equal(src_ids[:nd], block.dstdata[NID])
        assert len(set(src_ids.tolist())) == ns
        assert block.indptr.shape == (nd + 1,) and int(block.indptr[0]) == 0
        assert bool(torch.all(block.indptr[1:] >= block.indptr[:-1]))
        assert int(block.indptr[-1]) == block.num_edges()
        if block.num_edges():
            assert 0 <= int(block.indices.min()) and int(block.indices.max()) < ns
        used = set(block.indices.tolist())
        assert set(range(nd, ns)) <= used, "a non-dst source node is used by no edge"
        for v, got in sampled_in_edges(block).items():
            have = in_neighbours(graph, v)
            deg = len(have)
            if fanout == -1:
                assert Counter(got) == Counter(have), f"node {v}: not all in-edges"
            elif replace:
                assert len(got) == (fanout if deg else 0), f"node {v}: {len(got)} edges"
                assert set(got) <= set(have), f"node {v}: edge not in graph"
            else:
                assert len(got) == min(fanout, deg), f"node {v}: {len(got)} edges"
                excess = Counter(got) - Counter(have)
                assert not excess, f"node {v}: sampled {dict(excess)} beyond multiplicity"


DTYPES = [np.int32, np.int64]
CASES = [([3], False), ([3, 3], False), ([3, 3], True), ([-1, 2], False), ([2, -1], True),
         ([1, 40, 5], False)]


@pytest.mark.parametrize("index_dtype", DTYPES)
@pytest.mark.parametrize(("fanouts", "replace"), CASES)
def test_blocks_match_graph(index_dtype, fanouts, replace):
    graph = mixed_graph(index_dtype)
    assert graph.indices.dtype == (torch.int32 if index_dtype is np.int32 else torch.int64)
    sampler = NeighborSampler(fanouts, replace=replace, seed=3)
    seed_sets = [np.array([4, 0, 6, 5, 2, 3, 1]), np.array([59, 4, 17]),
                 np.random.default_rng(1).permutation(NUM_NODES)[:25]]
    for key, seeds in enumerate(seed_sets):
        arg = torch.from_numpy(seeds) if key % 2 else seeds  # numpy and torch seeds
        check_minibatch(graph, seeds, fanouts, replace, sampler.sample(graph, arg, key=key))


def test_every_branch_is_exercised():
    graph = mixed_graph()
    degrees = graph.in_degrees()[:7].tolist()
    assert degrees[:5] == [0, 2, 3, 10, 40]  # none, < fanout, = fanout, reservoir, Floyd
    assert Counter(in_neighbours(graph, 5))[6] == 3
    assert in_neighbours(graph, 6).count(6) == 2


def test_full_neighbourhood_all_seeds():
    graph = mixed_graph(np.int64)
    seeds = np.arange(NUM_NODES)
    batch = NeighborSampler([-1]).sample(graph, seeds, key=0)
    check_minibatch(graph, seeds, [-1], False, batch)
    assert batch.blocks[0].num_edges() == graph.num_edges()


def test_seed_with_no_in_edges_and_empty_seeds():
    graph = mixed_graph()
    batch = NeighborSampler([3, 3]).sample(graph, [0], key=0)
    assert [b.num_edges() for b in batch.blocks] == [0, 0]
    assert batch.input_nodes.tolist() == [0]
    empty = NeighborSampler([3, 3]).sample(graph, np.zeros(0, np.int64), key=0)
    assert empty.input_nodes.numel() == 0 and empty.output_nodes.numel() == 0
    assert [b.num_edges() for b in empty.blocks] == [0, 0]


def test_minibatch_unpacks_as_three_tuple():
    batch = NeighborSampler([2]).sample(mixed_graph(), [3, 4], key=0)
    assert isinstance(batch, tuple) and len(batch) == 3
    input_nodes, output_nodes, blocks = batch
    assert input_nodes is batch.input_nodes and output_nodes is batch.output_nodes
    assert blocks is batch.blocks


# -- determinism -----------------------------------------------------------------------

def blocks_equal(a: MiniBatch, b: MiniBatch) -> bool:
    return all(torch.equal(x.indptr, y.indptr) and torch.equal(x.indices, y.indices)
               and torch.equal(x.srcdata[NID], y.srcdata[NID])
               for x, y in zip(a.blocks, b.blocks, strict=True))


@pytest.mark.parametrize("replace", [False, True])
def test_same_seed_and_key_identical(replace):
    graph = mixed_graph()
    seeds = np.arange(NUM_NODES)
    a = NeighborSampler([3, 2], replace=replace, seed=7).sample(graph, seeds, key=11)
    b = NeighborSampler([3, 2], replace=replace, seed=7).sample(graph, seeds, key=11)
    assert blocks_equal(a, b)
    c = NeighborSampler([3, 2], replace=replace, seed=7).sample(graph, seeds, key=12)
    d = NeighborSampler([3, 2], replace=replace, seed=8).sample(graph, seeds, key=11)
    assert not blocks_equal(a, c)
    assert not blocks_equal(a, d)


def test_without_key_each_call_differs():
    graph = mixed_graph()
    sampler = NeighborSampler([3], seed=0)
    first = sampler.sample(graph, np.arange(NUM_NODES))
    second = sampler.sample(graph, np.arange(NUM_NODES))
    assert not blocks_equal(first, second)


def test_sample_of_a_node_does_not_depend_on_batch():
    """Counter-based streams: a seed's first-layer sample is the same in any batch."""
    graph = mixed_graph()
    sampler = NeighborSampler([3], seed=5)
    alone = sampled_in_edges(sampler.sample(graph, [4], key=9).blocks[0])[4]
    among = sampled_in_edges(sampler.sample(graph, [17, 4, 3, 0], key=9).blocks[0])[4]
    assert alone == among


@pytest.mark.parametrize("replace", [False, True])
def test_same_result_on_any_thread_count(replace):
    rng = np.random.default_rng(2)
    graph = CSCGraph.from_edges(rng.integers(0, 2000, 40_000), rng.integers(0, 2000, 40_000),
                                2000)
    seeds = rng.permutation(2000)[:500]
    default = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = NeighborSampler([10, 5], replace=replace, seed=1).sample(graph, seeds, key=4)
    finally:
        numba.set_num_threads(default)
    many = NeighborSampler([10, 5], replace=replace, seed=1).sample(graph, seeds, key=4)
    assert blocks_equal(one, many)
    check_minibatch(graph, seeds, [10, 5], replace, many)


# -- uniformity ------------------------------------------------------------------------

def draws(degree: int, fanout: int, replace: bool, keys: int = 20,
          copies: int = 200) -> np.ndarray:
    """``[keys * copies, fanout]`` draws from in-neighbours ``0..degree-1``.

    Nodes ``degree .. degree+copies-1`` each have in-neighbours ``0..degree-1``; each
    batch key samples all copies at once (one stream per node), so ``keys * copies``
    independent samples cost only ``keys`` sampler calls.
    """
    dst = np.repeat(np.arange(degree, degree + copies), degree)
    src = np.tile(np.arange(degree), copies)
    graph = CSCGraph.from_edges(src, dst, degree + copies)
    sampler = NeighborSampler([fanout], replace=replace, seed=123)
    rows = []
    for key in range(keys):
        block = sampler.sample(graph, np.arange(degree, degree + copies), key=key).blocks[0]
        assert torch.equal(block.in_degrees(), torch.full((copies,), fanout))
        rows.append(block.srcdata[NID][block.indices].numpy().reshape(copies, fanout))
    return np.concatenate(rows)


def loose_chi2_ok(observed: np.ndarray, expected: float) -> bool:
    """Chi-square against a flat expectation, failing only beyond the 1e-6 tail."""
    statistic = float(((observed - expected) ** 2 / expected).sum())
    return statistic < stats.chi2.isf(1e-6, len(observed) - 1)


@pytest.mark.parametrize(("degree", "fanout", "replace"),
                         [(20, 5, False),   # reservoir (degree < 8 * fanout)
                          (100, 3, False),  # Floyd (degree >= 8 * fanout)
                          (20, 5, True)])
def test_each_neighbour_equally_likely(degree, fanout, replace):
    sample = draws(degree, fanout, replace)
    assert sample.min() >= 0 and sample.max() < degree
    if not replace:
        assert all(len(set(row)) == fanout for row in sample.tolist())
    counts = np.bincount(sample.ravel(), minlength=degree)
    expected = len(sample) * fanout / degree
    assert loose_chi2_ok(counts, expected), counts
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts


def test_with_replacement_repeats_as_often_as_independent_draws():
    sample = draws(20, 5, True, keys=10)
    all_distinct = np.mean([len(set(row)) == 5 for row in sample.tolist()])
    assert abs(all_distinct - np.prod(np.arange(16, 21) / 20)) < 0.04  # 0.581 expected


@pytest.mark.parametrize(("degree", "fanout"), [(6, 2), (16, 2)])  # reservoir, Floyd
def test_each_subset_equally_likely(degree, fanout):
    sample = np.sort(draws(degree, fanout, False), axis=1)
    codes = sample[:, 0] * degree + sample[:, 1]
    counts = np.bincount(codes, minlength=degree * degree).reshape(degree, degree)
    pairs = counts[np.triu_indices(degree, k=1)]
    assert counts.sum() == pairs.sum()
    assert loose_chi2_ok(pairs, len(sample) / len(pairs)), pairs


# -- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [-1, NUM_NODES, NUM_NODES + 7, -12])
def test_seed_out_of_range_names_the_id(bad):
    sampler, graph = NeighborSampler([2]), mixed_graph()
    for seeds in ([0, bad, 3], torch.tensor([0, bad, 3])):
        with pytest.raises(IndexError, match=rf"(?<![\d-]){bad}(?!\d)"):
            sampler.sample(graph, seeds)


@pytest.mark.parametrize("seeds", [np.array([0.0, 1.0]), torch.tensor([0.0, 1.0]), [0.5],
                                   torch.tensor([True, False])])
def test_non_integer_seeds(seeds):
    with pytest.raises(TypeError, match="integer"):
        NeighborSampler([2]).sample(mixed_graph(), seeds)


@pytest.mark.parametrize("fanouts", [[], [0], [-2], [1.5], [3, 0], [True], ["2"]])
def test_bad_fanouts(fanouts):
    with pytest.raises(ValueError, match="fanout"):
        NeighborSampler(fanouts)


@pytest.mark.parametrize("seed", [-1, 1.5])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        NeighborSampler([2], seed=seed)


def test_graph_must_be_csc():
    graph = mixed_graph()
    for bad in ((graph.indptr, graph.indices), graph.edge_index, None):
        with pytest.raises(TypeError, match="CSCGraph"):
            NeighborSampler([2]).sample(bad, [0])


def test_numpy_integer_fanouts_and_repr():
    sampler = NeighborSampler(np.array([4, -1]), replace=True, seed=2)
    assert sampler.fanouts == [4, -1] and sampler.num_layers == 2
    assert repr(sampler) == "NeighborSampler(fanouts=[4, -1], replace=True, seed=2)"


def test_relabel_paths_agree_and_restore_the_scratch_map():
    from graphsys.samplers import _kernels

    rng = np.random.default_rng(5)
    dst = rng.permutation(1000)[:50].astype(np.int64)
    sources = rng.integers(0, 1000, 4000).astype(np.int32)
    node_map = np.full(1000, -1, np.int32)
    hashed = _kernels.relabel(dst, sources)
    dense = _kernels.relabel_dense(dst, sources, node_map)
    assert np.array_equal(hashed[0], dense[0]) and np.array_equal(hashed[1], dense[1])
    assert (node_map == -1).all()
    src_nodes, local = dense
    assert np.array_equal(src_nodes[:50], dst)
    assert np.array_equal(src_nodes[local], sources)
    assert len(np.unique(src_nodes)) == len(src_nodes)


def test_bucket_order_is_a_permutation_grouping_nearby_ids():
    from graphsys.samplers import _kernels

    ids = np.random.default_rng(6).integers(0, 10_000, 3000).astype(np.int64)
    order = _kernels._bucket_order(ids, 10_000)
    assert np.array_equal(np.sort(order), np.arange(3000))
    visited = ids[order]
    # 3000 ids -> 1024 buckets of 16 consecutive ids: visited in bucket order.
    assert np.all(np.diff(visited >> 4) >= 0)
