"""Graphs in CSC form and the on-disk dataset format."""

from graphsys.graph.csc import CSCGraph
from graphsys.graph.dataset import Dataset, ZarrFeatures, load_dataset
from graphsys.graph.interop import from_dgl, from_pyg, to_dgl, to_pyg
from graphsys.graph.manifest import ArrayEntry, Manifest
from graphsys.graph.verify import VerifyReport, verify_dataset
from graphsys.graph.writer import DatasetWriter

__all__ = [
    "ArrayEntry",
    "CSCGraph",
    "Dataset",
    "DatasetWriter",
    "Manifest",
    "VerifyReport",
    "ZarrFeatures",
    "from_dgl",
    "from_pyg",
    "load_dataset",
    "to_dgl",
    "to_pyg",
    "verify_dataset",
]
