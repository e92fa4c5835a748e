"""DGL's ``dgl.nn.pytorch.conv`` names: the graphsys layers with DGL 2.1's signatures."""

from graphsys.nn.gat import GATConv
from graphsys.nn.gatv2 import GATv2Conv
from graphsys.nn.gcn import EdgeWeightNorm, GraphConv
from graphsys.nn.gin import GINConv
from graphsys.nn.propagate import APPNPConv, SGConv
from graphsys.nn.sage import SAGEConv

__all__ = [
    "APPNPConv",
    "EdgeWeightNorm",
    "GATConv",
    "GATv2Conv",
    "GINConv",
    "GraphConv",
    "SAGEConv",
    "SGConv",
]
