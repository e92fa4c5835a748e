"""Serve training batches from a pack (see :mod:`graphsys.storage.packing`).

A :class:`PackedStore` holds one segment of the pack in memory and reads the next one
in the background while batches of the current one are served: one sequential read
per segment, ``O_DIRECT`` where the filesystem allows, into one of two page-aligned
buffers of the largest segment's size. Rows the pack left to the host cache come from
a :class:`HostCacheStore` rebuilt from ``hot.bin``.

With ``device=`` (the loader's device path) reads return rows there: the segment
buffers and the host cache are page-locked, each segment is copied to one of two
device buffers on a copy stream once its disk read is in, and batches gather their
rows on the device (:func:`graphsys.cuda.gather_rows`; host-cache rows by UVA). The
read stream waits on the copy's event, not the host. KvikIO (GPUDirect Storage) is not
used: segments are read whole and sequentially, which the page-aligned ``O_DIRECT``
read already does at the disk's speed; the copy over the link is the extra step.
On ``device='cpu'`` the same code runs with host buffers (what CI tests).
"""

from __future__ import annotations

import mmap
import os
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch

from graphsys.cuda.gather import gather_rows
from graphsys._pinned import pin_inplace
from graphsys.errors import DatasetError
from graphsys.samplers.offline import batch_position
from graphsys.storage.base import StoreBase, close_quietly, torch_dtype
from graphsys.storage.host_cache import HostCacheStore
from graphsys.storage.pack_checks import PackChecksums
from graphsys.storage.packing import CHECKSUMS_NAME, PackIndex, batch_digest, read_pack_index


@numba.njit(nogil=True, parallel=True, cache=True)
def _gather_two_tiers(ids, seg_ids, seg_rows, slot, host_rows, out):
    """Copy row ``ids[i]`` into ``out[i]`` from the segment (sorted ``seg_ids``) if there,
    else from the host cache (``slot[id]`` >= 0). Rows are byte views. Returns
    ``from_segment`` flags; a row in neither is flagged -1."""
    flags = np.empty(ids.shape[0], np.int8)
    n_seg = seg_ids.shape[0]
    width = out.shape[1]
    for i in numba.prange(ids.shape[0]):
        v = ids[i]
        p = np.searchsorted(seg_ids, v) if n_seg else 0
        if p < n_seg and seg_ids[p] == v:
            for b in range(width):
                out[i, b] = seg_rows[p, b]
            flags[i] = 1
        elif slot.shape[0] and slot[v] >= 0:
            s = slot[v]
            for b in range(width):
                out[i, b] = host_rows[s, b]
            flags[i] = 0
        else:
            flags[i] = -1
    return flags


def _bytes(t: torch.Tensor) -> np.ndarray:
    """A 2-D tensor as a uint8 [rows, row_bytes] numpy view (no copy)."""
    return t.view(torch.uint8).numpy() if t.numel() else \
        np.empty((t.shape[0], t.shape[1] * t.element_size()), np.uint8)


