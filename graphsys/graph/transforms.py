"""DGL's graph transforms a mini-batch script calls before sampling, on :class:`CSCGraph`.

``add_self_loop``, ``remove_self_loop``, ``to_bidirected``, ``to_simple`` and
``add_reverse_edges`` with DGL's arguments and data rules: node data is carried (shared
values) where DGL carries it, and edge data follows its edges. Edge ids of a graphsys graph
are CSC positions, so an edge DGL would append at the end lands inside its destination's
in-edges here; edge data is permuted with it, so each edge keeps its own row.
Edge data must be tensors here (a feature store cannot be permuted without reading it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from graphsys.graph.csc import CSCGraph


def _edge_lists(g: CSCGraph) -> tuple[np.ndarray, np.ndarray]:
    src, dst = g.edges()
    return src.cpu().numpy(), dst.cpu().numpy()


def _build(g: CSCGraph, src: np.ndarray, dst: np.ndarray, edata: dict[str, torch.Tensor],
           copy_ndata: bool) -> CSCGraph:
    """A graph over edges ``src[i] -> dst[i]`` with edge data rows given in that order.

    :meth:`CSCGraph.from_edges` keeps input order within each destination (a stable sort
    by destination), so edge ``e`` of the result is input edge ``order[e]``."""
    n = g.num_nodes()
    order = torch.from_numpy(np.argsort(dst, kind="stable"))
    out = CSCGraph.from_edges(src, dst, n)
    if out.indices.dtype != g.indices.dtype:
        out = out.long() if g.indices.dtype == torch.int64 else out.int()
    out = out.to(g.device)
    out._valid = True  # from_edges checked every id
    if copy_ndata:
        dict.update(out.ndata, g.ndata)  # same values, one row per node as before
    for name, value in edata.items():
        out.edata[name] = value[order.to(value.device)]
    return out


def _tensor_edata(g: CSCGraph, what: str) -> dict[str, torch.Tensor]:
    for name, value in g.edata.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{what}: edata[{name!r}] is a {type(value).__name__}; edge data "
                            "must be tensors to follow its edges (pop it from g.edata first)")
    return dict(g.edata)


def add_self_loop(g: CSCGraph, edge_feat_names: list[str] | None = None,
                  fill_data: float | str = 1.0, etype: Any = None) -> CSCGraph:
    """A self loop ``v -> v`` added for every node, like ``dgl.add_self_loop``.

    Existing edges (loops included) stay. Node data is carried; edge data of the new loops
    is ``fill_data`` (a number; ``'sum'``/``'mean'`` and the like are not implemented)
    for ``edge_feat_names`` (default: every name), as in DGL.
    """
    if not isinstance(fill_data, (int, float)) or isinstance(fill_data, bool):
        raise NotImplementedError(f"fill_data={fill_data!r}: only a number is implemented")
    edata = _tensor_edata(g, "add_self_loop")
    names = list(edata) if edge_feat_names is None else list(edge_feat_names)
    src, dst = _edge_lists(g)
    n = g.num_nodes()
    loops = np.arange(n, dtype=np.int64)
    new = {}
    for name in names:
        value = edata[name]
        fill = torch.full((n, *value.shape[1:]), fill_data, dtype=value.dtype,
                          device=value.device)
        new[name] = torch.cat([value, fill])
    return _build(g, np.concatenate([src, loops]), np.concatenate([dst, loops]), new, True)


def remove_self_loop(g: CSCGraph, etype: Any = None) -> CSCGraph:
    """Every edge ``v -> v`` removed, like ``dgl.remove_self_loop``; data of the other
    edges, and node data, are carried."""
    edata = _tensor_edata(g, "remove_self_loop")
    src, dst = _edge_lists(g)
    keep = src != dst
    mask = torch.from_numpy(keep)
    return _build(g, src[keep], dst[keep],
                  {k: v[mask.to(v.device)] for k, v in edata.items()}, True)


def to_bidirected(g: CSCGraph, copy_ndata: bool = False, readonly: Any = None) -> CSCGraph:
    """Edges in both directions, each pair once, like ``dgl.to_bidirected``: a simple
    graph (self loops kept once), no edge data, node data only with ``copy_ndata``
    (DGL's default is False)."""
    src, dst = _edge_lists(g)
    n = g.num_nodes()
    keys = np.unique(np.concatenate([dst * n + src, src * n + dst]))
    new_dst, new_src = np.divmod(keys, n)
    return _build(g, new_src, new_dst, {}, copy_ndata)


def to_simple(g: CSCGraph, return_counts: str | None = "count",
              writeback_mapping: bool = False, copy_ndata: bool = True,
              copy_edata: bool = False, aggregator: str = "arbitrary") -> CSCGraph:
    """Repeated edges merged, like ``dgl.to_simple``: ``edata[return_counts]`` holds how
    many times each edge occurred (unless ``return_counts`` is None). ``copy_edata`` and
    ``writeback_mapping`` are not implemented."""
    if copy_edata or writeback_mapping:
        raise NotImplementedError("to_simple: copy_edata and writeback_mapping are not "
                                  "implemented; leave them False")
    src, dst = _edge_lists(g)
    n = g.num_nodes()
    keys, counts = np.unique(dst * n + src, return_counts=True)
    new_dst, new_src = np.divmod(keys, n)
    edata = {} if return_counts is None else {return_counts: torch.from_numpy(counts)}
    return _build(g, new_src, new_dst, edata, copy_ndata)


def add_reverse_edges(g: CSCGraph, readonly: Any = None, copy_ndata: bool = True,
                      copy_edata: bool = False, ignore_bipartite: bool = False,
                      exclude_self: bool = True) -> CSCGraph:
    """The reverse ``v -> u`` of every edge ``u -> v`` added (of loops too unless
    ``exclude_self``), like ``dgl.add_reverse_edges``; with ``copy_edata`` a reverse edge
    gets its edge's data (edge data is dropped otherwise, as in DGL)."""
    edata = _tensor_edata(g, "add_reverse_edges") if copy_edata else {}
    src, dst = _edge_lists(g)
    rev = src != dst if exclude_self else np.ones(len(src), bool)
    mask = torch.from_numpy(rev)
    new = {k: torch.cat([v, v[mask.to(v.device)]]) for k, v in edata.items()}
    return _build(g, np.concatenate([src, dst[rev]]), np.concatenate([dst, src[rev]]), new,
                  copy_ndata)


def to_half(g: CSCGraph) -> CSCGraph:
    """DGL's ``dgl.to_half``: a shallow copy with float16 floating-point features."""
    return g.half()


def to_float(g: CSCGraph) -> CSCGraph:
    """DGL's ``dgl.to_float``: a shallow copy with float32 floating-point features."""
    return g.float()


def to_double(g: CSCGraph) -> CSCGraph:
    """DGL's ``dgl.to_double``: a shallow copy with float64 floating-point features."""
    return g.double()
