"""Out-of-core feature loading, like for like: one whole epoch, the same batches, cold.

One synthetic dataset whose features are several times the RAM budget (default 10M
nodes x 128 float32 = 5.1 GB against 1 GB), one training loader (GraphSAGE fanouts
15,10,5, batch 1024, 65,536 seeds: 64 batches an epoch). Epoch 0 is the *presample*
epoch: the graphsys host caches are chosen from its access counts, as training does.
Epoch 1 is the *measured* epoch: every contender loads the features of exactly its
batches, all of them, nothing scaled.

Contenders (each runs in a fresh worker process, forked from a server that has only
imported the modules, so no contender inherits another's memory, caches or threads):

- ``ram``: every row in RAM (a torch tensor behind ``TensorStore``), loaded before
  timing. The reference.
- ``mmap-drop``: the raw file memory-mapped and indexed per batch
  (``torch.from_numpy(map)[ids]``, as DGL/PyG scripts do), unmapped and its page cache
  dropped before every batch (``posix_fadvise(DONTNEED)``, included in the time). The
  worst case: with this disk's 8 MiB read-ahead each batch re-reads much of the file.
- ``mmap-random``: the same map with ``madvise(MADV_RANDOM)`` (no read-around), its page
  cache kept: it grows without bound (context; it does not keep to the budget).
- ``mmap-random-cgroup``: ``mmap-random`` in a worker whose memory (RSS + page cache) is
  bounded by a memory cgroup (v1 ``memory.limit_in_bytes`` or v2 ``memory.max``) to the
  budget plus the working memory the ``ram`` worker needed for the same pass (its
  cgroup's peak: the rows of a batch, and in training the activations), since every
  graphsys contender also needs that memory on top of its feature budget. The fair
  baseline: what a user whose RAM is the budget gets. Unavailable (with the reason)
  where no cgroup can be made.
- ``tiered``: graphsys ``HostCacheStore`` of the budget minus the ``O_DIRECT`` read
  buffer, filled with the presample's hottest rows, in front of ``DirectFileStore``
  (``graphsys.train.feature_setup``'s ``--storage direct``).
- ``packed``: graphsys ``RollingPackStore`` as ``--storage packed`` builds it: host
  cache of the presample's hottest rows, segments from ``split_budget``, disk budget from
  ``default_pack_disk``. In training the packer packs epoch 1 while epoch 0 trains; here
  it packs epoch 1 before the timed passes with nothing else running, and that packing
  is timed and reported apart (seconds, bytes on disk per epoch as a multiple of the
  features, parts per epoch). During both timed passes the packer packs epoch 2 in the
  background, as it does while training runs, so the packed figures include what the
  background packing costs the epoch (CPU and disk shared).

Every contender starts cold: the feature file's page cache is dropped
(``posix_fadvise(DONTNEED)``, as before) before its worker starts and again before each
of its two timed passes, each of which opens the store afresh (``mincore`` checks that
nothing of the file is cached when a pass starts):

1. *loading*: for every batch of epoch 1 (from an offline sampling log), the store's
   ``prepare`` (packed: segment switch; mmap-drop: the drop) and ``read`` are timed.
   Disk bytes: ``/proc/self/io`` ``read_bytes`` of the worker for the mmap contenders,
   the store's ``stats.disk_bytes`` for the graphsys ones (both are recorded for all).
2. *end to end*: epoch 1 of the DataLoader (sampling, feature loading, labels) and a
   3-layer GraphSAGE step per batch (hidden 256, Adam, seeded identically), wall clock
   from the first batch asked to the last optimizer step. Same code for everyone: only
   ``features=`` differs. The losses must be bitwise equal across contenders.

The graph and labels are copied to RAM in every worker, so the disk reads counted are
the features'. Each pass runs inside its own memory cgroup where possible (made under
this process's own memory cgroup, else under the hierarchy's root, and removed after),
so the peak memory it charged (beyond what the store held before it: host cache, RAM
features) is reported for every contender. Targets: packed end to end <= 1.15x the RAM
epoch, and >= 10x faster than ``mmap-random-cgroup`` end to end; met and missed ones are
both listed. Writes ``bench/results/out_of_core.json`` and ``.png``.

Example:
    python bench/out_of_core.py                  # 10M nodes x 128 float32, 1 GB budget
    python bench/out_of_core.py --quick          # 200k nodes, a smoke run (~40 s)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hashlib
import json
import mmap
import multiprocessing
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402  (a sibling script, not a package)

import graphsys  # noqa: E402
from graphsys._atomic import atomic_write_bytes  # noqa: E402
from graphsys._sizes import format_size, parse_size  # noqa: E402
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic  # noqa: E402
from graphsys.nn import build_model  # noqa: E402
from graphsys.samplers.offline import SamplingLog, offline_sample  # noqa: E402
from graphsys.storage import TensorStore, TieredStore  # noqa: E402
from graphsys.storage.base import StoreBase, torch_dtype  # noqa: E402
from graphsys.storage.open import disk_source, open_features  # noqa: E402
from graphsys.storage.rolling import RollingPackStore, default_pack_disk  # noqa: E402
from graphsys.train.feature_setup import (  # noqa: E402
    access_counts,
    direct_read_buffer,
    hot_cache,
    largest_batch_bytes,
    split_budget,
)

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

PRESAMPLE_EPOCH, MEASURED_EPOCH = 0, 1
HIDDEN, DROPOUT, LR = 256, 0.5, 0.003
PHASES = ("loading", "e2e")
FAIR, WORST, REFERENCE = "mmap-random-cgroup", "mmap-drop", "ram"
CONTENDERS = {
    "ram": "all features in RAM (torch tensor): the reference",
    "mmap-drop": "memory-mapped, unmapped and page cache dropped before every batch",
    "mmap-random": "memory-mapped with MADV_RANDOM, page cache kept (unbounded)",
    "mmap-random-cgroup": "memory-mapped with MADV_RANDOM in a memory cgroup of the budget "
                          "plus the ram contender's working memory: the fair baseline",
    "tiered": "graphsys host cache (presample's hot rows) + O_DIRECT reads",
    "packed": "graphsys RollingPackStore (presample's host cache, epoch packed ahead)",
}
#: (name, contender, phase, reference contender, goal): value = contender / reference
#: seconds for "<=" goals, reference / contender seconds for ">=" goals.
TARGETS = (
    ("packed end to end <= 1.15x the RAM epoch", "packed", "e2e", REFERENCE, ("<=", 1.15)),
    ("packed end to end >= 10x faster than mmap-random-cgroup", "packed", "e2e", FAIR,
     (">=", 10.0)),
)


def progress(text: str) -> None:
    """A progress line, overwritten in place on a terminal (logs get none)."""
    if sys.stdout.isatty():
        print(f"\r{text}", end="", flush=True)


# -- files and the page cache ------------------------------------------------------------

def proc_read_bytes() -> int:
    """Bytes this process (all its threads) caused to be read from storage."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no read_bytes in /proc/self/io")


