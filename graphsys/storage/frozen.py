"""``FrozenLayerCache``: a frozen layer's outputs for every node, lossily compressed.

When layers ``1..k`` of a GNN are frozen, their output for a node never changes again,
so training reads it instead of recomputing a ``k``-hop neighbourhood. The cache holds
one encoded row per node (a :class:`~graphsys.storage.codecs.Codec`: FP16, INT8 or
INT4 per row) and decodes on read, so it is a float32 :class:`FeatureStore` like raw
features. The encoded rows are themselves a uint8 store, so the usual tiers (host cache
of hot rows, tiered store, device cache) hold them compressed.

On disk (``path/``, written atomically)::

    frozen.json   format, codec, shape, chunking, the error measured at write time
    rows.zarr     uint8 [row_bytes, num_rows], Blosc-LZ4 chunks of chunk_rows rows   (lz4)
    rows.bin      uint8 [num_rows, row_bytes], row-major, no header                  (raw)

The zarr array is stored transposed (byte ``j`` of every row of a chunk together) and
bit-shuffled before LZ4, so LZ4 sees long runs of a channel's codes and of their high
bits (dead ReLU channels, per-row minima of zero, small codes of skewed activations)
rather than the row-wise interleaving of unrelated channels (on a Cora INT4 cache: 7.7x
-> 10x smaller than FP32 early in training). Chunks are compressed with LZ4HC, which
writes the LZ4 format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphsys._atomic import atomic_directory
from graphsys.errors import DatasetError
from graphsys.graph.zarr_io import chunk_file, create_lz4_array, open_array
from graphsys.storage.base import StoreBase
from graphsys.storage.codecs import Codec
from graphsys.storage.direct import DirectFileStore
from graphsys.storage.host_cache import HostCacheStore, default_host_budget
from graphsys.storage.memory import TensorStore
from graphsys.storage.tiered import TieredStore

FORMAT = "graphsys.frozen-cache"
VERSION = 1
META_NAME = "frozen.json"
DEFAULT_CHUNK_ROWS = 4096


@dataclass
class FrozenCacheInfo:
    """What ``frozen.json`` records about a cache."""

    num_rows: int
    dim: int
    codec: str
    lz4: bool
    chunk_rows: int
    frozen_layers: int = 0  # the cache holds the output of layer ``frozen_layers``
    max_abs_error: float = 0.0  # measured against the float32 rows written
    max_bound: float = 0.0  # the codec's bound at the worst element
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def row_bytes(self) -> int:
        return Codec(self.codec).row_bytes(self.dim)  # type: ignore[arg-type]


class ChunkedRowStore(StoreBase):
    """uint8 rows from a transposed, LZ4-chunked zarr array; counts compressed bytes read.

    Every chunk a request touches is read and decompressed once per request; its size on
    disk is added to ``stats.disk_bytes``.
    """

    tier = "frozen-zarr"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.array = open_array(self.path)
        row_bytes, rows = self.array.shape
        super().__init__(rows, row_bytes, torch.uint8)
        self.chunk_rows = int(self.array.chunks[1])
        chunks = -(-rows // self.chunk_rows) if rows else 0
        self.chunk_sizes = np.array([_file_size(chunk_file(self.path, (0, c)))
                                     for c in range(chunks)], dtype=np.int64)

    @property
    def disk_nbytes(self) -> int:
        return int(self.chunk_sizes.sum())

    def _gather(self, ids: torch.Tensor, out: torch.Tensor) -> int:
        unique, inverse = torch.unique(ids, return_inverse=True)
        cols = self.array.get_orthogonal_selection((slice(None), unique.numpy()))
        rows = torch.from_numpy(np.ascontiguousarray(cols.T))
        torch.index_select(rows, 0, inverse, out=out)
        touched = np.unique(unique.numpy() // self.chunk_rows)
        return int(self.chunk_sizes[touched].sum())


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # zarr leaves chunks that equal the fill value unwritten
        return 0


class FrozenLayerCache(StoreBase):
    """Decoded float32 rows of a frozen layer, read through an encoded uint8 store.

    Args:
        encoded: any store of uint8 rows ``[num_rows, codec.row_bytes(dim)]`` (in memory,
            on disk, or tiers of them).
        codec: how the rows were encoded.
        dim: channels of a decoded row.
        info: what ``frozen.json`` says (None for a cache built in memory).

    Example:
        >>> cache = FrozenLayerCache.open("run/frozen-2")       # doctest: +SKIP
        >>> h = cache.read(torch.tensor([0, 5]))                 # float32 [2, dim]
    """

    tier = "frozen"

    def __init__(self, encoded: Any, codec: Codec, dim: int,
                 info: FrozenCacheInfo | None = None) -> None:
        if encoded.dtype != torch.uint8 or encoded.dim != codec.row_bytes(dim):
            raise ValueError(f"encoded rows must be uint8 with {codec.row_bytes(dim)} bytes "
                             f"({codec.name}, {dim} channels), got {encoded.dim} {encoded.dtype}")
        super().__init__(encoded.num_rows, dim, torch.float32, encoded.device)
        self.encoded = encoded
        self.codec = codec
        self.info = info
        self.path: Path | None = None  # set by open()
        self.disk: Any = None  # the on-disk encoded store behind any RAM tier
        self.load_disk_bytes = 0  # read from disk while opening (filling RAM tiers)

    @property
    def encoded_nbytes(self) -> int:
        """Bytes of all encoded rows (before chunk compression)."""
        return self.num_rows * self.codec.row_bytes(self.dim)

    def _gather(self, ids: torch.Tensor, out: torch.Tensor) -> int:
        before = self.encoded.stats.disk_bytes
        out.copy_(self.codec.decode(self.encoded.read(ids), self.dim))
        return self.encoded.stats.disk_bytes - before

    @classmethod
    def from_tensor(cls, x: torch.Tensor, codec: Codec) -> FrozenLayerCache:
        """An in-memory cache of the float rows ``x`` (no disk)."""
        return cls(TensorStore(codec.encode(x)), codec, x.shape[1])

    @classmethod
    def open(cls, path: str | os.PathLike, *, host_budget: int | None = None,
             hot_ids: Any = None) -> FrozenLayerCache:
        """Open the cache at ``path`` with the encoded rows tiered by ``host_budget``.

        All encoded rows are loaded into RAM when they fit ``host_budget`` bytes (default
        half the available memory); otherwise the hottest (``hot_ids``, default by id)
        that fit go to a host cache in front of the disk; ``0`` reads every row from disk.
        """
        path = Path(path)
        info = read_info(path)
        codec = Codec(info.codec)  # type: ignore[arg-type]
        disk: StoreBase
        if info.lz4:
            disk = ChunkedRowStore(path / "rows.zarr")
        else:
            disk = DirectFileStore(path / "rows.bin", info.num_rows, info.row_bytes, np.uint8)
        budget = default_host_budget() if host_budget is None else int(host_budget)
        total = info.num_rows * info.row_bytes
        encoded: Any = disk
        if total and budget >= total:
            encoded = TensorStore(disk.read(torch.arange(info.num_rows)).clone())
        elif budget > 0 and total:
            hot = torch.arange(info.num_rows) if hot_ids is None else hot_ids
            encoded = TieredStore([HostCacheStore(disk, hot, budget), disk])
        cache = cls(encoded, codec, info.dim, info)
        cache.path = path
        cache.disk = disk
        cache.load_disk_bytes = disk.stats.disk_bytes  # read once here, not per epoch
        return cache

    @property
    def disk_nbytes(self) -> int:
        """Bytes of the encoded rows on disk (0 for an in-memory cache)."""
        if isinstance(self.disk, ChunkedRowStore):
            return self.disk.disk_nbytes
        return self.encoded_nbytes if self.disk is not None else 0


def read_info(path: Path) -> FrozenCacheInfo:
    """``frozen.json`` of the cache at ``path``, checked."""
    meta = path / META_NAME
    if not meta.is_file():
        raise DatasetError(f"{path} is not a frozen-layer cache (no {META_NAME}); rebuild it "
                           "by training with freezing again")
    try:
        data = json.loads(meta.read_text())
        if data.pop("format", None) != FORMAT or data.pop("version", None) != VERSION:
            raise ValueError("wrong format or version")
        info = FrozenCacheInfo(**data)
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{meta} is not a readable frozen-cache description ({exc}); "
                           "delete the cache directory and train again") from exc
    data_path = path / ("rows.zarr" if info.lz4 else "rows.bin")
    if not data_path.exists():
        raise DatasetError(f"{data_path} is missing; delete {path} and train again")
    return info


def write_frozen_cache(path: str | os.PathLike, batches: Iterable[tuple[int, torch.Tensor]],
                       *, num_rows: int, dim: int, codec: Codec, lz4: bool = True,
                       chunk_rows: int = DEFAULT_CHUNK_ROWS, frozen_layers: int = 0,
                       overwrite: bool = True, extra: dict[str, Any] | None = None
                       ) -> FrozenCacheInfo:
    """Encode ``(start, rows)`` batches, in order and covering ``0..num_rows``, to ``path``.

    Written under a temporary name and renamed when complete: a killed run leaves no
    cache. Returns what was written, including the largest error measured.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    width = codec.row_bytes(dim)
    info = FrozenCacheInfo(num_rows, dim, codec.name, lz4, chunk_rows, frozen_layers,
                           extra=dict(extra or {}))
    with atomic_directory(path, overwrite=overwrite) as tmp:
        sink = _ZarrSink(tmp / "rows.zarr", num_rows, width, chunk_rows) if lz4 \
            else _RawSink(tmp / "rows.bin")
        written = 0
        for start, rows in batches:
            if start != written:
                raise ValueError(f"batches must arrive in order: expected row {written}, "
                                 f"got {start}")
            rows = rows.detach().float().cpu()
            if rows.shape[1] != dim:
                raise ValueError(f"rows have {rows.shape[1]} channels, expected {dim}")
            encoded = codec.encode(rows)
            error = (codec.decode(encoded, dim) - rows).abs()
            if error.numel():
                worst = int(torch.argmax(error))
                info.max_abs_error = max(info.max_abs_error, float(error.view(-1)[worst]))
                info.max_bound = max(info.max_bound, float(codec.error_bound(rows).max()))
            sink.write(encoded.numpy())
            written += rows.shape[0]
        if written != num_rows:
            raise ValueError(f"batches covered {written} rows, expected {num_rows}")
        sink.close()
        record = {"format": FORMAT, "version": VERSION, **asdict(info)}
        (tmp / META_NAME).write_text(json.dumps(record, indent=1) + "\n")
    return info


