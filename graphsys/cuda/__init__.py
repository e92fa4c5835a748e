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

from graphsys._lazy import attach

# Public name -> defining module, imported on first use (see graphsys._lazy).
_NAMES = {
    "gpu_ready": "graphsys.cuda._runtime",
    "Split": "graphsys.cuda.cache",
    "assign_slots": "graphsys.cuda.cache",
    "lookup": "graphsys.cuda.cache",
    "scatter_rows": "graphsys.cuda.cache",
    "split_hits": "graphsys.cuda.cache",
    "gather_rows": "graphsys.cuda.gather",
    "QuantizedRows": "graphsys.cuda.quant",
    "aggregate": "graphsys.cuda.quant",
    "aggregation_error_bound": "graphsys.cuda.quant",
    "dequantize": "graphsys.cuda.quant",
    "quantize": "graphsys.cuda.quant",
    "GPUNeighborSampler": "graphsys.cuda.sampling",
}

__getattr__, __dir__ = attach(__name__, _NAMES)

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
