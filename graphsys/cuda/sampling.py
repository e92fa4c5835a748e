"""Neighbour sampling on the GPU, with the CPU sampler's semantics and random stream.

:class:`GPUNeighborSampler` samples from a CSC graph held in GPU memory or pinned in
host memory (the kernel then reads ``indptr``/``indices`` over the bus, UVA). The
kernels are the CPU kernels of :mod:`graphsys.samplers._kernels` line for line: the
draws for destination ``v`` come from the same counter-based SplitMix64 stream keyed by
``(seed, batch key, layer, v)``, converted to an integer with the same float64
arithmetic (IEEE-exact on both), and the same choice of full copy, sampling with
replacement, Floyd's algorithm or reservoir sampling. So the sampled edges are
bitwise the CPU sampler's. Relabelling to block-local ids (destinations first, then
other sources in order of first appearance) is done with torch operations, which give
the CPU relabelling's exact output on either device.

Without a GPU (or CuPy) ``GPUNeighborSampler`` samples on the CPU through the very same
code (:meth:`GPUNeighborSampler.sample_tensors` with the numba layer kernel
:func:`sample_layer_cpu` and the torch :func:`relabel`), so its CPU batches equal
:class:`~graphsys.samplers.NeighborSampler`'s bitwise and the GPU path's assembly is
exercised on every machine.

On the GPU a destination without replacement and with fewer picks than neighbours is
sampled by one thread (Floyd's algorithm or reservoir sampling: the draws depend on each
other); full copies (``fanout=-1`` or degree <= fanout) and draws with replacement take
a warp per destination, so hubs do not serialise a thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from graphsys._pinned import pin_inplace
from graphsys.cuda import _runtime
from graphsys.graph.csc import CSCGraph
from graphsys.samplers import _kernels
from graphsys.samplers.block import Block, MiniBatch
from graphsys.samplers.duplicates import Copies, redraw_copies, restore_copies
from graphsys.samplers.neighbor import NeighborSampler, _batch_key, as_node_ids, check_graph

SOURCE = r"""
#define GOLDEN 0x9E3779B97F4A7C15ULL

__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Advance the stream; a uniform integer in [0, n) exactly as the numba kernel computes it.
__device__ __forceinline__ long long below(unsigned long long* state, long long n) {
    *state += GOLDEN;
    const double u = __dmul_rn((double)(mix64(*state) >> 11), 1.0 / 9007199254740992.0);
    long long r = (long long)__dmul_rn(u, (double)n);
    return r < n - 1 ? r : n - 1;
}

extern "C" __global__ void sample_counts(unsigned long long indptr_addr,
                                         unsigned long long seeds_addr, long long n,
                                         long long fanout, int replace,
                                         unsigned long long counts_addr) {
    const long long* __restrict__ indptr = (const long long*)indptr_addr;
    const long long* __restrict__ seeds = (const long long*)seeds_addr;
    long long* counts = (long long*)counts_addr;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const long long v = seeds[i];
        const long long deg = indptr[v + 1] - indptr[v];
        if (fanout < 0 || (!replace && deg <= fanout)) counts[i] = deg;
        else if (deg == 0) counts[i] = 0;
        else counts[i] = fanout;
    }
}

