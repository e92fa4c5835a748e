"""Graph attention on blocks (Veličković et al., 2018), as ``dgl.nn.GATConv`` (DGL 2.1)."""

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
    edge_softmax,
    expand_as_pair,
    gather_rows,
    split_features,
    sum_in_edges,
)
from graphsys.nn._dropout import Dropout


def residual_projection(in_dst_feats: int, width: int, bias: bool) -> nn.Module:
    """DGL's ``res_fc``: identity when the sizes match, else a linear map with the bias."""
    if in_dst_feats == width:
        return nn.Identity()
    return nn.Linear(in_dst_feats, width, bias=bias)


def attend(block: Any, logits: torch.Tensor, values: torch.Tensor, attn_drop: nn.Module,
           edge_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_{j->i} a_ij values_j, a)``, ``a`` the dropped-out softmax of ``logits`` [E, H].

    ``a`` is what DGL stores in ``edata['a']`` and returns for ``get_attention``: after
    dropout and scaled by ``edge_weight``.
    """
    alpha = attn_drop(edge_softmax(block, logits))
    if edge_weight is not None:
        alpha = alpha * edge_weight.reshape(edge_weight.shape[0], -1)
    src, _ = edge_endpoints(block)
    return sum_in_edges(block, alpha.unsqueeze(-1) * gather_rows(values, src)), alpha


class GATConv(nn.Module):
    """Multi-head graph attention layer with DGL 2.1's signature and parameter names.

    For each head: ``z = fc(h)`` (``fc_src``/``fc_dst`` for a pair ``in_feats``),
    ``e_ij = leaky_relu(attn_l . z_j + attn_r . z_i)``, ``a_ij = softmax_{j->i}(e_ij)`` over
    the in-edges of ``i`` (a duplicate edge is a separate term),
    ``out_i = sum_{j->i} a_ij z_j + res_fc(h_i) + bias``, then ``activation``.

    Keys as DGL: ``fc.weight`` (or ``fc_src.weight``, ``fc_dst.weight``), ``attn_l`` and
    ``attn_r`` of shape ``(1, num_heads, out_feats)``, ``res_fc.weight`` when ``residual``
    needs a projection, and the bias as ``res_fc.bias`` in that case, else ``bias``.

    Args:
        in_feats: input feature size, or ``(src, dst)`` sizes.
        out_feats: output size per head.
        num_heads: number of attention heads.
        feat_drop: dropout on the input features.
        attn_drop: dropout on the attention weights.
        negative_slope: slope of the leaky ReLU on the attention logits.
        residual: add the destination's input (projected unless its size is
            ``num_heads * out_feats``).
        activation: applied to the output, if given.
        allow_zero_in_degree: as DGL, destinations with no in-edges raise
            :class:`~graphsys.nn.ZeroInDegreeError` unless this is True (they then get only
            the residual and bias).
        bias: learn an additive bias per head and feature.

    Returns ``[num_dst, num_heads, out_feats]``, as DGL; flatten or average the heads.

    Example:
        >>> conv = GATConv(16, 8, num_heads=4, allow_zero_in_degree=True)
        >>> conv(block, h).shape   # torch.Size([block.num_dst_nodes(), 4, 8])
    """

    def __init__(self, in_feats: int | tuple[int, int], out_feats: int, num_heads: int,
                 feat_drop: float = 0.0, attn_drop: float = 0.0, negative_slope: float = 0.2,
                 residual: bool = False, activation: Activation | None = None,
                 allow_zero_in_degree: bool = False, bias: bool = True) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        self.in_src_feats, self.in_dst_feats = expand_as_pair(in_feats)
        self.in_feats, self.out_feats, self.num_heads = in_feats, out_feats, num_heads
        self.negative_slope = negative_slope
        self.allow_zero_in_degree = allow_zero_in_degree
        self.activation = activation
        width = num_heads * out_feats
        if isinstance(in_feats, tuple):
            self.fc_src = nn.Linear(self.in_src_feats, width, bias=False)
            self.fc_dst = nn.Linear(self.in_dst_feats, width, bias=False)
        else:
            self.fc = nn.Linear(self.in_src_feats, width, bias=False)
        self.attn_l = nn.Parameter(torch.empty(1, num_heads, out_feats))
        self.attn_r = nn.Parameter(torch.empty(1, num_heads, out_feats))
        self.feat_drop = Dropout(feat_drop)
        self.attn_drop = Dropout(attn_drop)
        self.res_fc: nn.Module | None = None
        if residual:
            self.res_fc = residual_projection(self.in_dst_feats, width, bias)
        if bias and not isinstance(self.res_fc, nn.Linear):
            self.bias = nn.Parameter(torch.zeros(width))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        for name in ("fc", "fc_src", "fc_dst"):
            if name in self._modules:
                nn.init.xavier_normal_(self._modules[name].weight, gain=gain)
        nn.init.xavier_normal_(self.attn_l, gain=gain)
        nn.init.xavier_normal_(self.attn_r, gain=gain)
        if isinstance(self.res_fc, nn.Linear):
            nn.init.xavier_normal_(self.res_fc.weight, gain=gain)
            if self.res_fc.bias is not None:
                nn.init.zeros_(self.res_fc.bias)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        # graphsys before DGL's keys kept a bias beside a bias-free ``res_fc`` projection;
        # DGL keeps it in ``res_fc.bias``. Move it so checkpoints from then still load.
        old, new = prefix + "bias", prefix + "res_fc.bias"
        if isinstance(self.res_fc, nn.Linear) and old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_allow_zero_in_degree(self, set_value: bool) -> None:
        """DGL's setter for ``allow_zero_in_degree``."""
        self.allow_zero_in_degree = set_value

    def forward(self, graph: Any, feat: NodeFeatures, edge_weight: torch.Tensor | None = None,
                get_attention: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Features of the destination nodes, ``[num_dst, num_heads, out_feats]``.

        With ``get_attention=True`` also the attention ``[num_edges, num_heads, 1]`` (after
        dropout, as DGL). ``edge_weight`` ``[num_edges]`` scales the attention weights.
        """
        block = as_block(graph)
        check_zero_in_degree(block, self.allow_zero_in_degree)
        h_src, h_dst = split_features(block, feat, self.feat_drop)
        heads = (self.num_heads, self.out_feats)
        if "fc" in self._modules:
            z_src = self.fc(h_src).view(-1, *heads)
            # On a single tensor the destinations are the first source rows: reuse their
            # projection instead of computing it twice.
            z_dst = (self.fc(h_dst).view(-1, *heads) if isinstance(feat, tuple)
                     else z_src[: block.num_dst_nodes()])
        else:
            z_src = self.fc_src(h_src).view(-1, *heads)
            z_dst = self.fc_dst(h_dst).view(-1, *heads)
        el = (z_src * self.attn_l).sum(-1)
        er = (z_dst * self.attn_r).sum(-1)
        src, dst = edge_endpoints(block)
        logits = F.leaky_relu(gather_rows(el, src) + gather_rows(er, dst), self.negative_slope)
        out, alpha = attend(block, logits, z_src, self.attn_drop, edge_weight)
        if self.res_fc is not None:
            out = out + self.res_fc(h_dst).view(h_dst.shape[0], -1, self.out_feats)
        if self.bias is not None:
            out = out + self.bias.view(1, *heads)
        if self.activation is not None:
            out = self.activation(out)
        return (out, alpha.unsqueeze(-1)) if get_attention else out

    def extra_repr(self) -> str:
        return f"{self.in_feats}, {self.out_feats}, num_heads={self.num_heads}"
