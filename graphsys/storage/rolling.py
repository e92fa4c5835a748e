"""Packs made while training runs, within a disk budget (DiskGNN for any epochs).

A whole-run pack (:func:`~graphsys.storage.packing.pack_features` over every epoch)
grows with the epochs: 20 epochs of a 53 GB feature table are hundreds of GB before the
first step, and one epoch past the pack cannot train. A :class:`RollingPackStore` packs
as training goes instead, each piece into its own pack under ``root``:

- an epoch is sampled offline and planned into segments, and its consecutive segments
  are grouped into *parts* of at most half the disk budget, so that the part being
  read and the next one fit together (one part per epoch when the budget allows);
- a background thread packs the parts in training order, one epoch ahead at most: a
  part is written only once it fits beside the parts still held (``disk_budget``);
- when the loader reaches a part, every part before it is closed and deleted (the
  loader reads batches from one thread, so every read of those is done);
- a part whose pack alone would exceed the budget (a segment larger than the budget)
  is read through the host cache and the source instead, with a one-line warning;
- any epoch can be asked: past the expected count, or on a resumed run, the epoch is
  planned and packed on demand (the run waits for its first part).

The host cache is built once, from a presample epoch, and every pack leaves its rows
out. Reads return exactly the source's rows, so training on the packs is bit-identical
to training from RAM. A packer killed mid-part (the process dies) leaves its work in
``.epoch-E.bB-C.packing``, never under a pack's name; the next run starts it again.

Costs: each part reads the source once, in id order (so an epoch split into ``k``
parts reads the features ``k`` times), and writes its segments; training reads them
back. The packer and training share the disk; RAM holds one epoch's sampling log (8
bytes per sampled input row) while that epoch is packed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphsys._atomic import atomic_write_bytes
from graphsys._sizes import format_size
from graphsys.errors import DatasetError
from graphsys.samplers.offline import SamplingLog, loader_fingerprint, offline_sample
from graphsys.storage.base import StoreBase, close_quietly
from graphsys.storage.packed import PackedStore
from graphsys.storage.packing import PackIndex, _aligned, pack_features, plan_segments
from graphsys.storage.tiered import TieredStore

#: What one pack may hold on disk beyond ``PackIndex.disk_bytes``: each of its small
#: files (ids, digests, checksums, plan, progress, lock) rounds up to a file-system block.
PACK_SLACK = 16 * 4096
ROOT_FILE = "rolling.json"

Unit = tuple[int, int]  # (epoch, first batch) of one part


class _Closed(Exception):
    """The store was closed while its packer waited for room."""


class _TooLarge(Exception):
    """One part's pack alone would exceed the disk budget."""

    def __init__(self, need: int) -> None:
        super().__init__(need)
        self.need = need


def _delete(path: Path) -> None:
    """Remove a pack, work directory or lock file (gone already is fine)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def dir_disk_bytes(path: Path) -> int:
    """Bytes the files under ``path`` occupy on disk (allocated blocks, not sizes)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:  # removed while walking (a pack being dropped)
                pass
    return total


def split_parts(log: SamplingLog, row_bytes: int, segment_bytes: int, cached: np.ndarray | None,
                num_rows: int, part_bytes: int, hot_rows: int) -> list[tuple[int, int]]:
    """Batch ranges ``[start, stop)`` of ``log`` whose packs take at most ``part_bytes``
    each (whole segments; a segment larger than that is a part of its own)."""
    plan = plan_segments(log, row_bytes, segment_bytes, cached, num_rows)
    fixed = PACK_SLACK + 8 * hot_rows
    parts, start, size = [], 0, fixed
    for s, ids in enumerate(plan.segment_ids):
        seg = _aligned(len(ids) * row_bytes) + 8 * len(ids) + 4
        first, stop = int(plan.batch_offsets[s]), int(plan.batch_offsets[s + 1])
        seg += 8 * (stop - first)
        if size + seg > part_bytes and first > start:
            parts.append((start, first))
            start, size = first, fixed
        size += seg
    if log.num_batches:
        parts.append((start, log.num_batches))
    return parts


def _slice(log: SamplingLog, start: int, stop: int) -> SamplingLog:
    """Batches ``[start, stop)`` of a one-epoch ``log`` as a log of their own."""
    lo, hi = int(log.offsets[start]), int(log.offsets[stop])
    return SamplingLog(f"{log.fingerprint}:{start}-{stop}", list(log.epochs), stop - start,
                       log.input_nodes[lo:hi], log.offsets[start : stop + 1] - lo)