// Without replacement and with fewer picks than neighbours (Floyd's algorithm or
// reservoir sampling): one thread per destination, as the draws depend on each other.
// Full copies and sampling with replacement are left to copy_or_draw_* below.
#define SAMPLE(NAME, IDX_T)                                                              \
extern "C" __global__ void NAME(unsigned long long indptr_addr,                          \
                                unsigned long long indices_addr,                         \
                                unsigned long long seeds_addr, long long n,              \
                                unsigned long long offsets_addr,                         \
                                unsigned long long counts_addr, long long fanout,        \
                                int replace, unsigned long long key,                     \
                                unsigned long long sources_addr) {                       \
    const long long* __restrict__ indptr = (const long long*)indptr_addr;                \
    const IDX_T* __restrict__ indices = (const IDX_T*)indices_addr;                      \
    const long long* __restrict__ seeds = (const long long*)seeds_addr;                  \
    const long long* __restrict__ offsets = (const long long*)offsets_addr;              \
    const long long* __restrict__ counts = (const long long*)counts_addr;                \
    IDX_T* sources = (IDX_T*)sources_addr;                                               \
    if (replace) return;                                                                 \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;          \
         i += (long long)gridDim.x * blockDim.x) {                                       \
        const long long v = seeds[i];                                                    \
        const long long start = indptr[v];                                               \
        const long long deg = indptr[v + 1] - start;                                     \
        const long long out = offsets[i];                                                \
        const long long k = counts[i];                                                   \
        if (k == deg) continue;  /* a full copy: copy_or_draw_* */                       \
        unsigned long long state = mix64(key ^ ((unsigned long long)v * GOLDEN));        \
        if (k * 8 <= deg) {                                                              \
            for (long long j = 0; j < k; ++j) {                                          \
                long long r = below(&state, deg - k + j + 1);                            \
                const long long pos = deg - k + j;                                       \
                for (long long q = 0; q < j; ++q) {                                      \
                    if ((long long)sources[out + q] == r) { r = pos; break; }            \
                }                                                                        \
                sources[out + j] = (IDX_T)r;                                             \
            }                                                                            \
            for (long long j = 0; j < k; ++j)                                            \
                sources[out + j] = indices[start + (long long)sources[out + j]];         \
        } else {                                                                         \
            for (long long j = 0; j < k; ++j) sources[out + j] = (IDX_T)j;               \
            for (long long j = k; j < deg; ++j) {                                        \
                const long long r = below(&state, j + 1);                                \
                if (r < k) sources[out + r] = (IDX_T)j;                                  \
            }                                                                            \
            for (long long j = 0; j < k; ++j)                                            \
                sources[out + j] = indices[start + (long long)sources[out + j]];         \
        }                                                                                \
    }                                                                                    \
}

