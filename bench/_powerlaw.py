"""An in-memory power-law graph and feature table, generated fast (vectorised, threaded).

``graphsys.datasets.synthetic`` writes its graphs to disk block by block on one core
(10M nodes / 200M edges in ~45 s on 2 cores, plus the write); the GPU benches need a
papers-sized graph in host memory within about a minute of a lent machine's time, so
they build it here instead, with the same shape of model: truncated power-law
in-degrees (exponent 2.1, like citation counts) and sources drawn by popularity rank
``floor(n * u**source_skew)`` through a random permutation (skewed out-degrees, ids
unrelated to popularity). Duplicate edges and the odd self-loop are kept. Every chunk
has its own ``numpy`` stream keyed by ``(seed, part, chunk)``: the output depends on the
seed and sizes only, not on the thread count.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from graphsys import CSCGraph

_CHUNK = 1 << 22  # elements per random stream


def _threads(threads: int | None) -> int:
    return max(1, threads or os.cpu_count() or 1)


def _in_degrees(num_nodes: int, avg_degree: float, exponent: float, seed: int) -> np.ndarray:
    cap = max(2 * avg_degree, math.sqrt(num_nodes * avg_degree))
    rng = np.random.default_rng([seed, 0])
    raw = (1.0 - rng.random(num_nodes)) ** (-1.0 / (exponent - 1.0))  # Pareto >= 1
    low, high = 0.01, avg_degree * 4
    sample = raw[: min(num_nodes, 1 << 20)]
    for _ in range(60):  # bisect the scale so the mean degree hits avg_degree
        mid = (low + high) / 2
        mean = np.clip(np.rint(sample * mid), 1, cap).mean()
        low, high = (mid, high) if mean < avg_degree else (low, mid)
    return np.clip(np.rint(raw * low), 1, cap).astype(np.int64)


def powerlaw_graph(num_nodes: int, avg_degree: float, *, exponent: float = 2.1,
                   source_skew: float = 2.0, seed: int = 0,
                   threads: int | None = None) -> CSCGraph:
    """A CSC graph of ``num_nodes`` with about ``avg_degree`` in-edges per node."""
    indptr = np.zeros(num_nodes + 1, np.int64)
    np.cumsum(_in_degrees(num_nodes, avg_degree, exponent, seed), out=indptr[1:])
    num_edges = int(indptr[-1])
    by_rank = np.random.default_rng([seed, 1]).permutation(num_nodes)
    idx_dtype = np.int32 if num_nodes <= np.iinfo(np.int32).max else np.int64
    by_rank = by_rank.astype(idx_dtype)
    indices = np.empty(num_edges, idx_dtype)

    def fill(chunk: int) -> None:
        start = chunk * _CHUNK
        stop = min(num_edges, start + _CHUNK)
        u = np.random.default_rng([seed, 2, chunk]).random(stop - start)
        u **= source_skew
        u *= num_nodes
        rank = u.astype(np.int64)
        np.minimum(rank, num_nodes - 1, out=rank)
        np.take(by_rank, rank, out=indices[start:stop])

    with ThreadPoolExecutor(_threads(threads)) as pool:
        list(pool.map(fill, range(-(-num_edges // _CHUNK))))
    return CSCGraph(torch.from_numpy(indptr), torch.from_numpy(indices))


def random_features(num_rows: int, dim: int, *, seed: int = 0, pin: bool = False,
                    threads: int | None = None) -> torch.Tensor:
    """float32 ``[num_rows, dim]`` of N(0, 1) values (pinned if ``pin``)."""
    out = torch.empty((num_rows, dim), dtype=torch.float32, pin_memory=pin)
    rows = max(1, _CHUNK // max(dim, 1))

    def fill(chunk: int) -> None:
        g = torch.Generator().manual_seed(seed * 1_000_003 + chunk)
        out[chunk * rows : (chunk + 1) * rows].normal_(generator=g)

    with ThreadPoolExecutor(_threads(threads)) as pool:
        list(pool.map(fill, range(-(-num_rows // rows))))
    return out
