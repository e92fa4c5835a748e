"""DiskGNN-style packed features: each segment's rows laid out contiguously on disk.

Offline sampling tells which rows each batch needs. Batches are grouped into segments
of ``segment_batches``; a segment's distinct rows (minus those the host cache holds)
are written together, sorted by id, starting at a 4 KiB boundary. Training then reads
a whole segment with one sequential ``O_DIRECT`` read and serves its batches from
memory: no read amplification beyond the alignment padding, and large reads instead
of random 512-byte ones. The price is storage: a row needed by several segments is
stored once per segment (``PackIndex.overhead`` reports it).

A pack is a directory written atomically: ``pack.json`` (fingerprint, shapes, segment
table), ``ids.bin`` (int64 node ids per segment) and ``rows.bin``.
"""

from __future__ import annotations

import json
import mmap
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphsys._atomic import atomic_directory
from graphsys._progress import progress_bar
from graphsys.errors import DatasetError
from graphsys.samplers.offline import SamplingLog, batch_position
from graphsys.storage.base import StoreBase, close_quietly, torch_dtype
from graphsys.storage.direct import ALIGN

FORMAT = "graphsys.pack"
VERSION = 1


@dataclass
class PackIndex:
    """The ``pack.json`` of a pack."""

    format: str
    version: int
    fingerprint: str
    num_rows: int
    dim: int
    dtype: str
    segment_batches: int
    num_batches: int
    epochs: list[int]
    batches_per_epoch: int
    segment_byte_offsets: list[int]  # into rows.bin, each a multiple of ALIGN
    segment_id_offsets: list[int]  # into ids.bin, len = segments + 1
    host_cached: int
    packed_rows: int
    packed_bytes: int

    @property
    def num_segments(self) -> int:
        return len(self.segment_id_offsets) - 1

    @property
    def overhead(self) -> float:
        """Bytes on disk in the pack per byte of the original feature file."""
        row_bytes = self.dim * np.dtype(self.dtype).itemsize
        return self.packed_bytes / max(1, self.num_rows * row_bytes)


