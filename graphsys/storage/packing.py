"""Offline packing (DiskGNN): the rows of each group of batches laid out contiguously.

An offline sampling log says which rows every batch will read. Consecutive batches are
grouped into *segments* of at most ``segment_bytes`` of distinct rows; rows the host
cache holds are left out. A segment's rows are stored sorted by id from a 4 KiB
boundary, so training reads a whole segment with one sequential read and wastes
nothing but the alignment padding. The price is disk space: a row needed by several
segments is stored once in each (:attr:`PackIndex.overhead`).

Packing is out of core and resumable. The segment plan comes from the log; the source
is then read once, in id order, in chunks of ``chunk_bytes``; because each segment's
ids are sorted, the rows a chunk gives a segment land in one contiguous range of it,
so a chunk costs one write per segment. Work happens in ``.<name>.packing`` beside
the output, with the chunks done recorded after each fsync; a killed run is resumed by
the next ``pack_features`` with the same plan (or restarted when the plan changed),
and the pack appears under its name only when complete.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import zlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphsys._atomic import atomic_write_bytes, fsync_dir, fsync_file, publish_directory
from graphsys._progress import progress_bar
from graphsys._sizes import format_size
from graphsys.errors import BudgetError, DatasetError, DatasetExistsError, DiskSpaceError
from graphsys.samplers.offline import SamplingLog
from graphsys.storage.direct import ALIGN
from graphsys.storage.pack_checks import write_pack_checksums

FORMAT = "graphsys.pack"
VERSION = 2
#: Default bound on one segment's rows in memory (and so on one sequential read).
DEFAULT_SEGMENT_BYTES = 256 << 20
#: Source rows read per packing step.
DEFAULT_CHUNK_BYTES = 128 << 20
#: A pack more than this many times its features gets a warning before it is written:
#: at small budgets DiskGNN's duplication (a row in every segment that reads it) grows.
WARN_OVERHEAD = 2.0
#: Free space a pack must leave on its file system: a disk filled to the last byte
#: breaks more than graphsys (logs, the page cache's writeback, other users).
SPACE_RESERVE = 256 << 20


@dataclass
class PackIndex:
    """The ``pack.json`` of a pack: what it was made for and where each segment lies."""

    format: str
    version: int
    fingerprint: str  # of the loader whose batches were packed
    num_rows: int
    dim: int
    dtype: str
    epochs: list[int]
    batches_per_epoch: int
    num_batches: int
    segment_bytes: int
    segment_batch_offsets: list[int]  # batch positions; len = segments + 1
    segment_id_offsets: list[int]  # into ids.bin; len = segments + 1
    segment_byte_offsets: list[int]  # into rows.bin, multiples of ALIGN; len = segments
    host_cached: int  # rows left to the host cache (their ids in hot.bin)
    packed_rows: int
    rows_file_bytes: int
    source_id: str = ""  # identity of the feature data (e.g. its sha256), if given

    @property
    def num_segments(self) -> int:
        return len(self.segment_id_offsets) - 1

    @property
    def row_bytes(self) -> int:
        return self.dim * np.dtype(self.dtype).itemsize

    @property
    def overhead(self) -> float:
        """Bytes of ``rows.bin`` per byte of the original feature matrix."""
        return self.rows_file_bytes / max(1, self.num_rows * self.row_bytes)

    def segment_rows(self, seg: int) -> int:
        return self.segment_id_offsets[seg + 1] - self.segment_id_offsets[seg]

    def segment_length(self, seg: int) -> int:
        """Bytes of segment ``seg`` in ``rows.bin``, padding included."""
        return _aligned(self.segment_rows(seg) * self.row_bytes)

    @property
    def disk_bytes(self) -> int:
        """Bytes the finished pack occupies: rows plus ids, digests and checksums."""
        return (self.rows_file_bytes + 8 * (self.packed_rows + self.host_cached
                                            + self.num_batches) + 4 * self.num_segments)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def batch_digest(input_nodes: np.ndarray) -> int:
    """A 64-bit digest of a batch's input nodes (a pack checks training against it)."""
    data = np.ascontiguousarray(input_nodes, dtype=np.int64).tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


@dataclass
class PackPlan:
    """Segments of a log: batch boundaries and each segment's sorted, uncached ids."""

    batch_offsets: np.ndarray  # int64 [segments + 1]
    segment_ids: list[np.ndarray]


