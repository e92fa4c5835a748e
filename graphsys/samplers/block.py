"""Message-flow graphs (``Block``) and the ``MiniBatch`` a sampler returns.

A block is a bipartite graph from ``num_src_nodes()`` source nodes to ``num_dst_nodes()``
destination nodes, stored as local CSC arrays: the in-edges of destination ``i`` have
local sources ``indices[indptr[i]:indptr[i+1]]``. The first ``num_dst_nodes()`` source
nodes *are* the destination nodes (same global ids, same order), as in DGL, so a layer
reads its destinations' own features as ``h[:block.num_dst_nodes()]``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from graphsys.graph.frame import Frame
from graphsys.graph.message_passing import MessagePassing

#: Key under which ``srcdata``/``dstdata`` hold global node ids (DGL's ``dgl.NID``).
NID = "_ID"
#: Key under which ``edata`` holds global edge ids (DGL's ``dgl.EID``), when recorded.
EID = "_ID"


class Block(MessagePassing):
    """One layer's message-flow graph with DGL-style ``srcdata``/``dstdata``.

    Args:
        indptr: int64 ``[num_dst + 1]`` offsets into ``indices``.
        indices: int64 ``[num_edges]`` local source ids in ``[0, num_src)``.
        src_nodes: int64 ``[num_src]`` global ids of the source nodes; the first
            ``num_dst`` of them are the destination nodes.
        num_dst: number of destination nodes.

    Example:
        >>> b = Block(torch.tensor([0, 2, 3]), torch.tensor([1, 2, 0]),
        ...           torch.tensor([7, 3, 9]), num_dst=2)
        >>> b.num_src_nodes(), b.num_dst_nodes(), b.num_edges()
        (3, 2, 3)
        >>> [t.tolist() for t in b.edges()]
        [[1, 2, 0], [0, 0, 1]]
    """

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, src_nodes: torch.Tensor,
                 num_dst: int) -> None:
        if indptr.numel() != num_dst + 1:
            raise ValueError(f"indptr has {indptr.numel()} entries, expected num_dst + 1 = "
                             f"{num_dst + 1}")
        if num_dst > src_nodes.numel():
            raise ValueError(f"num_dst={num_dst} exceeds the {src_nodes.numel()} source nodes")
        self.indptr = indptr
        self.indices = indices
        self._num_dst = int(num_dst)
        # DGL's frames: each value has one row per source node, destination or edge.
        self.srcdata = Frame(num_rows=src_nodes.numel(), what="srcdata")
        self.dstdata = Frame(num_rows=int(num_dst), what="dstdata")
        self.edata = Frame(num_rows=indices.numel(), what="edata")
        dict.__setitem__(self.srcdata, NID, src_nodes)
        dict.__setitem__(self.dstdata, NID, src_nodes[:num_dst])
        self._dst_local: torch.Tensor | None = None

    # -- sizes (DGL's names; ntype/etype accepted for its signatures, one type here) ----
    def num_src_nodes(self, ntype: str | None = None) -> int:
        return int(self.srcdata[NID].numel())

    def num_dst_nodes(self, ntype: str | None = None) -> int:
        return self._num_dst

    def num_edges(self, etype: Any = None) -> int:
        return int(self.indices.numel())

    number_of_src_nodes = num_src_nodes
    number_of_dst_nodes = num_dst_nodes
    number_of_edges = num_edges

    #: DGL's flag telling blocks from graphs.
    is_block = True

    def srcnodes(self) -> torch.Tensor:
        """Local ids of the source nodes, ``0 .. num_src_nodes() - 1``."""
        return torch.arange(self.num_src_nodes(), device=self.device)

    def dstnodes(self) -> torch.Tensor:
        """Local ids of the destination nodes, ``0 .. num_dst_nodes() - 1``."""
        return torch.arange(self._num_dst, device=self.device)

    # -- DGL's index dtype ---------------------------------------------------------------
    @property
    def idtype(self) -> torch.dtype:
        """The dtype of the local edge ids (``indices``), like ``DGLBlock.idtype``."""
        return self.indices.dtype

    def int(self) -> Block:
        """This block with int32 ``indices`` (itself if already int32), like DGL's
        ``block.int()``. ``indptr`` and the ``_ID`` global ids keep int64 (offsets and
        global ids of a large graph need it); data frames are shared."""
        return self if self.indices.dtype == torch.int32 else self._cast(torch.int32)

    def long(self) -> Block:
        """This block with int64 ``indices`` (itself if already int64)."""
        return self if self.indices.dtype == torch.int64 else self._cast(torch.int64)

    def _cast(self, dtype: torch.dtype) -> Block:
        out = Block(self.indptr, self.indices.to(dtype), self.src_nodes, self._num_dst)
        _copy_frames(self, out, lambda t: t)
        out._dst_local = self._dst_local
        return out

    @property
    def src_nodes(self) -> torch.Tensor:
        """Global ids of the source nodes (``srcdata['_ID']``)."""
        return self.srcdata[NID]

    @property
    def dst_nodes(self) -> torch.Tensor:
        """Global ids of the destination nodes (``dstdata['_ID']``)."""
        return self.dstdata[NID]

    @property
    def device(self) -> torch.device:
        return self.indices.device

    # -- structure ---------------------------------------------------------------------
    def in_degrees(self) -> torch.Tensor:
        """In-degree of each destination node (int64 ``[num_dst]``)."""
        return self.indptr[1:] - self.indptr[:-1]

    def out_degrees(self) -> torch.Tensor:
        """Out-degree of each source node within this block (int64 ``[num_src]``)."""
        return torch.bincount(self.indices, minlength=self.num_src_nodes())

    def dst_of_edges(self) -> torch.Tensor:
        """Local destination id of every edge, in CSC order (computed once, cached)."""
        if self._dst_local is None or self._dst_local.device != self.indices.device:
            self._dst_local = torch.repeat_interleave(
                torch.arange(self._num_dst, device=self.indptr.device), self.in_degrees(),
                output_size=self.num_edges())
        return self._dst_local

    def edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(src, dst)`` local ids of every edge, like ``DGLBlock.edges()``."""
        return self.indices, self.dst_of_edges()

    @property
    def edge_index(self) -> torch.Tensor:
        """PyG-style ``[2, num_edges]`` local ``(src, dst)`` pairs."""
        return torch.stack(self.edges())

    def adj_sparse(self, fmt: str = "csc") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(indptr, indices, edge_ids)`` as DGL's ``adj_tensors('csc')`` returns them."""
        if fmt != "csc":
            raise ValueError(f"only 'csc' is stored; got fmt={fmt!r}")
        return self.indptr, self.indices, torch.arange(self.num_edges(), device=self.device)

    # -- movement ----------------------------------------------------------------------
    def to(self, device: torch.device | str, non_blocking: bool = False) -> Block:
        """A copy of this block (structure and data) on ``device``."""
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        out = Block(move(self.indptr), move(self.indices), move(self.src_nodes), self._num_dst)
        _copy_frames(self, out, move)
        if self._dst_local is not None:
            out._dst_local = move(self._dst_local)
        return out

    def pin_memory(self) -> Block:
        """Pin structure and data in page-locked host memory (CUDA only).

        Tensors already on the GPU (a GPU sampler's blocks, a device cache's rows) stay.
        """
        def pin(t: torch.Tensor) -> torch.Tensor:
            return t if t.is_cuda else t.pin_memory()

        self.indptr, self.indices = pin(self.indptr), pin(self.indices)
        for data in (self.srcdata, self.dstdata, self.edata):
            for k, v in data.items():
                dict.__setitem__(data, k, pin(v))  # same shapes: skip the frame's check
        dict.__setitem__(self.dstdata, NID, self.srcdata[NID][: self._num_dst])
        return self

    def to_dgl(self) -> Any:
        """This block as a ``dgl.DGLBlock`` (needs DGL), with ``dgl.NID`` and all data."""
        from graphsys._compat import require

        dgl = require("dgl", "Block.to_dgl()", "dgl")
        src, dst = self.edges()
        block = dgl.create_block((src, dst), num_src_nodes=self.num_src_nodes(),
                                 num_dst_nodes=self._num_dst, device=self.device)
        for k, v in self.srcdata.items():
            block.srcdata[k] = v
        for k, v in self.dstdata.items():
            block.dstdata[k] = v
        for k, v in self.edata.items():
            block.edata[k] = v
        return block

    def __repr__(self) -> str:
        return (f"Block(num_src_nodes={self.num_src_nodes()}, "
                f"num_dst_nodes={self.num_dst_nodes()}, num_edges={self.num_edges()})")


def _copy_frames(source: Block, out: Block, move: Any) -> None:
    """``out``'s frames from ``source``'s (all but the ids ``out`` already has), moved."""
    # Rows were checked when the values were set on ``source``; same shapes here.
    for a, b in ((source.srcdata, out.srcdata), (source.dstdata, out.dstdata)):
        dict.update(b, {k: move(v) for k, v in a.items() if k != NID})
    dict.update(out.edata, {k: move(v) for k, v in source.edata.items()})


class MiniBatch(NamedTuple):
    """What a sampler returns and a DataLoader yields: unpacks as DGL's 3-tuple.

    ``input_nodes`` are the global ids whose features the first layer needs
    (``blocks[0].srcdata['_ID']``); ``output_nodes`` are the seeds
    (``blocks[-1].dstdata['_ID']``).
    """

    input_nodes: torch.Tensor
    output_nodes: torch.Tensor
    blocks: list[Block]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MiniBatch:
        blocks = [b.to(device, non_blocking=non_blocking) for b in self.blocks]
        return MiniBatch(blocks[0].src_nodes if blocks else self.input_nodes.to(device),
                         blocks[-1].dst_nodes if blocks else self.output_nodes.to(device),
                         blocks)
