"""DGL's ``dgl.dataloading`` names, so ``import graphsys as dgl`` scripts find them.

``dgl.dataloading.DataLoader(g, train_idx, dgl.dataloading.NeighborSampler([10, 10],
prefetch_node_feats=["feat"], prefetch_labels=["label"]), batch_size=1024)`` runs as in
DGL, on graphsys's samplers and feature stores. Names load on first use.

Covered: :class:`DataLoader` (and its old name ``NodeDataLoader``),
:class:`NeighborSampler` (and its old name ``MultiLayerNeighborSampler``),
:class:`MultiLayerFullNeighborSampler`, ``Block``.
Not covered yet: edge-prediction samplers (``as_edge_prediction_sampler``,
``negative_sampler``), ``ClusterGCNSampler``, ``ShaDowKHopSampler``, ``LaborSampler``,
GraphBolt.
"""

from graphsys._lazy import attach

_NAMES = {
    "DataLoader": "graphsys.loader.dataloader",
    # DGL's old name for DataLoader, still in DGL 2.1 and in many of its examples
    "NodeDataLoader": "graphsys.loader.dataloader",
    "NeighborSampler": "graphsys.samplers.neighbor",
    "MultiLayerNeighborSampler": "graphsys.samplers.neighbor",
    "MultiLayerFullNeighborSampler": "graphsys.samplers.neighbor",
    "Block": "graphsys.samplers.block",
    "MiniBatch": "graphsys.samplers.block",
}

__getattr__, __dir__ = attach(__name__, _NAMES)

__all__ = [
    "Block",
    "DataLoader",
    "NodeDataLoader",
    "MiniBatch",
    "MultiLayerFullNeighborSampler",
    "MultiLayerNeighborSampler",
    "NeighborSampler",
]
