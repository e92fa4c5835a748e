"""GraphSAGE convolution on blocks (Hamilton et al., 2017), following ``dgl.nn.SAGEConv``."""

from __future__ import annotations

from functools import partial
from typing import Literal, get_args

import torch
from torch import nn

from graphsys.cuda.quant import QuantizedRows
from graphsys.nn._aggregate import (
    Activation,
    NodeFeatures,
    max_neighbours,
    mean_neighbours,
    split_features,
    sum_neighbours,
)
from graphsys.nn.quantized import Quantize, aggregate_neighbours, check_quantize
from graphsys.samplers.block import Block

Aggregator = Literal["mean", "gcn", "pool"]
AGGREGATORS: tuple[str, ...] = get_args(Aggregator)


class SAGEConv(nn.Module):
    """GraphSAGE layer with DGL's parameterisation and semantics.

    * ``'mean'``: ``fc_self(h_i) + fc_neigh(mean_{j->i} h_j) + bias``
    * ``'gcn'``: ``fc_neigh((sum_{j->i} h_j + h_i) / (deg_i + 1)) + bias`` (no ``fc_self``)
    * ``'pool'``: ``fc_self(h_i) + fc_neigh(max_{j->i} relu(fc_pool(h_j))) + bias``

    A destination with no in-edges gets a zero neighbour term. Duplicate edges count as
    often as they appear.

    Args:
        in_feats: input feature size.
        out_feats: output feature size.
        aggregator: one of ``'mean'``, ``'gcn'``, ``'pool'``.
        bias: add a learnable bias.
        feat_drop: dropout on the input features.
        activation: applied to the output, if given.
        quantize: ``'int8'`` or ``'int4'`` aggregates from quantized rows with the fused
            kernel (:mod:`graphsys.nn.quantized`; ``'mean'`` and ``'gcn'`` only); the
            layer then also accepts a :class:`~graphsys.cuda.QuantizedRows` input.
        protect: with ``quantize``, the share of destinations of highest in-degree
            aggregated in float32 (Degree-Quant's protection).

    Example:
        >>> conv = SAGEConv(16, 8)
        >>> out = conv(block, h)   # h: [block.num_src_nodes(), 16] -> [num_dst, 8]
    """

    def __init__(self, in_feats: int, out_feats: int, aggregator: Aggregator = "mean",
                 bias: bool = True, feat_drop: float = 0.0,
                 activation: Activation | None = None, quantize: Quantize | None = None,
                 protect: float = 0.0) -> None:
        super().__init__()
        self.quant_bits = check_quantize(quantize)
        if self.quant_bits is not None and aggregator == "pool":
            raise ValueError("quantized aggregation supports the 'mean' and 'gcn' aggregators")
        if not 0.0 <= protect <= 1.0:
            raise ValueError(f"protect must lie in [0, 1], got {protect!r}")
        self.quantize, self.protect = quantize, float(protect)
        if aggregator not in AGGREGATORS:
            raise ValueError(f"unknown SAGEConv aggregator {aggregator!r}; choose one of "
                             f"{', '.join(map(repr, AGGREGATORS))}")
        self.in_feats, self.out_feats, self.aggregator = in_feats, out_feats, aggregator
        self.feat_drop = nn.Dropout(feat_drop)
        self.activation = activation
        if aggregator == "pool":
            self.fc_pool = nn.Linear(in_feats, in_feats)
        if aggregator != "gcn":
            self.fc_self = nn.Linear(in_feats, out_feats, bias=False)
        self.fc_neigh = nn.Linear(in_feats, out_feats, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_feats)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        if self.aggregator == "pool":
            nn.init.xavier_uniform_(self.fc_pool.weight, gain=gain)
            nn.init.zeros_(self.fc_pool.bias)
        if self.aggregator != "gcn":
            nn.init.xavier_uniform_(self.fc_self.weight, gain=gain)
        nn.init.xavier_uniform_(self.fc_neigh.weight, gain=gain)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, block: Block, h: NodeFeatures) -> torch.Tensor:
        """Features of the destination nodes, ``[block.num_dst_nodes(), out_feats]``."""
        mean_agg, sum_agg = mean_neighbours, sum_neighbours
        if self.quant_bits is not None:
            quantized = partial(aggregate_neighbours, bits=self.quant_bits, protect=self.protect)
            mean_agg, sum_agg = quantized, partial(quantized, mean=False)
        # Mean and sum commute with a linear map, so project first when that shrinks the
        # per-edge messages (DGL's ``lin_before_mp``).
        project_first = self.in_feats > self.out_feats
        if self.quant_bits is not None and isinstance(h, QuantizedRows):
            # Features stored quantized: aggregate the codes, dequantize destinations only.
            h_src, h_dst = h, h[: block.num_dst_nodes()].dequantize()
            project_first = False
        else:
            h_src, h_dst = split_features(block, h, self.feat_drop)
        if self.aggregator == "mean":
            if project_first:
                neigh = mean_agg(block, self.fc_neigh(h_src))
            else:
                neigh = self.fc_neigh(mean_agg(block, h_src))
            out = self.fc_self(h_dst) + neigh
        elif self.aggregator == "gcn":
            deg = block.in_degrees().to(h_dst.dtype).unsqueeze(-1) + 1
            if project_first:
                out = (sum_agg(block, self.fc_neigh(h_src)) + self.fc_neigh(h_dst)) / deg
            else:
                out = self.fc_neigh((sum_agg(block, h_src) + h_dst) / deg)
        else:
            pooled = max_neighbours(block, torch.relu(self.fc_pool(h_src)))
            out = self.fc_self(h_dst) + self.fc_neigh(pooled)
        if self.bias is not None:
            out = out + self.bias
        if self.activation is not None:
            out = self.activation(out)
        return out

    def extra_repr(self) -> str:
        quant = f", quantize={self.quantize!r}" if self.quantize else ""
        return f"{self.in_feats}, {self.out_feats}, aggregator={self.aggregator!r}{quant}"