@dataclass
class _EpochWork:
    """What the packer has done of one epoch: its parts, and each part's state."""

    planned: threading.Event = field(default_factory=threading.Event)
    parts: list[tuple[int, int]] = field(default_factory=list)
    done: dict[int, threading.Event] = field(default_factory=dict)
    kind: dict[int, str] = field(default_factory=dict)  # start -> 'packed' | 'fallback'
    error: BaseException | None = None

    def finish(self, error: BaseException | None = None) -> None:
        self.error = self.error or error
        self.planned.set()
        for event in self.done.values():
            event.set()


class RollingPackStore(StoreBase):
    """A FeatureStore over packs made ahead of training (module docstring).

    Args:
        loader: the training loader whose batches are packed (its sampler, seeds and
            keys decide them; the store samples each epoch offline exactly as the
            loader will).
        source: every feature row (read once per packed part, in id order).
        root: directory of the packs (created; it belongs to this loader's options and
            a root made for other options is refused).
        host_cache: a :class:`~graphsys.storage.host_cache.HostCacheStore`; its rows are
            left out of every pack.
        segment_bytes: most bytes one segment holds (two segment buffers are in RAM).
        disk_budget: most bytes the packs under ``root`` may occupy at any moment.
        epochs: how many epochs the run expects; epochs past it are packed on demand.
        source_id: the features' identity (packs of other features are refused).
        whole_run: a :class:`PackedStore` of several epochs (``graphsys pack``) whose
            epochs are served from it; the others are packed here.
        presampled: sampling logs of epochs already sampled offline (``offline_sample``
            of this loader, one epoch each), used instead of sampling them again.
        log: where the fallback warning goes.
    """

    tier = "packed"

    def __init__(self, loader: Any, source: Any, root: str | os.PathLike, *, host_cache: Any,
                 segment_bytes: int, disk_budget: int, epochs: int, source_id: str = "",
                 whole_run: PackedStore | None = None,
                 presampled: dict[int, SamplingLog] | None = None,
                 log: Callable[[str], None] = print) -> None:
        super().__init__(source.num_rows, source.dim, source.dtype, "cpu")
        if disk_budget <= 0:
            raise ValueError(f"disk_budget={disk_budget} must be positive")
        self.loader, self.source, self.host_cache = loader, source, host_cache
        self.root = Path(root)
        self.segment_bytes, self.disk_budget = int(segment_bytes), int(disk_budget)
        self.epochs = int(epochs)
        self.source_id, self.log = source_id, log
        self.whole_run = whole_run
        self._presampled = dict(presampled or {})
        self._whole_epochs = set(whole_run.index.epochs) if whole_run is not None else set()
        self.fingerprint = loader_fingerprint(loader, [])
        # Packs leave the host cache's rows out and cut segments at segment_bytes: packs
        # made around another cache or segment size are not reused (see _claim_root).
        hot = host_cache.cached_ids.numpy().tobytes() if host_cache is not None else b""
        self.layout = hashlib.sha256(hot + str(self.segment_bytes).encode()).hexdigest()[:16]
        self._claim_root()
        self._fallback = TieredStore([host_cache, source]) if host_cache is not None else source
        self._cached = host_cache.cached_mask() if host_cache is not None else None
        self._hot_rows = len(host_cache.cached_ids) if host_cache is not None else 0
        self._cond = threading.Condition()
        self._held: dict[Unit, int] = {}  # part -> bytes reserved for its pack
        self._work: dict[int, _EpochWork] = {}
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="graphsys-packer")
        self._closed = False
        self.epoch = -1
        self.unit: Unit | None = None
        self._current: Any = None
        self._started = False
        self._warned: set[int] = set()
        #: most bytes held at once by reservations (the budget the packer kept to).
        self.peak_reserved = 0
        #: bytes reserved for each part's pack (its planned size plus file slack).
        self.pack_bytes: dict[Unit, int] = {}
        self.packed_epochs: list[int] = []
        self.fallback_epochs: list[int] = []
        self.parts_per_epoch: dict[int, int] = {}

    # -- the root and its packs ---------------------------------------------------------
    def _claim_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / ROOT_FILE
        spec = {"format": "graphsys.rolling-pack", "fingerprint": self.fingerprint,
                "source_id": self.source_id, "layout": self.layout}
        if marker.is_file():
            try:
                saved = json.loads(marker.read_text())
            except ValueError:
                saved = {}
            if saved.get("fingerprint") != self.fingerprint or \
                    saved.get("source_id", "") != self.source_id:
                raise DatasetError(
                    f"{self.root} holds packs for other training options or features (its "
                    "rolling.json differs); pass another --pack directory or delete this one")
            if saved.get("layout") == self.layout:
                return
            # The same batches around another host cache or segment size (--host-cache
            # changed): those packs are of no use here; they are ours to delete.
            for paths in self._on_disk().values():
                for path in paths:
                    _delete(path)
        atomic_write_bytes(marker, (json.dumps(spec, indent=1) + "\n").encode())

    def pack_path(self, unit: Unit, stop: int) -> Path:
        return self.root / f"epoch-{unit[0]:06d}.b{unit[1]:07d}-{stop:07d}"

    def _on_disk(self) -> dict[Unit, list[Path]]:
        """Part -> its pack and any work directory or lock of it."""
        found: dict[Unit, list[Path]] = {}
        for p in self.root.iterdir():
            name = p.name.lstrip(".")
            if not name.startswith("epoch-"):
                continue
            try:
                epoch = int(name[6:12])
                start = int(name.split(".b", 1)[1].split("-", 1)[0])
            except (IndexError, ValueError):
                continue
            found.setdefault((epoch, start), []).append(p)
        return found

    def _remove(self, unit: Unit) -> None:
        for path in self._on_disk().get(unit, []):
            _delete(path)
        self._release(unit)

    # -- the packer (one background thread) ---------------------------------------------
    def _admit(self, unit: Unit, index: PackIndex) -> None:
        """Wait until ``unit``'s pack fits beside the packs still held; reserve it."""
        need = index.disk_bytes + PACK_SLACK
        if need > self.disk_budget:
            raise _TooLarge(need)
        with self._cond:
            while sum(self._held.values()) + need > self.disk_budget:
                if self._closed:
                    raise _Closed()
                self._cond.wait()
            self._held[unit] = self.pack_bytes[unit] = need
            self.peak_reserved = max(self.peak_reserved, sum(self._held.values()))

    def _release(self, unit: Unit) -> None:
        with self._cond:
            self._held.pop(unit, None)
            self._cond.notify_all()

    def _pack_epoch(self, epoch: int, work: _EpochWork) -> None:
        try:
            log = self._presampled.pop(epoch, None)
            if log is None:
                log = offline_sample(self.loader, [epoch])
            work.parts = split_parts(log, self.row_bytes, self.segment_bytes, self._cached,
                                     self.num_rows, max(1, self.disk_budget // 2),
                                     self._hot_rows)
            work.done = {start: threading.Event() for start, _ in work.parts}
            work.planned.set()
            for start, stop in work.parts:
                if self._closed:
                    break
                work.kind[start] = self._pack_part((epoch, start), stop, _slice(log, start, stop))
                work.done[start].set()
        except _Closed:
            pass
        except BaseException as exc:  # the reader re-raises it where it waits
            work.finish(exc)
            return
        work.finish()

    def _pack_part(self, unit: Unit, stop: int, log: SamplingLog) -> str:
        path = self.pack_path(unit, stop)
        if (path / "pack.json").is_file():  # left by an earlier run with the same plan
            with self._cond:
                self._held[unit] = self.pack_bytes[unit] = dir_disk_bytes(path)
            return "packed"
        try:
            pack_features(log, self.source, path, segment_bytes=self.segment_bytes,
                          host_cache=self.host_cache, source_id=self.source_id,
                          chunk_bytes=max(self.segment_bytes, 4096), progress=False,
                          admit=lambda index: self._admit(unit, index))
        except _TooLarge as exc:
            if unit[0] in self._warned:
                return "fallback"
            self._warned.add(unit[0])
            self.log(f"warning: batches {unit[1]}-{stop - 1} of epoch {unit[0]} need a pack "
                     f"of {format_size(exc.need)}, more than the pack disk budget "
                     f"({format_size(self.disk_budget)}, --pack-disk); reading them (and any "
                     "other such part of this epoch) through the host cache and the feature "
                     "file instead (slower; raise --pack-disk "
                     "or --host-cache)")
            return "fallback"
        except BaseException:
            self._release(unit)
            raise
        return "packed"

    def _epoch_work(self, epoch: int) -> _EpochWork:
        work = self._work.get(epoch)
        if work is None:
            if self._pool is None:
                raise RuntimeError("the RollingPackStore is closed")
            work = self._work[epoch] = _EpochWork()
            self._pool.submit(self._pack_epoch, epoch, work)
        return work

    # -- serving ------------------------------------------------------------------------
    def prepare(self, epoch: int, index: int, input_nodes: Any = None) -> None:
        """Switch to the part holding batch ``index`` of ``epoch``; check the batch."""
        epoch, index = int(epoch), int(index)
        if epoch in self._whole_epochs:
            if self._current is not self.whole_run:
                self._leave()
                self.whole_run.stats = self.stats
                self._current, self.epoch, self.unit = self.whole_run, epoch, None
                self.packed_epochs.append(epoch)
            self.epoch = epoch
            self.whole_run.prepare(epoch, index, input_nodes)
            return
        work = self._epoch_work(epoch)
        work.planned.wait()
        if work.error is not None:
            raise work.error
        starts = [s for s, _ in work.parts]
        part = int(np.searchsorted(starts, index, side="right")) - 1
        if part < 0:
            raise KeyError(f"batch {index} of epoch {epoch} is outside its "
                           f"{work.parts[-1][1] if work.parts else 0} batches")
        start, stop = work.parts[part]
        if (epoch, start) != self.unit:
            self._switch(epoch, start, stop, work, last=part == len(work.parts) - 1)
        if isinstance(self._current, PackedStore):
            self._current.prepare(epoch, index - start, input_nodes)

    def _leave(self) -> None:
        if isinstance(self._current, PackedStore) and self._current is not self.whole_run:
            self._current.close()
        self._current = None

    def _switch(self, epoch: int, start: int, stop: int, work: _EpochWork, last: bool) -> None:
        self._leave()
        unit = (epoch, start)
        # Drop the parts before this one first: the packer may be waiting for their room.
        for old in sorted(set(self._on_disk()) | set(self._held)):
            stale = not self._started and old[0] != epoch  # a killed run's other epochs
            if old < unit or stale:
                self._remove(old)
        if not self._started:  # a killed run's parts of this epoch cut at other batches
            planned = {self.pack_path((epoch, a), b).name for a, b in work.parts}
            for paths in self._on_disk().values():
                for path in paths:
                    name = path.name.lstrip(".").removesuffix(".packing").removesuffix(".lock")
                    if name.startswith(f"epoch-{epoch:06d}.") and name not in planned:
                        _delete(path)
        self._started = True
        for done in [e for e in self._work if e < epoch]:
            del self._work[done]
        for unused in [e for e in list(self._presampled) if e < epoch]:  # a resumed run
            self._presampled.pop(unused, None)
        work.done[start].wait()
        if work.error is not None:
            raise work.error
        self.epoch, self.unit = epoch, unit
        if start == 0:
            self.parts_per_epoch[epoch] = len(work.parts)
        if work.kind.get(start) == "packed":
            store = PackedStore(self.pack_path(unit, stop), host_cache=self.host_cache,
                                source_id=self.source_id)
            store.stats = self.stats  # one account for every part's reads
            self._current = store
            if epoch not in self.packed_epochs:
                self.packed_epochs.append(epoch)
        else:
            self._current = self._fallback
            if epoch not in self.fallback_epochs:
                self.fallback_epochs.append(epoch)
        ahead = epoch + 1
        if start == 0 and (ahead < self.epochs or epoch >= self.epochs) \
                and ahead not in self._whole_epochs:
            self._epoch_work(ahead)  # queued behind this epoch's parts

    def read(self, ids: Any, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``ids`` of the current batch (call :meth:`prepare` first)."""
        if self._current is None:
            raise RuntimeError("call prepare(epoch, index) before reading from a "
                               "RollingPackStore")
        if isinstance(self._current, PackedStore):
            return self._current.read(ids, out)
        start = time.perf_counter()
        disk = self._current.stats.disk_bytes
        rows = self._current.read(ids, out)
        self.stats.reads += 1
        self.stats.add("fallback", len(rows), len(rows) * self.row_bytes,
                       time.perf_counter() - start, self._current.stats.disk_bytes - disk)
        return rows

    @property
    def memory_bytes(self) -> int:
        """RAM held: the host cache and two segment buffers (one part's store at a time)."""
        cache = self.host_cache.nbytes if self.host_cache is not None else 0
        return cache + 2 * self.segment_bytes

    def disk_bytes(self) -> int:
        """Bytes the packs under ``root`` occupy now."""
        return dir_disk_bytes(self.root)

    def describe(self) -> str:
        return (f"packs made as training goes in {self.root} (at most "
                f"{format_size(self.disk_budget)} on disk, --pack-disk)")

    def close(self) -> None:
        """Stop the packer (a part in progress finishes) and close the current part."""
        pool = self._pool
        if pool is not None:
            with self._cond:  # a packer waiting for room gives up
                self._closed = True
                self._pool = None
                self._cond.notify_all()
            pool.shutdown(wait=True, cancel_futures=True)
        self._leave()
        if self.whole_run is not None:
            self.whole_run.close()

    def finish(self) -> None:
        """:meth:`close`, then delete the packs (a finished run needs none)."""
        self.close()
        for unit in self._on_disk():
            self._remove(unit)

    def __del__(self) -> None:
        close_quietly(self)


def default_pack_disk(feature_bytes: int, root: Path) -> int:
    """``--pack-disk`` by default: twice the features, or the free space, if smaller."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free - (256 << 20)
    return int(max(1, min(2 * feature_bytes, free)))
