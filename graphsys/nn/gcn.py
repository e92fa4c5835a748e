"""Graph convolution on blocks (Kipf & Welling, 2017), following ``dgl.nn.GraphConv``."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from graphsys.nn._aggregate import Activation, NodeFeatures, split_features, sum_neighbours
from graphsys.samplers.block import Block

Norm = Literal["both", "right", "left", "none"]
NORMS: tuple[str, ...] = get_args(Norm)


class GraphConv(nn.Module):
    """GCN layer: ``out_i = sum_{j->i} c_ij h_j W + b``.

    Degrees are measured inside the block, as DGL does on blocks: ``outdeg_j`` counts the
    edges leaving source ``j`` in this block and ``indeg_i`` those entering destination
    ``i``, both clamped to at least 1.

    * ``'both'``: ``c_ij = 1 / sqrt(outdeg_j * indeg_i)``
    * ``'right'``: ``c_ij = 1 / indeg_i`` (mean over in-neighbours)
    * ``'left'``: ``c_ij = 1 / outdeg_j``
    * ``'none'``: ``c_ij = 1`` (sum)

    Duplicate edges count as often as they appear. No self-loops are added: add them to
    the graph if you want them.

    Args:
        in_feats: input feature size.
        out_feats: output feature size; must equal ``in_feats`` when ``weight=False``.
        norm: normaliser, see above.
        weight: learn a ``[in_feats, out_feats]`` weight ``W``; without it ``W = I``.
        bias: add a learnable bias.
        activation: applied to the output, if given.
        allow_zero_in_degree: if False, raise on a destination with no in-edges (whose
            output would be just the bias) instead of silently returning it.

    Example:
        >>> conv = GraphConv(16, 8, norm="both")
        >>> out = conv(block, h)   # [num_dst, 8]
    """

    def __init__(self, in_feats: int, out_feats: int, norm: Norm = "both", weight: bool = True,
                 bias: bool = True, activation: Activation | None = None,
                 allow_zero_in_degree: bool = True) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown GraphConv norm {norm!r}; choose one of "
                             f"{', '.join(map(repr, NORMS))}")
        if not weight and in_feats != out_feats:
            raise ValueError(f"weight=False needs in_feats == out_feats, got {in_feats} and "
                             f"{out_feats}")
        self.in_feats, self.out_feats, self.norm = in_feats, out_feats, norm
        self.allow_zero_in_degree = allow_zero_in_degree
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(in_feats, out_feats)) if weight else None
        self.bias = nn.Parameter(torch.zeros(out_feats)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, block: Block, h: NodeFeatures) -> torch.Tensor:
        """Features of the destination nodes, ``[block.num_dst_nodes(), out_feats]``.

        With a pair ``(h_src, h_dst)`` only ``h_src`` is used, as in DGL.
        """
        h_src, _ = split_features(block, h)
        in_deg = block.in_degrees()
        if not self.allow_zero_in_degree and bool((in_deg == 0).any()):
            raise ValueError("the block has destination nodes with no in-edges; their "
                             "output would be only the bias. Add self-loops or pass "
                             "allow_zero_in_degree=True")
        if self.norm in ("both", "left"):
            out_deg = block.out_degrees().clamp(min=1).to(h_src.dtype)
            scale = out_deg.rsqrt() if self.norm == "both" else out_deg.reciprocal()
            h_src = h_src * scale.unsqueeze(-1)
        # Aggregation commutes with W, so multiply on the smaller side of the edge sum.
        if self.weight is not None and self.in_feats > self.out_feats:
            out = sum_neighbours(block, h_src @ self.weight)
        else:
            out = sum_neighbours(block, h_src)
            if self.weight is not None:
                out = out @ self.weight
        if self.norm in ("both", "right"):
            in_deg = in_deg.clamp(min=1).to(out.dtype)
            scale = in_deg.rsqrt() if self.norm == "both" else in_deg.reciprocal()
            out = out * scale.unsqueeze(-1)
        if self.bias is not None:
            out = out + self.bias
        if self.activation is not None:
            out = self.activation(out)
        return out

    def extra_repr(self) -> str:
        return f"{self.in_feats}, {self.out_feats}, norm={self.norm!r}"
