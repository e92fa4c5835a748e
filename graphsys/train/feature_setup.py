"""Choose and build the feature store a training run reads, packing when it must.

``--storage`` picks how features reach the loader:

- ``memory``: every row in RAM (small graphs);
- ``mmap``: the raw file memory-mapped, as DGL/PyG scripts index it;
- ``direct``: a host cache of the rows a presampled epoch reads most, then ``O_DIRECT``
  reads of the rest (:class:`TieredStore`);
- ``zarr``: host cache, then the zarr chunks;
- ``packed``: DiskGNN packing, one epoch at a time while the previous one trains
  (:mod:`graphsys.storage.rolling`), within ``--pack-disk``; or a whole-run pack made by
  ``graphsys pack`` (``--pack DIR``), whose epochs are served first;
- ``auto`` (default): ``memory`` when the features fit the host-cache budget,
  ``packed`` otherwise.

The host-cache budget (``--host-cache``, default half the available memory) bounds
the feature rows graphsys holds in RAM. A packed run spends ``1/8`` of it (at most
256 MiB) per segment buffer, two of them, and the rest on hot rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphsys._sizes import format_size
from graphsys.errors import TrainingConfigError
from graphsys.loader.dataloader import DataLoader
from graphsys.loader.device_path import DevicePath
from graphsys.loader.presample import batch_spec, presample
from graphsys.samplers.neighbor import NeighborSampler
from graphsys.samplers.offline import loader_fingerprint, offline_sample
from graphsys.storage.device_cache import DeviceCache
from graphsys.storage.direct import ALIGN
from graphsys.storage.host_cache import HostCacheStore, default_host_budget, hotness_order
from graphsys.storage.memory import TensorStore
from graphsys.storage.open import disk_source, feature_bytes, open_features
from graphsys.storage.packed import PackedStore
from graphsys.storage.packing import (
    DEFAULT_SEGMENT_BYTES,
    pack_features,
    pack_summary,
    plan_segments,
)
from graphsys.storage.planner import CachePlan, hybrid_for, presample_counts
from graphsys.storage.rolling import RollingPackStore, default_pack_disk
from graphsys.storage.tiered import TieredStore
from graphsys.storage.victim import VictimBuffer

STORAGE_KINDS = ("auto", "memory", "mmap", "direct", "zarr", "packed")
SAMPLER_KINDS = ("auto", "cpu", "gpu")


def uses_device_path(config: Any, device: torch.device | str) -> bool:
    """Whether a run of ``config`` on ``device`` samples and gathers by the GPU kernels.

    ``auto`` takes the device path on a CUDA device when CuPy can run the kernels.
    """
    sampler = getattr(config, "sampler", "auto")
    if sampler == "auto":
        from graphsys.cuda import gpu_ready

        return torch.device(device).type == "cuda" and gpu_ready()
    return sampler == "gpu"


def device_path_options(config: Any, device: torch.device | str) -> dict[str, Any]:
    """The DataLoader arguments of ``config``'s data path (none for the plain one)."""
    if not uses_device_path(config, device):
        return {}
    memory = getattr(config, "graph_memory", "pinned")
    uva = getattr(config, "uva", None)
    return {"use_uva": memory == "pinned" if uva is None else bool(uva),
            "graph_memory": memory}