// Full copies (fanout < 0, or deg <= fanout without replacement) and sampling with
// replacement: one warp per destination, so a hub's neighbour list is copied by 32
// lanes (coalesced) instead of one thread. Draw j with replacement uses the stream's
// (j+1)-th state, state0 + (j+1) * GOLDEN (the stream is a counter), so each lane
// computes its own draws and the result is the sequential one, bitwise.
#define COPY_OR_DRAW(NAME, IDX_T)                                                        \
extern "C" __global__ void NAME(unsigned long long indptr_addr,                          \
                                unsigned long long indices_addr,                         \
                                unsigned long long seeds_addr, long long n,              \
                                unsigned long long offsets_addr,                         \
                                unsigned long long counts_addr, long long fanout,        \
                                int replace, unsigned long long key,                     \
                                unsigned long long sources_addr) {                       \
    const long long* __restrict__ indptr = (const long long*)indptr_addr;                \
    const IDX_T* __restrict__ indices = (const IDX_T*)indices_addr;                      \
    const long long* __restrict__ seeds = (const long long*)seeds_addr;                  \
    const long long* __restrict__ offsets = (const long long*)offsets_addr;              \
    const long long* __restrict__ counts = (const long long*)counts_addr;                \
    IDX_T* __restrict__ sources = (IDX_T*)sources_addr;                                  \
    const long long lane = threadIdx.x & 31;                                             \
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;                    \
    for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; i < n;   \
         i += warps) {                                                                   \
        const long long v = seeds[i];                                                    \
        const long long start = indptr[v];                                               \
        const long long deg = indptr[v + 1] - start;                                     \
        const long long out = offsets[i];                                                \
        const long long k = counts[i];                                                   \
        if (k == deg && (fanout < 0 || !replace || deg == 0)) {                          \
            for (long long j = lane; j < deg; j += 32)                                   \
                sources[out + j] = indices[start + j];                                   \
        } else if (replace) {                                                            \
            const unsigned long long state0 = mix64(key ^ ((unsigned long long)v * GOLDEN)); \
            for (long long j = lane; j < k; j += 32) {                                   \
                unsigned long long state = state0 + (unsigned long long)j * GOLDEN;      \
                sources[out + j] = indices[start + below(&state, deg)];                  \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
}

SAMPLE(sample_neighbors_i32, int)
SAMPLE(sample_neighbors_i64, long long)
COPY_OR_DRAW(copy_or_draw_i32, int)
COPY_OR_DRAW(copy_or_draw_i64, long long)
"""

KERNELS = ("sample_counts", "sample_neighbors_i32", "sample_neighbors_i64",
           "copy_or_draw_i32", "copy_or_draw_i64")
_THREADS = 128

LayerFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, bool, int],
                   tuple[torch.Tensor, torch.Tensor]]


def sample_layer_gpu(indptr: torch.Tensor, indices: torch.Tensor, seeds: torch.Tensor,
                     fanout: int, replace: bool, key: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(counts, sources)`` for ``seeds`` (int64 on the GPU) with the CUDA kernels.

    ``indptr`` (int64) and ``indices`` (int32/int64) are on ``seeds``'s GPU or pinned.
    The kernels run on ``seeds``'s device, on its current torch stream.
    """
    n = seeds.numel()
    device = _runtime.device_of(indptr, indices, seeds)
    counts = torch.empty(n, dtype=torch.int64, device=device)
    grid = min(-(-n // _THREADS), 65535)
    _runtime.launch(_runtime.function(SOURCE, "sample_counts", device=device), grid, _THREADS,
                    device=device, args=(
        _runtime.address(indptr), _runtime.address(seeds), np.int64(n), np.int64(fanout),
        np.int32(replace), _runtime.address(counts)))
    offsets = torch.zeros(n + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts, 0, out=offsets[1:])
    total = int(offsets[-1])  # one sync: the output's size
    sources = torch.empty(total, dtype=indices.dtype, device=device)
    suffix = "i32" if indices.dtype == torch.int32 else "i64"
    args = (_runtime.address(indptr), _runtime.address(indices), _runtime.address(seeds),
            np.int64(n), _runtime.address(offsets), _runtime.address(counts), np.int64(fanout),
            np.int32(replace), np.uint64(key), _runtime.address(sources))
    if total:
        # Destinations are split between the two kernels by their case; their output
        # ranges are disjoint, so the order of the two launches does not matter.
        warp_grid = min(-(-n * 32 // _THREADS), 65535)
        _runtime.launch(_runtime.function(SOURCE, f"copy_or_draw_{suffix}", device=device),
                        warp_grid, _THREADS, device=device, args=args)
        if not replace:
            _runtime.launch(_runtime.function(SOURCE, f"sample_neighbors_{suffix}",
                                              device=device),
                            grid, _THREADS, device=device, args=args)
    return counts, sources


def sample_layer_cpu(indptr: torch.Tensor, indices: torch.Tensor, seeds: torch.Tensor,
                     fanout: int, replace: bool, key: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same as :func:`sample_layer_gpu` with the numba kernel (host tensors)."""
    counts, sources = _kernels.sample_layer(indptr.numpy(), indices.numpy(), seeds.numpy(),
                                            fanout, replace, key)
    return torch.from_numpy(counts), torch.from_numpy(sources)


def relabel(dst: torch.Tensor, sources: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(src_nodes, local)`` as :func:`graphsys.samplers._kernels.relabel` returns them.

    ``src_nodes`` starts with the (distinct) ``dst``, then the other sources in order of
    first appearance; ``local[e]`` is the position of ``sources[e]`` in it. Torch only,
    so it runs where the tensors are.
    """
    every = torch.cat((dst, sources.long()))
    unique, inverse = torch.unique(every, return_inverse=True)
    position = torch.arange(every.numel(), device=every.device)
    first = torch.full((unique.numel(),), every.numel(), dtype=torch.int64,
                       device=every.device).scatter_reduce_(0, inverse, position, "amin")
    order = torch.argsort(first)  # first appearances are distinct: the order is total
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return unique[order], rank[inverse[dst.numel():]]


def _draw(layer_fn: LayerFn, indptr: torch.Tensor, indices: torch.Tensor, fanout: int,
          replace: bool, nodes: torch.Tensor, key: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer_fn`` with the ``draw(nodes, key)`` signature of
    :func:`~graphsys.samplers.duplicates.draw_per_copy`."""
    return layer_fn(indptr, indices, nodes, fanout, replace, key)


class GPUNeighborSampler(NeighborSampler):
    """:class:`NeighborSampler` whose kernels run on the GPU; blocks come back there.

    Args:
        fanouts, replace, seed: as for :class:`NeighborSampler`; equal arguments give
            bitwise-equal samples on either sampler.
        graph_memory: ``'device'`` copies ``indptr``/``indices`` to the GPU once per
            graph; ``'pinned'`` pins them in host memory and the kernels read them over
            the bus (for graphs larger than the GPU).
        device: the CUDA device (default: the current one).

    Without a usable GPU (or with ``device='cpu'``), :meth:`sample` runs the same
    :meth:`sample_tensors` on host tensors with :func:`sample_layer_cpu`; its blocks are
    on the CPU and equal :class:`NeighborSampler`'s bitwise.

    The graph's arrays are prepared once and kept for the last ``(graph, device,
    graph_memory)`` seen; another graph object or device prepares them again.

    Example:
        >>> sampler = GPUNeighborSampler([10, 5], graph_memory="pinned")
        >>> input_nodes, output_nodes, blocks = sampler.sample(graph, seeds, key=0)
    """

    def __init__(self, fanouts: Sequence[int], *, replace: bool = False, seed: int = 0,
                 graph_memory: Literal["device", "pinned"] = "device",
                 device: torch.device | str | None = None) -> None:
        super().__init__(fanouts, replace=replace, seed=seed)
        if graph_memory not in ("device", "pinned"):
            raise ValueError(f"graph_memory must be 'device' or 'pinned', got {graph_memory!r}")
        self.graph_memory = graph_memory
        self.device = None if device is None else torch.device(device)
        # (graph, device, graph_memory) -> (indptr, indices); one entry, the last used.
        self._graph_cache: tuple[tuple[CSCGraph, torch.device, str],
                                 tuple[torch.Tensor, torch.Tensor]] | None = None

    def _sample_device(self) -> torch.device:
        """Where :meth:`sample` samples: a CUDA device when the kernels can run, else CPU."""
        if self.device is not None and self.device.type != "cuda":
            return torch.device("cpu")
        if not _runtime.gpu_ready():
            return torch.device("cpu")
        if self.device is not None and self.device.index is not None:
            return self.device
        return torch.device("cuda", torch.cuda.current_device())

    def _arrays(self, graph: CSCGraph, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (graph, device, self.graph_memory)
        cached = self._graph_cache
        if cached is not None and cached[0][0] is graph and cached[0][1:] == key[1:]:
            return cached[1]
        indptr = graph.indptr.to(torch.int64).contiguous()
        indices = graph.indices.contiguous()
        if device.type == "cpu":
            arrays = (indptr, indices)  # the numba kernel reads host memory as it is
        elif self.graph_memory == "device":
            arrays = (indptr.to(device), indices.to(device))
        else:  # page-locked in place: a copy would hold a large graph twice
            arrays = (pin_inplace(indptr), pin_inplace(indices))
        self._graph_cache = (key, arrays)
        return arrays

    def sample(self, graph: CSCGraph, seeds: object, *, key: int | None = None) -> MiniBatch:
        check_graph(graph)
        graph.ensure_valid()  # once per graph: the kernels do not bounds-check
        dst = as_node_ids(seeds, graph.num_nodes(), "seeds")
        repeats = not _kernels.all_distinct(dst)  # checked on the host, before the copy
        key = next(self._calls) if key is None else int(key)
        device = self._sample_device()
        indptr, indices = self._arrays(graph, device)
        layer_fn = sample_layer_cpu if device.type == "cpu" else sample_layer_gpu
        return self.sample_tensors(indptr, indices, torch.from_numpy(dst).to(device), key,
                                   layer_fn, repeats=repeats)

    def sample_tensors(self, indptr: torch.Tensor, indices: torch.Tensor, seeds: torch.Tensor,
                       key: int, layer_fn: LayerFn, *, repeats: bool = False) -> MiniBatch:
        """Blocks for validated int64 ``seeds``, sampling each layer with ``layer_fn``
        (:func:`sample_layer_gpu` or :func:`sample_layer_cpu`). ``repeats`` says the
        seeds repeat a node: each copy then draws on its own, as in
        :class:`NeighborSampler` (see :mod:`graphsys.samplers.duplicates`)."""
        dst = seeds
        copies = Copies.of(seeds) if repeats else None
        blocks: list[Block] = []
        for layer in reversed(range(self.num_layers)):
            fanout, layer_key = self.fanouts[layer], _batch_key(self.seed, key, layer)
            draw = functools.partial(_draw, layer_fn, indptr, indices, fanout, self.replace)
            counts, sources = draw(dst, layer_key)
            if copies is None:
                src_nodes, local = relabel(dst, sources)
            else:  # as NeighborSampler.sample does with repeated seeds
                redraw_copies(dst, copies, counts, sources, layer_key, draw)
                src_nodes, local = relabel(copies.first_copies(dst), sources)
                src_nodes, local = restore_copies(dst, copies, src_nodes, local)
            block_indptr = torch.zeros(dst.numel() + 1, dtype=torch.int64, device=dst.device)
            torch.cumsum(counts, 0, out=block_indptr[1:])
            blocks.append(Block(block_indptr, local, src_nodes, num_dst=dst.numel()))
            dst = src_nodes
        blocks.reverse()
        return MiniBatch(blocks[0].src_nodes, seeds, blocks)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_graph_cache"] = None  # device/pinned arrays stay
        return state

    def __repr__(self) -> str:
        return (f"GPUNeighborSampler(fanouts={self.fanouts}, replace={self.replace}, "
                f"seed={self.seed}, graph_memory={self.graph_memory!r})")
