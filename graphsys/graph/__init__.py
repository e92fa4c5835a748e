"""Graphs in CSC form and the on-disk dataset format."""

from graphsys._lazy import attach

# Public name -> defining module, imported on first use (see graphsys._lazy).
_NAMES = {
    "CSCGraph": "graphsys.graph.csc",
    "Dataset": "graphsys.graph.dataset",
    "ZarrFeatures": "graphsys.graph.dataset",
    "load_dataset": "graphsys.graph.dataset",
    "from_dgl": "graphsys.graph.interop",
    "from_pyg": "graphsys.graph.interop",
    "to_dgl": "graphsys.graph.interop",
    "to_pyg": "graphsys.graph.interop",
    "ArrayEntry": "graphsys.graph.manifest",
    "Manifest": "graphsys.graph.manifest",
    "VerifyReport": "graphsys.graph.verify",
    "verify_dataset": "graphsys.graph.verify",
    "DatasetWriter": "graphsys.graph.writer",
    "add_self_loop": "graphsys.graph.transforms",
    "remove_self_loop": "graphsys.graph.transforms",
    "to_bidirected": "graphsys.graph.transforms",
    "to_simple": "graphsys.graph.transforms",
    "add_reverse_edges": "graphsys.graph.transforms",
}

__getattr__, __dir__ = attach(__name__, _NAMES)

__all__ = [
    "add_reverse_edges",
    "add_self_loop",
    "remove_self_loop",
    "to_bidirected",
    "to_simple",
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
