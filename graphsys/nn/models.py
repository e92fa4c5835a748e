"""Multi-layer GNNs over a list of blocks, with a per-layer entry point for inference.

``model(blocks, x)`` runs one layer per block for mini-batch training. ``layer_forward``
runs a single layer (with what follows it), so a trainer can do layer-wise full-graph
inference: for each layer ``i`` and each batch of destination nodes, build a one-layer
block with *all* in-neighbours and call ``model.layer_forward(i, block, h_src)``, writing
``model.layer_out_feats(i)`` columns per node.

Dropout: applied to the input of every layer after the first (after the activation), as
in DGL's GraphSAGE example; the raw input features are not dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import nn
from torch.nn import functional as F

from graphsys.nn._aggregate import NodeFeatures
from graphsys.nn._dropout import Dropout
from graphsys.nn.gat import GATConv
from graphsys.nn.gcn import GraphConv
from graphsys.nn.quantized import Quantize
from graphsys.nn.sage import Aggregator, SAGEConv
from graphsys.samplers.block import Block

ModelName = Literal["sage", "gcn", "gat"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)


def _check_depth(num_layers: int) -> None:
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")


def _layer_dims(in_feats: int, hidden: int, out_feats: int,
                num_layers: int) -> list[tuple[int, int]]:
    dims = [in_feats] + [hidden] * (num_layers - 1) + [out_feats]
    return list(zip(dims[:-1], dims[1:], strict=True))


class BlockModel(nn.Module):
    """Base of the models here: ``layers[i]`` consumes ``blocks[i]``.

    Subclasses fill ``self.layers`` and may override :meth:`_after_layer` (default:
    ReLU then dropout after every layer but the last).
    """

    layers: nn.ModuleList

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.dropout = Dropout(dropout)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def forward(self, blocks: Sequence[Block], x: torch.Tensor) -> torch.Tensor:
        """Outputs for ``blocks[-1]``'s destination nodes from ``blocks[0]``'s source features.

        Raises:
            ValueError: if the number of blocks differs from the number of layers.
        """
        if len(blocks) != self.num_layers:
            raise ValueError(f"the sampler has {len(blocks)} fanouts but the model has "
                             f"{self.num_layers} layers; pass {self.num_layers} fanouts")
        return self.forward_from(0, blocks, x)

    def forward_from(self, first: int, blocks: Sequence[Block], h: torch.Tensor, *,
                     drop_input: bool = True) -> torch.Tensor:
        """Layers ``first..`` on ``blocks`` from layer ``first - 1``'s stored output ``h``.

        ``h`` is what :meth:`layer_forward` of layer ``first - 1`` returns in eval mode
        (a frozen-layer cache holds it). The dropout that layer would apply in training
        is applied here (unless ``drop_input=False``), so the remaining layers see
        inputs as in a full forward.
        """
        if len(blocks) != self.num_layers - first:
            raise ValueError(f"{first} layers are frozen, so the sampler needs "
                             f"{self.num_layers - first} fanouts, got {len(blocks)}")
        if first > 0 and drop_input:
            h = self.dropout(h)
        for i, block in enumerate(blocks):
            h = self.layer_forward(first + i, block, h)
        return h

    def layer_forward(self, i: int, block: Block, h: NodeFeatures) -> torch.Tensor:
        """Layer ``i`` on ``block`` plus its activation/dropout (none after the last layer).

        Returns a 2-D ``[block.num_dst_nodes(), layer_out_feats(i)]`` tensor.
        """
        if not 0 <= i < self.num_layers:
            raise IndexError(f"layer {i} out of range for a {self.num_layers}-layer model")
        return self._after_layer(i, self.layers[i](block, h))

    def layer_out_feats(self, i: int) -> int:
        """Columns that :meth:`layer_forward` returns for layer ``i``."""
        return self.layers[i].out_feats

    def _after_layer(self, i: int, h: torch.Tensor) -> torch.Tensor:
        if i == self.num_layers - 1:
            return h
        return self.dropout(F.relu(h))


class GraphSAGE(BlockModel):
    """Stack of :class:`SAGEConv` layers with ReLU and dropout between them.

    ``quantize='int8'`` (or ``'int4'``) aggregates from quantized rows in every layer
    (:mod:`graphsys.nn.quantized`), and the model then also takes input features as
    :class:`~graphsys.cuda.QuantizedRows`; ``protect`` is the share of high in-degree
    destinations aggregated in float32.

    Example:
        >>> model = GraphSAGE(100, 256, 47, num_layers=2)
        >>> logits = model(minibatch.blocks, x)   # [len(minibatch.output_nodes), 47]
    """

    def __init__(self, in_feats: int, hidden: int, out_feats: int, num_layers: int = 2,
                 dropout: float = 0.5, aggregator: Aggregator = "mean",
                 quantize: Quantize | None = None, protect: float = 0.0) -> None:
        super().__init__(dropout)
        _check_depth(num_layers)
        for fan_in, fan_out in _layer_dims(in_feats, hidden, out_feats, num_layers):
            self.layers.append(SAGEConv(fan_in, fan_out, aggregator, quantize=quantize,
                                        protect=protect))


class GCN(BlockModel):
    """Stack of :class:`GraphConv` (``norm='both'``) layers with ReLU and dropout between."""

    def __init__(self, in_feats: int, hidden: int, out_feats: int, num_layers: int = 2,
                 dropout: float = 0.5) -> None:
        super().__init__(dropout)
        _check_depth(num_layers)
        for fan_in, fan_out in _layer_dims(in_feats, hidden, out_feats, num_layers):
            # Sampled blocks may hold nodes with no in-edges; they get the bias (DGL would
            # raise by default).
            self.layers.append(GraphConv(fan_in, fan_out, norm="both",
                                         allow_zero_in_degree=True))


class GAT(BlockModel):
    """Stack of :class:`GATConv` layers.

    Hidden layers concatenate their heads (``hidden * num_heads`` features) and apply ELU
    then dropout; the last layer averages its ``num_heads`` heads into ``out_feats``.
    """

    def __init__(self, in_feats: int, hidden: int, out_feats: int, num_layers: int = 2,
                 num_heads: int = 4, dropout: float = 0.5) -> None:
        super().__init__(dropout)
        _check_depth(num_layers)
        fan_in = in_feats
        for i in range(num_layers):
            fan_out = out_feats if i == num_layers - 1 else hidden
            self.layers.append(GATConv(fan_in, fan_out, num_heads, allow_zero_in_degree=True))
            fan_in = hidden * num_heads

    def layer_out_feats(self, i: int) -> int:
        layer = self.layers[i]
        if i == self.num_layers - 1:
            return layer.out_feats
        return layer.out_feats * layer.num_heads

    def _after_layer(self, i: int, h: torch.Tensor) -> torch.Tensor:
        if i == self.num_layers - 1:
            return h.mean(1)
        return self.dropout(F.elu(h.flatten(1)))


def build_model(name: ModelName, in_feats: int, hidden: int, out_feats: int, num_layers: int,
                dropout: float, num_heads: int = 4) -> BlockModel:
    """A model by name: ``'sage'`` (mean aggregator), ``'gcn'`` or ``'gat'``.

    ``num_heads`` is used by ``'gat'`` only.

    Example:
        >>> model = build_model("sage", 100, 256, 47, num_layers=3, dropout=0.5)
        >>> model.num_layers
        3
    """
    if name == "sage":
        return GraphSAGE(in_feats, hidden, out_feats, num_layers, dropout)
    if name == "gcn":
        return GCN(in_feats, hidden, out_feats, num_layers, dropout)
    if name == "gat":
        return GAT(in_feats, hidden, out_feats, num_layers, num_heads, dropout)
    raise ValueError(f"unknown model {name!r}; choose one of "
                     f"{', '.join(map(repr, MODEL_NAMES))}")
