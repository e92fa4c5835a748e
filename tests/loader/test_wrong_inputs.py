"""Wrong inputs to the DataLoader and the samplers fail with one line that names what
was passed and the fix: raw edge data as the graph, per-node-type feature dicts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from graphsys import CSCGraph, DataLoader, NeighborSampler, NotAGraphError
from graphsys.cuda.sampling import GPUNeighborSampler

SRC, DST = [0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 2]
NUM_NODES = 5

RAW = {
    "scipy csr": (sp.csr_matrix((np.ones(6), (SRC, DST)), shape=(5, 5)),
                  r"graph is a scipy\.sparse csr_matrix \(5 x 5 adjacency matrix\).*"
                  r"CSCGraph\.from_scipy\(m\)"),
    "scipy coo": (sp.coo_matrix((np.ones(6), (SRC, DST)), shape=(5, 5)),
                  r"scipy\.sparse coo_matrix.*CSCGraph\.from_scipy\(m\)"),
    "edge_index": (torch.tensor([SRC, DST]),
                   r"graph is a torch\.Tensor of shape \[2, 6\] \(an edge_index\).*"
                   r"graphsys\.graph\(\(edge_index\[0\], edge_index\[1\]\), num_nodes=N\)"),
    "numpy edge_index": (np.array([SRC, DST]),
                         r"graph is a numpy\.ndarray of shape \[2, 6\].*graphsys\.graph\("),
    "tensor pair": ((torch.tensor(SRC), torch.tensor(DST)),
                    r"graph is a \(src, dst\) tuple of torch\.Tensor.*"
                    r"graphsys\.graph\(\(src, dst\), num_nodes=N\)"),
    "array pair": ((np.array(SRC), np.array(DST)),
                   r"\(src, dst\) tuple of numpy\.ndarray.*graphsys\.graph\(\(src, dst\)"),
    "list pair": ([SRC, DST], r"\(src, dst\) list of list.*graphsys\.graph\(\(src, dst\)"),
}


def one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", list(RAW))
def test_raw_edges_as_the_loader_graph(name):
    value, pattern = RAW[name]
    with pytest.raises(NotAGraphError, match=pattern) as excinfo:
        DataLoader(value, [0, 1], NeighborSampler([2]), batch_size=2)
    assert isinstance(excinfo.value, TypeError)
    one_line(excinfo)


@pytest.mark.parametrize("sampler", [NeighborSampler([2]),
                                     GPUNeighborSampler([2], device="cpu")],
                         ids=["cpu", "gpu-sampler"])
@pytest.mark.parametrize("name", list(RAW))
def test_raw_edges_as_the_sampler_graph(name, sampler):
    value, pattern = RAW[name]
    with pytest.raises(NotAGraphError, match=pattern) as excinfo:
        sampler.sample(value, [0, 1])
    one_line(excinfo)


def test_the_fix_each_message_names_works():
    """Building the graph as the message says gives the graph meant."""
    reference = CSCGraph.from_edges(SRC, DST, NUM_NODES)
    edge_index = RAW["edge_index"][0]
    import graphsys
    built = [CSCGraph.from_scipy(RAW["scipy csr"][0]),
             graphsys.graph((edge_index[0], edge_index[1]), num_nodes=NUM_NODES),
             graphsys.graph(RAW["tensor pair"][0], num_nodes=NUM_NODES)]
    for g in built:
        assert torch.equal(g.indptr, reference.indptr)
        assert sorted(g.indices.tolist()) == sorted(reference.indices.tolist())


def test_other_objects_keep_the_plain_message():
    with pytest.raises(TypeError, match="graph must be") as excinfo:
        DataLoader({"indptr": 1}, [0], NeighborSampler([2]))
    assert not isinstance(excinfo.value, NotAGraphError)
    with pytest.raises(TypeError, match="graph must be"):
        NeighborSampler([2]).sample((1, 2, 3), [0])


@pytest.mark.parametrize("name", ["features", "labels"])
def test_per_type_dict_for_a_homogeneous_graph(name):
    graph = CSCGraph.from_edges(SRC, DST, NUM_NODES)
    data = {"paper": torch.zeros(NUM_NODES, 3) if name == "features" else torch.zeros(NUM_NODES)}
    with pytest.raises(TypeError) as excinfo:
        DataLoader(graph, [0, 1], NeighborSampler([2]), **{name: data})
    message = one_line(excinfo)
    assert f"{name} is a dict keyed by node type ('paper')" in message
    assert "heterogeneous graph" in message and "not support" in message
    assert f"pass one tensor or feature store with a row per node ({name}=x)" in message
    assert "rows" not in message.split("row per node")[0]  # not the old row-count message
