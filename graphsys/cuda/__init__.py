"""CUDA kernels (CuPy ``RawModule``) with CPU paths of identical meaning.

* :func:`gather_rows` -- zero-copy (UVA) row gather from pinned host or GPU memory.
* :func:`lookup`, :func:`split_hits`, :func:`scatter_rows`, :func:`assign_slots` --
  the device cache's batched table operations.
* :class:`GPUNeighborSampler` -- neighbour sampling on a CSC graph on the GPU or pinned
  in host memory, the same samples as :class:`~graphsys.samplers.NeighborSampler`.
* :func:`quantize`, :func:`dequantize`, :func:`aggregate` -- INT8/INT4 rows with a
  per-row scale and zero point, and mean/sum aggregation that reads the codes directly.

Every function picks its CUDA kernel when its tensors are on a GPU and CuPy sees one
(:func:`gpu_ready`), and its torch/numba path otherwise. Importing this package never
touches CuPy or CUDA.
"""

from graphsys.cuda._runtime import gpu_ready
from graphsys.cuda.cache import Split, assign_slots, lookup, scatter_rows, split_hits
from graphsys.cuda.gather import gather_rows
from graphsys.cuda.quant import (
    QuantizedRows,
    aggregate,
    aggregation_error_bound,
    dequantize,
    quantize,
)
from graphsys.cuda.sampling import GPUNeighborSampler

__all__ = [
    "GPUNeighborSampler",
    "QuantizedRows",
    "Split",
    "aggregate",
    "aggregation_error_bound",
    "assign_slots",
    "dequantize",
    "gather_rows",
    "gpu_ready",
    "lookup",
    "quantize",
    "scatter_rows",
    "split_hits",
]
