"""One device cache spread over the ranks of a job (LSM-GNN's system-wide GPU cache).

``SharedDeviceCache(fallback, hot_ids, group=...)`` is a :class:`FeatureStore`. All
ranks pass the same ``hot_ids`` (the rows worth caching, hottest first); row
``hot_ids[i]`` is owned by rank ``i % world_size``, so the ranks hold disjoint parts
of the hot set and together cache ``world_size`` times as many rows as one. A read:

1. looks every distinct id up: held here, held by rank ``o``, or not cached;
2. serves its own rows from its device slots and the uncached ones from ``fallback``;
3. asks the owners for the rest in three collectives of the cache's own process
   group: ``all_to_all_single`` of the request counts, of the ids, and of the rows
   the owners send back (NCCL on GPU; gloo on CPU, which supports the same calls).

Every rank must call :meth:`read` the same number of times, in the same order (one
read per batch; the data-parallel loader gives every rank the same number of
batches), even with no ids to ask for. The cache uses a process group of its own, so
its collectives, issued from the loader's thread, never interleave with DDP's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist

from graphsys.storage.base import StoreBase


@dataclass
class SharedCacheCounters:
    """Distinct rows per source, summed over reads."""

    reads: int = 0
    local_rows: int = 0  # held by this rank
    remote_rows: int = 0  # asked from their owner rank
    fallback_rows: int = 0  # not cached on any rank
    served_rows: int = 0  # sent to other ranks that asked
    exchange_s: float = 0.0  # spent in the collectives

    @property
    def cached_share(self) -> float:
        asked = self.local_rows + self.remote_rows + self.fallback_rows
        return (self.local_rows + self.remote_rows) / asked if asked else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cached_share": self.cached_share}


class SharedDeviceCache(StoreBase):
    """Rows of ``fallback``, the hot ones cached across ranks (see the module docstring).

    Args:
        fallback: the store every rank reads uncached rows (and its own hot rows, once)
            from; a :class:`FeatureStore`.
        hot_ids: the ids to cache, hottest first; the same on every rank (checked).
        group: the process group to exchange rows in; None makes a new group of all
            ranks (every rank must construct its cache at the same point then).
        device: where this rank's slots live and reads return rows (default: the GPU of
            an NCCL group, else CPU).

    Example:
        >>> ctx = graphsys.distributed.init()                            # doctest: +SKIP
        >>> hot = hotness_order(counts)[: rows_per_rank * ctx.world_size]
        >>> cache = SharedDeviceCache(TensorStore(features), hot, device=ctx.device)
    """

    tier = "shared"

    def __init__(self, fallback: Any, hot_ids: Any, *, group: Any = None,
                 device: torch.device | str | None = None) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("SharedDeviceCache needs a process group; call "
                               "graphsys.distributed.init() under torchrun first")
        self.group = group if group is not None else dist.new_group()
        self.rank = dist.get_rank(self.group)
        self.world_size = dist.get_world_size(self.group)
        backend = dist.get_backend(self.group)
        # NCCL moves only GPU tensors; gloo only CPU ones.
        self.comm_device = (torch.device("cuda", torch.cuda.current_device())
                            if backend == "nccl" else torch.device("cpu"))
        if device is None:
            device = self.comm_device
        super().__init__(fallback.num_rows, fallback.dim, fallback.dtype, device)
        self.fallback = fallback
        hot = self._ids(hot_ids)
        if torch.unique(hot).numel() != hot.numel():
            raise ValueError("hot_ids contain duplicates; pass each row id once")
        self._check_same_everywhere(hot)
        owner = torch.arange(hot.numel(), dtype=torch.int64) % self.world_size
        self.hot_sorted, order = torch.sort(hot)
        self.owner_sorted = owner[order]
        mine = torch.sort(hot[self.rank :: self.world_size]).values
        self.mine_sorted = mine
        self.rows = fallback.read(mine).to(self.device) if mine.numel() else \
            torch.empty((0, self.dim), dtype=self.dtype, device=self.device)
        self.shared_counters = SharedCacheCounters()

    # -- setup -------------------------------------------------------------------------
    def _check_same_everywhere(self, hot: torch.Tensor) -> None:
        # A cheap fingerprint (count, sum, position-weighted sum) of the hot list.
        weights = torch.arange(1, hot.numel() + 1, dtype=torch.float64)
        mine = torch.tensor([float(hot.numel()), float(hot.sum()),
                             float((hot.double() * weights).sum())], dtype=torch.float64,
                            device=self.comm_device)
        every = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(every, mine, group=self.group)
        if any(not torch.equal(e, every[0]) for e in every):
            raise ValueError("ranks passed different hot_ids to SharedDeviceCache; derive "
                             "them from data every rank has (e.g. degrees or a presample "
                             "with a fixed seed)")

    @property
    def capacity(self) -> int:
        """Rows this rank holds."""
        return int(self.mine_sorted.numel())

    @property
    def nbytes(self) -> int:
        return self.capacity * self.row_bytes

    def owner_of(self, ids: torch.Tensor) -> torch.Tensor:
        """The rank holding each id, or -1 where no rank caches it."""
        if self.hot_sorted.numel() == 0:
            return torch.full_like(ids, -1)
        pos = torch.searchsorted(self.hot_sorted, ids).clamp(max=self.hot_sorted.numel() - 1)
        found = self.hot_sorted[pos] == ids
        return torch.where(found, self.owner_sorted[pos], torch.full_like(ids, -1))

    def _local(self, ids: torch.Tensor) -> torch.Tensor:
        slots = torch.searchsorted(self.mine_sorted, ids)
        return self.rows.index_select(0, slots.to(self.device))

    # -- reads -------------------------------------------------------------------------
    def _exchange(self, ids: torch.Tensor, send_counts: torch.Tensor) -> torch.Tensor:
        """Rows of ``ids`` (grouped by owner, ``send_counts`` per rank) from their owners."""
        start = time.perf_counter()
        dev = self.comm_device
        send_counts = send_counts.to(dev)
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts, group=self.group)
        send_split, recv_split = send_counts.tolist(), recv_counts.tolist()
        asked = torch.empty(sum(recv_split), dtype=torch.int64, device=dev)
        dist.all_to_all_single(asked, ids.to(dev), recv_split, send_split, group=self.group)
        answer = self._local(asked.cpu()).to(dev)
        rows = torch.empty((sum(send_split), self.dim), dtype=self.dtype, device=dev)
        dist.all_to_all_single(rows, answer, send_split, recv_split, group=self.group)
        self.shared_counters.served_rows += len(asked)
        self.shared_counters.exchange_s += time.perf_counter() - start
        return rows

    def read(self, ids: Any, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``ids`` in the order asked; a collective: every rank must call it."""
        ids = self._ids(ids)
        out = self._out(ids.numel(), out)
        start = time.perf_counter()
        unique, inverse = torch.unique(ids, return_inverse=True)
        owner = self.owner_of(unique)
        rows = torch.empty((unique.numel(), self.dim), dtype=self.dtype, device=self.device)
        local = owner == self.rank
        rows[local.to(self.device)] = self._local(unique[local])
        missing = owner < 0
        disk_before = self.fallback.stats.disk_bytes
        if bool(missing.any()):
            rows[missing.to(self.device)] = self.fallback.read(unique[missing]).to(self.device)
        remote = torch.nonzero((owner >= 0) & ~local).flatten()
        by_owner = remote[torch.sort(owner[remote], stable=True).indices]
        counts = torch.bincount(owner[by_owner], minlength=self.world_size)
        got = self._exchange(unique[by_owner], counts)  # always: the peers wait for it
        rows[by_owner.to(self.device)] = got.to(self.device)
        torch.index_select(rows, 0, inverse.to(self.device), out=out)
        n_local, n_missing = int(local.sum()), int(missing.sum())
        c = self.shared_counters
        c.reads += 1
        c.local_rows += n_local
        c.remote_rows += len(by_owner)
        c.fallback_rows += n_missing
        seconds = time.perf_counter() - start
        self.stats.reads += 1
        row = self.row_bytes
        # Rows as asked (duplicates included) per source, so the tiers add up to the read.
        for tier, mask in (("shared-local", local), ("shared-remote", (owner >= 0) & ~local),
                           ("fallback", missing)):
            asked = int(mask[inverse].sum())
            if asked:
                disk = self.fallback.stats.disk_bytes - disk_before if tier == "fallback" else 0
                self.stats.add(tier, asked, asked * row,
                               seconds * asked / max(ids.numel(), 1), disk)
        return out
