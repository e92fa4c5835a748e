"""``prob=``/``mask=`` sampling and edge ids on sampled layers, against the graph and
against exact probabilities computed by enumeration (DGL's documented semantics)."""

from __future__ import annotations

import itertools

import numba
import numpy as np
import pytest
import torch

from graphsys import CSCGraph, DataLoader, NeighborSampler
from graphsys.samplers.block import EID


def _star(weights: list[float]) -> CSCGraph:
    """Node 0 with one in-edge from each of nodes 1..len(weights), edge i from node i+1;
    node 1 with in-edges from nodes 2 and 3 (weight 0 on both)."""
    n = len(weights)
    indptr = torch.tensor([0, n, n + 2] + [n + 2] * (n - 1), dtype=torch.int64)
    indices = torch.tensor(list(range(1, n + 1)) + [2, 3], dtype=torch.int64)
    g = CSCGraph(indptr, indices)
    g.edata["p"] = torch.tensor(list(weights) + [0.0, 0.0])
    return g


def _edge_frequencies(g: CSCGraph, sampler: NeighborSampler, seed: int, rounds: int
                      ) -> np.ndarray:
    counts = np.zeros(g.num_edges())
    for key in range(rounds):
        block = sampler.sample(g, [seed], key=key).blocks[0]
        np.add.at(counts, block.edata[EID].numpy(), 1)
    return counts / rounds


def test_prob_draws_each_edge_in_proportion_to_its_weight_with_replacement() -> None:
    w = [1.0, 2.0, 0.0, 3.0, 4.0]
    g = _star(w)
    freq = _edge_frequencies(g, NeighborSampler([1], prob="p", replace=True), 0, 20_000)
    expected = np.array(w + [0, 0]) / sum(w)
    assert freq[2] == 0 and freq[5:].sum() == 0  # weight 0: never
    np.testing.assert_allclose(freq, expected, atol=0.012)


def test_prob_without_replacement_matches_successive_weighted_picks() -> None:
    w = [1.0, 2.0, 3.0, 4.0]
    g = _star(w)
    k = 2
    # Exact inclusion probability of each edge when k edges are picked one after the
    # other, each in proportion to the weights of the edges not yet picked.
    exact = np.zeros(len(w))
    for order in itertools.permutations(range(len(w)), k):
        p, left = 1.0, sum(w)
        for e in order:
            p *= w[e] / left
            left -= w[e]
        exact[list(order)] += p
    freq = _edge_frequencies(g, NeighborSampler([k], prob="p"), 0, 20_000)
    np.testing.assert_allclose(freq[:4], exact, atol=0.012)
    for key in range(50):  # k distinct edges, in CSC order
        eids = NeighborSampler([k], prob="p").sample(g, [0], key=key).blocks[0].edata[EID]
        assert len(set(eids.tolist())) == k and eids.tolist() == sorted(eids.tolist())


def test_mask_samples_only_marked_edges_and_keeps_dgls_counts() -> None:
    rng = np.random.default_rng(0)
    src, dst = rng.integers(0, 60, 900), rng.integers(0, 60, 900)
    g = CSCGraph.from_edges(src, dst, 60)
    marked = torch.from_numpy(rng.random(g.num_edges()) < 0.4)
    g.edata["m"] = marked
    indptr = g.indptr.numpy()
    seeds = torch.arange(0, 60, 3)
    for replace in (False, True):
        for fanout in (3, -1):
            sampler = NeighborSampler([fanout, fanout], mask="m", replace=replace)
            for block in sampler.sample(g, seeds, key=7).blocks:
                eids = block.edata[EID]
                assert bool(marked[eids].all())
                # Each edge is an in-edge of its destination, from its source.
                src_local, dst_local = block.edges()
                dst_global = block.src_nodes[dst_local.long()]
                assert torch.equal(g.indices[eids].long(), block.src_nodes[src_local.long()])
                assert bool(((eids >= g.indptr[dst_global]) &
                             (eids < g.indptr[dst_global + 1])).all())
                for d, v in enumerate(block.dst_nodes.tolist()):
                    n_marked = int(marked[indptr[v]:indptr[v + 1]].sum())
                    deg = int(indptr[v + 1] - indptr[v])
                    want = ((0 if n_marked == 0 else (deg if fanout < 0 else fanout))
                            if replace else min(n_marked, deg if fanout < 0 else fanout))
                    assert int(block.in_degrees()[d]) == want


def test_edge_data_on_sampled_layers_with_the_uniform_draws() -> None:
    rng = np.random.default_rng(1)
    g = CSCGraph.from_edges(rng.integers(0, 50, 600), rng.integers(0, 50, 600), 50)
    g.ndata["feat"] = torch.randn(50, 3)
    g.edata["w"] = torch.randn(g.num_edges(), 2)
    plain = NeighborSampler([4, 3], seed=3).sample(g, [1, 5, 9], key=2)
    with_edges = NeighborSampler([4, 3], seed=3, prefetch_edge_feats=["w"])
    batch = with_edges.sample(g, [1, 5, 9], key=2)
    for a, b in zip(plain.blocks, batch.blocks):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.src_nodes, b.src_nodes)
        assert torch.equal(g.indices[b.edata[EID]].long(), b.src_nodes[b.indices.long()])
    loader = DataLoader(g, torch.tensor([1, 5, 9]), with_edges, batch_size=3)
    _, _, blocks = next(iter(loader))
    for block in blocks:
        assert torch.equal(block.edata["w"], g.edata["w"][block.edata[EID]])


def test_weighted_samples_do_not_depend_on_threads() -> None:
    rng = np.random.default_rng(2)
    g = CSCGraph.from_edges(rng.integers(0, 400, 8000), rng.integers(0, 400, 8000), 400)
    g.edata["p"] = torch.from_numpy(rng.random(g.num_edges()) * (rng.random(g.num_edges())
                                                                 > 0.2))
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, max(2, before)):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            for replace in (False, True):
                batch = NeighborSampler([5, 5], prob="p", replace=replace).sample(
                    g, torch.arange(0, 400, 2), key=11)
                results.append([b.edata[EID] for b in batch.blocks])
    finally:
        numba.set_num_threads(before)
    for x, y in zip(results[:2], results[2:]):
        assert all(torch.equal(a, b) for a, b in zip(x, y))


@pytest.mark.parametrize("value, kwargs, error, match", [
    (None, {"prob": "p"}, KeyError, "edata has"),
    (torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0, 1.0]), {"prob": "p"}, ValueError, "negative"),
    (torch.tensor([1.0, float("nan"), 1, 1, 1, 1]), {"prob": "p"}, ValueError, "NaN"),
    (torch.ones(6, 2), {"prob": "p"}, ValueError, "one value per edge"),
    (torch.ones(6), {"mask": "p"}, TypeError, "boolean"),
])
def test_bad_weights_are_named(value, kwargs, error, match) -> None:
    g = _star([1.0, 1.0, 1.0, 1.0])
    del g.edata["p"]
    if value is not None:
        g.edata["p"] = value
    with pytest.raises(error, match=match):
        NeighborSampler([2], **kwargs).sample(g, [0])


def test_prob_and_mask_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        NeighborSampler([2], prob="p", mask="m")
