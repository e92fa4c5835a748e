"""The device data path of :class:`~graphsys.DataLoader`: GPU sampling and UVA gathers.

DGL users write ``DataLoader(g, seeds, sampler, device='cuda', use_uva=True)``: the
graph structure is pinned (or put on the GPU), the sampler runs there, and feature and
label rows are gathered by the GPU straight from pinned host memory, so nothing of a
batch passes through pageable host memory. This module decides that path and prepares
its pieces; the loader calls the same functions on every device:

* :func:`device_sampler` turns a plain :class:`NeighborSampler` into a
  :class:`~graphsys.cuda.GPUNeighborSampler` with the same fanouts, ``replace`` and
  seed (the samples are bitwise the same); samplers cannot pick the kernel themselves,
  since ``samplers`` sits below ``cuda`` in the package layers.
* :func:`row_source` pins a host tensor in place (or keeps a device-resident one),
  or leaves a feature store to read itself (a :class:`DeviceCache` returns rows on the
  device; others read on the host and are copied).
* :func:`gather` reads rows of a batch from that source with
  :func:`graphsys.cuda.gather_rows` (the UVA kernel on a GPU, ``index_select`` on CPU).

On a CPU device the same calls run the kernels' CPU twins; CI trains that way and
checks the batches, features and losses equal the plain CPU path's bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from graphsys import cuda
from graphsys._pinned import pin_inplace
from graphsys.graph.csc import CSCGraph
from graphsys.loader.gather import gather_rows as host_gather
from graphsys.samplers.neighbor import MultiLayerFullNeighborSampler, NeighborSampler
from graphsys.storage.memory import TensorStore

GraphMemory = Literal["pinned", "device"]
GRAPH_MEMORY = ("pinned", "device")


@dataclass(frozen=True)
class DevicePath:
    """How a loader moves batches: where the graph lives and how rows are gathered.

    ``graph_memory``: ``'pinned'`` (structure page-locked in host memory, read by the
    sampling kernel over the bus) or ``'device'`` (copied to the GPU once).
    ``uva``: gather host rows from pinned memory with the UVA kernel (else host
    tensors are copied whole to the device once, when ``graph_memory='device'``).
    """

    device: torch.device
    graph_memory: GraphMemory = "pinned"
    uva: bool = True

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def describe(self) -> str:
        """The path in words (``graphsys info`` and the first line of a run print it)."""
        where = "GPU kernels" if self.on_gpu else "CPU twins of the GPU kernels"
        rows = "UVA gather from pinned host memory" if self.uva else "rows held on the device"
        return (f"device path: sampling by the {where}, graph {self.graph_memory}, "
                f"features by {rows}")


def graph_placement(graph: CSCGraph) -> GraphMemory | None:
    """``'device'`` for a graph on a GPU, ``'pinned'`` for a pinned one, else None."""
    if graph.indptr.is_cuda:
        return "device"
    if torch.cuda.is_available() and graph.indptr.is_pinned() and graph.indices.is_pinned():
        return "pinned"
    return None


def resolve(graph: CSCGraph, sampler: Any, device: torch.device, use_uva: bool | None,
            graph_memory: str | None) -> DevicePath | None:
    """The device path a loader takes, or None for the plain CPU path.

    The path is taken when asked for (``use_uva``, ``graph_memory``, a
    :class:`GPUNeighborSampler`) or implied by the graph already living on or pinned
    for a GPU, as in DGL.
    """
    if graph_memory is not None and graph_memory not in GRAPH_MEMORY:
        raise ValueError(f"graph_memory must be 'pinned' or 'device', got {graph_memory!r}")
    placed = graph_placement(graph)
    gpu_sampler = isinstance(sampler, cuda.GPUNeighborSampler)
    if gpu_sampler:
        graph_memory = graph_memory or sampler.graph_memory
    if not (use_uva or graph_memory or placed or gpu_sampler):
        return None
    if use_uva and device.type == "cuda" and graph.indptr.is_cuda:
        raise ValueError("use_uva=True needs the graph in host memory (DGL's rule), but it "
                         "is on the GPU; drop use_uva or keep the graph on the CPU")
    memory = graph_memory or placed or ("pinned" if use_uva else "device")
    # Without use_uva, DGL keeps rows where they are: gathered from pinned host memory
    # when the graph is pinned, held on the device when the graph is there.
    return DevicePath(device, memory, uva=memory == "pinned" if use_uva is None
                      else bool(use_uva))


def device_sampler(sampler: Any, path: DevicePath) -> Any:
    """The sampler the device path runs: a plain NeighborSampler becomes a GPU one."""
    if isinstance(sampler, cuda.GPUNeighborSampler):
        return sampler
    # Edge ids (edge-data prefetch) and prob/mask are the CPU kernel's only: keep that one.
    if type(sampler) in (NeighborSampler, MultiLayerFullNeighborSampler) \
            and not sampler.records_edges:
        return cuda.GPUNeighborSampler(sampler.fanouts, replace=sampler.replace,
                                       seed=sampler.seed, graph_memory=path.graph_memory,
                                       device=path.device if path.on_gpu else None)
    return sampler  # a user's own sampler: its blocks are moved like the plain path's


def row_source(data: Any, path: DevicePath) -> Any:
    """What :func:`gather` reads ``data``'s rows from on this path.

    Tensors (and the tensor of a TensorStore) are pinned in place for UVA, or moved to
    the GPU once when the path keeps rows on the device; numpy arrays become tensors.
    Other feature stores read themselves.
    """
    if data is None:
        return None
    tensor = data.tensor if isinstance(data, TensorStore) else None
    if tensor is None and isinstance(data, torch.Tensor):
        tensor = data
    if tensor is None and isinstance(data, np.ndarray) and not isinstance(data, np.memmap):
        tensor = torch.from_numpy(data)
    if tensor is None:
        return data
    if not path.on_gpu:
        return tensor
    if tensor.is_cuda:
        return tensor
    return pin_inplace(tensor) if path.uva else tensor.to(path.device)


def gather(source: Any, ids: torch.Tensor, path: DevicePath) -> torch.Tensor:
    """Rows ``ids`` of ``source`` (from :func:`row_source`) on the path's device."""
    if isinstance(source, torch.Tensor):
        ids = ids.to(path.device) if path.on_gpu else ids
        # Sampled ids are in range by construction; the range check would cost a sync.
        return cuda.gather_rows(source, ids, check=not path.on_gpu)
    rows = host_gather(source, ids)  # a feature store or an array-like (memory map, zarr)
    return rows.to(path.device, non_blocking=rows.is_pinned()) if path.on_gpu else rows
