"""Reads of a raw row-major file that bypass the page cache (``O_DIRECT``).

Benchmarks must measure the disk, not memory: with ``O_DIRECT`` every read goes to the
device, in whole aligned blocks, and the store counts exactly the bytes it asked for.
Rows are sorted and deduplicated, the aligned blocks holding them merged into runs,
and the runs read concurrently by a thread pool (SSDs need deep queues).
"""

from __future__ import annotations

import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import torch

from graphsys.storage.base import StoreBase, check_row_file, close_quietly, torch_dtype

#: Alignment of O_DIRECT offsets, lengths and buffers (a page; covers 512 B and 4 KiB
#: logical sectors).
ALIGN = 4096


@numba.njit(nogil=True, parallel=True, cache=True)
def _copy_rows(buf, positions, row_bytes, out):
    for i in numba.prange(positions.shape[0]):
        p = positions[i]
        for b in range(row_bytes):
            out[i, b] = buf[p + b]


@numba.njit(nogil=True, cache=True)
def _runs(first_block, last_block, max_blocks, max_gap):
    """Merge sorted block ranges ``[first, last]`` into runs of at most ``max_blocks``,
    bridging gaps of up to ``max_gap`` unwanted blocks."""
    n = first_block.shape[0]
    starts = np.empty(n, np.int64)
    ends = np.empty(n, np.int64)
    count = 0
    start, end = first_block[0], last_block[0]
    for i in range(1, n):
        f, last = first_block[i], last_block[i]
        if f <= end + 1 + max_gap and last - start < max_blocks:
            end = max(end, last)
        else:
            starts[count], ends[count] = start, end
            count += 1
            start, end = f, last
    starts[count], ends[count] = start, end
    return starts[: count + 1].copy(), ends[: count + 1].copy()


class DirectFileStore(StoreBase):
    """Rows of a raw row-major file, read with ``O_DIRECT`` by a pool of threads.

    Args:
        path: the file (``features.bin`` of a raw dataset: no header, row-major).
        num_rows, dim, dtype: its shape and element type.
        threads: concurrent read requests.
        max_run: the longest single read, in bytes.
        max_gap: bytes of unwanted data one read may bridge to save a request (on a
            device doing R random reads/s at B bytes/s, gaps under B/R are cheaper to
            read than to skip); 0 reads only blocks that hold asked rows. The default,
            32 KiB, halved the time of 150k random rows on the SSD of bench/out_of_core.py
            (at 3x the bytes).
        max_buffer: bytes of runs read at once (bounds the memory of one read).

    Where the filesystem refuses ``O_DIRECT`` (tmpfs), reads go through the page cache
    with the file's cached pages dropped first (``posix_fadvise(DONTNEED)``) and
    ``direct`` is False.
    """

    tier = "direct"

    def __init__(self, path: str | os.PathLike, num_rows: int, dim: int,
                 dtype: np.dtype | str, *, threads: int = 16, max_run: int = 1 << 20,
                 max_gap: int = 32 << 10, max_buffer: int = 64 << 20) -> None:
        super().__init__(num_rows, dim, torch_dtype(dtype))
        self.path = Path(path)
        self.file_size = check_row_file(self.path, num_rows, dim, np.dtype(dtype))
        self.max_blocks = max(1, max_run // ALIGN)
        if max_gap < 0:
            raise ValueError(f"max_gap must be >= 0 bytes, got {max_gap}")
        self.max_gap = max_gap // ALIGN
        self.max_buffer = max(ALIGN, int(max_buffer))
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
            self.direct = hasattr(os, "O_DIRECT")
            self._probe()
        except OSError:
            self._fd = os.open(self.path, os.O_RDONLY)
            self.direct = False
        if not self.direct and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
        self._pool = ThreadPoolExecutor(max_workers=threads,
                                        thread_name_prefix="graphsys-direct-io")

    def _probe(self) -> None:
        if self.file_size:
            buf = mmap.mmap(-1, ALIGN)
            try:
                os.preadv(self._fd, [buf], 0)
            finally:
                buf.close()

    def _gather(self, ids: torch.Tensor, out: torch.Tensor) -> int:
        unique, inverse = torch.unique(ids, return_inverse=True)
        rows = unique.numpy()
        rb = self.row_bytes
        byte_start = rows * rb
        starts, ends = _runs(byte_start // ALIGN, (byte_start + rb - 1) // ALIGN,
                             self.max_blocks, self.max_gap)
        lengths = (ends - starts + 1) * ALIGN
        ends_cum = np.cumsum(lengths)
        run_of_row = np.searchsorted(starts * ALIGN, byte_start, side="right") - 1
        dense = np.empty((len(rows), rb), np.uint8)
        disk = 0
        first = 0
        while first < len(starts):  # groups of runs, so the read buffer stays bounded
            before = ends_cum[first - 1] if first else 0
            last = max(first + 1, int(np.searchsorted(ends_cum, before + self.max_buffer,
                                                      side="right")))
            disk += self._read_runs(starts[first:last], lengths[first:last], byte_start,
                                    run_of_row, first, last, dense)
            first = last
        torch.index_select(torch.from_numpy(dense).view(self.dtype), 0, inverse, out=out)
        return disk

    def _read_runs(self, starts: np.ndarray, lengths: np.ndarray, byte_start: np.ndarray,
                   run_of_row: np.ndarray, first: int, last: int, dense: np.ndarray) -> int:
        """Read runs ``first:last`` concurrently and copy their rows into ``dense``."""
        offsets = np.zeros(len(starts) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        buf = mmap.mmap(-1, int(offsets[-1]))  # page aligned, as O_DIRECT requires
        try:
            with memoryview(buf) as view:
                def read_run(k: int) -> int:
                    with view[offsets[k] : offsets[k + 1]] as target:
                        return os.preadv(self._fd, [target], int(starts[k]) * ALIGN)

                disk = sum(self._pool.map(read_run, range(len(starts))))
            lo, hi = np.searchsorted(run_of_row, [first, last])
            local = run_of_row[lo:hi] - first
            positions = offsets[local] + byte_start[lo:hi] - starts[local] * ALIGN
            data = np.frombuffer(buf, np.uint8)
            _copy_rows(data, positions, self.row_bytes, dense[lo:hi])
            del data  # the mmap cannot close while numpy holds a view of it
        finally:
            buf.close()
        return disk

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        close_quietly(self)
