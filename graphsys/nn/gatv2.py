"""GATv2 attention on blocks (Brody et al., 2022), as ``dgl.nn.GATv2Conv`` (DGL 2.1)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from graphsys.nn._aggregate import (
    Activation,
    NodeFeatures,
    as_block,
    check_zero_in_degree,
    edge_endpoints,
    expand_as_pair,
    gather_rows,
    split_features,
)
from graphsys.nn._dropout import Dropout
from graphsys.nn.gat import attend, residual_projection


class GATv2Conv(nn.Module):
    """GATv2 layer: attention applied after the non-linearity, DGL 2.1's signature and keys.

    For each head: ``e_ij = attn . leaky_relu(fc_src(h_j) + fc_dst(h_i))``,
    ``a_ij = softmax_{j->i}(e_ij)``, ``out_i = sum_{j->i} a_ij fc_src(h_j) + res_fc(h_i)``,
    then ``activation``. The biases live in ``fc_src``/``fc_dst``/``res_fc`` (no separate
    ``bias``), as in DGL. With ``share_weights`` ``fc_dst`` is ``fc_src`` (both keys are in
    the state dict, as DGL's).

    Args:
        in_feats: input feature size, or ``(src, dst)`` sizes.
        out_feats: output size per head.
        num_heads: number of attention heads.
        feat_drop: dropout on the input features.
        attn_drop: dropout on the attention weights.
        negative_slope: slope of the leaky ReLU.
        residual: add the destination's input (projected unless its size is
            ``num_heads * out_feats``).
        activation: applied to the output, if given.
        allow_zero_in_degree: as DGL, destinations with no in-edges raise
            :class:`~graphsys.nn.ZeroInDegreeError` unless this is True.
        bias: biases in the linear maps.
        share_weights: one projection for sources and destinations (int ``in_feats`` only).

    Example:
        >>> conv = GATv2Conv(16, 8, num_heads=4, allow_zero_in_degree=True)
        >>> conv(block, h).shape   # torch.Size([block.num_dst_nodes(), 4, 8])
    """

    def __init__(self, in_feats: int | tuple[int, int], out_feats: int, num_heads: int,
                 feat_drop: float = 0.0, attn_drop: float = 0.0, negative_slope: float = 0.2,
                 residual: bool = False, activation: Activation | None = None,
                 allow_zero_in_degree: bool = False, bias: bool = True,
                 share_weights: bool = False) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        self.in_src_feats, self.in_dst_feats = expand_as_pair(in_feats)
        self.in_feats, self.out_feats, self.num_heads = in_feats, out_feats, num_heads
        self.negative_slope = negative_slope
        self.allow_zero_in_degree = allow_zero_in_degree
        self.activation = activation
        self.share_weights = share_weights and not isinstance(in_feats, tuple)
        self.has_bias = bias
        width = num_heads * out_feats
        self.fc_src = nn.Linear(self.in_src_feats, width, bias=bias)
        self.fc_dst = (self.fc_src if self.share_weights
                       else nn.Linear(self.in_dst_feats, width, bias=bias))
        self.attn = nn.Parameter(torch.empty(1, num_heads, out_feats))
        self.feat_drop = Dropout(feat_drop)
        self.attn_drop = Dropout(attn_drop)
        self.res_fc: nn.Module | None = None
        if residual:
            self.res_fc = residual_projection(self.in_dst_feats, width, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        linears = [self.fc_src] + ([] if self.share_weights else [self.fc_dst])
        if isinstance(self.res_fc, nn.Linear):
            linears.append(self.res_fc)
        for linear in linears:
            nn.init.xavier_normal_(linear.weight, gain=gain)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        nn.init.xavier_normal_(self.attn, gain=gain)

    def set_allow_zero_in_degree(self, set_value: bool) -> None:
        """DGL's setter for ``allow_zero_in_degree``."""
        self.allow_zero_in_degree = set_value

    def forward(self, graph: Any, feat: NodeFeatures, get_attention: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Features of the destination nodes, ``[num_dst, num_heads, out_feats]``.

        With ``get_attention=True`` also the attention ``[num_edges, num_heads, 1]``.
        """
        block = as_block(graph)
        check_zero_in_degree(block, self.allow_zero_in_degree)
        h_src, h_dst = split_features(block, feat, self.feat_drop)
        heads = (self.num_heads, self.out_feats)
        z_src = self.fc_src(h_src).view(-1, *heads)
        if self.share_weights and not isinstance(feat, tuple):
            z_dst = z_src[: block.num_dst_nodes()]
        else:
            z_dst = self.fc_dst(h_dst).view(-1, *heads)
        src, dst = edge_endpoints(block)
        hidden = F.leaky_relu(gather_rows(z_src, src) + gather_rows(z_dst, dst),
                              self.negative_slope)
        logits = (hidden * self.attn).sum(-1)
        out, alpha = attend(block, logits, z_src, self.attn_drop)
        if self.res_fc is not None:
            out = out + self.res_fc(h_dst).view(h_dst.shape[0], -1, self.out_feats)
        if self.activation is not None:
            out = self.activation(out)
        return (out, alpha.unsqueeze(-1)) if get_attention else out

    def extra_repr(self) -> str:
        return f"{self.in_feats}, {self.out_feats}, num_heads={self.num_heads}"
