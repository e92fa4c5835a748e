"""Reductions over the in-edges of a :class:`~graphsys.samplers.block.Block`.

Every layer in :mod:`graphsys.nn` reduces per-edge messages onto destination nodes with
these few helpers, so the scatter/index conventions live in one place. They are pure torch
and run on whatever device the block and features are on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from graphsys.errors import GraphsysError
from graphsys.graph.message_passing import csr_spmm, spmm_applies
from graphsys.samplers.block import Block

#: What a layer accepts: source features (destinations are their first rows) or a pair.
NodeFeatures = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
Activation = Callable[[torch.Tensor], torch.Tensor]


def split_features(block: Block, h: NodeFeatures,
                   drop: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h_src, h_dst)`` after checking row counts and applying ``drop`` to the inputs.

    With a single tensor, dropout runs once before slicing so that a destination node sees
    the same mask in its source and destination roles (as DGL does on blocks).
    """
    if isinstance(h, tuple):
        h_src, h_dst = h
        if drop is not None:
            h_src, h_dst = drop(h_src), drop(h_dst)
    else:
        h_src = h if drop is None else drop(h)
        h_dst = h_src[: block.num_dst_nodes()]
    if h_src.shape[0] != block.num_src_nodes():
        raise ValueError(f"source features have {h_src.shape[0]} rows but the block has "
                         f"{block.num_src_nodes()} source nodes")
    if h_dst.shape[0] != block.num_dst_nodes():
        raise ValueError(f"destination features have {h_dst.shape[0]} rows but the block has "
                         f"{block.num_dst_nodes()} destination nodes")
    return h_src, h_dst


def edge_endpoints(block: Block) -> tuple[torch.Tensor, torch.Tensor]:
    """Local ``(src, dst)`` of every edge as int64 (scatter_reduce rejects int32 indices)."""
    src, dst = block.edges()
    return src.long(), dst.long()


