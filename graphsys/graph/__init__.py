"""Graphs in CSC form and the on-disk dataset format.

The package is also DGL's ``dgl.graph`` function: ``graphsys.graph((src, dst),
num_nodes=n)`` calls :func:`graphsys.graph.construct.graph`, so scripts that
``import graphsys as dgl`` build their graphs as they did.
"""

import sys
import types
from typing import Any

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
    "graph": "graphsys.graph.construct",
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


class _CallablePackage(types.ModuleType):
    """This package, callable as ``dgl.graph``: the subpackage ``graphsys.graph`` takes
    the attribute name that DGL gives its graph constructor."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from graphsys.graph.construct import graph

        return graph(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

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
    "graph",
    "from_pyg",
    "load_dataset",
    "to_dgl",
    "to_pyg",
    "verify_dataset",
]
