"""Graph attention on blocks (Veličković et al., 2018), following ``dgl.nn.GATConv``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from graphsys.nn._aggregate import (
    Activation,
    NodeFeatures,
    edge_endpoints,
    edge_softmax,
    gather_rows,
    split_features,
    sum_in_edges,
)
from graphsys.samplers.block import Block


class GATConv(nn.Module):
    """Multi-head graph attention layer.

    For each head ``k``: ``z = W_k h``, ``e_ij = leaky_relu(a_l . z_j + a_r . z_i)``,
    ``alpha_ij = softmax_{j->i}(e_ij)`` over the in-edges of ``i`` (a duplicate edge is a
    separate term), ``out_i = sum_{j->i} alpha_ij z_j`` (+ residual, + bias). A destination
    with no in-edges gets zeros (+ residual, + bias).

    Args:
        in_feats: input feature size.
        out_feats: output size per head.
        num_heads: number of attention heads.
        feat_drop: dropout on the input features.
        attn_drop: dropout on the attention weights.
        negative_slope: slope of the leaky ReLU on the attention logits.
        residual: add a projection of the destination's input (identity when
            ``in_feats == num_heads * out_feats``).
        activation: applied to the output, if given.
        bias: add a learnable bias per head and feature.

    Returns ``[num_dst, num_heads, out_feats]``, as DGL; flatten or average the heads.

    Example:
        >>> conv = GATConv(16, 8, num_heads=4)
        >>> conv(block, h).shape   # torch.Size([block.num_dst_nodes(), 4, 8])
    """

    def __init__(self, in_feats: int, out_feats: int, num_heads: int, feat_drop: float = 0.0,
                 attn_drop: float = 0.0, negative_slope: float = 0.2, residual: bool = False,
                 activation: Activation | None = None, bias: bool = True) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        self.in_feats, self.out_feats, self.num_heads = in_feats, out_feats, num_heads
        self.negative_slope = negative_slope
        self.activation = activation
        self.feat_drop = nn.Dropout(feat_drop)
        self.attn_drop = nn.Dropout(attn_drop)
        self.fc = nn.Linear(in_feats, num_heads * out_feats, bias=False)
        self.attn_l = nn.Parameter(torch.empty(1, num_heads, out_feats))
        self.attn_r = nn.Parameter(torch.empty(1, num_heads, out_feats))
        self.res_fc: nn.Module | None = None
        if residual:
            self.res_fc = (nn.Identity() if in_feats == num_heads * out_feats
                           else nn.Linear(in_feats, num_heads * out_feats, bias=False))
        self.bias = nn.Parameter(torch.zeros(num_heads * out_feats)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        nn.init.xavier_normal_(self.fc.weight, gain=gain)
        nn.init.xavier_normal_(self.attn_l, gain=gain)
        nn.init.xavier_normal_(self.attn_r, gain=gain)
        if isinstance(self.res_fc, nn.Linear):
            nn.init.xavier_normal_(self.res_fc.weight, gain=gain)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, block: Block, h: NodeFeatures) -> torch.Tensor:
        """Features of the destination nodes, ``[num_dst, num_heads, out_feats]``."""
        h_src, h_dst = split_features(block, h, self.feat_drop)
        heads = (self.num_heads, self.out_feats)
        z_src = self.fc(h_src).view(-1, *heads)
        # On a single tensor the destinations are the first source rows: reuse their
        # projection instead of computing it twice.
        z_dst = self.fc(h_dst).view(-1, *heads) if isinstance(h, tuple) else z_src[: len(h_dst)]
        el = (z_src * self.attn_l).sum(-1)
        er = (z_dst * self.attn_r).sum(-1)
        src, dst = edge_endpoints(block)
        logits = F.leaky_relu(gather_rows(el, src) + gather_rows(er, dst), self.negative_slope)
        alpha = self.attn_drop(edge_softmax(block, logits))
        out = sum_in_edges(block, alpha.unsqueeze(-1) * gather_rows(z_src, src))
        if self.res_fc is not None:
            out = out + self.res_fc(h_dst).view(-1, *heads)
        if self.bias is not None:
            out = out + self.bias.view(1, *heads)
        if self.activation is not None:
            out = self.activation(out)
        return out

    def extra_repr(self) -> str:
        return f"{self.in_feats}, {self.out_feats}, num_heads={self.num_heads}"