class _RawSink:
    def __init__(self, path: Path) -> None:
        self.handle = open(path, "wb")

    def write(self, rows: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(rows).tobytes())

    def close(self) -> None:
        self.handle.close()


class _ZarrSink:
    """Buffers encoded rows and writes whole chunks (each chunk compressed once)."""

    def __init__(self, path: Path, num_rows: int, width: int, chunk_rows: int) -> None:
        # LZ4HC writes the LZ4 format (same decoder, same read speed); its slower,
        # thorough match search runs once per freeze and saves ~3% on INT4 caches.
        self.array = create_lz4_array(path, (width, num_rows), (width, chunk_rows),
                                      np.uint8, cname="lz4hc", clevel=9,
                                      shuffle="bitshuffle")
        self.chunk_rows = chunk_rows
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0
        self.flushed = 0

    def write(self, rows: np.ndarray) -> None:
        self.pending.append(rows)
        self.pending_rows += rows.shape[0]
        if self.pending_rows >= self.chunk_rows:
            self._flush(whole_chunks=True)

    def _flush(self, whole_chunks: bool) -> None:
        if not self.pending:
            return
        rows = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        take = rows.shape[0] // self.chunk_rows * self.chunk_rows if whole_chunks \
            else rows.shape[0]
        if take:
            self.array[:, self.flushed : self.flushed + take] = rows[:take].T
            self.flushed += take
        rest = rows[take:]
        self.pending = [rest] if rest.shape[0] else []
        self.pending_rows = rest.shape[0]

    def close(self) -> None:
        self._flush(whole_chunks=False)
