"""Conversions between :class:`CSCGraph` and DGL / PyG graph objects.

DGL and PyG are optional: these functions import them on call and raise an
ImportError that says how to install them when missing.
"""

from __future__ import annotations

from typing import Any

import torch

from graphsys._compat import require
from graphsys.graph.csc import CSCGraph


def from_dgl(graph: Any) -> CSCGraph:
    """From a homogeneous ``dgl.DGLGraph`` (edge ``u -> v`` stays ``u -> v``)."""
    if len(graph.ntypes) != 1 or len(graph.etypes) != 1:
        raise ValueError("from_dgl expects a homogeneous graph; convert with dgl.to_homogeneous")
    indptr, indices, _eids = graph.adj_tensors("csc")
    return CSCGraph(indptr.long().cpu(), indices.cpu())


def to_dgl(graph: CSCGraph) -> Any:
    """A ``dgl.DGLGraph`` with the same nodes and edges (needs the ``dgl`` extra)."""
    dgl = require("dgl", "to_dgl", "dgl")
    src, dst = graph.edges()
    return dgl.graph((src, dst), num_nodes=graph.num_nodes())


def from_pyg(data: Any) -> CSCGraph:
    """From a ``torch_geometric.data.Data`` (or anything with ``edge_index``/``num_nodes``)."""
    edge_index = data.edge_index
    if not isinstance(edge_index, torch.Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError("from_pyg expects data.edge_index of shape [2, num_edges]")
    return CSCGraph.from_edges(edge_index[0], edge_index[1], num_nodes=data.num_nodes)


def to_pyg(graph: CSCGraph, **attributes: Any) -> Any:
    """A ``torch_geometric.data.Data`` with ``edge_index`` and the given node attributes.

    Example: ``to_pyg(ds.graph, x=ds.features, y=ds.labels)``.
    """
    pyg_data = require("torch_geometric.data", "to_pyg", "pyg")
    return pyg_data.Data(edge_index=graph.edge_index, num_nodes=graph.num_nodes(), **attributes)
