"""graphsys: train graph neural networks on graphs too large for GPU or host memory.

Importing graphsys never needs CuPy, CUDA or DGL. It changes one global setting:
``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (unless set; see below).
"""

import importlib
import os

from graphsys._lazy import attach
from graphsys._sizes import format_size, parse_size
from graphsys._version import __version__
from graphsys.errors import (
    ChecksumError,
    DatasetError,
    DatasetExistsError,
    GraphsysError,
    InputFormatError,
    NotAGraphError,
    UnsafePickleError,
)

# numba's OpenMP runtime (the sampler's threads) is loaded after this line, on the
# first parallel kernel; torch's is another runtime. With both pools' idle workers
# spinning (OpenMP's default), each starves the other of cores whenever sampling and
# training alternate or overlap: on 2 cores a Cora GAT script took 3-20x longer. Passive
# waiting costs a few microseconds of wake-up per parallel region. A value the user
# set wins; torch's pool keeps what it read when torch was imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Loaded on first use: the samplers and the loader pull in numba (about half a second),
# and the graph modules zarr, which a user who only parses a size should not pay for.
_LAZY = {
    "CSCGraph": "graphsys.graph.csc",
    "Dataset": "graphsys.graph.dataset",
    "load_dataset": "graphsys.graph.dataset",
    "verify_dataset": "graphsys.graph.verify",
    "DatasetWriter": "graphsys.graph.writer",
    "add_self_loop": "graphsys.graph.transforms",
    "remove_self_loop": "graphsys.graph.transforms",
    "to_bidirected": "graphsys.graph.transforms",
    "to_simple": "graphsys.graph.transforms",
    "add_reverse_edges": "graphsys.graph.transforms",
    "to_half": "graphsys.graph.transforms",
    "to_float": "graphsys.graph.transforms",
    "to_double": "graphsys.graph.transforms",
    "Block": "graphsys.samplers.block",
    "MiniBatch": "graphsys.samplers.block",
    "NeighborSampler": "graphsys.samplers.neighbor",
    "MultiLayerNeighborSampler": "graphsys.samplers.neighbor",
    "MultiLayerFullNeighborSampler": "graphsys.samplers.neighbor",
    "DataLoader": "graphsys.loader.dataloader",
    "NID": "graphsys.samplers.block",
    "EID": "graphsys.samplers.block",
}

#: Subpackages reachable as attributes after a plain ``import graphsys`` (loaded on use):
#: ``graphsys.distributed.init()`` in a torchrun script, and DGL's ``dgl.dataloading``
#: ``dgl.function`` and ``dgl.nn`` for scripts that ``import graphsys as dgl``.
#: ``graph`` is also DGL's ``dgl.graph((src, dst))``: the subpackage is callable.
_SUBMODULES = frozenset({"distributed", "dataloading", "function", "graph", "multiprocessing",
                         "nn"})

_getattr, __dir__ = attach(__name__, _LAZY, _SUBMODULES)


def __getattr__(name: str) -> object:
    if name == "nn":  # DGL scripts also reach the layers as dgl.nn.pytorch
        importlib.import_module("graphsys.nn.pytorch")
    return _getattr(name)


__all__ = [
    "add_reverse_edges",
    "add_self_loop",
    "remove_self_loop",
    "to_bidirected",
    "to_double",
    "to_float",
    "to_half",
    "to_simple",
    "Block",
    "CSCGraph",
    "DataLoader",
    "EID",
    "MiniBatch",
    "MultiLayerFullNeighborSampler",
    "MultiLayerNeighborSampler",
    "NID",
    "NeighborSampler",
    "ChecksumError",
    "Dataset",
    "DatasetError",
    "DatasetExistsError",
    "DatasetWriter",
    "GraphsysError",
    "InputFormatError",
    "NotAGraphError",
    "UnsafePickleError",
    "__version__",
    "format_size",
    "load_dataset",
    "parse_size",
    "verify_dataset",
]
