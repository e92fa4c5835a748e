"""Deterministic, streaming generator of large synthetic node-classification graphs.

The graph is a degree-corrected stochastic block model in CSC form:

* **In-degrees** follow a truncated power law ``P(d) ~ d^-degree_exponent`` (like the
  citation counts of ogbn-papers100M), capped at ``max(2 * mean, sqrt(num_edges))``
  (the "structural cutoff", and never above ``num_nodes - 1``), then rounded so they sum
  to exactly ``num_edges``. With a mean in-degree of 20 the smallest in-degree is 3 to
  5 and the median 6 to 9; a mean below ~2 leaves some nodes without in-edges.
* **Communities** are the labels. A seeded permutation ranks the nodes by popularity;
  the node at rank ``i`` is in class ``i % num_classes``, so labels cannot be read off
  node ids.
* **Sources** of a node's in-edges come from its own class with probability
  ``homophily``, otherwise from one of the other classes picked uniformly; so the
  expected fraction of same-label edges is exactly ``homophily``. Within a class the
  source is the member at popularity rank ``floor(size * u**source_skew)`` (``u``
  uniform), which skews out-degrees: with the default 2, a Zipf law of exponent 1/2
  over ranks (CCDF ``~ d^-2``); larger values concentrate citations on fewer sources,
  as in ogbn-papers100M, where a tenth of the nodes draws most of the sampled reads.
* There are **no self loops** (a draw of the node itself moves to the next rank).
  **Duplicate edges** are kept, so the edge count is exact: a few percent of edges,
  more at high-in-degree nodes, which draw popular sources repeatedly.
* **Features** are ``centroid[label] + feature_noise * N(0, I)``, with class centroids
  drawn at random and scaled to a per-coordinate RMS of 1. The default noise makes a
  classifier on features alone reach about half the accuracy of a 2-hop GNN.
* **Splits** are a seeded random partition (60/20/20 by default); ids are sorted.

Edges and features are produced destination block by destination block (4096 nodes,
each with its own random stream), so memory stays at a few node-sized arrays however
large the graph, and the output is byte-identical for a seed whatever ``block_nodes``.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import psutil

from graphsys._progress import progress_bar
from graphsys._sizes import format_size
from graphsys.errors import ConfigError, DiskSpaceError
from graphsys.graph.csc import index_dtype_for
from graphsys.graph.manifest import Manifest
from graphsys.graph.writer import DatasetWriter

#: Bumped whenever the same config would produce different bytes.
GENERATOR_VERSION = 1
#: Nodes per random stream; fixed so the output does not depend on ``block_nodes``.
_RNG_BLOCK = 1 << 12
# Independent random streams, one per part of the dataset.
_DEGREES, _ORDER, _CENTROIDS, _EDGES, _FEATURES, _SPLITS = range(6)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return (_is_int(value) or isinstance(value, (float, np.floating))) and math.isfinite(value)


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of a synthetic graph; see the module docstring for the model.

    Example:
        >>> SyntheticConfig(num_nodes=1000, num_edges=20_000, feat_dim=16).num_classes
        16
    """

    num_nodes: int = 100_000
    num_edges: int = 2_000_000
    feat_dim: int = 128
    num_classes: int = 16
    degree_exponent: float = 2.1
    homophily: float = 0.8
    source_skew: float = 2.0
    feature_noise: float = 6.0
    dtype: Literal["float32", "float16"] = "float32"
    seed: int = 0
    train_frac: float = 0.6
    val_frac: float = 0.2
    test_frac: float = 0.2

    def __post_init__(self) -> None:
        def fail(field: str, fix: str) -> None:
            flag = f" ({CLI_FLAGS[field]})" if field in CLI_FLAGS else ""
            raise ConfigError(f"SyntheticConfig.{field}={getattr(self, field)!r}{flag} is "
                              f"invalid: {fix}")

        for field, low in (("num_nodes", 2), ("num_edges", 0), ("feat_dim", 1),
                           ("num_classes", 2), ("seed", 0)):
            if not _is_int(getattr(self, field)) or getattr(self, field) < low:
                fail(field, f"pass an integer >= {low}")
        for field in ("degree_exponent", "homophily", "source_skew", "feature_noise",
                      "train_frac",
                      "val_frac", "test_frac"):
            if not _is_real(getattr(self, field)):
                fail(field, "pass a finite number")
        if self.num_nodes < 2 * self.num_classes:
            fail("num_nodes", f"pass at least 2 * num_classes = {2 * self.num_classes} so "
                 "every class has two nodes, or lower num_classes")
        if self.num_edges > self.num_nodes * (self.num_nodes - 1):
            fail("num_edges", f"pass at most num_nodes * (num_nodes - 1) = "
                 f"{self.num_nodes * (self.num_nodes - 1)}, or raise num_nodes")
        if self.degree_exponent <= 1:
            fail("degree_exponent", "pass an exponent > 1 (2 to 3 is typical of real graphs)")
        if not 0 <= self.homophily <= 1:
            fail("homophily", "pass a fraction of same-class in-edges in [0, 1]")
        if self.source_skew <= 0:
            fail("source_skew", "pass an exponent > 0 (1 = uniform sources, 2 = default)")
        if self.feature_noise < 0:
            fail("feature_noise", "pass a noise level >= 0")
        if self.dtype not in ("float32", "float16"):
            fail("dtype", "pass 'float32' or 'float16'")
        for field in ("train_frac", "val_frac", "test_frac"):
            if not 0 <= getattr(self, field) <= 1:
                fail(field, "pass a fraction in [0, 1]")
        if self.train_frac + self.val_frac + self.test_frac > 1 + 1e-9:
            fail("train_frac", "train_frac + val_frac + test_frac must be at most 1")


