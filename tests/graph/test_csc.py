"""CSCGraph against dense adjacency references, and its conversions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from graphsys import CSCGraph, InputFormatError
from graphsys.graph import from_pyg, to_pyg


def dense_reference(src, dst, n):
    adjacency = np.zeros((n, n), dtype=np.int64)
    np.add.at(adjacency, (np.asarray(src), np.asarray(dst)), 1)
    return adjacency


def dense_of(graph: CSCGraph) -> np.ndarray:
    n = graph.num_nodes()
    adjacency = np.zeros((n, n), dtype=np.int64)
    indptr, indices = graph.indptr.numpy(), graph.indices.numpy()
    for v in range(n):
        for u in indices[indptr[v] : indptr[v + 1]]:
            adjacency[u, v] += 1
    return adjacency


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_from_edges_matches_dense(seed):
    rng = np.random.default_rng(seed)
    n = 30
    src, dst = rng.integers(0, n, 200), rng.integers(0, n, 200)
    graph = CSCGraph.from_edges(src, dst, n)
    graph.validate()
    assert graph.num_nodes() == n and graph.num_edges() == 200
    assert graph.indptr.dtype == torch.int64 and graph.indices.dtype == torch.int32
    np.testing.assert_array_equal(dense_of(graph), dense_reference(src, dst, n))
    np.testing.assert_array_equal(graph.in_degrees().numpy(), np.bincount(dst, minlength=n))
    np.testing.assert_array_equal(graph.out_degrees().numpy(), np.bincount(src, minlength=n))
    # Within a destination, edges keep their input order.
    v = int(dst[0])
    expected = src[dst == v]
    np.testing.assert_array_equal(graph.indices[graph.indptr[v] : graph.indptr[v + 1]], expected)


def test_symmetric_dedup_self_loops():
    src, dst = np.array([0, 0, 1, 2, 2]), np.array([1, 1, 0, 2, 3])
    graph = CSCGraph.from_edges(src, dst, 4, symmetric=True, dedup=True, remove_self_loops=True)
    expected = {(0, 1), (1, 0), (2, 3), (3, 2)}
    got = set(zip(*(t.tolist() for t in graph.edges()), strict=True))
    assert got == expected and graph.num_edges() == 4


def test_edges_and_edge_index_round_trip():
    rng = np.random.default_rng(3)
    src, dst = rng.integers(0, 20, 80), rng.integers(0, 20, 80)
    graph = CSCGraph.from_edges(src, dst, 20)
    s, d = graph.edges()
    again = CSCGraph.from_edges(s, d, 20)
    assert torch.equal(again.indptr, graph.indptr) and torch.equal(again.indices, graph.indices)
    assert torch.equal(graph.edge_index, torch.stack([s, d]))
    got = sorted(zip(s.tolist(), d.tolist(), strict=True))
    assert got == sorted(zip(src.tolist(), dst.tolist(), strict=True))


def test_reverse_transposes():
    rng = np.random.default_rng(4)
    src, dst = rng.integers(0, 15, 60), rng.integers(0, 15, 60)
    graph = CSCGraph.from_edges(src, dst, 15)
    np.testing.assert_array_equal(dense_of(graph.reverse()), dense_of(graph).T)


def test_scipy_round_trip():
    rng = np.random.default_rng(5)
    matrix = sp.random(25, 25, density=0.2, format="coo", random_state=5)
    graph = CSCGraph.from_scipy(matrix)
    np.testing.assert_array_equal(dense_of(graph), (matrix.toarray() != 0).astype(np.int64))
    back = graph.to_scipy("csr")
    np.testing.assert_array_equal(back.toarray() != 0, matrix.toarray() != 0)
    assert rng is not None


def test_pyg_round_trip():
    pytest.importorskip("torch_geometric")
    rng = np.random.default_rng(6)
    graph = CSCGraph.from_edges(rng.integers(0, 12, 40), rng.integers(0, 12, 40), 12)
    x = torch.randn(12, 3)
    data = to_pyg(graph, x=x)
    assert data.num_nodes == 12 and torch.equal(data.x, x)
    again = from_pyg(data)
    assert torch.equal(again.indptr, graph.indptr) and torch.equal(again.indices, graph.indices)


def test_dgl_round_trip():
    dgl = pytest.importorskip("dgl")
    from graphsys.graph import from_dgl, to_dgl

    graph = CSCGraph.from_edges([0, 1, 2, 2], [1, 2, 0, 1], 4)
    dgl_graph = to_dgl(graph)
    assert isinstance(dgl_graph, dgl.DGLGraph) and dgl_graph.num_edges() == 4
    again = from_dgl(dgl_graph)
    np.testing.assert_array_equal(dense_of(again), dense_of(graph))


def test_out_of_range_ids_name_position():
    with pytest.raises(InputFormatError, match=r"dst id 5 at position 2 is out of range"):
        CSCGraph.from_edges([0, 1, 2], [1, 2, 5], num_nodes=5)
    with pytest.raises(InputFormatError, match=r"src id -1"):
        CSCGraph.from_edges([-1], [0], num_nodes=2)


def test_bad_arrays_rejected():
    with pytest.raises(InputFormatError, match="indptr must be int64"):
        CSCGraph(np.array([0, 1], dtype=np.int32), np.array([0], dtype=np.int32))
    with pytest.raises(InputFormatError, match="end at len"):
        CSCGraph(np.array([0, 2], dtype=np.int64), np.array([0], dtype=np.int32))
    with pytest.raises(InputFormatError, match="int32 or int64"):
        CSCGraph(np.array([0, 1], dtype=np.int64), np.array([0.0]))
    graph = CSCGraph(np.array([0, 2, 1, 3], dtype=np.int64), np.array([0, 1, 2], dtype=np.int64))
    with pytest.raises(InputFormatError, match="decreases"):
        graph.validate()
    graph = CSCGraph(np.array([0, 1, 2], dtype=np.int64), np.array([0, 7], dtype=np.int64))
    with pytest.raises(InputFormatError, match=r"\[0, 7\]"):
        graph.validate()


def test_empty_graph():
    graph = CSCGraph.from_edges(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 3)
    assert graph.num_nodes() == 3 and graph.num_edges() == 0
    graph.validate()
