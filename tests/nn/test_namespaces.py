"""DGL's module paths for the layers: ``dgl.nn.pytorch``, ``.conv`` and ``dgl.nn.functional``."""

from __future__ import annotations

import torch

import graphsys.nn as ours
import graphsys.nn.pytorch as dglnn
from graphsys.graph.csc import CSCGraph
from graphsys.nn.functional import edge_softmax
from graphsys.nn.pytorch.conv import GATConv, SAGEConv


def test_dgl_paths_name_our_classes():
    for name in dglnn.__all__:
        if name != "conv":
            assert getattr(dglnn, name) is getattr(ours, name)
            assert getattr(dglnn.conv, name) is getattr(ours, name)
    assert SAGEConv is ours.SAGEConv and GATConv is ours.GATConv


def test_functional_edge_softmax_takes_a_whole_graph():
    graph = CSCGraph.from_edges([0, 1, 2], [1, 1, 0], num_nodes=3)
    alpha = edge_softmax(graph, torch.zeros(3, 2))
    assert alpha.tolist() == [[1.0, 1.0], [0.5, 0.5], [0.5, 0.5]]