class PackedStore(StoreBase):
    """A FeatureStore over a pack, for the batches it was packed for.

    Args:
        path: the pack directory (``graphsys pack``).
        source: the full feature store; needed to rebuild the host cache when the pack
            left hot rows to one (they are read once, in id order).
        host_cache: an already built host cache instead (must hold the pack's hot rows).
        fingerprint: the loader's (:func:`loader_fingerprint`); a pack made for other
            batches is refused.
        source_id: the features' identity; a pack of other features is refused.
        readahead: read segment ``s + 1`` in the background while ``s`` is served.
        device: return rows on this device, gathered there from segments copied on a
            side stream (see the module docstring); ``None``: host rows, one
            compiled pass over both tiers.

    Call :meth:`prepare` with each batch's ``(epoch, index, input_nodes)`` before
    reading its rows (the DataLoader does): it switches segments and checks that the
    batch is the one that was packed. Reads come from one thread (the loader's).
    """

    tier = "packed"

    def __init__(self, path: str | os.PathLike, *, source: Any = None, host_cache: Any = None,
                 fingerprint: str | None = None, source_id: str | None = None,
                 readahead: bool = True, device: torch.device | str | None = None) -> None:
        self.path = Path(path)
        self._fd = -1
        self._pool: ThreadPoolExecutor | None = None
        # The metadata files are hashed (checksums.json) and checked as they are read:
        # a flipped id would serve another node's row, or fail deep in a read.
        self._checks = PackChecksums(self.path)
        if (self.path / "pack.json").is_file():
            self._checks.check_file("pack.json")
        self.index: PackIndex = read_pack_index(self.path)
        if fingerprint is not None and fingerprint != self.index.fingerprint:
            raise DatasetError(
                f"{self.path} was packed for other batches (fingerprint "
                f"{self.index.fingerprint}, this loader's is {fingerprint}): the dataset, "
                "seeds, fanouts, batch size, seed or epochs differ; re-pack with the "
                "training options")
        if source_id and self.index.source_id and source_id != self.index.source_id:
            raise DatasetError(f"{self.path} was packed from other features (source "
                               f"{self.index.source_id[:12]}, these are {source_id[:12]}); "
                               "re-pack")
        self.np_dtype = np.dtype(self.index.dtype)
        self.target = None if device is None else torch.device(device)
        super().__init__(self.index.num_rows, self.index.dim, torch_dtype(self.np_dtype),
                         self.target or "cpu")
        self.host_cache = self._host_cache(source, host_cache)
        self.ids = self._checks.read("ids.bin", "<i8")
        # Per-segment CRC-32, checked as each segment is read (packs made before the
        # checksums existed have none and are read unchecked).
        crc_path = self.path / CHECKSUMS_NAME
        self.checksums = self._checks.read(CHECKSUMS_NAME, "<u4") \
            if crc_path.is_file() or self._checks.digests is not None else None
        if self.checksums is not None and len(self.checksums) != self.index.num_segments:
            raise DatasetError(f"{crc_path} holds {len(self.checksums)} checksums for "
                               f"{self.index.num_segments} segments: the pack is damaged; "
                               "re-pack")
        self.digests = self._checks.read("batches.bin", "<u8")
        try:
            self._fd = os.open(self.path / "rows.bin", os.O_RDONLY | getattr(os, "O_DIRECT", 0))
            self.direct = hasattr(os, "O_DIRECT")
        except OSError:  # tmpfs and some others refuse O_DIRECT
            self._fd = os.open(self.path / "rows.bin", os.O_RDONLY)
            self.direct = False
        size = max((self.index.segment_length(s) for s in range(self.index.num_segments)),
                   default=0)
        self._buffers = [mmap.mmap(-1, max(size, mmap.PAGESIZE)) for _ in range(2)]
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="graphsys-pack-read") \
            if readahead else None
        self._pending: tuple[int, int, Future] | None = None  # (segment, buffer, read)
        self.segment = -1
        self._buffer = 0
        self._seg_ids = np.empty(0, np.int64)
        self._seg_rows = torch.empty((0, self.dim), dtype=self.dtype)
        if self.target is not None:
            self._setup_device(size)

    # -- the device variant ------------------------------------------------------------

    def _setup_device(self, segment_bytes: int) -> None:
        on_gpu = self.target.type == "cuda"
        # Page-locked buffers: the copy to the GPU is a DMA at link speed, and host-cache
        # rows are read by the UVA gather without a staging copy.
        self._pinned = [pin_inplace(torch.frombuffer(b, dtype=torch.uint8)) for b in
                        self._buffers] if on_gpu else []
        if self.host_cache is not None and on_gpu:
            self.host_cache.rows = pin_inplace(self.host_cache.rows)
        rows = segment_bytes // self.row_bytes
        self._dev_rows = [torch.empty((rows, self.dim), dtype=self.dtype, device=self.target)
                          for _ in range(2)] if on_gpu else []
        self._copy_stream = torch.cuda.Stream(self.target) if on_gpu else None
        self._copied: list[Any] = [None, None]  # the copy event of each device buffer

    def _to_device(self, buffer: int, host_rows: torch.Tensor) -> torch.Tensor:
        """The segment in ``buffer`` on the device: copied there on the copy stream."""
        if self._copy_stream is None:
            return host_rows
        rows = self._dev_rows[buffer][: host_rows.shape[0]]
        # The device buffer last held the segment before the previous one: its reads
        # were queued on the current stream, so the copy waits for them (on the GPU).
        self._copy_stream.wait_stream(torch.cuda.current_stream(self.target))
        with torch.cuda.stream(self._copy_stream):
            rows.copy_(host_rows, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._copy_stream)
        self._copied[buffer] = event
        return rows

    def _host_buffer_free(self, buffer: int) -> None:
        """Wait until the copy out of host ``buffer`` is done before it is read into."""
        event = self._copied[buffer] if self.target is not None else None
        if event is not None:
            event.synchronize()  # the loader's thread waits, not the training stream

    def _read_on_device(self, ids: torch.Tensor, out: torch.Tensor) -> int:
        """Fill ``out`` (on the device) with rows ``ids``; return rows from the segment."""
        n_seg = self._seg_ids.shape[0]
        want = ids.numpy()
        pos = np.searchsorted(self._seg_ids, want) if n_seg else np.zeros(len(want), np.int64)
        in_seg = np.zeros(len(want), bool)
        if n_seg:
            in_seg = self._seg_ids[np.minimum(pos, n_seg - 1)] == want
        cache = self.host_cache
        rest = ids[torch.from_numpy(~in_seg)]
        slots = cache.slot[rest] if cache is not None else torch.full_like(rest, -1)
        if bool((slots < 0).any()):
            raise KeyError(f"some rows asked are neither in segment {self.segment} of "
                           f"{self.path} nor in its host cache: the batch was not in the "
                           "offline sampling log")
        event = self._copied[self._buffer]
        if event is not None:
            torch.cuda.current_stream(self.target).wait_event(event)
        here = torch.from_numpy(np.flatnonzero(in_seg)).to(self.device, non_blocking=True)
        seg_pos = torch.from_numpy(pos[in_seg]).to(self.device, non_blocking=True)
        out.index_copy_(0, here, gather_rows(self._dev_seg_rows, seg_pos, check=False))
        if rest.numel():
            there = torch.from_numpy(np.flatnonzero(~in_seg)).to(self.device, non_blocking=True)
            out.index_copy_(0, there, gather_rows(cache.rows, slots.long().to(self.device),
                                                  check=False))
        return int(in_seg.sum())

    def describe(self) -> str:
        """How segments reach the reader (``graphsys train`` logs it)."""
        read = "O_DIRECT" if self.direct else "buffered reads (no O_DIRECT here)"
        if self.target is None or self.target.type != "cuda":
            return f"segments by {read} into host buffers"
        return (f"segments by {read} into pinned host buffers, copied to {self.target} on a "
                "copy stream (double-buffered)")

    def _host_cache(self, source: Any, host_cache: Any) -> HostCacheStore | None:
        hot = self._checks.read("hot.bin", "<i8")
        if not len(hot):
            return host_cache
        if hot.min() < 0 or hot.max() >= self.index.num_rows:  # a pack without checksums
            raise DatasetError(f"{self.path / 'hot.bin'} holds row ids outside [0, "
                               f"{self.index.num_rows}): the pack is damaged; re-pack "
                               "(graphsys pack --overwrite)")
        if host_cache is None:
            if source is None:
                raise ValueError(f"{self.path} left {len(hot)} hot rows to a host cache; "
                                 "pass source= (the dataset's feature store) to load them")
            return HostCacheStore(source, torch.from_numpy(hot), budget=len(hot) * self.row_bytes)
        if not np.array_equal(host_cache.cached_ids.numpy(), hot):
            raise ValueError(f"the host cache passed holds other rows than {self.path} "
                             "was packed around; pass source= instead and let the store "
                             "rebuild it")
        return host_cache

    @property
    def memory_bytes(self) -> int:
        """RAM this store holds: host cache plus the two segment buffers."""
        cache = self.host_cache.nbytes if self.host_cache is not None else 0
        return cache + sum(len(b) for b in self._buffers)

    def _segment_at(self, position: int) -> int:
        """The segment holding the batch at ``position`` in packing order."""
        return int(np.searchsorted(self.index.segment_batch_offsets, position, side="right")) - 1

    def prepare(self, epoch: int, index: int, input_nodes: Any = None) -> None:
        """Make the segment of batch ``index`` of ``epoch`` current; check the batch."""
        if int(epoch) not in self.index.epochs:
            raise KeyError(f"epoch {epoch} was not packed (pack has {self.index.epochs}); "
                           "re-pack with more epochs")
        if not 0 <= index < self.index.batches_per_epoch:
            raise KeyError(f"batch {index} is outside the {self.index.batches_per_epoch} "
                           f"batches per epoch of {self.path}")
        position = batch_position(self.index.epochs, self.index.batches_per_epoch, epoch, index)
        if input_nodes is not None:
            nodes = input_nodes.numpy() if isinstance(input_nodes, torch.Tensor) else \
                np.asarray(input_nodes)
            if batch_digest(nodes) != int(self.digests[position]):
                raise DatasetError(
                    f"batch {index} of epoch {epoch} is not the batch {self.path} packed: "
                    "the graph or sampler changed since packing; re-pack")
        seg = self._segment_at(position)
        if seg != self.segment:
            self._switch(seg)

    def _switch(self, seg: int) -> None:
        waited = time.perf_counter()
        if self._pending is not None and self._pending[0] == seg:
            _, buffer, read = self._pending
            self._pending = None
            nbytes, seconds = read.result()
        else:
            if self._pending is not None:  # a read-ahead of another segment: let it finish
                self._pending[2].result()
                self._pending = None
            buffer = 1 - self._buffer
            self._host_buffer_free(buffer)
            nbytes, seconds = self._read_segment(seg, buffer)
        self.stats.add_disk(nbytes, seconds)
        # Time the reader stood waiting for the segment: part of feature loading.
        self.stats.add(self.tier, 0, 0, time.perf_counter() - waited)
        rows = self.index.segment_rows(seg)
        lo = self.index.segment_id_offsets[seg]
        self.segment, self._buffer = seg, buffer
        self._seg_ids = self.ids[lo : lo + rows]
        flat = torch.frombuffer(self._buffers[buffer], dtype=self.dtype,
                                count=rows * self.dim) if rows else torch.empty(0, dtype=self.dtype)
        self._seg_rows = flat.view(rows, self.dim)
        if self.target is not None:
            self._dev_seg_rows = self._to_device(buffer, self._seg_rows)
        if self._pool is not None and seg + 1 < self.index.num_segments:
            other = 1 - buffer
            self._host_buffer_free(other)
            self._pending = (seg + 1, other,
                             self._pool.submit(self._read_segment, seg + 1, other))

    def _read_segment(self, seg: int, buffer: int) -> tuple[int, float]:
        start = time.perf_counter()
        length = self.index.segment_length(seg)
        offset = self.index.segment_byte_offsets[seg]
        got = 0
        with memoryview(self._buffers[buffer]) as view:
            while got < length:
                with view[got:length] as target:
                    n = os.preadv(self._fd, [target], offset + got)
                if n <= 0:
                    raise DatasetError(f"{self.path / 'rows.bin'} ended early: the pack is "
                                       "truncated; re-pack")
                got += n
            if self.checksums is not None and \
                    zlib.crc32(view[:length]) != int(self.checksums[seg]):
                raise DatasetError(f"segment {seg} of {self.path / 'rows.bin'} fails its "
                                   "checksum: the pack is damaged; re-pack (graphsys pack "
                                   "--overwrite)")
        return got, time.perf_counter() - start

    def read(self, ids: Any, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``ids`` of the current batch: from its segment, else the host cache."""
        ids = self._ids(ids)
        out = self._out(ids.numel(), out)
        self.stats.reads += 1
        if not ids.numel():
            return out
        if self.segment < 0:
            raise RuntimeError("call prepare(epoch, index) before reading from a PackedStore")
        start = time.perf_counter()
        cache = self.host_cache
        if self.target is not None:
            n_seg = self._read_on_device(ids, out)
        else:
            slot = cache.slot.numpy() if cache is not None else np.empty(0, np.int32)
            host_rows = _bytes(cache.rows) if cache is not None else np.empty((0, 0), np.uint8)
            flags = _gather_two_tiers(ids.numpy(), self._seg_ids, _bytes(self._seg_rows), slot,
                                      host_rows, _bytes(out))
            if (flags < 0).any():
                raise KeyError(f"some rows asked are neither in segment {self.segment} of "
                               f"{self.path} nor in its host cache: the batch was not in the "
                               "offline sampling log")
            n_seg = int(flags.sum())
        # One pass serves both tiers; its time is split between them by rows.
        seconds = time.perf_counter() - start
        n_host = ids.numel() - n_seg
        share = n_seg / ids.numel()
        self.stats.add(self.tier, n_seg, n_seg * self.row_bytes, seconds * share)
        if n_host:
            self.stats.add(cache.tier, n_host, n_host * self.row_bytes, seconds * (1 - share))
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        close_quietly(self)