def pack_features(log: SamplingLog, source: Any, out: str | os.PathLike, *,
                  segment_batches: int = 16, host_cache: Any = None, overwrite: bool = False,
                  progress: bool = True) -> PackIndex:
    """Write the rows of each segment of ``log`` contiguously into the pack ``out``.

    ``source`` is any FeatureStore (read segment by segment, so memory stays at one
    segment's rows); rows that ``host_cache.contains`` are left out of the pack.
    """
    if segment_batches < 1:
        raise ValueError(f"segment_batches must be >= 1, got {segment_batches}")
    np_dtype = torch.empty(0, dtype=source.dtype).numpy().dtype
    row_bytes = source.dim * np_dtype.itemsize
    n_seg = -(-log.num_batches // segment_batches)
    byte_offsets, id_offsets = [], [0]
    packed_rows = 0
    with atomic_directory(out, overwrite=overwrite) as tmp, \
            open(tmp / "rows.bin", "wb") as rows_file, open(tmp / "ids.bin", "wb") as ids_file, \
            progress_bar(total=n_seg, desc="packing", unit="segment", enable=progress) as bar:
        position = 0
        for s in range(n_seg):
            lo = log.offsets[s * segment_batches]
            hi = log.offsets[min(log.num_batches, (s + 1) * segment_batches)]
            ids = np.unique(log.input_nodes[lo:hi])
            if host_cache is not None and len(ids):
                ids = ids[~host_cache.contains(torch.from_numpy(ids)).numpy()]
            rows = source.read(torch.from_numpy(ids)).numpy() if len(ids) else \
                np.empty((0, source.dim), np_dtype)
            byte_offsets.append(position)
            data = rows.tobytes()
            pad = -len(data) % ALIGN
            rows_file.write(data)
            rows_file.write(b"\0" * pad)
            position += len(data) + pad
            ids_file.write(ids.astype(np.int64).tobytes())
            packed_rows += len(ids)
            id_offsets.append(packed_rows)
            bar.update(1)
        index = PackIndex(FORMAT, VERSION, log.fingerprint, source.num_rows, source.dim,
                          np_dtype.name, segment_batches, log.num_batches, list(log.epochs),
                          log.batches_per_epoch, byte_offsets, id_offsets,
                          0 if host_cache is None else int(len(host_cache.cached_ids)),
                          packed_rows, packed_rows * row_bytes)
        (tmp / "pack.json").write_text(json.dumps(asdict(index), indent=1) + "\n")
    return index


def read_pack_index(path: str | os.PathLike) -> PackIndex:
    path = Path(path)
    try:
        data = json.loads((path / "pack.json").read_text())
        index = PackIndex(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise DatasetError(f"{path} is not a readable graphsys pack ({exc}); re-create it "
                           "with graphsys pack") from exc
    if index.format != FORMAT or index.version != VERSION:
        raise DatasetError(f"{path} is a pack of format {index.format} v{index.version}; "
                           f"this graphsys reads {FORMAT} v{VERSION}; re-pack")
    row_bytes = index.dim * np.dtype(index.dtype).itemsize
    expected = 0
    if index.num_segments:
        last_rows = index.segment_id_offsets[-1] - index.segment_id_offsets[-2]
        expected = index.segment_byte_offsets[-1] + -(-last_rows * row_bytes // ALIGN) * ALIGN
    sizes = {"ids.bin": index.packed_rows * 8, "rows.bin": expected}
    for name, size in sizes.items():
        actual = (path / name).stat().st_size if (path / name).is_file() else -1
        if actual != size:
            raise DatasetError(f"{path / name} is {actual} bytes, the pack index expects "
                               f"{size}: the pack is truncated or damaged; re-create it "
                               "with graphsys pack")
    return index


class PackedStore(StoreBase):
    """Serve batch reads from the packed segment of the current batch.

    Call :meth:`prepare` with the batch's ``(epoch, index)`` before reading its rows
    (the DataLoader does); the segment is read whole, with ``O_DIRECT`` when the
    filesystem allows. Rows the pack left out are served by ``host_cache``.
    """

    tier = "packed"

    def __init__(self, path: str | os.PathLike, *, fingerprint: str | None = None,
                 host_cache: Any = None) -> None:
        self.path = Path(path)
        self.index = read_pack_index(self.path)
        if fingerprint is not None and fingerprint != self.index.fingerprint:
            raise DatasetError(
                f"{self.path} was packed for other batches (fingerprint "
                f"{self.index.fingerprint}, this loader's is {fingerprint}): the dataset, "
                "seeds, fanouts, batch size, seed or epochs differ; re-pack with the "
                "training options")
        np_dtype = np.dtype(self.index.dtype)
        super().__init__(self.index.num_rows, self.index.dim, torch_dtype(np_dtype))
        if self.index.host_cached and host_cache is None:
            raise ValueError(f"{self.path} left {self.index.host_cached} hot rows to a host "
                             "cache; pass the same host_cache")
        self.host_cache = host_cache
        self.np_dtype = np_dtype
        self.ids = np.fromfile(self.path / "ids.bin", dtype=np.int64)
        flags = os.O_RDONLY | getattr(os, "O_DIRECT", 0)
        try:
            self._fd = os.open(self.path / "rows.bin", flags)
            self.direct = bool(getattr(os, "O_DIRECT", 0))
        except OSError:
            self._fd = os.open(self.path / "rows.bin", os.O_RDONLY)
            self.direct = False
        self.segment = -1
        self._seg_ids = np.empty(0, np.int64)
        self._seg_rows = torch.empty((0, self.dim), dtype=self.dtype)

    def segment_of(self, epoch: int, index: int) -> int:
        position = batch_position(self.index.epochs, self.index.batches_per_epoch, epoch, index)
        return position // self.index.segment_batches

    def prepare(self, epoch: int, index: int) -> None:
        """Make the segment holding batch ``index`` of ``epoch`` current (reading it)."""
        if int(epoch) not in self.index.epochs:
            raise KeyError(f"epoch {epoch} was not packed (pack has {self.index.epochs}); "
                           "re-pack with more epochs")
        seg = self.segment_of(epoch, index)
        if seg != self.segment:
            self._load(seg)

    def _load(self, seg: int) -> None:
        start = time.perf_counter()
        lo, hi = self.index.segment_id_offsets[seg], self.index.segment_id_offsets[seg + 1]
        nbytes = (hi - lo) * self.row_bytes
        length = -(-nbytes // ALIGN) * ALIGN
        rows = torch.empty((hi - lo, self.dim), dtype=self.dtype)
        disk = 0
        if length:
            buf = mmap.mmap(-1, length)
            try:
                got = 0
                with memoryview(buf) as view:
                    while got < length:
                        n = os.preadv(self._fd, [view[got:]],
                                      self.index.segment_byte_offsets[seg] + got)
                        if n <= 0:
                            raise DatasetError(f"{self.path / 'rows.bin'} ended early: "
                                               "the pack is truncated; re-pack")
                        got += n
                disk = got
                array = np.frombuffer(buf, dtype=self.np_dtype, count=(hi - lo) * self.dim)
                rows.copy_(torch.from_numpy(array.reshape(hi - lo, self.dim)))
                del array
            finally:
                buf.close()
        self.segment = seg
        self._seg_ids = self.ids[lo:hi]
        self._seg_rows = rows
        self.stats.add("packed-segment-load", 0, 0, time.perf_counter() - start, disk)

    def _gather(self, ids: torch.Tensor, out: torch.Tensor) -> None:
        if self.segment < 0:
            raise RuntimeError("call prepare(epoch, index) before reading from a PackedStore")
        ids_np = ids.numpy()
        pos = np.searchsorted(self._seg_ids, ids_np)
        pos = np.minimum(pos, max(0, len(self._seg_ids) - 1))
        found = (self._seg_ids[pos] == ids_np) if len(self._seg_ids) else \
            np.zeros(len(ids_np), bool)
        found_t = torch.from_numpy(found)
        if found.any():
            out[found_t] = self._seg_rows[torch.from_numpy(pos[found])]
        if not found.all():
            missing = ~found_t
            if self.host_cache is None:
                raise KeyError(f"node {int(ids[missing][0])} is not in segment {self.segment} "
                               "of the pack: the batch was not in the offline sampling log")
            out[missing] = self.host_cache.read(ids[missing])

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        close_quietly(self)
