"""Graph isomorphism network layer (Xu et al., 2019), as ``dgl.nn.GINConv`` (DGL 2.1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import torch
from torch import nn

from graphsys.nn._aggregate import (
    Activation,
    NodeFeatures,
    as_block,
    max_neighbours,
    mean_neighbours,
    split_features,
    weighted_sum_neighbours,
)
from graphsys.samplers.block import Block

GINAggregator = Literal["sum", "max", "mean"]
GIN_AGGREGATORS: tuple[str, ...] = get_args(GINAggregator)


class GINConv(nn.Module):
    """``out_i = apply_func((1 + eps) h_i + aggregate_{j->i} w_ji h_j)``, then ``activation``.

    ``eps`` is a parameter with ``learn_eps``, else a buffer; either way the state dict has
    the key ``eps`` of shape ``(1,)``, as DGL's. ``apply_func``'s parameters sit under
    ``apply_func.``. A destination with no in-edges gets a zero aggregate (also for
    ``'max'``).

    Args:
        apply_func: module applied to the combined features (an MLP in the paper), if given.
        aggregator_type: ``'sum'``, ``'max'`` or ``'mean'``.
        init_eps: initial ``eps``.
        learn_eps: learn ``eps``.
        activation: applied last, if given.

    Example:
        >>> conv = GINConv(torch.nn.Linear(16, 8), "sum")
        >>> out = conv(block, h)   # [num_dst, 8]
    """

    def __init__(self, apply_func: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 aggregator_type: GINAggregator = "sum", init_eps: float = 0.0,
                 learn_eps: bool = False, activation: Activation | None = None) -> None:
        super().__init__()
        if aggregator_type not in GIN_AGGREGATORS:
            raise ValueError(f"unknown GINConv aggregator_type {aggregator_type!r}; choose one "
                             f"of {', '.join(map(repr, GIN_AGGREGATORS))}")
        self.apply_func = apply_func
        self.aggregator_type = aggregator_type
        self.activation = activation
        eps = torch.tensor([float(init_eps)])
        if learn_eps:
            self.eps = nn.Parameter(eps)
        else:
            self.register_buffer("eps", eps)

    def forward(self, graph: Any, feat: NodeFeatures,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Features of the destination nodes (``apply_func``'s output size)."""
        block = as_block(graph)
        h_src, h_dst = split_features(block, feat)
        neigh = _reduce(block, h_src, edge_weight, self.aggregator_type)
        out = (1 + self.eps) * h_dst + neigh
        if self.apply_func is not None:
            out = self.apply_func(out)
        if self.activation is not None:
            out = self.activation(out)
        return out

    def extra_repr(self) -> str:
        return f"aggregator_type={self.aggregator_type!r}"


def _reduce(block: Block, h_src: torch.Tensor, edge_weight: torch.Tensor | None,
            kind: str) -> torch.Tensor:
    if kind == "sum":
        return weighted_sum_neighbours(block, h_src, edge_weight)
    if kind == "mean":
        return mean_neighbours(block, h_src, edge_weight)
    return max_neighbours(block, h_src, edge_weight)