def drop_file_cache(path: Path) -> None:
    """Evict ``path``'s unmapped pages from the page cache (no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def drop_tree_cache(root: Path) -> None:
    """:func:`drop_file_cache` for every file under ``root`` (a pack directory)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                drop_file_cache(Path(dirpath) / name)


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mmap.restype = ctypes.c_void_p
_LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_LIBC.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` in the page cache now (``mincore``; maps nothing in)."""
    size = path.stat().st_size
    if not size:
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _LIBC.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
        try:
            pages = np.zeros(-(-size // mmap.PAGESIZE), np.uint8)
            if _LIBC.mincore(addr, size, pages.ctypes.data) != 0:
                raise OSError(ctypes.get_errno(), f"mincore of {path} failed")
            return int((pages & 1).sum()) * mmap.PAGESIZE
        finally:
            _LIBC.munmap(addr, size)
    finally:
        os.close(fd)


def load_into_ram(path: Path, rows: int, dim: int, dtype: str, chunk: int = 64 << 20
                  ) -> torch.Tensor:
    """The whole feature file as a tensor, read without leaving it in the page cache."""
    array = np.empty((rows, dim), dtype=dtype)
    flat = memoryview(array.reshape(-1).view(np.uint8))
    with open(path, "rb", buffering=0) as handle:
        for offset in range(0, len(flat), chunk):
            got = handle.readinto(flat[offset : offset + chunk])
            if got != min(chunk, len(flat) - offset):
                raise OSError(f"{path} ended early")
            os.posix_fadvise(handle.fileno(), offset, got, os.POSIX_FADV_DONTNEED)
    return torch.from_numpy(array)


# -- the dataset and the loader -------------------------------------------------------

def dataset_path(args: argparse.Namespace) -> Path:
    if args.dataset is not None:
        return args.dataset
    return ROOT / ".data" / f"ooc-{args.nodes}-{args.edges}-d{args.dim}"


def ensure_dataset(path: Path, args: argparse.Namespace) -> graphsys.Dataset:
    """The dataset at ``path``, generated first if missing (``args.nodes/edges/dim``)."""
    if not (path / "manifest.json").is_file():
        print(f"generating {path} ({args.nodes:,} nodes, {args.edges:,} edges, "
              f"{args.dim} float32 features)", flush=True)
        generate_synthetic(path, SyntheticConfig(num_nodes=args.nodes, num_edges=args.edges,
                                                 feat_dim=args.dim, seed=0), progress=True)
    return graphsys.load_dataset(path)


def training_seeds(ds: graphsys.Dataset, count: int) -> np.ndarray:
    """``count`` seeds drawn from the train split (fixed draw)."""
    train = np.asarray(ds.train_idx)
    return np.sort(np.random.default_rng(0).choice(train, min(count, len(train)),
                                                   replace=False))


def training_loader(ds: graphsys.Dataset, spec: dict) -> graphsys.DataLoader:
    """The training loader; its graph and labels copied to RAM (the features are the
    only data read from disk in a timed pass)."""
    graph = ds.graph  # checksummed and validated on this first access
    graph.indptr, graph.indices = graph.indptr.clone(), graph.indices.clone()
    return graphsys.DataLoader(graph, training_seeds(ds, spec["train_nodes"]),
                               graphsys.NeighborSampler(spec["fanouts"], seed=0),
                               batch_size=spec["batch_size"], shuffle=True, seed=0,
                               labels=ds.labels.clone())


def log_digest(log: SamplingLog) -> str:
    """A digest of every batch's input nodes (the contenders must agree on it)."""
    h = hashlib.blake2b(log.offsets.tobytes(), digest_size=16)
    h.update(log.input_nodes.tobytes())
    return h.hexdigest()


# -- memory cgroups -----------------------------------------------------------------------

class CgroupError(RuntimeError):
    """No memory cgroup could be made here (the message says why)."""


@dataclass
class Cgroup:
    """A memory cgroup (v1 or v2) this bench made, or the one a process is in."""

    path: Path
    version: int

    FILES = {1: {"limit": "memory.limit_in_bytes", "peak": "memory.max_usage_in_bytes",
                 "events": "memory.oom_control"},
             2: {"limit": "memory.max", "peak": "memory.peak", "events": "memory.events"}}

    @staticmethod
    def hierarchy() -> tuple[int, Path, Path]:
        """``(version, mount point, this process's cgroup)`` of the memory controller."""
        mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
        own = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
        for _dev, mount, fstype, options, *_ in mounts:
            if fstype == "cgroup" and "memory" in options.split(","):
                for _id, controllers, rel in own:
                    if "memory" in controllers.split(","):
                        return 1, Path(mount), Path(mount) / rel.lstrip("/")
        for _dev, mount, fstype, *_ in mounts:
            controllers = Path(mount) / "cgroup.controllers"
            if fstype == "cgroup2" and controllers.is_file() and \
                    "memory" in controllers.read_text().split():
                rel = next((r for i, c, r in own if i == "0" and c == ""), None)
                if rel is not None:
                    return 2, Path(mount), Path(mount) / rel.lstrip("/")
        raise CgroupError("no memory cgroup controller is mounted (/proc/self/mounts)")

    @classmethod
    def current(cls) -> Cgroup:
        version, _, own = cls.hierarchy()
        return cls(own, version)

    @classmethod
    def create(cls, name: str, limit: int | None = None) -> Cgroup:
        """A new cgroup ``name`` under this process's own (else under the mount's root),
        limited to ``limit`` bytes if given. Raises :class:`CgroupError` with every reason."""
        version, mount, own = cls.hierarchy()
        reasons = []
        for parent in dict.fromkeys([own, mount]):
            path = parent / name
            try:
                path.mkdir()
            except OSError as exc:
                reasons.append(f"mkdir {path}: {exc.strerror}")
                continue
            group = cls(path, version)
            try:
                if not (path / cls.FILES[version]["limit"]).exists():
                    raise OSError(0, "no memory controller in this subtree")
                if limit is not None:
                    group.write("limit", str(int(limit)))
                return group
            except OSError as exc:
                reasons.append(f"{path}: {exc.strerror}")
                group.remove()
        raise CgroupError("; ".join(reasons))

    def file(self, key: str) -> Path:
        return self.path / self.FILES[self.version][key]

    def write(self, key: str, value: str) -> None:
        self.file(key).write_text(value)

    def join(self) -> None:
        """Move this process (all its threads) here; memory it charges from now on counts
        here (charges made before stay where they were)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak(self) -> int | None:
        try:
            return int(self.file("peak").read_text())
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        try:
            for line in self.file("events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self) -> None:
        for _ in range(50):  # a just-exited worker may hold it for a moment
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        print(f"warning: could not remove the cgroup {self.path}; rmdir it by hand",
              flush=True)


@contextlib.contextmanager
def charged_to(group: Cgroup | None) -> Iterator[None]:
    """Run the block with this process in ``group``, then move back where it was."""
    if group is None:
        yield
        return
    origin = Cgroup.current()
    group.join()
    try:
        yield
    finally:
        origin.join()


# -- the feature stores of the mmap contenders -----------------------------------------

class MappedFeatures(StoreBase):
    """The raw feature file memory-mapped (``mmap``, then ``np.frombuffer``) and indexed
    per batch with ``index_select`` (the RAM reference's gather), as DGL/PyG scripts
    index ``torch.from_numpy(np.memmap(...))``. ``random_access`` advises
    ``MADV_RANDOM``: each fault reads its own page, without the read-around."""

    tier = "mmap"

    def __init__(self, path: Path, rows: int, dim: int, dtype: str, *,
                 random_access: bool) -> None:
        super().__init__(rows, dim, torch_dtype(dtype))
        self.path, self.np_dtype, self.random_access = path, np.dtype(dtype), random_access
        self._map: mmap.mmap | None = None
        self._rows: torch.Tensor | None = None
        self._open()

    def _open(self) -> None:
        with open(self.path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if self.random_access:
            self._map.madvise(mmap.MADV_RANDOM)
        array = np.frombuffer(self._map, self.np_dtype).reshape(self.num_rows, self.dim)
        with warnings.catch_warnings():  # read-only memory: torch warns, we only read
            warnings.simplefilter("ignore")
            self._rows = torch.from_numpy(array)

    def _gather(self, ids: torch.Tensor, out: torch.Tensor) -> None:
        torch.index_select(self._rows, 0, ids, out=out)

    def close(self) -> None:
        """Unmap (a mapped page cannot be evicted)."""
        self._rows = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view of the map lingers in a reference cycle
                gc.collect()
                self._map.close()
            self._map = None


class DroppedMappedFeatures(MappedFeatures):
    """:class:`MappedFeatures` unmapped, its page cache dropped and mapped again before
    every batch (``prepare``, which the loader calls before each batch's read)."""

    def prepare(self, epoch: int, index: int, input_nodes: Any = None) -> None:
        self.close()
        drop_file_cache(self.path)
        self._open()


class Timed:
    """A store's ``prepare`` and ``read``, forwarded and timed (seconds add up)."""

    def __init__(self, store: Any) -> None:
        self.store, self.seconds = store, 0.0
        self.num_rows, self.dim, self.dtype = store.num_rows, store.dim, store.dtype
        if hasattr(store, "prepare"):  # the loader calls prepare only where it exists
            self.prepare = self._prepare

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_rows, self.dim)

    def _prepare(self, epoch: int, index: int, input_nodes: Any = None) -> None:
        start = time.perf_counter()
        self.store.prepare(epoch, index, input_nodes)
        self.seconds += time.perf_counter() - start

    def read(self, ids: Any, out: torch.Tensor | None = None) -> torch.Tensor:
        start = time.perf_counter()
        rows = self.store.read(ids, out)
        self.seconds += time.perf_counter() - start
        return rows


# -- opening each contender's store (untimed setup) ---------------------------------------

@dataclass
class Opened:
    """A contender's store, what setting it up cost, and how to close it."""

    store: Any
    disk_from: str  # "proc" (/proc/self/io) or "stats" (the store's own count)
    setup: dict
    close: Callable[[], None]


def open_contender(name: str, ds: graphsys.Dataset, loader: graphsys.DataLoader,
                   counts: np.ndarray | None, spec: dict) -> Opened:
    """``name``'s store, opened afresh (``counts``: the presample epoch's row counts)."""
    entry = ds.manifest.arrays["features"]
    path, (rows, dim), budget = ds.root / entry.path, entry.shape, spec["budget"]
    start = time.perf_counter()
    if name == "ram":
        store = TensorStore(load_into_ram(path, rows, dim, entry.dtype))
        return Opened(store, "proc", {"setup_s": time.perf_counter() - start,
                                      "held_bytes": entry.nbytes}, lambda: None)
    if name in ("mmap-drop", "mmap-random", "mmap-random-cgroup"):
        kind = DroppedMappedFeatures if name == "mmap-drop" else MappedFeatures
        store = kind(path, rows, dim, entry.dtype, random_access=name != "mmap-drop")
        return Opened(store, "proc", {"setup_s": 0.0, "held_bytes": 0}, store.close)
    if name == "tiered":  # feature_setup.open_training_features, --storage direct
        read_buffer = direct_read_buffer(budget)
        source = open_features(ds, "direct", read_buffer=read_buffer)
        cache = hot_cache(source, counts, budget - read_buffer)
        return Opened(TieredStore([cache, source]), "stats",
                      {"setup_s": time.perf_counter() - start, "held_bytes": cache.nbytes,
                       "host_cache_bytes": cache.nbytes, "read_buffer_bytes": read_buffer,
                       "hot_rows": len(cache.cached_ids)}, source.close)
    if name == "packed":
        return open_packed(ds, loader, counts, spec)
    raise ValueError(f"unknown contender {name!r}")


def open_packed(ds: graphsys.Dataset, loader: graphsys.DataLoader, counts: np.ndarray,
                spec: dict) -> Opened:
    """``--storage packed``'s store (feature_setup.open_training_features), with epoch 1
    packed ahead: the packing is timed and reported, not part of the timed pass."""
    entry, budget = ds.manifest.arrays["features"], spec["budget"]
    start = time.perf_counter()
    source = disk_source(ds, read_buffer=direct_read_buffer(budget))
    cache_budget, segment = split_budget(budget, spec.get("largest_batch_bytes", 0))
    cache = hot_cache(source, counts, cache_budget)
    cache_s = time.perf_counter() - start
    root = Path(spec["pack_root"])
    shutil.rmtree(root, ignore_errors=True)  # no part of an earlier run may be reused
    disk = spec["pack_disk"] or default_pack_disk(entry.nbytes, root)
    store = RollingPackStore(loader, source, root, host_cache=cache, segment_bytes=segment,
                             disk_budget=disk, epochs=MEASURED_EPOCH + 2,
                             source_id=entry.sha256, log=lambda m: print(m, flush=True))
    pack = pack_ahead(store, MEASURED_EPOCH)
    pack.update(disk_budget=disk, segment_bytes=segment, feature_bytes=entry.nbytes,
                bytes_on_disk_over_features=pack["bytes_on_disk"] / entry.nbytes)
    drop_tree_cache(root)

    def close() -> None:
        store.finish()  # deletes the packs
        source.close()
        shutil.rmtree(root, ignore_errors=True)

    setup = {"setup_s": cache_s, "held_bytes": cache.nbytes, "host_cache_bytes": cache.nbytes,
             "hot_rows": len(cache.cached_ids), "segment_buffers_bytes": 2 * segment,
             "pack": pack}
    return Opened(store, "stats", setup, close)


def pack_ahead(store: RollingPackStore, epoch: int) -> dict:
    """Run ``store``'s packer on ``epoch`` with nothing else running; time it.

    Waits for every part of the epoch, or for the first two if it has more: both always
    fit the disk budget together, a third waits for the reader to free room (it is then
    packed during the timed pass, as it would be during training).
    """
    source_disk = store.source.stats.disk_bytes
    start = time.perf_counter()
    # RollingPackStore has no public "pack this epoch now": training starts the packer
    # from prepare(), which also switches to the epoch's first part (its first segment
    # read belongs to the timed pass). _epoch_work starts the packer alone.
    work = store._epoch_work(epoch)
    work.planned.wait()
    planned_s = time.perf_counter() - start
    ahead = work.parts[:2]
    for first, _ in ahead:
        work.done[first].wait()
    if work.error is not None:
        raise work.error
    seconds = time.perf_counter() - start
    units = [(epoch, first) for first, _ in work.parts]
    return {"seconds": seconds, "plan_s": planned_s, "parts": len(work.parts),
            "parts_packed_ahead": len(ahead), "complete": len(ahead) == len(work.parts),
            "fallback_parts": sum(work.kind.get(first) == "fallback" for first, _ in ahead),
            "bytes_on_disk": store.disk_bytes(),
            "bytes_reserved": sum(store.pack_bytes.get(u, 0) for u in units),
            "source_disk_bytes": store.source.stats.disk_bytes - source_disk}


# -- the two timed passes -------------------------------------------------------------------

def time_loading(name: str, opened: Opened, log: SamplingLog) -> dict:
    """Load the features of every batch of ``log`` (epoch 1) through the store."""
    store = opened.store
    store.stats.reset()
    prepare = getattr(store, "prepare", None)
    seconds = 0.0
    delivered = 0
    io_start = proc_read_bytes()
    for b in range(log.num_batches):
        ids = torch.from_numpy(log.batch(b))
        start = time.perf_counter()
        if prepare is not None:
            prepare(MEASURED_EPOCH, b, ids)
        rows = store.read(ids)
        seconds += time.perf_counter() - start
        delivered += rows.numel() * rows.element_size()
        del rows
        progress(f"  {name} loading: batch {b + 1}/{log.num_batches} {seconds:.1f}s")
    proc = proc_read_bytes() - io_start
    stats = store.stats
    disk = proc if opened.disk_from == "proc" else stats.disk_bytes
    host = stats.tiers["host"].bytes if "host" in stats.tiers else 0
    return {"seconds": seconds, "batches": log.num_batches, "delivered_bytes": delivered,
            "disk_bytes": int(disk), "disk_bytes_from": opened.disk_from,
            "proc_read_bytes": proc, "store_disk_bytes": stats.disk_bytes,
            "read_amplification": disk / delivered if delivered else 0.0,
            "host_cache_bytes_delivered": host,
            "amplification_of_disk_rows": disk / (delivered - host) if delivered > host else 0.0,
            "stats": stats.as_dict()}


def time_epoch(name: str, opened: Opened, loader: graphsys.DataLoader, num_classes: int
               ) -> dict:
    """Epoch 1 of ``loader`` reading features from the store, a GraphSAGE step a batch."""
    timed = Timed(opened.store)
    loader.features = timed
    torch.manual_seed(0)
    model = build_model("sage", timed.dim, HIDDEN, num_classes,
                        num_layers=len(loader.sampler.fanouts), dropout=DROPOUT)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loader.set_epoch(MEASURED_EPOCH)
    losses: list[float] = []
    io_start, store_disk = proc_read_bytes(), opened.store.stats.disk_bytes
    start = time.perf_counter()
    for _inp, _out, blocks in loader:
        loss = F.cross_entropy(model(blocks, blocks[0].srcdata["feat"]),
                               blocks[-1].dstdata["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        progress(f"  {name} end to end: batch {len(losses)}/{len(loader)} "
                 f"{time.perf_counter() - start:.1f}s")
    seconds = time.perf_counter() - start
    loader.features = None
    proc = proc_read_bytes() - io_start
    store_disk = opened.store.stats.disk_bytes - store_disk
    disk = proc if opened.disk_from == "proc" else store_disk
    return {"seconds": seconds, "feature_s": timed.seconds, "batches": len(losses),
            "disk_bytes": int(disk), "disk_bytes_from": opened.disk_from,
            "proc_read_bytes": proc, "store_disk_bytes": store_disk, "losses": losses}


def run_phase(phase: str, name: str, ds: graphsys.Dataset, loader: graphsys.DataLoader,
              log: SamplingLog, counts: np.ndarray | None, spec: dict,
              group: Cgroup | None) -> dict:
    """Open the store, start cold, time one pass (charged to ``group``), close it."""
    feat_path = ds.root / ds.manifest.arrays["features"].path
    opened = open_contender(name, ds, loader, counts, spec)
    try:
        drop_file_cache(feat_path)
        cold = resident_bytes(feat_path)
        with charged_to(group):
            if phase == "loading":
                result = time_loading(name, opened, log)
            else:
                result = time_epoch(name, opened, loader, ds.num_classes)
        result.update(features_resident_at_start_bytes=cold,
                      features_resident_at_end_bytes=resident_bytes(feat_path),
                      setup=opened.setup)
        progress("")
        print(f"\r  {name} {phase}: {result['seconds']:.2f}s, "
              f"{format_size(result['disk_bytes'])} from disk", flush=True)
    finally:
        opened.close()
        gc.collect()
    return result


def spec_row_bytes(ds: graphsys.Dataset) -> int:
    entry = ds.manifest.arrays["features"]
    return int(entry.shape[1]) * np.dtype(entry.dtype).itemsize


def worker(spec: dict) -> None:
    """One contender, both passes, in this (fresh) process; results to spec['result']."""
    name = spec["contender"]
    start = time.perf_counter()
    ds = graphsys.load_dataset(spec["dataset"])
    loader = training_loader(ds, spec)
    log = offline_sample(loader, [MEASURED_EPOCH])
    counts = None
    if name in ("tiered", "packed"):  # the presample epoch, never the measured one
        counts, presampled = access_counts(loader, [PRESAMPLE_EPOCH], loader.graph.num_nodes())
        # Segments hold the presample's largest batch, as --storage packed sizes them.
        spec = {**spec, "largest_batch_bytes": largest_batch_bytes(
            presampled, spec_row_bytes(ds))}
    groups = {phase: Cgroup(Path(p), spec["cgroup_version"]) if p else None
              for phase, p in spec["cgroups"].items()}
    result = {"contender": name, "batches_digest": log_digest(log),
              "torch_threads": torch.get_num_threads(),
              "worker_setup_s": time.perf_counter() - start}
    for phase in PHASES:  # saved after each pass: a pass killed later keeps the earlier
        result[phase] = run_phase(phase, name, ds, loader, log, counts, spec, groups[phase])
        atomic_write_bytes(Path(spec["result"]), json.dumps(result).encode())


def worker_process(spec: dict) -> None:
    """:func:`worker`, its traceback saved for the parent if it fails."""
    try:
        worker(spec)
    except BaseException:
        Path(spec["result"]).with_suffix(".error").write_text(traceback.format_exc())
        raise


#: Modules the fork server imports once, so every worker starts with them loaded.
#: ``torch._dynamo`` is what the first optimizer step imports (1.5 s, and 80 MB that would
#: otherwise be charged to the first end-to-end pass).
PRELOAD = ["numpy", "torch", "torch.nn.functional", "torch.optim", "torch._dynamo",
           "graphsys", "graphsys.nn", "graphsys.storage", "graphsys.storage.rolling",
           "graphsys.train.feature_setup"]


def fork_context() -> multiprocessing.context.BaseContext:
    """Workers are forked from a server that has imported :data:`PRELOAD` and run nothing
    else (no thread pool started, no memory of any contender): fresh processes, without
    importing torch anew for each (~3 s)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


# -- the parent: one worker per contender ---------------------------------------------------

def working_memory(results: dict) -> dict[str, int] | None:
    """Per pass, the memory the ram worker charged beyond its features (its cgroup peak)."""
    ram = results.get(REFERENCE, {})
    if not ram.get("available"):
        return None
    peaks = {phase: ram[phase].get("memory_peak_bytes") for phase in PHASES}
    return peaks if all(p is not None for p in peaks.values()) else None


def phase_cgroups(name: str, budget: int, work: dict[str, int] | None
                  ) -> tuple[dict[str, Cgroup | None], dict]:
    """A cgroup per pass and what to record of them. The fair baseline's are limited (and
    it is unavailable, :class:`CgroupError`, without them); the others' only measure, so
    without cgroups they run unmeasured (``None`` groups)."""
    limited = name == FAIR
    if limited:
        Cgroup.hierarchy()  # raises CgroupError saying why there is no memory cgroup here
    if limited and work is None:
        raise CgroupError("the ram contender's working memory is unknown (it did not run, "
                          "or ran without a cgroup), so no limit can be set")
    groups: dict[str, Cgroup | None] = {}
    info: dict = {}
    try:
        for phase in PHASES:
            limit = budget + work[phase] if limited else None
            groups[phase] = Cgroup.create(f"graphsys-bench-{os.getpid()}-{name}-{phase}", limit)
            info[phase] = {"path": str(groups[phase].path), "limit_bytes": limit}
    except CgroupError as exc:
        for group in groups.values():
            group.remove()
        if limited:
            raise
        return {phase: None for phase in PHASES}, {"memory_peaks": f"not measured: {exc}"}
    if limited:
        info.update(version=groups["loading"].version, budget=budget, working_memory_bytes=work,
                    rule="limit = budget + the ram contender's peak memory in the same pass")
    return groups, info


def run_contender(name: str, spec: dict, scratch: Path, results: dict, feat_path: Path,
                  context: multiprocessing.context.BaseContext) -> dict:
    """Run ``name`` in a fresh worker; its results, or why it is unavailable."""
    drop_file_cache(feat_path)
    try:
        groups, cgroup_info = phase_cgroups(name, spec["budget"], working_memory(results))
    except CgroupError as exc:
        print(f"{name}: unavailable ({exc})", flush=True)
        return {"what": CONTENDERS[name], "available": False, "reason": f"cgroup: {exc}"}
    version = next((g.version for g in groups.values() if g is not None), None)
    job = dict(spec, contender=name, result=str(scratch / f"{name}.json"),
               cgroups={p: str(g.path) if g else None for p, g in groups.items()},
               cgroup_version=version)
    print(f"{name}: {CONTENDERS[name]}", flush=True)
    try:
        process = context.Process(target=worker_process, args=(job,), name=f"ooc-{name}")
        process.start()
        process.join()
        entry: dict = {"what": CONTENDERS[name], "available": process.exitcode == 0}
        if Path(job["result"]).is_file():  # every pass done, or those before a failure
            entry.update(json.loads(Path(job["result"]).read_text()))
        if process.exitcode != 0:
            error = Path(job["result"]).with_suffix(".error")
            ooms = sum(g.oom_kills() for g in groups.values() if g is not None)
            lost = next((phase for phase in PHASES if phase not in entry), "last")
            why = f"killed by the cgroup's OOM killer in the {lost} pass" if ooms else \
                f"worker exited with {process.exitcode} in the {lost} pass"
            tail = error.read_text().strip()[-800:] if error.is_file() else ""
            entry["reason"] = f"{why}: {tail}" if tail else why
        for phase, group in groups.items():
            if group is not None and phase in entry:
                entry[phase]["memory_peak_bytes"] = group.peak()
        if cgroup_info:
            entry["cgroup"] = cgroup_info
    finally:
        drop_file_cache(feat_path)  # uncharges its pages before the cgroups go
        for group in groups.values():
            if group is not None:
                group.remove()
    return entry


# -- summary, targets, plot -------------------------------------------------------------------

def summarise(contenders: dict) -> dict:
    """Per contender and pass: seconds, disk, amplification and the ratios asked."""
    def seconds(name: str, phase: str) -> float | None:
        return contenders.get(name, {}).get(phase, {}).get("seconds")

    summary = {}
    for name, c in contenders.items():
        row: dict[str, Any] = {"available": c["available"]}
        if not c["available"]:
            row["reason"] = c.get("reason", "")
        for phase in PHASES:
            s = seconds(name, phase)
            if s is None:  # unavailable, or killed before this pass finished
                continue
            fair, worst, ram = (seconds(n, phase) for n in (FAIR, WORST, REFERENCE))
            row[phase] = {
                "seconds": s, "disk_bytes": c[phase]["disk_bytes"],
                "speedup_vs_mmap_random_cgroup": fair / s if fair and s else None,
                "speedup_vs_mmap_drop": worst / s if worst and s else None,
                "ratio_to_ram": s / ram if ram else None,
                "memory_peak_bytes": c[phase].get("memory_peak_bytes")}
        if "loading" in row:
            row["loading"]["read_amplification"] = c["loading"]["read_amplification"]
        summary[name] = row
    return summary


def evaluate_targets(summary: dict) -> list[dict]:
    targets = []
    for title, name, phase, reference, (op, goal) in TARGETS:
        entry = {"target": title, "goal": f"{op} {goal}"}
        a, b = summary.get(name, {}), summary.get(reference, {})
        if phase not in a or phase not in b:
            missing = name if phase not in a else reference
            why = "not run" if missing not in summary else "unavailable"
            entry.update(met=None, value=None, reason=f"{missing} {why}")
        else:
            sa, sb = a[phase]["seconds"], b[phase]["seconds"]
            value = sa / sb if op == "<=" else sb / sa
            entry.update(value=value, met=value <= goal if op == "<=" else value >= goal)
        targets.append(entry)
    return targets


def pack_report(packed: dict) -> dict:
    """The packer's work for epoch 1 (done before each pass; the first is the figure)."""
    first, again = (packed[phase]["setup"]["pack"] for phase in PHASES)
    return {"seconds": first["seconds"], "seconds_again": again["seconds"],
            "parts_per_epoch": first["parts"], "complete": first["complete"],
            "bytes_on_disk_per_epoch": first["bytes_on_disk"],
            "bytes_on_disk_over_features": first["bytes_on_disk_over_features"],
            "source_bytes_read": first["source_disk_bytes"],
            "disk_budget": first["disk_budget"], "segment_bytes": first["segment_bytes"],
            "runs": {"before_loading": first, "before_e2e": again}}


def loss_checks(contenders: dict) -> dict:
    """Same batches and bytes for every contender; losses bitwise equal to RAM's."""
    losses = {n: c["e2e"]["losses"] for n, c in contenders.items() if "e2e" in c}
    ram = losses.get(REFERENCE)
    identical = {n: run == ram for n, run in losses.items()} if ram else {}
    digests = {c["batches_digest"] for c in contenders.values() if "batches_digest" in c}
    delivered = {c["loading"]["delivered_bytes"] for c in contenders.values()
                 if "loading" in c}
    return {"same_batches": len(digests) <= 1, "same_bytes_delivered": len(delivered) <= 1,
            "losses_identical_to_ram": identical,
            "packed_losses_identical_to_ram": identical.get("packed")}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, names = result["summary"], list(result["summary"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), width_ratios=[2, 1])
    x = np.arange(len(names))
    for offset, phase, label, color in ((-0.2, "loading", "feature loading", "#27c"),
                                        (0.2, "e2e", "end-to-end epoch", "#e93")):
        values = [summary[n][phase]["seconds"] if phase in summary[n] else 0.0
                  for n in names]
        bars = ax1.bar(x + offset, values, 0.4, label=label, color=color)
        for bar, n in zip(bars, names, strict=True):
            ratio = summary[n].get(phase, {}).get("ratio_to_ram")
            text = "n/a" if phase not in summary[n] else \
                f"{ratio:.2f}x\nRAM" if ratio is not None else ""
            ax1.annotate(text, (bar.get_x() + bar.get_width() / 2, max(bar.get_height(), 1e-3)),
                         ha="center", va="bottom", fontsize=7)
    shown = [summary[n][p]["seconds"] for n in names for p in PHASES
             if p in summary[n] and summary[n][p]["seconds"] > 0]
    if shown and max(shown) / min(shown) > 20:
        ax1.set_yscale("log")
        ax1.set_ylim(top=max(shown) * 8)
    ax1.set_xticks(x, names, fontsize=8)
    ax1.set_ylabel("seconds for epoch 1 (log)" if shown and ax1.get_yscale() == "log"
                   else "seconds for epoch 1")
    c = result["config"]
    ax1.set_title(f"{c['nodes']:,} nodes, {format_size(c['feature_bytes'])} features, budget "
                  f"{format_size(c['budget'])}, {c['batches_per_epoch']} batches, cold start",
                  fontsize=9)
    ax1.legend(fontsize=8)
    for name, style in ((REFERENCE, {"lw": 3, "alpha": 0.5}), ("packed", {"ls": "--", "c": "k"})):
        losses = result["contenders"].get(name, {}).get("e2e", {}).get("losses")
        if losses:
            ax2.plot(losses, label=name, **style)
    same = result["checks"]["packed_losses_identical_to_ram"]
    ax2.set_title({True: "packed and RAM losses: bitwise equal", False: "LOSSES DIFFER",
                   None: "loss check not run"}[same], fontsize=9)
    ax2.set_xlabel("training step of epoch 1")
    ax2.set_ylabel("loss")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    partial = path.with_name(f".{path.name}.partial")
    fig.savefig(partial, dpi=120, format="png")
    os.replace(partial, path)


def print_table(summary: dict, targets: list[dict], checks: dict) -> None:
    print(f"\n{'contender':<19} {'load s':>8} {'disk':>9} {'amplif.':>8} {'vs fair':>8} "
          f"{'vs drop':>8} {'/ram':>7} {'e2e s':>8} {'/ram':>7} {'vs fair':>8}")
    def ratio(v: float | None) -> str:
        return f"{v:.2f}x" if v is not None else "-"

    for name, row in summary.items():
        line = f"{name:<19}"
        if "loading" in row:
            load = row["loading"]
            line += (f" {load['seconds']:>8.2f} {format_size(load['disk_bytes']):>9} "
                     f"{load['read_amplification']:>8.2f} "
                     f"{ratio(load['speedup_vs_mmap_random_cgroup']):>8} "
                     f"{ratio(load['speedup_vs_mmap_drop']):>8} {ratio(load['ratio_to_ram']):>7}")
        if "e2e" in row:
            e2e = row["e2e"]
            line += (f" {e2e['seconds']:>8.2f} {ratio(e2e['ratio_to_ram']):>7} "
                     f"{ratio(e2e['speedup_vs_mmap_random_cgroup']):>8}")
        if not row["available"]:
            line += f" unavailable: {row['reason'][:90]}"
        print(line)
    for t in targets:
        state = {True: "MET", False: "MISSED", None: "NOT EVALUATED"}[t["met"]]
        value = f"{t['value']:.2f}" if t["value"] is not None else t.get("reason", "")
        print(f"target {state:<13} {t['target']}: {value}")
    print(f"same batches: {checks['same_batches']}; packed losses bitwise equal to RAM: "
          f"{checks['packed_losses_identical_to_ram']}")


# -- main ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=None,
                        help="raw-feature dataset directory (default: generated in bench/.data)")
    parser.add_argument("--nodes", type=int, default=10_000_000)
    parser.add_argument("--edges", type=int, default=200_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--budget", default="1GB", help="RAM budget for feature rows")
    parser.add_argument("--fanouts", default="15,10,5")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--train-nodes", type=int, default=65536,
                        help="training seeds drawn from the train split (64 batches an epoch)")
    parser.add_argument("--pack-disk", default=None,
                        help="packed: disk budget of the packs (default: default_pack_disk, "
                             "twice the features)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help="comma-separated subset, run in this order (ram first: the "
                             "cgroup limit needs its working memory)")
    parser.add_argument("--quick", action="store_true",
                        help="200k nodes, 2M edges, 24 MB budget, fanouts 5,5,5, batch 128, "
                             "2048 seeds (16 batches)")
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (default bench/results/out_of_core.json, "
                             "out_of_core_quick.json with --quick); the plot goes beside it")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.edges, args.budget, args.train_nodes = 200_000, 2_000_000, "24MB", 2048
        args.fanouts, args.batch_size = "5,5,5", 128
    if args.out is None:
        args.out = RESULTS / ("out_of_core_quick.json" if args.quick else "out_of_core.json")
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contenders {unknown}; choose from {', '.join(CONTENDERS)}")
    args.names = sorted(names, key=list(CONTENDERS).index)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = os.getloadavg()
    budget = parse_size(args.budget)
    path = dataset_path(args)
    ds = ensure_dataset(path, args)
    entry = ds.manifest.arrays["features"]
    feat_path = path / entry.path
    rows, dim = entry.shape
    seeds = training_seeds(ds, args.train_nodes)
    batches = -(-len(seeds) // args.batch_size)
    print(f"{path}: {rows:,} nodes, features {format_size(entry.nbytes)} = "
          f"{entry.nbytes / budget:.1f}x the {format_size(budget)} budget; {batches} batches "
          "an epoch", flush=True)
    spec = {"dataset": str(path), "budget": budget, "fanouts": [int(f) for f in
                                                               args.fanouts.split(",")],
            "batch_size": args.batch_size, "train_nodes": args.train_nodes,
            "pack_disk": parse_size(args.pack_disk) if args.pack_disk else None,
            "pack_root": str(path / "packs" / "bench-out-of-core")}
    contenders: dict[str, dict] = {}
    start = time.perf_counter()
    context = fork_context()
    with tempfile.TemporaryDirectory(prefix="graphsys-ooc-") as scratch:
        for name in args.names:
            contenders[name] = run_contender(name, spec, Path(scratch), contenders, feat_path,
                                             context)
    summary = summarise(contenders)
    targets = evaluate_targets(summary)
    checks = loss_checks(contenders)
    packed = contenders.get("packed", {})
    threads = {c["torch_threads"] for c in contenders.values() if c.get("available")}
    result = {
        "bench": "out_of_core",
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "wall_s": time.perf_counter() - start,
        "config": {"dataset": str(path), "nodes": rows, "edges": ds.manifest.num_edges,
                   "dim": dim, "dtype": entry.dtype, "feature_bytes": entry.nbytes,
                   "budget": budget, "budget_ratio": entry.nbytes / budget,
                   "fanouts": spec["fanouts"], "batch_size": args.batch_size,
                   "train_nodes": len(seeds), "batches_per_epoch": batches,
                   "presample_epoch": PRESAMPLE_EPOCH, "measured_epoch": MEASURED_EPOCH,
                   "model": {"name": "sage", "layers": len(spec["fanouts"]), "hidden": HIDDEN,
                             "dropout": DROPOUT, "optimizer": "Adam", "lr": LR},
                   "torch_threads": sorted(threads)},
        "summary": summary,
        "targets": targets,
        "targets_met": [t["target"] for t in targets if t["met"] is True],
        "targets_missed": [t["target"] for t in targets if t["met"] is False],
        "targets_not_evaluated": [t["target"] for t in targets if t["met"] is None],
        "checks": checks,
        "pack": pack_report(packed) if packed.get("available") else None,
        "contenders": contenders,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    plot(result, args.out.with_suffix(".png"))
    print_table(summary, targets, checks)
    if result["pack"]:
        p = result["pack"]
        print(f"pack of epoch {MEASURED_EPOCH} (nothing else running): {p['seconds']:.2f}s "
              f"(again before the end-to-end pass: {p['seconds_again']:.2f}s), "
              f"{p['parts_per_epoch']} part(s), {p['bytes_on_disk_over_features']:.2f}x the "
              f"features on disk{'' if p['complete'] else ' (NOT all parts packed ahead)'}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    failed = [n for n, c in contenders.items() if not c["available"] and n != FAIR]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
