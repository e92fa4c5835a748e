"""graphsys: train graph neural networks on graphs too large for GPU or host memory.

Importing graphsys never needs CuPy, CUDA or DGL and changes no global settings.
"""

from graphsys._lazy import attach
from graphsys._sizes import format_size, parse_size
from graphsys._version import __version__
from graphsys.errors import (
    ChecksumError,
    DatasetError,
    DatasetExistsError,
    GraphsysError,
    InputFormatError,
    UnsafePickleError,
)
# Loaded on first use: the samplers and the loader pull in numba (about half a second),
# and the graph modules zarr, which a user who only parses a size should not pay for.
_LAZY = {
    "CSCGraph": "graphsys.graph.csc",
    "Dataset": "graphsys.graph.dataset",
    "load_dataset": "graphsys.graph.dataset",
    "verify_dataset": "graphsys.graph.verify",
    "DatasetWriter": "graphsys.graph.writer",
    "Block": "graphsys.samplers.block",
    "MiniBatch": "graphsys.samplers.block",
    "NeighborSampler": "graphsys.samplers.neighbor",
    "DataLoader": "graphsys.loader.dataloader",
}

#: Subpackages reachable as attributes after a plain ``import graphsys`` (loaded on use):
#: ``graphsys.distributed.init()`` in a torchrun script.
_SUBMODULES = frozenset({"distributed"})

__getattr__, __dir__ = attach(__name__, _LAZY, _SUBMODULES)


__all__ = [
    "Block",
    "CSCGraph",
    "DataLoader",
    "MiniBatch",
    "NeighborSampler",
    "ChecksumError",
    "Dataset",
    "DatasetError",
    "DatasetExistsError",
    "DatasetWriter",
    "GraphsysError",
    "InputFormatError",
    "UnsafePickleError",
    "__version__",
    "format_size",
    "load_dataset",
    "parse_size",
    "verify_dataset",
]
