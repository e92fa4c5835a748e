"""GNN layers and models that run on :class:`~graphsys.samplers.block.Block`.

Pure torch (no DGL or PyG needed), any device. Layers follow DGL's ``dgl.nn`` API and are
called as ``conv(block, h)``, where ``h`` holds the block's source-node features (the
destinations are its first ``block.num_dst_nodes()`` rows) or is a pair ``(h_src, h_dst)``.
"""

from graphsys.nn._aggregate import edge_softmax
from graphsys.nn.gat import GATConv
from graphsys.nn.gcn import GraphConv
from graphsys.nn.models import GAT, GCN, MODEL_NAMES, BlockModel, GraphSAGE, build_model
from graphsys.nn.sage import SAGEConv

__all__ = [
    "GAT",
    "GATConv",
    "GCN",
    "MODEL_NAMES",
    "BlockModel",
    "GraphConv",
    "GraphSAGE",
    "SAGEConv",
    "build_model",
    "edge_softmax",
]
