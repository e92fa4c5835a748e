"""A homogeneous directed graph in compressed sparse column (CSC) form.

Column ``v`` lists the in-neighbours of ``v``: ``indices[indptr[v]:indptr[v+1]]`` are
the sources of the edges that end at ``v``. This is the layout neighbour samplers want
(a node's in-edges are contiguous) and the one DGL's GraphBolt uses. Arrays may be
memory-mapped files: nothing here copies them unless asked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from graphsys.errors import InputFormatError
from graphsys.graph.frame import Frame, cast_floating
from graphsys.graph.message_passing import MessagePassing

ArrayLike = np.ndarray | torch.Tensor

#: Largest node count for which 32-bit ``indices`` are enough.
INT32_LIMIT = np.iinfo(np.int32).max


def _as_tensor(array: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array)
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(array).__name__}")


def index_dtype_for(num_nodes: int) -> np.dtype:
    """The narrowest index dtype (int32 or int64) that can hold node ids < ``num_nodes``."""
    return np.dtype(np.int32) if num_nodes <= INT32_LIMIT else np.dtype(np.int64)


class CSCGraph(MessagePassing):
    """A directed graph stored as CSC arrays.

    Args:
        indptr: int64 array of length ``num_nodes + 1``; ``indptr[0] == 0`` and
            ``indptr[-1] == len(indices)``.
        indices: int32 or int64 source node ids, grouped by destination.

    Construction checks shapes, dtypes and the two ends of ``indptr`` (cheap, so
    memory-mapped graphs stay lazy); :meth:`validate` checks every entry.

    Example:
        >>> g = CSCGraph.from_edges([0, 1, 2], [1, 2, 0], num_nodes=3)
        >>> g.num_nodes(), g.num_edges(), g.in_degrees().tolist()
        (3, 3, [1, 1, 1])
    """

    def __init__(self, indptr: ArrayLike, indices: ArrayLike) -> None:
        self.indptr = _as_tensor(indptr, "indptr")
        self.indices = _as_tensor(indices, "indices")
        if self.indptr.dim() != 1 or self.indptr.numel() < 1:
            raise InputFormatError("indptr must be a 1-D array of length num_nodes + 1")
        if self.indptr.dtype != torch.int64:
            raise InputFormatError(f"indptr must be int64, got {self.indptr.dtype}")
        if self.indices.dim() != 1:
            raise InputFormatError("indices must be a 1-D array")
        if self.indices.dtype not in (torch.int32, torch.int64):
            raise InputFormatError(f"indices must be int32 or int64, got {self.indices.dtype}")
        self._valid = False  # set by ensure_valid() after a full check
        first, last = int(self.indptr[0]), int(self.indptr[-1])
        if first != 0 or last != self.indices.numel():
            raise InputFormatError(
                f"indptr must start at 0 and end at len(indices)={self.indices.numel()}, "
                f"got indptr[0]={first}, indptr[-1]={last}"
            )

    # -- size -------------------------------------------------------------------------
    def num_nodes(self, ntype: str | None = None) -> int:
        """Node count (``ntype`` is accepted for DGL's signature; there is one type)."""
        return self.indptr.numel() - 1

    def num_edges(self, etype: Any = None) -> int:
        """Edge count (``etype`` is accepted for DGL's signature; there is one type)."""
        return self.indices.numel()

    number_of_nodes = num_nodes
    number_of_edges = num_edges

    def nodes(self) -> torch.Tensor:
        """All node ids, ``0 .. num_nodes() - 1`` (int64), like ``DGLGraph.nodes()``."""
        return torch.arange(self.num_nodes(), device=self.device)

    def in_degrees(self, v: Any = None) -> torch.Tensor:
        """In-degree of every node, or of the nodes ``v`` (int64), like DGL's."""
        degrees = self.indptr[1:] - self.indptr[:-1]
        if v is None or (isinstance(v, str) and v == "__ALL__"):
            return degrees
        if isinstance(v, int):
            return degrees[v]
        return degrees[torch.as_tensor(v, device=degrees.device).long()]

    def out_degrees(self) -> torch.Tensor:
        """Out-degree of every node (int64); reads all of ``indices``."""
        return torch.bincount(self.indices.long(), minlength=self.num_nodes())

    def __repr__(self) -> str:
        return (
            f"CSCGraph(num_nodes={self.num_nodes()}, num_edges={self.num_edges()}, "
            f"indices={str(self.indices.dtype).replace('torch.', '')})"
        )

    # -- DGL's data frames -------------------------------------------------------------
    @property
    def ndata(self) -> Frame:
        """Node data by name, like ``DGLGraph.ndata``: tensors or graphsys feature stores
        with one row per node (a :class:`~graphsys.graph.frame.Frame`). A DataLoader whose
        sampler names ``prefetch_node_feats``/``prefetch_labels`` reads its rows from here.
        """
        frame = self.__dict__.get("_ndata")
        if frame is None:
            frame = self.__dict__["_ndata"] = Frame(num_rows=self.num_nodes(), what="ndata")
        return frame

    @property
    def edata(self) -> Frame:
        """Edge data by name, one row per edge in CSC order (edge ``e`` is position ``e``
        of ``indices``), like ``DGLGraph.edata``."""
        frame = self.__dict__.get("_edata")
        if frame is None:
            frame = self.__dict__["_edata"] = Frame(num_rows=self.num_edges(), what="edata")
        return frame

    @property
    def srcdata(self) -> Frame:
        """``ndata`` (a graph's sources are all its nodes, as in DGL)."""
        return self.ndata

    @property
    def dstdata(self) -> Frame:
        """``ndata`` (a graph's destinations are all its nodes, as in DGL)."""
        return self.ndata

    def _with_structure(self, indptr: torch.Tensor, indices: torch.Tensor,
                        data: Any = None) -> CSCGraph:
        """A graph over the given (already checked) arrays with this graph's frames,
        each value passed through ``data`` (default: shared, as DGL's copies share)."""
        graph = object.__new__(CSCGraph)  # the arrays were checked at construction
        graph.indptr, graph.indices = indptr, indices
        graph._valid = self._valid
        for name in ("_ndata", "_edata"):
            frame = self.__dict__.get(name)
            if frame is not None:
                copy = frame.copy()
                if data is not None:
                    dict.update(copy, {k: data(v) for k, v in frame.items()})
                graph.__dict__[name] = copy
        return graph

    # -- DGL's feature dtype casts (g.half(), dgl.to_float(g), ...) -----------------------
    def _cast_features(self, dtype: torch.dtype) -> CSCGraph:
        """A shallow copy whose floating-point ``ndata``/``edata`` are ``dtype`` (stores
        are converted as their rows are read); other data is shared as is."""
        return self._with_structure(self.indptr, self.indices,
                                    data=lambda v: cast_floating(v, dtype))

    def half(self) -> CSCGraph:
        """float16 floating-point features, like DGL's ``g.half()`` / ``dgl.to_half``."""
        return self._cast_features(torch.float16)

    def float(self) -> CSCGraph:
        """float32 floating-point features, like DGL's ``g.float()``."""
        return self._cast_features(torch.float32)

    def double(self) -> CSCGraph:
        """float64 floating-point features, like DGL's ``g.double()``."""
        return self._cast_features(torch.float64)

    def bfloat16(self) -> CSCGraph:
        """bfloat16 floating-point features (``half()`` with torch's bfloat16)."""
        return self._cast_features(torch.bfloat16)

    # -- DGL's index dtype ----------------------------------------------------------------
    @property
    def idtype(self) -> torch.dtype:
        """The dtype of the stored node ids (``indices``): ``torch.int32`` or ``torch.int64``."""
        return self.indices.dtype

    def int(self) -> CSCGraph:
        """This graph with int32 ``indices`` (itself if already int32), like DGL's
        ``g.int()``; the samplers read either. Frames are shared."""
        if self.indices.dtype == torch.int32:
            return self
        if self.num_nodes() > INT32_LIMIT:
            raise InputFormatError(f"a graph with {self.num_nodes()} nodes needs int64 ids; "
                                   "keep it int64 (g.long())")
        return self._with_structure(self.indptr, self.indices.to(torch.int32))

    def long(self) -> CSCGraph:
        """This graph with int64 ``indices`` (itself if already int64). Frames are shared."""
        if self.indices.dtype == torch.int64:
            return self
        return self._with_structure(self.indptr, self.indices.to(torch.int64))

    def find_edges(self, eid: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(src, dst)`` of the edges ``eid`` (CSC positions), like DGL's."""
        eid = torch.as_tensor(eid, device=self.device).long().reshape(-1)
        if eid.numel() and (int(eid.min()) < 0 or int(eid.max()) >= self.num_edges()):
            raise IndexError(f"edge ids must be in [0, {self.num_edges()})")
        dst = torch.searchsorted(self.indptr, eid, right=True) - 1
        return self.indices[eid].long(), dst

    # DGL's transforms as methods (``g.add_self_loop()``), as DGLGraph binds them.
    def add_self_loop(self, edge_feat_names: list[str] | None = None,
                      fill_data: float = 1.0, etype: Any = None) -> CSCGraph:
        """See :func:`graphsys.graph.transforms.add_self_loop`."""
        from graphsys.graph import transforms

        return transforms.add_self_loop(self, edge_feat_names, fill_data, etype)

    def remove_self_loop(self, etype: Any = None) -> CSCGraph:
        """See :func:`graphsys.graph.transforms.remove_self_loop`."""
        from graphsys.graph import transforms

        return transforms.remove_self_loop(self, etype)

    def to_simple(self, return_counts: str | None = "count", writeback_mapping: bool = False,
                  copy_ndata: bool = True, copy_edata: bool = False) -> CSCGraph:
        """See :func:`graphsys.graph.transforms.to_simple`."""
        from graphsys.graph import transforms

        return transforms.to_simple(self, return_counts, writeback_mapping, copy_ndata,
                                    copy_edata)

    def add_reverse_edges(self, readonly: Any = None, copy_ndata: bool = True,
                          copy_edata: bool = False, ignore_bipartite: bool = False,
                          exclude_self: bool = True) -> CSCGraph:
        """See :func:`graphsys.graph.transforms.add_reverse_edges`."""
        from graphsys.graph import transforms

        return transforms.add_reverse_edges(self, readonly, copy_ndata, copy_edata,
                                            ignore_bipartite, exclude_self)

    def create_formats_(self) -> None:
        """No-op, for DGL scripts: the CSC arrays are the only format graphsys samples."""
        return None

    # -- placement (DGL's g.to(device) and g.pin_memory_()) -------------------------------
    @property
    def device(self) -> torch.device:
        return self.indptr.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CSCGraph:
        """This graph's structure and tensor frames on ``device`` (itself if already there).

        Feature stores in ``ndata``/``edata`` stay as they are: a store owns its placement
        (tiers, device cache), and moving an out-of-core store would load it whole.
        A DataLoader given a graph on a GPU samples there with the GPU kernels."""
        device = torch.device(device)
        if self.indptr.device == device:
            return self

        def move(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.to(device, non_blocking=non_blocking)
            return value

        return self._with_structure(self.indptr.to(device), self.indices.to(device), move)

    def pin_memory_(self) -> CSCGraph:
        """Page-lock the structure in place (no copy), so GPU kernels read it by UVA:
        a DataLoader then samples this graph on the GPU without moving it there."""
        from graphsys._pinned import pin_inplace

        self.indptr, self.indices = pin_inplace(self.indptr), pin_inplace(self.indices)
        return self

    def is_pinned(self) -> bool:
        return bool(self.indptr.is_pinned() and self.indices.is_pinned())

    def ensure_valid(self) -> CSCGraph:
        """:meth:`validate` once per graph: the samplers call it before their compiled
        kernels index ``indptr``/``indices`` without bounds checks (a damaged index
        would otherwise crash the process rather than raise)."""
        if not getattr(self, "_valid", False):
            self.validate()
            self._valid = True
        return self

    def validate(self) -> None:
        """Check that ``indptr`` never decreases and every index is a node id."""
        if torch.any(self.indptr[1:] < self.indptr[:-1]):
            bad = int(torch.nonzero(self.indptr[1:] < self.indptr[:-1])[0])
            raise InputFormatError(f"indptr decreases at node {bad}: the CSC arrays are corrupt")
        if self.num_edges():
            low, high = int(self.indices.min()), int(self.indices.max())
            if low < 0 or high >= self.num_nodes():
                raise InputFormatError(
                    f"indices hold node ids in [{low}, {high}] but the graph has "
                    f"{self.num_nodes()} nodes"
                )

    # -- edge lists -------------------------------------------------------------------
    @classmethod
    def from_edges(
        cls,
        src: ArrayLike | list[int],
        dst: ArrayLike | list[int],
        num_nodes: int | None = None,
        *,
        symmetric: bool = False,
        dedup: bool = False,
        remove_self_loops: bool = False,
    ) -> CSCGraph:
        """Build a graph from edges ``src[i] -> dst[i]``.

        Args:
            num_nodes: node count; defaults to ``max id + 1``. Ids outside
                ``[0, num_nodes)`` raise :class:`InputFormatError` naming the position.
            symmetric: add the reverse of every edge.
            dedup: keep one copy of repeated edges.
            remove_self_loops: drop edges ``v -> v``.
        Edges keep their input order within each destination unless ``dedup`` sorts them.
        """
        src_np = np.asarray(src.cpu().numpy() if isinstance(src, torch.Tensor) else src)
        dst_np = np.asarray(dst.cpu().numpy() if isinstance(dst, torch.Tensor) else dst)
        if src_np.shape != dst_np.shape or src_np.ndim != 1:
            raise InputFormatError(
                "src and dst must be 1-D and of equal length, "
                f"got {src_np.shape} and {dst_np.shape}"
            )
        if src_np.size and not (
            np.issubdtype(src_np.dtype, np.integer) and np.issubdtype(dst_np.dtype, np.integer)
        ):
            raise InputFormatError(f"edge ids must be integers, got {src_np.dtype}/{dst_np.dtype}")
        src_np = src_np.astype(np.int64, copy=False)
        dst_np = dst_np.astype(np.int64, copy=False)
        if num_nodes is None:
            num_nodes = int(max(src_np.max(initial=-1), dst_np.max(initial=-1))) + 1
        check_ids_in_range(src_np, num_nodes, "src")
        check_ids_in_range(dst_np, num_nodes, "dst")
        if symmetric:
            src_np, dst_np = np.concatenate([src_np, dst_np]), np.concatenate([dst_np, src_np])
        if remove_self_loops:
            keep = src_np != dst_np
            src_np, dst_np = src_np[keep], dst_np[keep]
        if dedup:
            keys = np.unique(dst_np * num_nodes + src_np)
            dst_np, src_np = np.divmod(keys, num_nodes)
            order = None
        else:
            order = np.argsort(dst_np, kind="stable")
        sorted_src = src_np if order is None else src_np[order]
        sorted_dst = dst_np if order is None else dst_np[order]
        counts = np.bincount(sorted_dst, minlength=num_nodes)
        indptr = np.zeros(num_nodes + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        indices = sorted_src.astype(index_dtype_for(num_nodes))
        return cls(indptr, indices)

    def edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All edges as ``(src, dst)`` int64 tensors, grouped by destination."""
        dst = torch.repeat_interleave(torch.arange(self.num_nodes(), device=self.indptr.device),
                                      self.in_degrees())
        return self.indices.long(), dst

    @property
    def edge_index(self) -> torch.Tensor:
        """PyG-style ``[2, num_edges]`` tensor: row 0 sources, row 1 destinations."""
        src, dst = self.edges()
        return torch.stack([src, dst])

    def reverse(self) -> CSCGraph:
        """The graph with every edge reversed."""
        src, dst = self.edges()
        return CSCGraph.from_edges(dst, src, self.num_nodes())

    def to_symmetric(self) -> CSCGraph:
        """Add reverse edges, drop duplicates and self loops (an undirected view)."""
        src, dst = self.edges()
        return CSCGraph.from_edges(
            src, dst, self.num_nodes(), symmetric=True, dedup=True, remove_self_loops=True
        )

    # -- scipy ------------------------------------------------------------------------
    @classmethod
    def from_scipy(cls, matrix: Any) -> CSCGraph:
        """From a square scipy sparse matrix whose entry ``(u, v)`` is an edge ``u -> v``."""
        import scipy.sparse as sp

        if not sp.issparse(matrix) or matrix.shape[0] != matrix.shape[1]:
            raise InputFormatError("expected a square scipy sparse matrix")
        csc = sp.csc_matrix(matrix)
        csc.sort_indices()
        num_nodes = csc.shape[0]
        indptr = csc.indptr.astype(np.int64)
        indices = csc.indices.astype(index_dtype_for(num_nodes))
        return cls(indptr, indices)

    def to_scipy(self, fmt: str = "csc") -> Any:
        """A scipy sparse matrix of ones with entry ``(u, v)`` for each edge ``u -> v``.

        Repeated edges add up, as scipy sums duplicates on conversion.
        """
        import scipy.sparse as sp

        n = self.num_nodes()
        data = np.ones(self.num_edges(), dtype=np.float32)
        matrix = sp.csc_matrix(
            (data, self.indices.numpy(), self.indptr.numpy()), shape=(n, n)
        )
        return matrix.asformat(fmt)


def check_ids_in_range(ids: np.ndarray, num_nodes: int, what: str) -> None:
    """Raise :class:`InputFormatError` naming the first id outside ``[0, num_nodes)``."""
    if ids.size == 0:
        return
    bad = (ids < 0) | (ids >= num_nodes)
    if bad.any():
        pos = int(np.argmax(bad))
        raise InputFormatError(
            f"{what} id {int(ids[pos])} at position {pos} is out of range for "
            f"{num_nodes} nodes; fix the input or pass the right num_nodes"
        )