def gather_rows(h: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``h[index]`` along the first dimension, deterministic in the backward pass.

    ``h[index]`` backpropagates through ``index_put_(accumulate=True)``, which on a
    multi-threaded CPU adds colliding rows in thread order, so two identical runs differed
    around 1e-7; ``index_select``'s backward (``index_add_``) adds in a fixed order and
    was 3.4x faster here.
    """
    return h.index_select(0, index)


def sum_in_edges(block: Block, messages: torch.Tensor) -> torch.Tensor:
    """Sum per-edge ``messages`` ``[E, ...]`` onto destinations: ``[num_dst, ...]``."""
    _, dst = edge_endpoints(block)
    out = messages.new_zeros((block.num_dst_nodes(), *messages.shape[1:]))
    return out.index_add_(0, dst, messages)


def sum_neighbours(block: Block, h_src: torch.Tensor) -> torch.Tensor:
    """``sum_{j -> i} h_src[j]`` for every destination ``i`` (duplicate edges count twice)."""
    if spmm_applies(h_src, None):  # CPU: one sparse-dense product (on CUDA index_add_)
        return csr_spmm(block.indptr, block.indices, h_src)
    src, _ = edge_endpoints(block)
    return sum_in_edges(block, gather_rows(h_src, src))


def mean_neighbours(block: Block, h_src: torch.Tensor,
                    edge_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the (weighted) in-neighbours' features over the in-degree; zero for a
    destination with no in-edges."""
    deg = block.in_degrees().clamp(min=1).to(h_src.dtype)
    total = weighted_sum_neighbours(block, h_src, edge_weight)
    return total / deg.view(-1, *([1] * (h_src.dim() - 1)))


def max_neighbours(block: Block, h_src: torch.Tensor,
                   edge_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Element-wise max over (weighted) in-neighbours; zero for a destination with no
    in-edges, as DGL's ``fn.max``."""
    src, dst = edge_endpoints(block)
    messages = _weighted(gather_rows(h_src, src), edge_weight, block)
    index = dst.view(-1, *([1] * (messages.dim() - 1))).expand_as(messages)
    out = messages.new_zeros((block.num_dst_nodes(), *messages.shape[1:]))
    # include_self=False: rows that receive no edge keep their initial zero.
    return out.scatter_reduce(0, index, messages, reduce="amax", include_self=False)


def edge_softmax(block: Block, logits: torch.Tensor) -> torch.Tensor:
    """Softmax of per-edge ``logits`` ``[E, ...]`` over the in-edges of each destination.

    Numerically stable: the per-destination max is subtracted first. The max is detached
    because softmax is shift-invariant, so its gradient would be zero anyway.

    Example:
        >>> b = Block(torch.tensor([0, 2, 3]), torch.tensor([0, 1, 1]),
        ...           torch.tensor([0, 1]), num_dst=2)
        >>> edge_softmax(b, torch.tensor([0.0, 0.0, 5.0])).tolist()
        [0.5, 0.5, 1.0]
    """
    _, dst = edge_endpoints(block)
    index = dst.view(-1, *([1] * (logits.dim() - 1))).expand_as(logits)
    shape = (block.num_dst_nodes(), *logits.shape[1:])
    with torch.no_grad():
        peak = logits.new_full(shape, float("-inf")).scatter_reduce(
            0, index, logits, reduce="amax", include_self=True)
    scores = torch.exp(logits - gather_rows(peak, dst))
    denom = scores.new_zeros(shape).index_add_(0, dst, scores)
    return scores / gather_rows(denom, dst)


# -- DGL's conventions shared by the layers -------------------------------------------------
class ZeroInDegreeError(GraphsysError, ValueError):
    """A layer met destination nodes with no in-edges (DGL raises ``DGLError`` here)."""


def check_zero_in_degree(block: Block, allow: bool) -> None:
    """Raise as DGL's ``GraphConv``/``GATConv`` do unless ``allow_zero_in_degree=True``.

    Such a node receives no message, so its output is only the bias (or residual): a silent
    accuracy loss in most applications, hence DGL's check by default.
    """
    if allow or block.num_dst_nodes() == 0:
        return
    if bool((block.in_degrees() == 0).any()):
        raise ZeroInDegreeError(
            "There are 0-in-degree nodes in the graph; the output for those nodes would be "
            "invalid (only the bias), which silently hurts accuracy in most applications. "
            "Add self-loops to the graph, or pass allow_zero_in_degree=True when "
            "constructing this module to suppress the check.")


def as_block(graph: Any) -> Block:
    """``graph`` as a :class:`Block`: a block as is, a whole graph as a square block.

    A whole graph is anything with CSC ``indptr``/``indices`` and ``num_nodes()`` (a
    :class:`~graphsys.graph.csc.CSCGraph`): every node is both a source and a destination,
    as when DGL's layers run on a ``DGLGraph``.
    """
    if isinstance(graph, Block):
        return graph
    indptr, indices = getattr(graph, "indptr", None), getattr(graph, "indices", None)
    if not isinstance(indptr, torch.Tensor) or not isinstance(indices, torch.Tensor):
        raise TypeError(f"a layer takes a graphsys Block or a CSC graph (indptr, indices), "
                        f"got {type(graph).__name__}")
    num_nodes = indptr.numel() - 1
    return Block(indptr, indices, torch.arange(num_nodes, device=indptr.device), num_nodes)


def as_square_block(graph: Any, layer: str) -> Block:
    """:func:`as_block` for layers that propagate several hops on the same node set."""
    block = as_block(graph)
    if block.num_src_nodes() != block.num_dst_nodes():
        raise ValueError(f"{layer} propagates over the same nodes several times, so it takes a "
                         f"whole graph, not a block with {block.num_src_nodes()} source and "
                         f"{block.num_dst_nodes()} destination nodes")
    return block


def expand_as_pair(in_feats: int | tuple[int, int]) -> tuple[int, int]:
    """``(in_src_feats, in_dst_feats)`` from DGL's ``in_feats`` (an int or a pair)."""
    if isinstance(in_feats, tuple):
        if len(in_feats) != 2:
            raise ValueError(f"in_feats must be an int or a pair (src, dst), got {in_feats!r}")
        return int(in_feats[0]), int(in_feats[1])
    if isinstance(in_feats, bool) or not isinstance(in_feats, int):
        raise TypeError(f"in_feats must be an int or a pair of ints, got {in_feats!r}")
    return in_feats, in_feats


def weighted_sum_neighbours(block: Block, h_src: torch.Tensor,
                            edge_weight: torch.Tensor | None) -> torch.Tensor:
    """``sum_{j -> i} w_ji h_src[j]``; plain :func:`sum_neighbours` without weights."""
    if edge_weight is None:
        return sum_neighbours(block, h_src)
    if edge_weight.shape[0] == block.num_edges() and spmm_applies(h_src, edge_weight):
        return csr_spmm(block.indptr, block.indices, h_src, edge_weight)
    src, _ = edge_endpoints(block)
    return sum_in_edges(block, _weighted(gather_rows(h_src, src), edge_weight, block))


def _weighted(messages: torch.Tensor, edge_weight: torch.Tensor | None,
              block: Block) -> torch.Tensor:
    """``messages`` [E, ...] times a per-edge weight [E] (or broadcastable [E, ...])."""
    if edge_weight is None:
        return messages
    if edge_weight.shape[0] != block.num_edges():
        raise ValueError(f"edge_weight has {edge_weight.shape[0]} rows but the block has "
                         f"{block.num_edges()} edges")
    if edge_weight.dim() == 1:
        edge_weight = edge_weight.reshape(-1, *([1] * (messages.dim() - 1)))
    return messages * edge_weight
