"""The fastest tier: a fixed-capacity software cache of feature rows on the device.

``DeviceCache(fallback, budget, policy)`` wraps any :class:`FeatureStore`. It holds a
slot table ``rows[capacity, dim]``, ``id_of[slot]`` and ``slot_of[node]`` on the GPU
when there is one and in host memory otherwise; the logic and the statistics are the
same on both. A read looks every id up at once, serves hits from the slots, fetches
misses from the victim buffer or the fallback, and lets the policy decide, batch by
batch, which fetched rows take which slots (:mod:`graphsys.storage.policies`).
Evicted rows go to the :class:`VictimBuffer` if there is one.

Prefetch (LSM-GNN's preemptive victim-buffer prefetcher): ``prefetch(upcoming)``
takes the input nodes of the next ``k`` batches in the sampling queue. While batch
``t`` computes it stages the rows of ``t+1`` the device lacks, then rows of
``t+2..t+k`` while the stage has room, from the victim buffer or the fallback, up to
``budget_rows`` rows per call (the link's capacity during one compute step). Staging
never evicts. At admission, rows needed within the window rank above every other row,
so eviction there is Belady's rule; beyond it the policy's ranking decides.

Counters (``cache.counters``) separate rows found on the device when asked
(``hits``, ``staged_hits``) from ``demand_misses`` (the compute step waited) and count
every row moved host -> device (``moved_rows``), so the bench can compare policies
with the Belady oracle (:mod:`graphsys.storage.belady`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from graphsys.cuda import cache as slot_ops
from graphsys.cuda import gather as row_ops
from graphsys.storage.base import StoreBase
from graphsys.storage.policies import EvictionPolicy
from graphsys.storage.victim import VictimBuffer

#: Rank of a row needed ``j`` batches ahead: above any policy's own ranks (< 1e15).
_WINDOW_RANK = 1e18


@dataclass
class CacheCounters:
    """Rows per outcome, summed over reads (each read counts its distinct ids once)."""

    batches: int = 0
    requests: int = 0
    hits: int = 0  # in a slot when asked
    staged_hits: int = 0  # staged for this batch by the prefetcher
    demand_misses: int = 0  # fetched while the batch waited
    victim_rows: int = 0  # rows the victim buffer served (demand or prefetch)
    fallback_rows: int = 0  # rows the fallback store served (demand or prefetch)
    moved_rows: int = 0  # rows copied host -> device, demand and prefetch
    prefetched_rows: int = 0
    inserted: int = 0
    evicted: int = 0
    preload_rows: int = 0  # filled at construction (static sets), not per epoch

    @property
    def request_hit_rate(self) -> float:
        """Share of asked rows already on the device when asked."""
        return (self.hits + self.staged_hits) / self.requests if self.requests else 0.0

    @property
    def hit_rate(self) -> float:
        """Share of asked rows found in a slot (no transfer for them at all)."""
        return self.hits / self.requests if self.requests else 0.0

    @property
    def demand_miss_rate(self) -> float:
        return self.demand_misses / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "request_hit_rate": self.request_hit_rate,
                "hit_rate": self.hit_rate, "demand_miss_rate": self.demand_miss_rate}


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class DeviceCache(StoreBase):
    """A :class:`FeatureStore` caching rows of ``fallback`` in ``budget`` bytes on ``device``.

    Args:
        fallback: the store misses are read from (host cache, packed disk, ...).
        budget: bytes of rows to cache (``capacity = budget // row_bytes`` slots).
        policy: an :class:`EvictionPolicy` (``make_policy("hybrid", counts=...)``).
        device: where slots live; default CUDA if available, else CPU.
        victim: a :class:`VictimBuffer` receiving evicted rows, or ``None``.
        lookahead: batches a :class:`~graphsys.DataLoader` samples ahead and passes to
            :meth:`prefetch` (0: no prefetching).
        stage_rows: rows the prefetcher may stage for batches after the next one,
            beside the slots (device memory on top of ``budget``, besides the next
            batch's missing rows); default ``capacity // 16``.

    Example:
        >>> cache = DeviceCache(store, 4 << 30, make_policy("lru"))  # doctest: +SKIP
        >>> rows = cache.read(batch.input_nodes)  # doctest: +SKIP
    """

    tier = "device"

    def __init__(self, fallback: Any, budget: int, policy: EvictionPolicy, *,
                 device: torch.device | str | None = None,
                 victim: VictimBuffer | None = None, lookahead: int = 0,
                 stage_rows: int | None = None) -> None:
        if lookahead < 0:
            raise ValueError(f"lookahead must be >= 0 batches, got {lookahead}")
        if stage_rows is not None and stage_rows < 0:
            raise ValueError(f"stage_rows must be >= 0 rows, got {stage_rows}")
        device = default_device() if device is None else torch.device(device)
        super().__init__(fallback.num_rows, fallback.dim, fallback.dtype, device)
        if budget < 0:
            raise ValueError(f"device cache budget must be >= 0 bytes, got {budget}")
        self.fallback = fallback
        self.capacity = min(int(budget) // self.row_bytes, self.num_rows)
        self.policy = policy
        self.victim = victim
        self.lookahead = int(lookahead)
        self.stage_rows = self.capacity // 16 if stage_rows is None else int(stage_rows)
        self.counters = CacheCounters()
        self.step = 0
        self.rows = torch.empty((self.capacity, self.dim), dtype=self.dtype, device=device)
        self.id_of = torch.full((self.capacity,), -1, dtype=torch.int64, device=device)
        self.slot_of = torch.full((self.num_rows,), -1, dtype=torch.int32, device=device)
        self.pinned = torch.zeros(self.capacity, dtype=torch.bool, device=device)
        # Rows ahead of need, by batches: 0 = not in the prefetch window.
        self._soon = torch.zeros(self.num_rows, dtype=torch.int32, device=device)
        self._soon_ids = torch.empty(0, dtype=torch.int64, device=device)
        self._window: list[torch.Tensor] = []
        self._staged_ids = torch.empty(0, dtype=torch.int64)
        self._staged_rows = torch.empty((0, self.dim), dtype=self.dtype, device=device)
        policy.bind(self.capacity, self.num_rows, device)
        self._preload()

    # -- set-up ---------------------------------------------------------------------

    def _preload(self, chunk_bytes: int = 64 << 20) -> None:
        ids = self.policy.preload_ids()
        if ids is None or self.capacity == 0:
            return
        ids = ids[: self.capacity].to(torch.int64)
        step = max(1, chunk_bytes // self.row_bytes)
        for start in range(0, ids.numel(), step):
            part = ids[start : start + step]
            self.rows[start : start + part.numel()] = self.fallback.read(part).to(self.device)
        n = ids.numel()
        slots = torch.arange(n, device=self.device)
        slot_ops.assign_slots(self.slot_of, self.id_of, ids.to(self.device), slots)
        self.pinned[: min(self.policy.pinned_count(), n)] = True
        self.counters.preload_rows = n
        self.policy.admitted(ids.to(self.device), slots, -1)

    @property
    def nbytes(self) -> int:
        return self.rows.numel() * self.rows.element_size()

    def contains(self, ids: torch.Tensor) -> torch.Tensor:
        return (slot_ops.lookup(self.slot_of, ids.to(self.device)) >= 0).cpu()

    def prepare(self, epoch: int, index: int, input_nodes: torch.Tensor) -> None:
        """Forwarded to a fallback that checks batches (a packed store)."""
        if hasattr(self.fallback, "prepare"):
            self.fallback.prepare(epoch, index, input_nodes)

    # -- reads ------------------------------------------------------------------------

    def _fetch(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of ``ids`` (CPU) from the victim buffer, then the fallback, on the device.

        Pinned host rows (the victim ring, a pinned tensor fallback's ``read_to``) are read
        by the UVA gather straight into device memory; other fallbacks read on the host.
        """
        out = torch.empty((ids.numel(), self.dim), dtype=self.dtype, device=self.device)
        if ids.numel() == 0:
            return out
        rest = torch.ones(ids.numel(), dtype=torch.bool)
        if self.victim is not None:
            pos = self.victim.lookup(ids)
            found = pos >= 0
            n = int(found.sum())
            if n:
                start = time.perf_counter()
                out.index_copy_(0, self._positions(found),
                                self.victim.take(pos[found], device=self.device))
                self.counters.victim_rows += n
                self.stats.add("victim", n, n * self.row_bytes, time.perf_counter() - start)
                rest = ~found
        n = int(rest.sum())
        if n:
            start = time.perf_counter()
            tier = getattr(self.fallback, "tier", "fallback")
            disk = self.fallback.stats.disk_bytes
            read_to = getattr(self.fallback, "read_to", None)  # a pinned tensor: by UVA
            rows = read_to(ids[rest], self.device) if read_to is not None else \
                self.fallback.read(ids[rest]).to(self.device)
            out.index_copy_(0, self._positions(rest), rows)
            self.counters.fallback_rows += n
            self.stats.add(tier, n, n * self.row_bytes, time.perf_counter() - start,
                           self.fallback.stats.disk_bytes - disk)
        self.counters.moved_rows += ids.numel()
        return out

    def read(self, ids: Any, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``ids`` in the order asked (on this cache's device); caches by the policy.

        The lookup, hit/miss split and installs are :mod:`graphsys.cuda.cache`'s (its
        kernels on a GPU, their CPU twins otherwise); hit rows are gathered from the
        slots by :func:`graphsys.cuda.gather_rows`.
        """
        ids = self._ids(ids)
        out = self._out(ids.numel(), out)
        self.stats.reads += 1
        self.counters.batches += 1
        window, self._window = self._window[1:], []
        staged_ids, staged_rows = self._staged_ids, self._staged_rows
        if ids.numel() == 0:
            self._set_window(window)
            self._keep_staged()
            self.step += 1
            return out
        # Dedup on the host, where the ids are: no device sync for it.
        unique, inverse = torch.unique(ids, return_inverse=True)
        dev_unique = self._dev(unique)
        split = slot_ops.split_hits(self.slot_of, dev_unique, check=False)
        rows = torch.empty((unique.numel(), self.dim), dtype=self.dtype, device=self.device)
        start = time.perf_counter()
        n_hit = split.hit_pos.numel()
        if n_hit:
            rows.index_copy_(0, split.hit_pos,
                             row_ops.gather_rows(self.rows, split.hit_slots, check=False))
        self.stats.add("device", n_hit, n_hit * self.row_bytes, time.perf_counter() - start)
        miss_ids = split.miss_ids.cpu()  # the fallback tiers are on the host
        miss_rows = torch.empty((miss_ids.numel(), self.dim), dtype=self.dtype,
                                device=self.device)
        staged = self._staged_mask(miss_ids, staged_ids)
        n_staged = int(staged.sum())
        if n_staged:
            pos = torch.searchsorted(staged_ids, miss_ids[staged])
            miss_rows.index_copy_(0, self._positions(staged),
                                  staged_rows.index_select(0, self._dev(pos)))
            self.stats.add("staged", n_staged, n_staged * self.row_bytes, 0.0)
        if n_staged < miss_ids.numel():
            miss_rows.index_copy_(0, self._positions(~staged), self._fetch(miss_ids[~staged]))
        if miss_ids.numel():
            rows.index_copy_(0, split.miss_pos, miss_rows)
        torch.index_select(rows, 0, self._dev(inverse), out=out)
        c = self.counters
        c.requests += unique.numel()
        c.hits += n_hit
        c.staged_hits += n_staged
        c.demand_misses += miss_ids.numel() - n_staged
        slots = torch.full((unique.numel(),), -1, dtype=torch.int64, device=self.device)
        slots[split.hit_pos] = split.hit_slots
        self.policy.touch(dev_unique, slots, self.step, hits=n_hit)
        self._set_window(window)
        self._install(miss_ids, miss_rows)
        self._keep_staged()
        self.step += 1
        return out

    def _dev(self, t: torch.Tensor) -> torch.Tensor:
        """Host ``t`` on this cache's device without a host sync.

        A blocking copy from host memory waits for the stream, and a non-blocking one
        from pageable memory may too (CUDA stages it); from torch's pinned buffer the
        copy is queued on the stream and the buffer is kept until it is done.
        """
        if self.device.type != "cuda" or t.device.type != "cpu":
            return t.to(self.device)
        return t.pin_memory().to(self.device, non_blocking=True)

    def _positions(self, mask: torch.Tensor) -> torch.Tensor:
        """Positions of a host mask, on the device: indexing device rows with them needs
        no host sync (a device boolean mask would: its count decides the shape)."""
        return self._dev(torch.nonzero(mask).flatten())

    @staticmethod
    def _staged_mask(ids: torch.Tensor, staged_ids: torch.Tensor) -> torch.Tensor:
        if staged_ids.numel() == 0 or ids.numel() == 0:
            return torch.zeros(ids.numel(), dtype=torch.bool)
        pos = torch.searchsorted(staged_ids, ids).clamp(max=staged_ids.numel() - 1)
        return staged_ids[pos] == ids

    # -- admission and eviction ------------------------------------------------------

    def _set_window(self, batches: Sequence[torch.Tensor]) -> None:
        """Mark rows needed ``j = 1..k`` batches from now (nearest occurrence wins)."""
        # index_fill_, not ``t[idx] = value``: the latter copies the Python value to the
        # device as a tensor, a blocking copy (a host sync) each time
        self._soon.index_fill_(0, self._soon_ids, 0)
        self._window = list(batches)
        on_device = [self._dev(b) for b in batches]
        for j in range(len(batches), 0, -1):
            self._soon.index_fill_(0, on_device[j - 1], j)
        self._soon_ids = torch.cat(on_device) if batches else self._soon_ids[:0]

    def _window_rank(self, ids: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        if not self._window:
            return ranks
        soon = self._soon[ids]
        ahead = (len(self._window) + 2 - soon).double() * _WINDOW_RANK
        return torch.where(soon > 0, ahead, ranks)

    def _choose(self, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(candidate positions, their slots, policy keys of those slots)`` to admit.

        The cache after admission holds the ``capacity`` best of residents and
        candidates by rank; pairing the best candidates with the worst slots, in sorted
        order, finds that set with two partial sorts (ties keep the resident).
        """
        none = torch.empty(0, dtype=torch.int64, device=self.device)
        n = min(cand.numel(), self.capacity)
        if n == 0:
            return none, none, none.double()
        own = self.policy.slot_keys(self.id_of, self.step)
        keys = self._window_rank(self.id_of.clamp(min=0), own)
        keys = torch.where(self.id_of < 0, -math.inf, keys)
        if self.policy.pins_hold():
            keys = torch.where(self.pinned, math.inf, keys)
        values = self._window_rank(cand, self.policy.candidate_values(cand, self.step))
        low, slots = torch.topk(keys, n, largest=False, sorted=True)
        high, picks = torch.topk(values, n, largest=True, sorted=True)
        take = int((high > low).sum())  # high falls and low rises: a prefix
        return picks[:take], slots[:take], own[slots[:take]]

    def _install(self, cand: torch.Tensor, cand_rows: torch.Tensor) -> int:
        """Admit the candidates (CPU ids, device rows) the ranking wants; return how many."""
        if self.policy.static:  # static policies admit nothing: skip the ranking
            return 0
        dev_cand = self._dev(cand)
        picks, slots, own_keys = self._choose(dev_cand)
        if picks.numel() == 0:
            return 0
        # One device->host copy tells the host who is evicted and who comes in: the victim
        # buffer and the counters live there.
        old_host, picks_host = torch.stack((self.id_of[slots], picks)).cpu()
        occupied = old_host >= 0
        if bool(occupied.any()):
            gone = old_host[occupied]
            held = self._positions(occupied)
            if self.victim is not None:
                self.victim.put(gone, self.rows.index_select(0, slots.index_select(0, held)))
            self.counters.evicted += gone.numel()
            self.policy.evicted(slots.index_select(0, held), own_keys.index_select(0, held))
        new = dev_cand[picks]
        self.pinned.index_fill_(0, slots, False)  # a pin belongs to the row, not its slot
        # Slots and ids come from the ranking: in range and distinct by construction.
        slot_ops.scatter_rows(self.rows, slots, cand_rows[picks], check=False, distinct=True)
        slot_ops.assign_slots(self.slot_of, self.id_of, new, slots, check=False)
        if self.victim is not None:
            self.victim.discard(cand[picks_host])
        self.policy.admitted(new, slots, self.step)
        self.counters.inserted += new.numel()
        return new.numel()

    # -- prefetch --------------------------------------------------------------------

    def prefetch(self, upcoming: Sequence[Any], budget_rows: int | None = None) -> int:
        """Stage the rows of the next batches the slots lack; return rows moved.

        ``upcoming[0]`` is the batch the next :meth:`read` asks for. Its missing rows are
        staged first (they move anyway), then those of ``upcoming[1]``, ... (first
        opportunity, nearest use first) while the stage holds at most ``stage_rows``
        rows; in all at most ``budget_rows`` rows per call (default no limit).

        Staged rows wait beside the slots, not in them: an early fetch into a slot
        evicts a resident and so shrinks the cache by the rows in flight (staged, the
        prefetcher moves 1.10x its Belady's rows on the stationary papers-like bench,
        ``bench/results/cache_policy.json``). The whole window still ranks
        rows at admission: a row needed within it outranks any row that is not.
        """
        if budget_rows is not None and budget_rows < 0:
            raise ValueError(f"budget_rows must be >= 0 rows (or None: no limit), got "
                             f"{budget_rows}")
        batches = [torch.unique(self._ids(b)) for b in upcoming]
        self._set_window(batches)
        self._keep_staged(keep_next=True)
        left = math.inf if budget_rows is None else int(budget_rows)
        moved = 0
        for j, batch in enumerate(batches):
            # The next batch's rows move anyway; rows of later ones only while the
            # stage has room.
            room = left if j == 0 else min(left, self.stage_rows - self._staged_ids.numel())
            if room <= 0:
                break
            need = batch[(slot_ops.lookup(self.slot_of, self._dev(batch), check=False)
                          < 0).cpu()]
            need = need[~self._staged_mask(need, self._staged_ids)]
            need = need[: int(min(room, need.numel()))]
            if need.numel() == 0:
                continue
            ids = torch.cat([self._staged_ids, need])
            rows = torch.cat([self._staged_rows, self._fetch(need)])
            order = torch.argsort(ids)
            self._staged_ids, self._staged_rows = ids[order], rows[self._dev(order)]
            moved += need.numel()
            left -= need.numel()
        self.counters.prefetched_rows += moved
        return moved

    def _keep_staged(self, *, keep_next: bool = False) -> None:
        """Keep the staged rows the window still needs and no slot holds: at most
        ``stage_rows`` of them, nearest use first, so the stage stays bounded however
        long the window (``keep_next``: the next batch's rows besides, uncounted)."""
        if self._staged_ids.numel() == 0:
            return
        dev = self._dev(self._staged_ids)
        soon = self._soon[dev]
        keep = (soon > 0) & (slot_ops.lookup(self.slot_of, dev, check=False) < 0)
        bounded = keep & (soon > 1) if keep_next else keep
        excess = int(bounded.sum()) - self.stage_rows
        if excess > 0:  # drop the farthest uses (soon counts batches ahead)
            far = torch.where(bounded, soon, 0)
            drop = torch.topk(far.long(), excess, largest=True, sorted=False).indices
            keep.index_fill_(0, drop, False)
        keep = keep.cpu()
        if not bool(keep.all()):
            self._staged_ids = self._staged_ids[keep]
            self._staged_rows = self._staged_rows.index_select(0, self._positions(keep))

    # -- checks -----------------------------------------------------------------------

    def check_consistency(self) -> None:
        """Raise ``AssertionError`` if ``id_of``, ``slot_of`` and ``pinned`` disagree."""
        used = torch.nonzero(self.id_of >= 0).flatten()
        ids = self.id_of[used]
        assert torch.equal(self.slot_of[ids].long(), used), "slot_of does not point back"
        assert int((self.slot_of >= 0).sum()) == used.numel(), "stray slot_of entries"
        assert torch.unique(ids).numel() == ids.numel(), "an id holds two slots"
        assert bool((self.id_of[self.pinned] >= 0).all()), "a pinned slot is empty"

    def describe(self) -> dict[str, Any]:
        return {"capacity_rows": self.capacity, "bytes": self.nbytes,
                "device": str(self.device), **self.policy.describe(),
                "victim_rows": self.victim.capacity if self.victim is not None else 0}