def data_path_summary(config: Any, device: torch.device | str) -> str:
    """One line saying how a run of ``config`` on ``device`` samples and gathers."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device here"
    options = device_path_options(config, device)
    if not options:
        why = ""
        if device.type == "cuda" and getattr(config, "sampler", "auto") == "auto":
            why = " (CuPy cannot run the kernels here: pip install cupy-cuda12x)"
        copy = f", batches copied to {device}" if device.type != "cpu" else ""
        return f"CPU sampling and host gathers{copy}{why}"
    return DevicePath(device, options["graph_memory"], uva=options["use_uva"]).describe()


def train_loader(graph: Any, train_idx: np.ndarray, config: Any, *,
                 labels: Any = None, features: Any = None,
                 device: torch.device | str = "cpu",
                 fanouts: tuple[int, ...] | None = None) -> DataLoader:
    """The training loader of ``config``: the one batches are packed for, and trained on.

    ``fanouts`` replaces ``config.fanouts`` (with frozen front layers, fewer hops). The
    sampler is a plain :class:`NeighborSampler` either way: on the device path the
    loader runs it as a GPU sampler with the same samples."""
    fanouts = config.fanouts if fanouts is None else fanouts
    return DataLoader(graph, train_idx, NeighborSampler(fanouts, seed=config.seed),
                      batch_size=config.batch_size, shuffle=True, device=device,
                      features=features, labels=labels, seed=config.seed,
                      **device_path_options(config, device))


def budget_of(config: Any) -> int:
    """The host-cache budget: ``--host-cache``, else the plan's, else half of free RAM."""
    if config.host_cache is not None:
        return int(config.host_cache)
    if getattr(config, "plan", None):
        return CachePlan.load(config.plan).host_cache_bytes
    return default_host_budget()


def apply_plan(path: str | os.PathLike, store: Any, loader: DataLoader, *,
               device: torch.device | str, log: Callable[[str], None] = print
               ) -> DeviceCache:
    """Wrap ``store`` in the device cache and victim buffer of the plan at ``path``."""
    plan = CachePlan.load(path)
    plan.check(batch_spec(loader))
    if isinstance(store, torch.Tensor):
        store = TensorStore(store)
    sampled = presample(loader, plan.presample_batches)
    policy = hybrid_for(plan, presample_counts(sampled, store.num_rows), sampled.num_batches)
    # A packed store holds one segment at a time: rows of later batches are not there yet.
    lookahead = 0 if hasattr(store, "prepare") else plan.lookahead
    victim = VictimBuffer(VictimBuffer.rows_for(plan.victim_bytes, store.dim, store.dtype),
                          store.num_rows, store.dim, store.dtype)
    cache = DeviceCache(store, plan.device_cache_bytes, policy, device=device, victim=victim,
                        lookahead=lookahead)
    log(f"device cache {format_size(cache.nbytes)} on {cache.device} ({cache.capacity:,} "
        f"rows, {policy.static_fraction:.0%} static), victim buffer "
        f"{format_size(victim.nbytes)}, lookahead {lookahead} batches; the plan expects "
        f"{plan.expected_share['prefetched' if lookahead else 'device']:.1%} of rows on "
        "device when asked")
    return cache


