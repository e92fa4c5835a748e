"""Propagation layers over a whole graph: ``SGConv`` (Wu et al., 2019) and ``APPNPConv``
(Klicpera et al., 2019), as ``dgl.nn`` (DGL 2.1).

Both repeat a normalised sum over in-edges ``k`` times on the same node set, so they take
a whole graph (a :class:`~graphsys.graph.csc.CSCGraph`, or a block whose sources are its
destinations), as DGL's do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from graphsys.nn._aggregate import (
    as_square_block,
    check_zero_in_degree,
    weighted_sum_neighbours,
)
from graphsys.nn.gcn import EdgeWeightNorm


class SGConv(nn.Module):
    """Simplified graph convolution: ``fc((D^-1/2 A D^-1/2)^k X)``, DGL 2.1's keys.

    ``D`` is the in-degree (clamped to 1) on both sides, as in DGL, which assumes a
    symmetric graph. Keys: ``fc.weight`` ``[out, in]`` and ``fc.bias``.

    Args:
        in_feats: input feature size.
        out_feats: output feature size.
        k: number of propagation hops.
        cached: keep the propagated features after the first call and reuse them
            (transductive use on one fixed graph; the input is then ignored).
        bias: learn a bias in ``fc``.
        norm: applied to the propagated features before ``fc``, if given.
        allow_zero_in_degree: as DGL, nodes with no in-edges raise
            :class:`~graphsys.nn.ZeroInDegreeError` unless this is True.

    Example:
        >>> conv = SGConv(16, 7, k=2, cached=True)
        >>> logits = conv(graph, x)   # [graph.num_nodes(), 7]
    """

    def __init__(self, in_feats: int, out_feats: int, k: int = 1, cached: bool = False,
                 bias: bool = True, norm: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 allow_zero_in_degree: bool = False) -> None:
        super().__init__()
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        self.in_feats, self.out_feats, self.k = in_feats, out_feats, k
        self.fc = nn.Linear(in_feats, out_feats, bias=bias)
        self.cached = cached
        self.norm = norm
        self.allow_zero_in_degree = allow_zero_in_degree
        self._cached_h: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.fc.weight)
        if self.fc.bias is not None:
            nn.init.zeros_(self.fc.bias)

    def set_allow_zero_in_degree(self, set_value: bool) -> None:
        """DGL's setter for ``allow_zero_in_degree``."""
        self.allow_zero_in_degree = set_value

    def forward(self, graph: Any, feat: torch.Tensor,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``[num_nodes, out_feats]``.

        ``edge_weight`` (positive, one per edge) is normalised by ``EdgeWeightNorm('both')``
        and replaces the degree normalisation, as in DGL.
        """
        block = as_square_block(graph, "SGConv")
        check_zero_in_degree(block, self.allow_zero_in_degree)
        if self.cached and self._cached_h is not None:
            feat = self._cached_h
        else:
            if feat.shape[0] != block.num_src_nodes():
                raise ValueError(f"features have {feat.shape[0]} rows but the graph has "
                                 f"{block.num_src_nodes()} nodes")
            if edge_weight is not None:
                weight = EdgeWeightNorm("both")(block, edge_weight)
                for _ in range(self.k):
                    feat = weighted_sum_neighbours(block, feat, weight)
            else:
                scale = block.in_degrees().clamp(min=1).to(feat.dtype).rsqrt().unsqueeze(-1)
                for _ in range(self.k):
                    feat = weighted_sum_neighbours(block, feat * scale, None) * scale
            if self.norm is not None:
                feat = self.norm(feat)
            if self.cached:
                self._cached_h = feat
        return self.fc(feat)

    def extra_repr(self) -> str:
        return f"{self.in_feats}, {self.out_feats}, k={self.k}, cached={self.cached}"


class APPNPConv(nn.Module):
    """Approximate personalised propagation: ``k`` steps of
    ``H <- (1 - alpha) D_in^-1/2 A D_out^-1/2 H + alpha H_0``. No parameters.

    Args:
        k: number of propagation steps.
        alpha: teleport probability.
        edge_drop: dropout on the edges of each step (in training mode only; kept edges
            are scaled by ``1 / (1 - edge_drop)``, as DGL's ``nn.Dropout`` on edge weights).

    Example:
        >>> prop = APPNPConv(k=10, alpha=0.1)
        >>> h = prop(graph, mlp(x))
    """

    def __init__(self, k: int, alpha: float, edge_drop: float = 0.0) -> None:
        super().__init__()
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        self.k, self.alpha = k, alpha
        self.edge_drop = nn.Dropout(edge_drop)

    def forward(self, graph: Any, feat: torch.Tensor,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Propagated features, the shape of ``feat``.

        ``edge_weight`` (already normalised, e.g. by an edge-weight norm) replaces the
        degree normalisation, as in DGL.
        """
        block = as_square_block(graph, "APPNPConv")
        if feat.shape[0] != block.num_src_nodes():
            raise ValueError(f"features have {feat.shape[0]} rows but the graph has "
                             f"{block.num_src_nodes()} nodes")
        shape = (-1, *([1] * (feat.dim() - 1)))
        if edge_weight is None:
            src_scale = block.out_degrees().clamp(min=1).to(feat.dtype).rsqrt().view(shape)
            dst_scale = block.in_degrees().clamp(min=1).to(feat.dtype).rsqrt().view(shape)
        feat_0 = feat
        for _ in range(self.k):
            if edge_weight is None:
                weight = self.edge_drop(feat.new_ones(block.num_edges()))
                feat = weighted_sum_neighbours(block, feat * src_scale, weight) * dst_scale
            else:
                feat = weighted_sum_neighbours(block, feat, self.edge_drop(edge_weight))
            feat = (1 - self.alpha) * feat + self.alpha * feat_0
        return feat

    def extra_repr(self) -> str:
        return f"k={self.k}, alpha={self.alpha}"
