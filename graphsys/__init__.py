"""graphsys: train graph neural networks on graphs too large for GPU or host memory.

Importing graphsys never needs CuPy, CUDA or DGL and changes no global settings.
"""

__version__ = "0.1.0"

from graphsys._sizes import format_size, parse_size
from graphsys.errors import (
    ChecksumError,
    DatasetError,
    DatasetExistsError,
    GraphsysError,
    InputFormatError,
    UnsafePickleError,
)
from graphsys.graph import (
    CSCGraph,
    Dataset,
    DatasetWriter,
    load_dataset,
    verify_dataset,
)

# Loaded on first use: they pull in numba (about half a second), which a user who only
# prepares or inspects datasets should not pay for.
_LAZY = {
    "Block": "graphsys.samplers.block",
    "MiniBatch": "graphsys.samplers.block",
    "NeighborSampler": "graphsys.samplers.neighbor",
    "DataLoader": "graphsys.loader.dataloader",
}


#: Subpackages reachable as attributes after a plain ``import graphsys`` (loaded on use).
_SUBMODULES = frozenset({"distributed"})


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:  # graphsys.distributed.init() in a torchrun script
        import importlib

        return importlib.import_module(f"graphsys.{name}")
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'graphsys' has no attribute {name!r}")


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
