"""GNN layers and models that run on :class:`~graphsys.samplers.block.Block`.

Pure torch (no DGL or PyG needed), any device. Layers take DGL 2.1's constructor
arguments (same order, names and defaults) and parameter names, so a DGL ``state_dict``
loads with ``strict=True`` and gives DGL's outputs. They are called as ``conv(block, h)``,
where ``h`` holds the block's source-node features (the destinations are its first
``block.num_dst_nodes()`` rows) or is a pair ``(h_src, h_dst)``; a whole graph (CSC
``indptr``/``indices``) works where DGL's layer takes a ``DGLGraph``.
"""

from graphsys.nn._aggregate import ZeroInDegreeError, edge_softmax
from graphsys.nn.gat import GATConv
from graphsys.nn.gatv2 import GATv2Conv
from graphsys.nn.gcn import EdgeWeightNorm, GraphConv
from graphsys.nn.gin import GINConv
from graphsys.nn.models import GAT, GCN, MODEL_NAMES, BlockModel, GraphSAGE, build_model
from graphsys.nn.propagate import APPNPConv, SGConv
from graphsys.nn.sage import SAGEConv

__all__ = [
    "GAT",
    "GATConv",
    "GATv2Conv",
    "GCN",
    "MODEL_NAMES",
    "APPNPConv",
    "BlockModel",
    "EdgeWeightNorm",
    "GINConv",
    "GraphConv",
    "GraphSAGE",
    "SAGEConv",
    "SGConv",
    "ZeroInDegreeError",
    "build_model",
    "edge_softmax",
]
