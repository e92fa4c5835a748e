"""DGL's ``dgl.nn.functional`` names that graphsys provides (on blocks or whole graphs)."""

from __future__ import annotations

from typing import Any

import torch

from graphsys.nn._aggregate import as_block
from graphsys.nn._aggregate import edge_softmax as _edge_softmax


def edge_softmax(graph: Any, logits: torch.Tensor) -> torch.Tensor:
    """Softmax of per-edge ``logits`` ``[E, ...]`` over each destination's in-edges, like
    ``dgl.nn.functional.edge_softmax(graph, logits)`` (``eids`` and ``norm_by`` are not
    taken: all edges, normalised by destination).

    Example:
        >>> alpha = edge_softmax(block, scores)   # [block.num_edges(), num_heads]
    """
    return _edge_softmax(as_block(graph), logits)


__all__ = ["edge_softmax"]