#: The ``graphsys prepare synthetic`` option of each field, named in errors.
CLI_FLAGS = {"num_nodes": "--nodes", "num_edges": "--edges", "feat_dim": "--dim",
             "num_classes": "--classes", "degree_exponent": "--exponent",
             "homophily": "--homophily", "feature_noise": "--noise", "dtype": "--dtype",
             "seed": "--seed"}


def estimated_disk_bytes(config: SyntheticConfig) -> int:
    """An upper bound on the bytes the dataset takes on disk (raw features)."""
    n, e = config.num_nodes, config.num_edges
    return (n * config.feat_dim * np.dtype(config.dtype).itemsize
            + e * index_dtype_for(n).itemsize + (n + 1) * 8 + 2 * n * 8 + (64 << 10))


def estimated_memory_bytes(config: SyntheticConfig, block_nodes: int) -> int:
    """An upper bound on the generator's memory: node-sized int64 arrays plus one block
    of sources and float64 features."""
    block = min(block_nodes, config.num_nodes)
    mean_degree = -(-config.num_edges // config.num_nodes)
    return 6 * config.num_nodes * 8 + block * (2 * config.feat_dim + 2 * mean_degree) * 8


def _check_resources(out: str | os.PathLike, config: SyntheticConfig,
                     block_nodes: int) -> None:
    """Refuse before writing a dataset that this machine cannot hold."""
    memory = estimated_memory_bytes(config, block_nodes)
    available = psutil.virtual_memory().available
    if memory > available:
        raise ConfigError(f"a synthetic graph of {config.num_nodes:,} nodes needs about "
                          f"{format_size(memory)} of memory to generate, more than the "
                          f"{format_size(available)} available; lower --nodes")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    need, free = estimated_disk_bytes(config), shutil.disk_usage(parent).free
    if need > free:
        raise DiskSpaceError(f"the dataset needs up to {format_size(need)} on disk but "
                             f"{parent} has {format_size(free)} free; lower --nodes, --edges "
                             "or --dim, or write it elsewhere with --out")


def _rng(config: SyntheticConfig, stream: int, block: int = 0) -> np.random.Generator:
    return np.random.default_rng([config.seed, stream, block])


def _max_in_degree(num_nodes: int, num_edges: int) -> int:
    mean = -(-num_edges // num_nodes)
    return min(num_nodes - 1, max(2 * mean, math.isqrt(num_edges)))


def _pareto_mean(k: float, top: float) -> float:
    """Mean of a Pareto law with tail index ``k`` truncated to ``[1, top]``."""
    if top <= 1 + 1e-12:
        return 1.0
    if abs(k - 1) < 1e-9:
        return math.log(top) / (1 - 1 / top)
    return k / (1 - top**-k) * (top ** (1 - k) - 1) / (1 - k)


def _in_degrees(config: SyntheticConfig) -> np.ndarray:
    """Power-law in-degrees (int64) summing to exactly ``num_edges``, each at most the cap."""
    n, e = config.num_nodes, config.num_edges
    if e == 0:
        return np.zeros(n, np.int64)
    cap, k, mean = _max_in_degree(n, e), config.degree_exponent - 1, e / n
    # Degrees are scale * w with w Pareto on [1, cap / scale]: find the scale whose
    # expected mean is e / n (the expected mean rises with the scale), by bisection.
    low, high = 0.0, float(cap)
    for _ in range(200):
        scale = (low + high) / 2
        if scale * _pareto_mean(k, cap / scale) < mean:
            low = scale
        else:
            high = scale
    top = cap / scale
    u = _rng(config, _DEGREES).random(n)
    real = scale * (1 - u * (1 - top**-k)) ** (-1 / k)  # inverse CDF of the truncated law
    del u
    real *= e / real.sum()  # remove the sampling error of the sum
    np.minimum(real, cap, out=real)
    degrees = np.floor(real).astype(np.int64)
    frac = real - degrees
    del real
    # Hand out the rounding shortfall by largest remainder (a stable sort keeps ties in
    # node order, so the result is reproducible).
    short = e - int(degrees.sum())
    while short:
        step = 1 if short > 0 else -1
        cand = np.flatnonzero(degrees < cap if step > 0 else degrees > 0)
        key = -frac[cand] if step > 0 else frac[cand]
        take = cand[np.argsort(key, kind="stable")[: abs(short)]]
        degrees[take] += step
        frac[take] = 0.5  # done with: behind every untouched node in the next round
        short -= step * len(take)
    return degrees


def _communities(config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(order, labels)``: ``order[i]`` is the node of popularity rank ``i``."""
    n, c = config.num_nodes, config.num_classes
    order = _rng(config, _ORDER).permutation(n).astype(index_dtype_for(n))
    labels = np.empty(n, np.int64)
    labels[order] = np.arange(n, dtype=np.int64) % c
    return order, labels


def _centroids(config: SyntheticConfig) -> np.ndarray:
    """Class centroids, float32, each with a per-coordinate RMS of exactly 1."""
    g = _rng(config, _CENTROIDS).standard_normal((config.num_classes, config.feat_dim))
    g *= np.sqrt(config.feat_dim) / np.sqrt(np.sum(g * g, axis=1, keepdims=True))
    return g.astype(np.float32)


def _block_sources(config: SyntheticConfig, block: int, indptr: np.ndarray,
                   order: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Source ids of the in-edges of the nodes of one random block, in CSC order."""
    n, c = config.num_nodes, config.num_classes
    lo, hi = block * _RNG_BLOCK, min(n, (block + 1) * _RNG_BLOCK)
    dst = np.repeat(np.arange(lo, hi), np.diff(indptr[lo : hi + 1]))
    rng = _rng(config, _EDGES, block)
    m = len(dst)
    own = labels[dst]
    other = (own + rng.integers(1, c, m)) % c
    comm = np.where(rng.random(m) < config.homophily, own, other)
    size = (n - comm + c - 1) // c
    rank = (size * rng.random(m) ** config.source_skew).astype(np.int64)
    src = order[comm + rank * c]
    loop = src == dst
    if loop.any():  # the next member of the class; every class has at least two
        src[loop] = order[comm[loop] + (rank[loop] + 1) % size[loop] * c]
    return src


def _block_features(config: SyntheticConfig, block: int, labels: np.ndarray,
                    centroids: np.ndarray) -> np.ndarray:
    """Feature rows of the nodes of one random block, in ``config.dtype``."""
    lo, hi = block * _RNG_BLOCK, min(config.num_nodes, (block + 1) * _RNG_BLOCK)
    rows = _rng(config, _FEATURES, block).standard_normal((hi - lo, config.feat_dim),
                                                          dtype=np.float32)
    rows *= np.float32(config.feature_noise)
    rows += centroids[labels[lo:hi]]
    return rows.astype(config.dtype, copy=False)


def _splits(config: SyntheticConfig) -> dict[str, np.ndarray]:
    n = config.num_nodes
    perm = _rng(config, _SPLITS).permutation(n)
    n_train = int(n * config.train_frac)
    n_val = min(int(n * config.val_frac), n - n_train)
    n_test = min(int(n * config.test_frac), n - n_train - n_val)
    bounds = np.cumsum([0, n_train, n_val, n_test])
    return {key: np.sort(perm[bounds[i] : bounds[i + 1]]).astype(np.int64)
            for i, key in enumerate(("train_idx", "val_idx", "test_idx"))}


def generate_synthetic(
    out: str | os.PathLike,
    config: SyntheticConfig | None = None,
    *,
    feature_storage: Literal["raw", "zarr"] = "raw",
    overwrite: bool = False,
    progress: bool = True,
    block_nodes: int = 1 << 16,
    name: str | None = None,
) -> Manifest:
    """Generate a synthetic dataset into the directory ``out``, streaming to disk.

    Args:
        out: the dataset directory to create (atomically: nothing appears on failure).
        config: the graph's parameters; the defaults of :class:`SyntheticConfig` if None.
        feature_storage: ``"raw"`` (memory-mappable) or ``"zarr"`` (LZ4-compressed).
        overwrite: replace ``out`` if it exists instead of raising DatasetExistsError.
        progress: show a progress bar over nodes.
        block_nodes: nodes generated per write, rounded up to a multiple of 4096. Only
            memory use and write size depend on it, never the output.
        name: the dataset name; ``"synthetic-<nodes>-<edges>"`` by default.

    Memory holds about five node-sized int64 arrays plus one block, e.g. ~1 GB for
    10M nodes; the config is recorded as the manifest's ``source``.

    Example:
        >>> cfg = SyntheticConfig(num_nodes=10_000, num_edges=200_000, feat_dim=32)
        >>> manifest = generate_synthetic("data/syn", cfg)       # doctest: +SKIP
        >>> graphsys.load_dataset("data/syn").graph.num_edges()  # doctest: +SKIP
        200000
    """
    config = SyntheticConfig() if config is None else config
    if not isinstance(config, SyntheticConfig):
        raise TypeError(f"config must be a SyntheticConfig, got {type(config).__name__}")
    if feature_storage not in ("raw", "zarr"):
        raise ValueError(f"feature_storage must be 'raw' or 'zarr', got {feature_storage!r}")
    if not _is_int(block_nodes) or block_nodes < 1:
        raise ValueError(f"block_nodes must be a positive integer, got {block_nodes!r}")
    _check_resources(out, config, block_nodes)
    n, e, dim = config.num_nodes, config.num_edges, config.feat_dim
    per_write = -(-block_nodes // _RNG_BLOCK)
    source = {"kind": "synthetic", "generator_version": GENERATOR_VERSION, **asdict(config)}
    with DatasetWriter(out, name=name or f"synthetic-{n}-{e}", overwrite=overwrite,
                       source=source) as writer:
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(_in_degrees(config), out=indptr[1:])
        writer.write_array("indptr", indptr)
        order, labels = _communities(config)
        writer.write_array("labels", labels)
        centroids = _centroids(config)
        indices = writer.array_sink("indices", index_dtype_for(n), (e,))
        features = writer.array_sink("features", config.dtype, (n, dim),
                                     storage=feature_storage)
        num_blocks = -(-n // _RNG_BLOCK)
        with progress_bar(total=n, desc="generating", unit="node", enable=progress) as bar:
            for first in range(0, num_blocks, per_write):
                blocks = range(first, min(num_blocks, first + per_write))
                indices.append(np.concatenate(
                    [_block_sources(config, b, indptr, order, labels) for b in blocks]))
                rows = [_block_features(config, b, labels, centroids) for b in blocks]
                features.append(np.concatenate(rows))
                bar.update(sum(len(r) for r in rows))
        writer.close_sink("indices")
        writer.close_sink("features")
        del order, indptr
        for key, ids in _splits(config).items():
            writer.write_array(key, ids)
        return writer.finish(num_classes=config.num_classes)
