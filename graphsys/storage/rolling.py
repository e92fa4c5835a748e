"""Packed epochs made while training runs, within a disk budget (DiskGNN for any epochs).

A whole-run pack (:func:`~graphsys.storage.packing.pack_features` over every epoch)
grows with the epochs: 20 epochs of a 53 GB feature table are hundreds of GB before the
first step, and one epoch past the pack cannot train. A :class:`RollingPackStore` packs
one epoch at a time instead, each into its own pack under ``root``:

- epoch ``e + 1`` is sampled offline and packed by a background thread while ``e``
  trains (sampling and the source scan release the GIL: numba kernels and ``preadv``);
- when the loader asks for the first batch of ``e + 1``, epoch ``e``'s pack is closed and
  deleted (the loader reads batches from one thread, so every read of ``e`` is done);
- a pack is written only once it fits: the packer plans it, then waits until the packs
  still held plus this one fit ``disk_budget``; an epoch whose pack alone would not fit
  is read through the host cache and the source instead, with a one-line warning;
- any epoch can be asked: past the expected count, or on a resumed run, the next epoch
  is packed on demand (the run waits for it) and the one after it in the background.

The host cache is built once, from a presample epoch, and every epoch's pack leaves its
rows out. Reads return exactly the source's rows, so training on the rolling packs is
bit-identical to training from RAM. A packer killed mid-epoch (the process dies) leaves
its work in ``.epoch-N.packing``, never under a pack's name; the next run resumes it
when the plan matches or starts it again.

Disk bandwidth: the background pack reads the source once in id order and writes the
next epoch's segments while training reads the current epoch's segments, so the two
share the disk; on a device that is already the bottleneck the epoch slows by up to the
pack's bytes over the disk's bandwidth (``bench/out_of_core.py`` reports it).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from graphsys._atomic import atomic_write_bytes
from graphsys._sizes import format_size
from graphsys.errors import DatasetError
from graphsys.samplers.offline import loader_fingerprint, offline_sample
from graphsys.storage.base import StoreBase, close_quietly
from graphsys.storage.packed import PackedStore
from graphsys.storage.packing import PackIndex, pack_features
from graphsys.storage.tiered import TieredStore

#: What one pack may hold on disk beyond ``PackIndex.disk_bytes``: each of its small
#: files (ids, digests, checksums, plan, progress, lock) rounds up to a file-system block.
PACK_SLACK = 16 * 4096
ROOT_FILE = "rolling.json"


class _Closed(Exception):
    """The store was closed while its packer waited for room."""


class _TooLarge(Exception):
    """One epoch's pack alone would exceed the disk budget."""

    def __init__(self, need: int) -> None:
        super().__init__(need)
        self.need = need


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


