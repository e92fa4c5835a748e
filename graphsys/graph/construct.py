"""DGL's ``dgl.graph((src, dst))`` constructor, and what to say when raw edge data
(a scipy matrix, an ``edge_index``, a ``(src, dst)`` tuple) is passed where a graph goes.

``import graphsys as dgl; g = dgl.graph((src, dst), num_nodes=n)`` builds a
:class:`CSCGraph`. The package ``graphsys.graph`` is itself callable with these
arguments, because DGL's function and our subpackage share the name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from graphsys.errors import NotAGraphError
from graphsys.graph.csc import CSCGraph

_EDGE_ARRAYS = (torch.Tensor, np.ndarray, list, range)


def graph(data: Any, ntype: str | None = None, etype: str | None = None, *,
          num_nodes: int | None = None, idtype: torch.dtype | None = None,
          device: torch.device | str | None = None, row_sorted: bool = False,
          col_sorted: bool = False) -> CSCGraph:
    """A homogeneous graph from edges ``src[i] -> dst[i]``, as ``dgl.graph`` builds it.

    Args:
        data: ``(src, dst)`` (tensors, arrays or lists of node ids), or DGL's
            ``('coo', (src, dst))``.
        ntype, etype: DGL's type names; only None (one node and edge type).
        num_nodes: node count (default ``max id + 1``).
        idtype: ``torch.int32`` or ``torch.int64`` (the stored ids' dtype).
        device: where the structure lives (``g.to(device)``).
        row_sorted, col_sorted: DGL's hints; no effect (the graph is always stored CSC).

    Unlike DGL, edge ids follow the CSC order (grouped by destination, input order
    within each), not the input order: set ``g.edata`` from ``g.edges()``.

    Example:
        >>> g = graph((torch.tensor([0, 1]), torch.tensor([1, 2])), num_nodes=4)
        >>> g.num_nodes(), g.num_edges()
        (4, 2)
    """
    del row_sorted, col_sorted  # hints about the input's order; from_edges sorts anyway
    if ntype is not None or etype is not None:
        raise NotImplementedError("node and edge type names are for heterogeneous graphs, "
                                  "which graphsys does not support yet; call graph((src, dst))")
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], str):
        fmt, data = data
        if fmt != "coo":
            raise NotImplementedError(f"graph(({fmt!r}, ...)) is not supported; pass the "
                                      "edges as graph((src, dst))")
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(f"graph() takes the edges as a (src, dst) pair, got "
                        f"{type(data).__name__}; e.g. graph((src, dst), num_nodes=N)")
    src, dst = data
    built = CSCGraph.from_edges(src, dst, num_nodes)
    if idtype is not None:
        if idtype not in (torch.int32, torch.int64):
            raise ValueError(f"idtype must be torch.int32 or torch.int64, got {idtype}")
        built = built.int() if idtype == torch.int32 else built.long()
    return built if device is None else built.to(device)


def _kind(value: Any) -> str:
    """``torch.Tensor`` / ``numpy.ndarray`` / ``list``: how a message names an array."""
    kind = type(value)
    return "numpy.ndarray" if kind is np.ndarray else \
        "torch.Tensor" if isinstance(value, torch.Tensor) else kind.__name__


def not_a_graph(value: Any, what: str = "graph") -> NotAGraphError | None:
    """The error for raw edge data passed as ``what``, or None if it is none of those.

    Recognises a scipy sparse matrix, an ``edge_index`` of shape ``[2, E]`` and a
    ``(src, dst)`` pair; each message names the input and the constructor to call.
    """
    if hasattr(value, "tocsc") and hasattr(value, "nnz"):  # scipy.sparse, without importing it
        rows, cols = value.shape
        return NotAGraphError(
            f"{what} is a scipy.sparse {type(value).__name__} ({rows} x {cols} adjacency "
            f"matrix), not a graph; build a CSCGraph first: graphsys.CSCGraph.from_scipy(m)")
    shape = getattr(value, "shape", None)
    if isinstance(value, (torch.Tensor, np.ndarray)) and len(shape) == 2 and shape[0] == 2:
        return NotAGraphError(
            f"{what} is a {_kind(value)} of shape [2, {shape[1]}] (an edge_index), not a "
            "graph; build a CSCGraph first: graphsys.graph((edge_index[0], edge_index[1]), "
            "num_nodes=N)")
    if isinstance(value, (tuple, list)) and len(value) == 2 \
            and all(isinstance(part, _EDGE_ARRAYS) for part in value):
        return NotAGraphError(
            f"{what} is a (src, dst) {type(value).__name__} of {_kind(value[0])}, not a "
            "graph; build a CSCGraph first: graphsys.graph((src, dst), num_nodes=N)")
    return None
