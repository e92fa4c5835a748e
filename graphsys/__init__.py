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

__all__ = [
    "CSCGraph",
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