class RollingPackStore(StoreBase):
    """A FeatureStore over per-epoch packs made ahead of training (module docstring).

    Args:
        loader: the training loader whose batches are packed (its sampler, seeds and
            keys decide them; the store samples each epoch offline exactly as the
            loader will).
        source: every feature row (read once per packed epoch, in id order).
        root: directory of the epoch packs (created; it belongs to this loader's
            options and a root made for other options is refused).
        host_cache: a :class:`~graphsys.storage.host_cache.HostCacheStore`; its rows are
            left out of every pack.
        segment_bytes: most bytes one segment holds (two segment buffers are in RAM).
        disk_budget: most bytes the packs under ``root`` may occupy at any moment.
        epochs: how many epochs the run expects; epochs past it are packed on demand.
        source_id: the features' identity (packs of other features are refused).
        epochs_ahead: epochs packed ahead of the one training (0: pack on demand only).
        whole_run: a :class:`PackedStore` of several epochs (``graphsys pack``) whose
            epochs are served from it; the others are packed here.
        log: where the fallback warning goes.
    """

    tier = "packed"

    def __init__(self, loader: Any, source: Any, root: str | os.PathLike, *, host_cache: Any,
                 segment_bytes: int, disk_budget: int, epochs: int, source_id: str = "",
                 epochs_ahead: int = 1, whole_run: PackedStore | None = None,
                 log: Callable[[str], None] = print) -> None:
        super().__init__(source.num_rows, source.dim, source.dtype, "cpu")
        if disk_budget <= 0:
            raise ValueError(f"disk_budget={disk_budget} must be positive")
        self.loader, self.source, self.host_cache = loader, source, host_cache
        self.root = Path(root)
        self.segment_bytes, self.disk_budget = int(segment_bytes), int(disk_budget)
        self.epochs, self.epochs_ahead = int(epochs), max(0, int(epochs_ahead))
        self.source_id, self.log = source_id, log
        self.whole_run = whole_run
        self._whole_epochs = set(whole_run.index.epochs) if whole_run is not None else set()
        self.fingerprint = loader_fingerprint(loader, [])
        self._claim_root()
        self._fallback = TieredStore([host_cache, source]) if host_cache is not None else source
        self._cond = threading.Condition()
        self._held: dict[int, int] = {}  # epoch -> bytes reserved for its pack
        self._futures: dict[int, Future] = {}
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="graphsys-packer")
        self.epoch = -1
        self._current: Any = None
        self._warned: set[int] = set()
        #: most bytes held at once by reservations (the budget the packer kept to).
        self.peak_reserved = 0
        #: bytes reserved for each epoch's pack (its planned size plus file slack).
        self.epoch_pack_bytes: dict[int, int] = {}
        self.packed_epochs: list[int] = []
        self.fallback_epochs: list[int] = []

    # -- the root and its packs ---------------------------------------------------------
    def _claim_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / ROOT_FILE
        spec = {"format": "graphsys.rolling-pack", "fingerprint": self.fingerprint,
                "source_id": self.source_id}
        if marker.is_file():
            try:
                saved = json.loads(marker.read_text())
            except ValueError:
                saved = {}
            if saved.get("fingerprint") != self.fingerprint or \
                    saved.get("source_id", "") != self.source_id:
                raise DatasetError(
                    f"{self.root} holds epoch packs for other training options or features "
                    "(its rolling.json differs); pass another --pack directory or delete "
                    "this one")
        else:
            atomic_write_bytes(marker, (json.dumps(spec, indent=1) + "\n").encode())

    def pack_path(self, epoch: int) -> Path:
        return self.root / f"epoch-{int(epoch):06d}"

    def _epoch_dirs(self) -> dict[int, list[Path]]:
        """Epoch -> its pack and any work directory, lock or half-made pack of it."""
        found: dict[int, list[Path]] = {}
        for p in self.root.iterdir():
            name = p.name.lstrip(".").split(".")[0]
            if name.startswith("epoch-") and name[6:].isdigit():
                found.setdefault(int(name[6:]), []).append(p)
        return found

    def _remove_epoch(self, epoch: int) -> None:
        for p in self._epoch_dirs().get(epoch, []):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    # -- packing ------------------------------------------------------------------------
    def _admit(self, epoch: int, index: PackIndex) -> None:
        """Wait until ``epoch``'s pack fits beside the packs still held; reserve it."""
        need = index.disk_bytes + PACK_SLACK
        if need > self.disk_budget:
            raise _TooLarge(need)
        with self._cond:
            while sum(self._held.values()) + need > self.disk_budget:
                if self._pool is None:
                    raise _Closed()
                self._cond.wait()
            self._held[epoch] = self.epoch_pack_bytes[epoch] = need
            self.peak_reserved = max(self.peak_reserved, sum(self._held.values()))

    def _release(self, epoch: int) -> None:
        with self._cond:
            self._held.pop(epoch, None)
            self._cond.notify_all()

    def _make(self, epoch: int) -> str:
        """Pack ``epoch`` (or find its finished pack); ``'packed'`` or ``'fallback'``."""
        path = self.pack_path(epoch)
        if (path / "pack.json").is_file():
            size = dir_disk_bytes(path)
            with self._cond:
                self._held[epoch] = self.epoch_pack_bytes[epoch] = size
                self.peak_reserved = max(self.peak_reserved, sum(self._held.values()))
            return "packed"
        log = offline_sample(self.loader, [epoch])
        try:
            pack_features(log, self.source, path, segment_bytes=self.segment_bytes,
                          host_cache=self.host_cache, source_id=self.source_id,
                          chunk_bytes=max(self.segment_bytes, 4096), progress=False,
                          admit=lambda index: self._admit(epoch, index))
        except _TooLarge as exc:
            if epoch not in self._warned:
                self._warned.add(epoch)
                self.log(f"warning: epoch {epoch}'s pack needs {format_size(exc.need)}, more "
                         f"than the pack disk budget ({format_size(self.disk_budget)}, "
                         "--pack-disk); reading it through the host cache and the feature "
                         "file instead (slower; raise --pack-disk or --host-cache)")
            return "fallback"
        except _Closed:
            return "closed"
        except BaseException:
            self._release(epoch)
            raise
        return "packed"

    def _submit(self, epoch: int) -> Future:
        if epoch in self._whole_epochs:
            done: Future = Future()
            done.set_result("whole-run")
            return done
        if epoch not in self._futures:
            if self._pool is None:
                raise RuntimeError("the RollingPackStore is closed")
            self._futures[epoch] = self._pool.submit(self._make, epoch)
        return self._futures[epoch]

    # -- serving ------------------------------------------------------------------------
    def prepare(self, epoch: int, index: int, input_nodes: Any = None) -> None:
        """Switch to ``epoch``'s pack on its first batch; check and place the batch."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self._switch(epoch)
        if isinstance(self._current, PackedStore):
            self._current.prepare(epoch, index, input_nodes)

    def _switch(self, epoch: int) -> None:
        # Drop every other epoch's pack first: the packer may be waiting for its space.
        if isinstance(self._current, PackedStore) and self._current is not self.whole_run:
            self._current.close()
        self._current = None
        keep = {epoch, *range(epoch + 1, epoch + 1 + self.epochs_ahead)}
        for old in sorted(set(self._epoch_dirs()) | set(self._held)):
            if old in keep:
                continue
            pending = self._futures.pop(old, None)
            if pending is not None and not pending.done():
                continue  # a stale pack still being written; dropped on a later switch
            self._remove_epoch(old)
            self._release(old)
        self.epoch = epoch
        kind = self._submit(epoch).result()
        self._futures.pop(epoch, None)
        if kind == "whole-run":
            self.whole_run.stats = self.stats
            self._current = self.whole_run
        elif kind == "packed":
            store = PackedStore(self.pack_path(epoch), host_cache=self.host_cache,
                                fingerprint=loader_fingerprint(self.loader, [epoch]),
                                source_id=self.source_id)
            store.stats = self.stats  # one account for every epoch's reads
            self._current = store
            self.packed_epochs.append(epoch)
        else:
            self._current = self._fallback
            self.fallback_epochs.append(epoch)
        for ahead in range(epoch + 1, epoch + 1 + self.epochs_ahead):
            if ahead < self.epochs or epoch >= self.epochs:  # past the plan: keep going
                self._submit(ahead)

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
        """RAM held: the host cache and two segment buffers (one epoch's store at a time)."""
        cache = self.host_cache.nbytes if self.host_cache is not None else 0
        return cache + 2 * self.segment_bytes

    def disk_bytes(self) -> int:
        """Bytes the packs under ``root`` occupy now."""
        return dir_disk_bytes(self.root)

    def describe(self) -> str:
        return (f"epoch packs in {self.root} (one epoch ahead, at most "
                f"{format_size(self.disk_budget)} on disk)")

    def close(self) -> None:
        """Stop the packer (a pack in progress finishes) and close the current epoch."""
        pool = self._pool
        if pool is not None:
            with self._cond:  # a packer waiting for room gives up (its epoch is not needed)
                self._pool = None
                self._cond.notify_all()
            pool.shutdown(wait=True, cancel_futures=True)
        if isinstance(self._current, PackedStore):
            self._current.close()
        if self.whole_run is not None:
            self.whole_run.close()
        self._current = None

    def finish(self) -> None:
        """:meth:`close`, then delete the epoch packs (a finished run needs none)."""
        self.close()
        for epoch in self._epoch_dirs():
            self._remove_epoch(epoch)
        self._held.clear()

    def __del__(self) -> None:
        close_quietly(self)


def default_pack_disk(feature_bytes: int, root: Path) -> int:
    """``--pack-disk`` by default: twice the features, or the free space, if smaller."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free - (256 << 20)
    return int(max(1, min(2 * feature_bytes, free)))


