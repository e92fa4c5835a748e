"""Graph convolution on blocks (Kipf & Welling, 2017), as ``dgl.nn.GraphConv`` (DGL 2.1)."""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import nn

from graphsys.nn._aggregate import (
    Activation,
    NodeFeatures,
    as_block,
    check_zero_in_degree,
    edge_endpoints,
    split_features,
    weighted_sum_neighbours,
)

Norm = Literal["both", "right", "left", "none"]
NORMS: tuple[str, ...] = get_args(Norm)


class GraphConv(nn.Module):
    """GCN layer: ``out_i = sum_{j->i} c_ij w_ji h_j W + b``, DGL 2.1's signature and keys.

    Degrees are measured inside the block, as DGL does on blocks: ``outdeg_j`` counts the
    edges leaving source ``j`` in this block and ``indeg_i`` those entering destination
    ``i``, both clamped to at least 1 (unweighted, also with ``edge_weight``).

    * ``'both'``: ``c_ij = 1 / sqrt(outdeg_j * indeg_i)``
    * ``'right'``: ``c_ij = 1 / indeg_i`` (mean over in-neighbours)
    * ``'left'``: ``c_ij = 1 / outdeg_j``
    * ``'none'``: ``c_ij = 1`` (sum)

    Duplicate edges count as often as they appear. No self-loops are added.

    Args:
        in_feats: input feature size.
        out_feats: output feature size; must equal ``in_feats`` when ``weight=False``.
        norm: normaliser, see above.
        weight: learn a ``[in_feats, out_feats]`` weight ``W`` (key ``weight``).
        bias: learn an additive bias (key ``bias``).
        activation: applied to the output, if given.
        allow_zero_in_degree: as DGL, a destination with no in-edges raises
            :class:`~graphsys.nn.ZeroInDegreeError` (its output would be only the bias)
            unless this is True.

    Example:
        >>> conv = GraphConv(16, 8, norm="both", allow_zero_in_degree=True)
        >>> out = conv(block, h)   # [num_dst, 8]
    """

    def __init__(self, in_feats: int, out_feats: int, norm: Norm = "both", weight: bool = True,
                 bias: bool = True, activation: Activation | None = None,
                 allow_zero_in_degree: bool = False) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown GraphConv norm {norm!r}; choose one of "
                             f"{', '.join(map(repr, NORMS))}")
        self.in_feats, self.out_feats, self.norm = in_feats, out_feats, norm
        self.allow_zero_in_degree = allow_zero_in_degree
        self.activation = activation
        if weight:
            self.weight = nn.Parameter(torch.empty(in_feats, out_feats))
        else:
            self.register_parameter("weight", None)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_feats))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def set_allow_zero_in_degree(self, set_value: bool) -> None:
        """DGL's setter for ``allow_zero_in_degree``."""
        self.allow_zero_in_degree = set_value

    def forward(self, graph: Any, feat: NodeFeatures, weight: torch.Tensor | None = None,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Features of the destination nodes, ``[num_dst, out_feats]``.

        Args:
            graph: a :class:`Block`, or a whole graph.
            feat: source features, or a pair of which only the source part is used (DGL).
            weight: an external ``[in_feats, out_feats]`` weight, for a layer built with
                ``weight=False``.
            edge_weight: optional per-edge weight ``[num_edges]`` multiplying each message.
        """
        block = as_block(graph)
        check_zero_in_degree(block, self.allow_zero_in_degree)
        h_src, _ = split_features(block, feat)
        if weight is not None and self.weight is not None:
            raise ValueError("this GraphConv has its own weight; build it with weight=False "
                             "to pass an external weight")
        weight = self.weight if weight is None else weight
        if weight is None and self.bias is not None and h_src.shape[-1] != self.out_feats:
            # DGL would fail adding the bias; without one it returns the input width.
            raise ValueError(f"without a weight the input size ({h_src.shape[-1]}) must equal "
                             f"out_feats ({self.out_feats}) for the bias to apply")
        if self.norm in ("both", "left"):
            out_deg = block.out_degrees().clamp(min=1).to(h_src.dtype)
            scale = out_deg.rsqrt() if self.norm == "both" else out_deg.reciprocal()
            h_src = h_src * scale.unsqueeze(-1)
        # Aggregation commutes with W, so multiply on the smaller side of the edge sum.
        if weight is not None and weight.shape[0] > weight.shape[1]:
            out = weighted_sum_neighbours(block, h_src @ weight, edge_weight)
        else:
            out = weighted_sum_neighbours(block, h_src, edge_weight)
            if weight is not None:
                out = out @ weight
        if self.norm in ("both", "right"):
            in_deg = block.in_degrees().clamp(min=1).to(out.dtype)
            scale = in_deg.rsqrt() if self.norm == "both" else in_deg.reciprocal()
            out = out * scale.unsqueeze(-1)
        if self.bias is not None:
            out = out + self.bias
        if self.activation is not None:
            out = self.activation(out)
        return out

    def extra_repr(self) -> str:
        return (f"in={self.in_feats}, out={self.out_feats}, normalization={self.norm}, "
                f"activation={self.activation}")


class EdgeWeightNorm(nn.Module):
    """Normalise scalar edge weights as DGL's ``EdgeWeightNorm`` (for ``edge_weight=``).

    ``'both'``: ``w_ji / sqrt(W_out(j) * W_in(i))``, ``'right'``: ``w_ji / W_in(i)``,
    ``'none'``: ``w_ji``, where ``W_out``/``W_in`` are the weighted out/in-degrees plus
    ``eps``. ``'both'`` needs positive weights.

    Example:
        >>> norm_w = EdgeWeightNorm("both")(block, w)
        >>> out = GraphConv(16, 8, norm="none")(block, h, edge_weight=norm_w)
    """

    def __init__(self, norm: Literal["both", "right", "none"] = "both", eps: float = 0.0) -> None:
        super().__init__()
        if norm not in ("both", "right", "none"):
            raise ValueError(f"unknown EdgeWeightNorm norm {norm!r}; choose 'both', 'right' "
                             f"or 'none'")
        self.norm, self.eps = norm, eps

    def forward(self, graph: Any, edge_weight: torch.Tensor) -> torch.Tensor:
        block = as_block(graph)
        if edge_weight.dim() != 1 or edge_weight.shape[0] != block.num_edges():
            raise ValueError(f"edge_weight must be one scalar per edge ({block.num_edges()}), "
                             f"got shape {tuple(edge_weight.shape)}")
        if self.norm == "none":
            return edge_weight
        if self.norm == "both" and bool((edge_weight <= 0).any()):
            raise ValueError("non-positive edge weight with norm='both' (its square root is "
                             "taken); use norm='right' or positive weights")
        src, dst = edge_endpoints(block)
        in_weight = edge_weight.new_zeros(block.num_dst_nodes()).index_add_(0, dst, edge_weight)
        in_weight = in_weight + self.eps
        if self.norm == "right":
            return edge_weight / in_weight.index_select(0, dst)
        out_weight = edge_weight.new_zeros(block.num_src_nodes()).index_add_(0, src, edge_weight)
        out_weight = out_weight + self.eps
        return (edge_weight * out_weight.index_select(0, src).rsqrt()
                * in_weight.index_select(0, dst).rsqrt())