def plan_segments(log: SamplingLog, row_bytes: int, segment_bytes: int,
                  cached: np.ndarray | None = None, num_rows: int | None = None) -> PackPlan:
    """Group consecutive batches while their distinct uncached rows fit ``segment_bytes``.

    Raises :class:`BudgetError` if one batch alone does not fit.
    """
    limit = segment_bytes // row_bytes
    if num_rows is None:
        num_rows = int(log.input_nodes.max()) + 1 if len(log.input_nodes) else 0
    stamp = np.full(num_rows, -1, dtype=np.int32)  # segment that last took each row
    offsets, segments, parts = [0], [], []
    count = seg = 0
    for b in range(log.num_batches):
        ids = log.batch(b)
        if cached is not None:
            ids = ids[~cached[ids]]
        ids = np.unique(ids)
        if len(ids) > limit:
            raise BudgetError(
                f"batch {b} needs {format_size(len(ids) * row_bytes)} of rows outside the "
                f"host cache, more than a segment may hold ({format_size(segment_bytes)}): "
                "the budget is smaller than one batch. Raise --host-cache (or the segment "
                "size), or lower --batch-size or --fanouts")
        fresh = ids[stamp[ids] != seg]
        if count + len(fresh) > limit and b > offsets[-1]:
            segments.append(np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64))
            offsets.append(b)
            parts, count, seg = [], 0, seg + 1
            fresh = ids
        stamp[fresh] = seg
        parts.append(fresh)
        count += len(fresh)
    if log.num_batches:
        segments.append(np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64))
        offsets.append(log.num_batches)
    return PackPlan(np.asarray(offsets, dtype=np.int64), segments)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a second packer of the same output fails)."""
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetError(f"another graphsys pack is writing {path.name[1:-5]} (lock "
                               f"{path}); wait for it or pick another output") from None
        yield
    finally:
        handle.close()


#: One CRC-32 per segment of ``rows.bin`` (padding included), uint32 little-endian.
CHECKSUMS_NAME = "segments.crc32"


def segment_checksums(rows_path: Path, index: PackIndex) -> np.ndarray:
    """CRC-32 of every segment of ``rows_path``, read once, sequentially."""
    crcs = np.zeros(index.num_segments, dtype="<u4")
    with open(rows_path, "rb") as handle:
        for seg in range(index.num_segments):
            handle.seek(index.segment_byte_offsets[seg])
            crcs[seg] = zlib.crc32(handle.read(index.segment_length(seg)))
    return crcs


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def pack_features(log: SamplingLog, source: Any, out: str | os.PathLike, *,
                  segment_bytes: int = DEFAULT_SEGMENT_BYTES, host_cache: Any = None,
                  overwrite: bool = False, restart: bool = False,
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES, source_id: str = "",
                  progress: bool = True,
                  warn: Callable[[str], None] | None = None,
                  admit: Callable[[PackIndex], None] | None = None) -> PackIndex:
    """Pack the rows of ``log``'s batches from ``source`` into the directory ``out``.

    Args:
        log: the offline sampling log (:func:`graphsys.samplers.offline.offline_sample`).
        source: any FeatureStore holding all rows (read once, in id order).
        out: the pack directory to create.
        segment_bytes: most bytes of rows one segment holds (read whole in training).
        host_cache: a :class:`HostCacheStore` whose rows are left out of the pack; its
            ids are saved in ``hot.bin`` so training rebuilds the same cache.
        overwrite: replace an existing pack at ``out``.
        restart: discard an interrupted run's work instead of resuming it.
        chunk_bytes: source rows read per step (bounds memory with ``segment_bytes``).
        source_id: names the feature data (a checksum); training from other features
            is then refused.
        warn: where the warning about a pack much larger than its features goes.
        admit: called with the planned index before anything is written (a disk budget
            waits there for room, or raises to refuse the pack).

    Raises:
        DiskSpaceError: before writing, when ``out``'s file system cannot hold the pack
            (and keep :data:`SPACE_RESERVE` free); or when it fills up while packing, in
            which case the work directory is removed so nothing keeps the space.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise DatasetExistsError(f"pack {out} already exists; pass --overwrite to replace it "
                                 "or choose another --out")
    if segment_bytes < 0 or chunk_bytes < 1:
        raise ValueError("segment_bytes must be >= 0 and chunk_bytes positive")
    np_dtype = torch.empty(0, dtype=source.dtype).numpy().dtype
    row_bytes = source.dim * np_dtype.itemsize
    hot = np.empty(0, np.int64)
    cached = None
    if host_cache is not None:
        hot = host_cache.cached_ids.numpy().astype(np.int64)
        cached = host_cache.cached_mask()
    plan = plan_segments(log, row_bytes, segment_bytes, cached, source.num_rows)
    id_offsets = np.zeros(len(plan.segment_ids) + 1, np.int64)
    np.cumsum([len(s) for s in plan.segment_ids], out=id_offsets[1:])
    lengths = [_aligned(len(s) * row_bytes) for s in plan.segment_ids]
    byte_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = PackIndex(FORMAT, VERSION, log.fingerprint, source.num_rows, source.dim,
                      np_dtype.name, list(log.epochs), log.batches_per_epoch, log.num_batches,
                      int(segment_bytes), plan.batch_offsets.tolist(), id_offsets.tolist(),
                      byte_offsets[:-1].tolist(), len(hot), int(id_offsets[-1]),
                      int(byte_offsets[-1]), source_id)
    if admit is not None:
        admit(index)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_name(f".{out.name}.packing")
    if index.overhead > WARN_OVERHEAD and warn is not None:
        warn(f"warning: the pack will be {format_size(index.disk_bytes)}, "
             f"{index.overhead:.1f}x the features: many batches read the same rows at this "
             "budget; a larger --host-cache or fewer --epochs per pack makes it smaller")
    with _locked(out.with_name(f".{out.name}.lock")):
        plan_text = index.to_json()
        resumable = (not restart and (work / "plan.json").is_file()
                     and (work / "plan.json").read_text() == plan_text)
        _check_space(out, work if resumable else None, index)
        try:
            _write_pack(log, source, plan, index, hot, work, out, resumable=resumable,
                        overwrite=overwrite, chunk_rows=max(1, chunk_bytes // row_bytes),
                        progress=progress)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            shutil.rmtree(work, ignore_errors=True)
            raise DiskSpaceError(
                f"{out.parent} filled up while packing {out} (the pack needs "
                f"{format_size(index.disk_bytes)}); removed the partial pack; free space or "
                "pack on another disk with --pack DIR") from None
    return index


def _check_space(out: Path, work: Path | None, index: PackIndex) -> None:
    """Refuse before writing when ``out``'s file system cannot hold the pack."""
    have = shutil.disk_usage(out.parent).free
    if work is not None and work.is_dir():  # a resumed pack already holds some blocks
        have += sum(f.stat().st_blocks * 512 for f in work.iterdir() if f.is_file())
    if index.disk_bytes + SPACE_RESERVE > have:
        raise DiskSpaceError(
            f"the pack needs {format_size(index.disk_bytes)} ({index.overhead:.1f}x the "
            f"features) but {out.parent} has {format_size(max(have, 0))} free (keeping "
            f"{format_size(SPACE_RESERVE)} spare); free space, pack on another disk with "
            "--pack DIR, or pack fewer --epochs or with a larger --host-cache")


def _write_pack(sampling: SamplingLog, source: Any, plan: PackPlan, index: PackIndex,
                hot: np.ndarray, work: Path, out: Path, *, resumable: bool, overwrite: bool,
                chunk_rows: int, progress: bool) -> None:
    """Write (or resume) the pack in ``work``, then publish it as ``out``."""
    plan_text = index.to_json()
    if not resumable:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        _write_file(work / "ids.bin", np.concatenate(
            [*plan.segment_ids, np.empty(0, np.int64)]).astype(np.int64).tobytes())
        _write_file(work / "hot.bin", hot.tobytes())
        digests = np.array([batch_digest(b) for b in sampling], dtype=np.uint64)
        _write_file(work / "batches.bin", digests.tobytes())
        with open(work / "rows.bin", "wb") as handle:
            handle.truncate(index.rows_file_bytes)
        atomic_write_bytes(work / "progress.json", b'{"chunks_done": 0}')
        atomic_write_bytes(work / "plan.json", plan_text.encode())
    done = json.loads((work / "progress.json").read_text())["chunks_done"]
    _copy_rows(source, plan, index, work / "rows.bin", work / "progress.json", done,
               chunk_rows, progress)
    (work / "progress.json").unlink()
    (work / "plan.json").unlink()
    _write_file(work / CHECKSUMS_NAME, segment_checksums(work / "rows.bin", index).tobytes())
    _write_file(work / "pack.json", plan_text.encode())
    write_pack_checksums(work)  # of the metadata files above, so written last
    fsync_dir(work)
    publish_directory(work, out, overwrite=overwrite)


def _copy_rows(source: Any, plan: PackPlan, index: PackIndex, rows_path: Path,
               progress_path: Path, done: int, chunk_rows: int, progress: bool) -> None:
    """Read ``source`` in id order, chunk by chunk, writing each segment's share in place."""
    n_chunks = -(-index.num_rows // chunk_rows)
    row_bytes = index.row_bytes
    fd = os.open(rows_path, os.O_WRONLY)
    try:
        with progress_bar(total=n_chunks, initial=done, desc="packing", unit="chunk",
                          enable=progress) as bar:
            for k in range(done, n_chunks):
                lo_id, hi_id = k * chunk_rows, min(index.num_rows, (k + 1) * chunk_rows)
                spans = [(s, int(np.searchsorted(ids, lo_id)), int(np.searchsorted(ids, hi_id)))
                         for s, ids in enumerate(plan.segment_ids)]
                spans = [(s, a, b) for s, a, b in spans if b > a]
                if spans:
                    needed = np.unique(np.concatenate(
                        [plan.segment_ids[s][a:b] for s, a, b in spans]))
                    rows = source.read(torch.from_numpy(needed)).numpy()
                    for s, a, b in spans:
                        at = np.searchsorted(needed, plan.segment_ids[s][a:b])
                        offset = index.segment_byte_offsets[s] + a * row_bytes
                        data = np.ascontiguousarray(rows[at]).tobytes()
                        written = 0
                        while written < len(data):
                            written += os.pwrite(fd, data[written:], offset + written)
                    os.fsync(fd)
                atomic_write_bytes(progress_path, json.dumps({"chunks_done": k + 1}).encode())
                bar.update(1)
    finally:
        os.close(fd)
    fsync_file(rows_path)


def read_pack_index(path: str | os.PathLike) -> PackIndex:
    """Read and check ``pack.json`` and the sizes of the pack's files."""
    path = Path(path)
    if not (path / "pack.json").is_file() and path.with_name(f".{path.name}.packing").is_dir():
        raise DatasetError(f"{path} was never finished: an interrupted pack left "
                           f"{path.with_name(f'.{path.name}.packing')}; run graphsys pack "
                           "again to resume it")
    try:
        index = PackIndex(**json.loads((path / "pack.json").read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise DatasetError(f"{path} is not a readable graphsys pack ({exc}); re-create it "
                           "with graphsys pack") from exc
    if index.format != FORMAT or index.version != VERSION:
        raise DatasetError(f"{path} is a pack of format {index.format} v{index.version}; "
                           f"this graphsys reads {FORMAT} v{VERSION}; re-pack")
    sizes = {"ids.bin": index.packed_rows * 8, "rows.bin": index.rows_file_bytes,
             "hot.bin": index.host_cached * 8, "batches.bin": index.num_batches * 8}
    for name, size in sizes.items():
        actual = (path / name).stat().st_size if (path / name).is_file() else -1
        if actual != size:
            raise DatasetError(f"{path / name} is {actual} bytes, the pack index expects "
                               f"{size}: the pack is truncated or damaged; re-create it "
                               "with graphsys pack")
    return index


def pack_summary(index: PackIndex) -> dict[str, Any]:
    """Figures a user wants after packing (sizes, overhead, segments)."""
    rows = [index.segment_rows(s) for s in range(index.num_segments)]
    return {"segments": index.num_segments, "batches": index.num_batches,
            "packed_rows": index.packed_rows, "host_cached_rows": index.host_cached,
            "rows_file_bytes": index.rows_file_bytes,
            "feature_bytes": index.num_rows * index.row_bytes,
            "overhead": index.overhead,
            "largest_segment_bytes": max(rows, default=0) * index.row_bytes}
