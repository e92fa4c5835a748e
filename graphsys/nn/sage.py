"""GraphSAGE convolution on blocks (Hamilton et al., 2017), as ``dgl.nn.SAGEConv`` (DGL 2.1)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal, get_args

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from graphsys.cuda.quant import QuantizedRows
from graphsys.nn._aggregate import (
    Activation,
    NodeFeatures,
    as_block,
    edge_endpoints,
    expand_as_pair,
    gather_rows,
    max_neighbours,
    mean_neighbours,
    split_features,
    weighted_sum_neighbours,
)
from graphsys.nn._dropout import Dropout
from graphsys.nn.quantized import Quantize, aggregate_neighbours, check_quantize
from graphsys.samplers.block import Block

Aggregator = Literal["mean", "gcn", "pool", "lstm"]
AGGREGATORS: tuple[str, ...] = get_args(Aggregator)


class SAGEConv(nn.Module):
    """GraphSAGE layer with DGL 2.1's signature, parameter names and semantics.

    * ``'mean'``: ``fc_self(h_i) + fc_neigh(mean_{j->i} h_j)``
    * ``'gcn'``: ``fc_neigh((sum_{j->i} h_j + h_i) / (deg_i + 1)) + bias`` (no ``fc_self``)
    * ``'pool'``: ``fc_self(h_i) + fc_neigh(max_{j->i} relu(fc_pool(h_j)))``
    * ``'lstm'``: ``fc_self(h_i) + fc_neigh(LSTM(h_j for j->i in edge order)[-1])``

    then ``activation`` and ``norm``. As in DGL the bias of ``'mean'``/``'pool'``/``'lstm'``
    is ``fc_self.bias`` and that of ``'gcn'`` is ``bias`` (so DGL checkpoints load
    strictly); ``conv.bias`` reads whichever it is. A destination with no in-edges gets a
    zero neighbour term. Duplicate edges count as often as they appear.

    Args:
        in_feats: input feature size, or ``(src, dst)`` sizes for a bipartite input.
        out_feats: output feature size.
        aggregator_type: ``'mean'``, ``'gcn'``, ``'pool'`` or ``'lstm'``.
        feat_drop: dropout on the input features.
        bias: learn an additive bias.
        norm: applied to the output after the activation, if given.
        activation: applied to the output, if given.
        quantize: ``'int8'`` or ``'int4'`` aggregates from quantized rows with the fused
            kernel (:mod:`graphsys.nn.quantized`; ``'mean'`` and ``'gcn'`` only); the
            layer then also accepts a :class:`~graphsys.cuda.QuantizedRows` input.
        protect: with ``quantize``, the share of destinations of highest in-degree
            aggregated in float32 (Degree-Quant's protection).

    Example:
        >>> conv = SAGEConv(16, 8, "mean", 0.5)   # feat_drop=0.5, as in DGL
        >>> out = conv(block, h)   # h: [block.num_src_nodes(), 16] -> [num_dst, 8]
    """

    def __init__(self, in_feats: int | tuple[int, int], out_feats: int,
                 aggregator_type: Aggregator, feat_drop: float = 0.0, bias: bool = True,
                 norm: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 activation: Activation | None = None, *, quantize: Quantize | None = None,
                 protect: float = 0.0) -> None:
        super().__init__()
        if aggregator_type not in AGGREGATORS:
            raise ValueError(f"unknown SAGEConv aggregator_type {aggregator_type!r}; choose one "
                             f"of {', '.join(map(repr, AGGREGATORS))}")
        self.quant_bits = check_quantize(quantize)
        if self.quant_bits is not None and aggregator_type not in ("mean", "gcn"):
            raise ValueError("quantized aggregation supports the 'mean' and 'gcn' aggregators")
        if not 0.0 <= protect <= 1.0:
            raise ValueError(f"protect must lie in [0, 1], got {protect!r}")
        self.quantize, self.protect = quantize, float(protect)
        self.in_src_feats, self.in_dst_feats = expand_as_pair(in_feats)
        if aggregator_type == "gcn" and self.in_src_feats != self.in_dst_feats:
            raise ValueError(f"the 'gcn' aggregator adds destination to source features, so "
                             f"their sizes must match, got in_feats={in_feats!r}")
        self.in_feats, self.out_feats, self.aggregator_type = in_feats, out_feats, aggregator_type
        self.norm = norm
        self.feat_drop = Dropout(feat_drop)
        self.activation = activation
        if aggregator_type == "pool":
            self.fc_pool = nn.Linear(self.in_src_feats, self.in_src_feats)
        if aggregator_type == "lstm":
            self.lstm = nn.LSTM(self.in_src_feats, self.in_src_feats, batch_first=True)
        # fc_self before fc_neigh (graphsys's order; DGL's is the reverse): optimizers index
        # parameters by position, so a pre-DGL-keys graphsys checkpoint's optimizer state
        # then fails the shape check on resume instead of silently swapping two moments.
        if aggregator_type != "gcn":
            self.fc_self = nn.Linear(self.in_dst_feats, out_feats, bias=bias)
        self.fc_neigh = nn.Linear(self.in_src_feats, out_feats, bias=False)
        if aggregator_type == "gcn":  # no fc_self to hold the bias
            if bias:
                self.bias = nn.Parameter(torch.zeros(out_feats))
            else:
                self.register_parameter("bias", None)
        self.reset_parameters()

    def __getattr__(self, name: str) -> Any:
        # DGL keeps the non-'gcn' bias in fc_self; expose it as ``conv.bias`` too, as the
        # 'gcn' layer's own bias is, so code reading ``conv.bias`` works for every type.
        modules = self.__dict__.get("_modules", {})  # absent while unpickling
        if name == "bias" and "fc_self" in modules:
            return modules["fc_self"].bias
        return super().__getattr__(name)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        # graphsys before DGL's keys stored every aggregator's bias as ``bias``: move it
        # where DGL keeps it, so checkpoints from then still load.
        old, new = prefix + "bias", prefix + "fc_self.bias"
        if "fc_self" in self._modules and old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def aggregator(self) -> str:
        """``aggregator_type`` (the name graphsys used before it took DGL's)."""
        return self.aggregator_type

    def reset_parameters(self) -> None:
        """Glorot-uniform weights (ReLU gain) as DGL; biases keep ``nn.Linear``'s init."""
        gain = nn.init.calculate_gain("relu")
        if self.aggregator_type == "pool":
            nn.init.xavier_uniform_(self.fc_pool.weight, gain=gain)
        if self.aggregator_type == "lstm":
            self.lstm.reset_parameters()
        if self.aggregator_type != "gcn":
            nn.init.xavier_uniform_(self.fc_self.weight, gain=gain)
        nn.init.xavier_uniform_(self.fc_neigh.weight, gain=gain)

    def forward(self, graph: Any, feat: NodeFeatures,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Features of the destination nodes, ``[num_dst, out_feats]``.

        Args:
            graph: a :class:`Block`, or a whole graph (every node a destination).
            feat: source features (destinations are their first rows) or a pair.
            edge_weight: optional per-edge weight ``[num_edges]`` scaling each message.
        """
        block = as_block(graph)
        if self.quant_bits is not None and edge_weight is not None:
            raise ValueError("quantized aggregation does not take edge_weight")
        if self.quant_bits is not None and isinstance(feat, QuantizedRows):
            # Features stored quantized: aggregate the codes, dequantize destinations only.
            h_src, h_dst = feat, feat[: block.num_dst_nodes()].dequantize()
            project_first = False
        else:
            h_src, h_dst = split_features(block, feat, self.feat_drop)
            project_first = self._project_first(block, h_src.shape[0])
        kind = self.aggregator_type
        if kind == "mean":
            mean = self._mean_aggregator(block, edge_weight)
            neigh = (mean(self.fc_neigh(h_src)) if project_first
                     else self.fc_neigh(mean(h_src)))
            out = self.fc_self(h_dst) + neigh
        elif kind == "gcn":
            total = self._sum_aggregator(block, edge_weight)
            deg = block.in_degrees().to(h_dst.dtype).unsqueeze(-1) + 1
            if project_first:
                out = (total(self.fc_neigh(h_src)) + self.fc_neigh(h_dst)) / deg
            else:
                out = self.fc_neigh((total(h_src) + h_dst) / deg)
            if self.bias is not None:
                out = out + self.bias
        elif kind == "pool":
            messages = F.relu(self.fc_pool(h_src))
            out = self.fc_self(h_dst) + self.fc_neigh(max_neighbours(block, messages,
                                                                     edge_weight))
        else:
            out = self.fc_self(h_dst) + self.fc_neigh(self._lstm_neighbours(block, h_src,
                                                                            edge_weight))
        if self.activation is not None:
            out = self.activation(out)
        if self.norm is not None:
            out = self.norm(out)
        return out

    def _project_first(self, block: Block, num_src: int) -> bool:
        """Whether to apply ``fc_neigh`` before aggregating (mean and sum commute with a
        linear map): whichever order does fewer multiply-adds.

        Projecting first costs ``num_src * in * out + E * out``, aggregating first
        ``E * in + num_dst * in * out``. DGL's rule, project first when ``in > out``
        (``lin_before_mp``), counts only the per-edge work; but a sampled block has
        several times more sources than destinations, and with the sparse product the
        per-edge work is small, so on Cora's 1433-dim input layer aggregating first
        does about a third of the multiply-adds. Both orders are exact up to float
        rounding.
        """
        fin, fout = self.in_src_feats, self.out_feats
        edges, num_dst = block.num_edges(), block.num_dst_nodes()
        return num_src * fin * fout + edges * fout < edges * fin + num_dst * fin * fout

    def _sum_aggregator(self, block: Block, edge_weight: torch.Tensor | None
                        ) -> Callable[[Any], torch.Tensor]:
        if self.quant_bits is not None:
            return partial(aggregate_neighbours, block, bits=self.quant_bits,
                           protect=self.protect, mean=False)
        return partial(weighted_sum_neighbours, block, edge_weight=edge_weight)

    def _mean_aggregator(self, block: Block, edge_weight: torch.Tensor | None
                         ) -> Callable[[Any], torch.Tensor]:
        if self.quant_bits is not None:
            return partial(aggregate_neighbours, block, bits=self.quant_bits,
                           protect=self.protect)
        return partial(mean_neighbours, block, edge_weight=edge_weight)

    def _lstm_neighbours(self, block: Block, h_src: torch.Tensor,
                         edge_weight: torch.Tensor | None) -> torch.Tensor:
        """Final LSTM state over each destination's in-neighbours, in CSC (edge) order."""
        src, dst = edge_endpoints(block)
        messages = gather_rows(h_src, src)
        if edge_weight is not None:
            messages = messages * edge_weight.reshape(-1, 1)
        deg = block.in_degrees()
        out = h_src.new_zeros(block.num_dst_nodes(), self.in_src_feats)
        has_edges = (deg > 0).nonzero().squeeze(1)
        if has_edges.numel() == 0:
            return out
        # Scatter the messages into a [dst, max_deg, F] padded batch; each node's sequence
        # is its in-edges in CSC order (DGL's mailbox order for a block built from it).
        starts = block.indptr[:-1].long()
        position = torch.arange(block.num_edges(), device=dst.device) - starts[dst]
        rank = torch.full((block.num_dst_nodes(),), -1, dtype=torch.long, device=dst.device)
        rank[has_edges] = torch.arange(has_edges.numel(), device=dst.device)
        padded = messages.new_zeros(has_edges.numel(), int(deg.max()), messages.shape[1])
        padded = padded.index_put((rank[dst], position), messages)
        packed = pack_padded_sequence(padded, deg[has_edges].cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, (last, _) = self.lstm(packed)
        return out.index_copy(0, has_edges, last.squeeze(0))

    def extra_repr(self) -> str:
        quant = f", quantize={self.quantize!r}" if self.quantize else ""
        return (f"{self.in_feats}, {self.out_feats}, "
                f"aggregator_type={self.aggregator_type!r}{quant}")