def split_budget(budget: int, largest_batch_bytes: int = 0) -> tuple[int, int]:
    """``(host cache bytes, segment bytes)`` of a packed run within ``budget``.

    A segment is 1/8 of the budget (at most 256 MiB), or as large as the largest batch's
    rows (``largest_batch_bytes``, from a presample) when that is more, up to half the
    budget: every batch must fit one segment, and the host cache gives way first.
    """
    segment = min(DEFAULT_SEGMENT_BYTES, budget // 8)
    if largest_batch_bytes > segment:
        segment = min(budget // 2, largest_batch_bytes + ALIGN)
    # Whole pages, so the two page-aligned segment buffers stay inside the budget.
    segment = segment // ALIGN * ALIGN
    return budget - 2 * segment, segment


def largest_batch_bytes(log: Any, row_bytes: int) -> int:
    """Bytes of the largest batch's input rows in a sampling log."""
    sizes = np.diff(np.asarray(log.offsets))
    return int(sizes.max()) * row_bytes if len(sizes) else 0


def direct_read_buffer(budget: int) -> int:
    """Bytes a ``--storage direct`` run reads at once: 1/8 of the budget, 4 KiB to 64 MiB."""
    return max(ALIGN, min(64 << 20, budget // 8) // ALIGN * ALIGN)


def access_counts(loader: DataLoader, epochs: Sequence[int], num_rows: int,
                  progress: bool = False) -> tuple[np.ndarray, Any]:
    """How often each row is read over ``epochs`` of ``loader`` (and the sampling log)."""
    log = offline_sample(loader, epochs, progress=progress)
    return np.bincount(log.input_nodes, minlength=num_rows), log


def hot_cache(source: Any, counts: np.ndarray, budget: int) -> HostCacheStore:
    """A host cache of the most-read rows (never-read rows are not worth a byte)."""
    order = hotness_order(counts)
    return HostCacheStore(source, order[: int((counts > 0).sum())], budget)


def default_pack_dir(dataset: Any, fingerprint: str) -> Path:
    return Path(dataset.root) / "packs" / fingerprint[:16]


def pack_for_training(dataset: Any, config: Any, *, out: str | os.PathLike | None = None,
                      overwrite: bool = False, restart: bool = False,
                      loader: DataLoader | None = None,
                      log: Callable[[str], None] = print) -> Path:
    """Sample every epoch of ``config`` offline and pack its batches; return the pack.

    ``loader`` is the training loader of ``config`` if the caller has built it.
    """
    if loader is None:
        loader = train_loader(dataset.graph, np.asarray(dataset.train_idx, dtype=np.int64),
                              config)
    epochs = list(range(config.epochs))
    budget = budget_of(config)
    cache_budget, segment = split_budget(budget)
    counts, sampling_log = access_counts(loader, epochs, loader.graph.num_nodes(),
                                         progress=config.progress)
    out = Path(out) if out is not None else default_pack_dir(dataset, sampling_log.fingerprint)
    source = disk_source(dataset)
    cache = hot_cache(source, counts, cache_budget)
    log(f"packing {len(epochs)} epoch(s), {sampling_log.num_batches} batches, into {out}: "
        f"host cache {format_size(cache.nbytes)} ({len(cache.cached_ids):,} hot rows), "
        f"segments up to {format_size(segment)}")
    index = pack_features(sampling_log, source, out, segment_bytes=segment, host_cache=cache,
                          overwrite=overwrite, restart=restart, chunk_bytes=max(segment, ALIGN),
                          source_id=dataset.manifest.arrays["features"].sha256,
                          progress=config.progress, warn=log)
    s = pack_summary(index)
    log(f"packed {s['segments']} segments, {s['packed_rows']:,} rows, "
        f"{format_size(s['rows_file_bytes'])} on disk = {s['overhead']:.2f}x the features "
        f"({format_size(s['feature_bytes'])})")
    return out


def open_training_features(dataset: Any, config: Any, loader: DataLoader, *,
                           log: Callable[[str], None] = print) -> tuple[Any, Any, str]:
    """``(store for training batches, store for evaluation, kind used)``."""
    kind = config.storage
    if not hasattr(dataset, "manifest"):  # an in-memory dataset object
        if kind not in ("auto", "memory"):
            raise TrainingConfigError(f"--storage {kind} needs a dataset directory; this "
                                      "dataset only has in-memory features")
        return dataset.features, dataset.features, "memory"
    budget = budget_of(config)
    if kind == "auto":
        kind = "memory" if feature_bytes(dataset) <= budget else "packed"
        log(f"features {format_size(feature_bytes(dataset))}, host-cache budget "
            f"{format_size(budget)}: storage {kind}")
    if kind in ("memory", "mmap"):
        store = open_features(dataset, kind)
        return store, store, kind
    if kind in ("direct", "zarr"):
        # The O_DIRECT read buffer holds feature rows too: it comes out of the budget.
        read_buffer = direct_read_buffer(budget) if kind == "direct" else None
        source = open_features(dataset, kind, read_buffer=read_buffer)
        counts, _ = access_counts(loader, [0], source.num_rows)
        cache_budget = budget - (read_buffer or 0)
        return TieredStore([hot_cache(source, counts, cache_budget), source]), source, kind
    # Evaluation reads through it; training reads the packs.
    source = disk_source(dataset, read_buffer=direct_read_buffer(budget))
    source_id = dataset.manifest.arrays["features"].sha256
    path = Path(config.pack_dir) if config.pack_dir else None
    whole = path if path is not None else default_pack_dir(
        dataset, loader_fingerprint(loader, range(config.epochs)))
    whole_run = _whole_run_pack(whole, source, source_id, loader, budget, log) \
        if (whole / "pack.json").is_file() else None
    if whole_run is not None and set(range(config.epochs)) <= set(whole_run.index.epochs):
        return whole_run, source, kind
    if loader.path is not None and loader.path.on_gpu:
        raise TrainingConfigError(
            "--storage packed packs epochs as training goes and serves host rows; on the "
            f"device path pack all {config.epochs} epochs first (graphsys pack --epochs "
            f"{config.epochs}) and pass --pack DIR")
    presampled = None
    if whole_run is not None:  # its hot rows stay cached: its epochs are served as packed
        cache = whole_run.host_cache
        segment = whole_run.index.segment_bytes
    else:  # the hot set of a presample epoch (epoch 0), kept for every epoch
        counts, presampled = access_counts(loader, [0], source.num_rows)
        cache_budget, segment = split_budget(
            budget, largest_batch_bytes(presampled, source.row_bytes))
        cache = hot_cache(source, counts, cache_budget)
        # A batch larger than a segment fails here, before any pack is started.
        plan_segments(presampled, source.row_bytes, segment, cache.cached_mask(),
                      source.num_rows)
    if path is not None and whole_run is not None:
        root = path.with_name(f"{path.name}.epochs")
    else:
        root = path or Path(dataset.root) / "packs" / \
            f"rolling-{loader_fingerprint(loader, [])[:16]}"
    disk = config.pack_disk or default_pack_disk(feature_bytes(dataset), root)
    if not config.pack_disk and disk < 2 * feature_bytes(dataset):
        log(f"pack disk budget {format_size(disk)}: what the disk holding {root} has free "
            "(keeping 256 MiB spare), less than twice the features")
    store = RollingPackStore(loader, source, root, host_cache=cache, segment_bytes=segment,
                             disk_budget=disk, epochs=config.epochs, source_id=source_id,
                             whole_run=whole_run, log=log,
                             presampled={0: presampled} if presampled is not None else None)
    log(f"packed store: {store.describe()}; host cache "
        f"{format_size(cache.nbytes if cache is not None else 0)}, segments up to "
        f"{format_size(segment)}")
    return store, source, kind


def _whole_run_pack(path: Path, source: Any, source_id: str, loader: DataLoader, budget: int,
                    log: Callable[[str], None]) -> PackedStore:
    """The pack ``graphsys pack`` made at ``path``, checked against this run."""
    # On the device path segments go to the GPU on a copy stream and rows are gathered
    # there; otherwise the store returns host rows.
    on_gpu = loader.path is not None and loader.path.on_gpu
    store = PackedStore(path, source=source, source_id=source_id,
                        device=loader.device if on_gpu else None)
    if loader_fingerprint(loader, store.index.epochs) != store.index.fingerprint:
        store.close()
        raise TrainingConfigError(
            f"--pack {path} was packed for other batches (the dataset, seeds, fanouts, "
            "batch size or seed differ); re-pack with these options (graphsys pack "
            "--overwrite) or drop --pack, and graphsys packs each epoch as training goes")
    log(f"whole-run pack {path} ({len(store.index.epochs)} epochs): {store.describe()}")
    if store.memory_bytes > budget:
        store.close()
        raise TrainingConfigError(
            f"{path} needs {format_size(store.memory_bytes)} of RAM (host cache and segment "
            f"buffers), more than --host-cache {format_size(budget)}; re-pack with this "
            "budget (graphsys pack --host-cache ...)")
    return store
