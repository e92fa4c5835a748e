"""Eviction policies of the :class:`~graphsys.storage.device_cache.DeviceCache`.

A policy never moves rows; it ranks them. The cache asks it, once per batch:

- ``slot_keys(id_of, step)``: how much each slot's row deserves to stay (low = evict
  first), and
- ``candidate_values(ids, step)``: how much each fetched, not-cached row deserves a
  slot (it is admitted only into a slot whose key is lower),

then merges the two rankings in one vectorised pass (see
``DeviceCache._admit``). So every policy is batched by construction: no per-row
Python runs on the hot path, and the same code runs on the GPU and the CPU.

Policies (``make_policy(name, ...)``):

- ``degree`` / ``frequency``: a static set, the top rows by out-degree (PaGraph) or by
  pre-sampled access count (GNNLab), loaded once and never changed.
- ``lru``: least recently used, at batch granularity.
- ``clock``: second-chance CLOCK (one visited bit per slot and a hand).
- ``hybrid``: starts as ``frequency``; the rows surely hot by the presample are pinned,
  the other slots follow the presample counts sharpened by every access seen since,
  or, once the hit rate falls below what the presample predicts (drift), a decayed
  online count, and then the pins are released: LSM-GNN's static + dynamic
  combination (see :class:`HybridPolicy`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np
import torch

PolicyName = Literal["degree", "frequency", "lru", "clock", "hybrid"]
POLICY_NAMES: tuple[str, ...] = ("degree", "frequency", "lru", "clock", "hybrid")

NEVER = -math.inf  # candidate value of a row a policy never admits
PINNED = math.inf  # slot key of a row a policy never evicts


class EvictionPolicy(ABC):
    """Base class: subclasses rank slots and candidates; the hooks default to no-ops."""

    name = "policy"
    #: Static policies fill the cache once and admit nothing.
    static = False

    def bind(self, capacity: int, num_rows: int, device: torch.device) -> None:
        self.capacity, self.num_rows, self.device = capacity, num_rows, device

    def preload_ids(self) -> torch.Tensor | None:
        """Rows to load (and pin) when the cache is built, hottest first; ``None``: none."""
        return None

    def pinned_count(self) -> int:
        """How many of the preloaded rows are pinned (their slots are never evicted)."""
        return 0

    def pins_hold(self) -> bool:
        """Whether pinned slots are protected now (a policy may release them on drift)."""
        return True

    def touch(self, ids: torch.Tensor, slots: torch.Tensor, step: int,  # noqa: B027
              hits: int | None = None) -> None:
        """Record an access to every id in ``ids`` (``slots[i]`` its slot, or -1);
        ``hits``, when the caller knows it, is how many slots are not -1 (on a GPU,
        counting them here would cost a host sync).

        Implementations must not synchronise with the device: no boolean-mask indexing
        (its size is data-dependent), no Python numbers read from device tensors.
        """

    @abstractmethod
    def slot_keys(self, id_of: torch.Tensor, step: int) -> torch.Tensor:
        """Rank of each slot's row (low = evicted first)."""

    @abstractmethod
    def candidate_values(self, ids: torch.Tensor, step: int) -> torch.Tensor:
        """Rank of each fetched row (admitted only over a slot ranked lower)."""

    def admitted(self, ids: torch.Tensor, slots: torch.Tensor, step: int) -> None:  # noqa: B027
        """``ids`` now live in ``slots``."""

    def evicted(self, slots: torch.Tensor, keys: torch.Tensor) -> None:  # noqa: B027
        """The rows of ``slots`` (ranked ``keys`` when chosen) were evicted."""

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name}


class StaticPolicy(EvictionPolicy):
    """The ``capacity`` rows with the highest ``scores``, loaded once and never changed."""

    static = True

    def __init__(self, scores: Any, name: str = "frequency") -> None:
        self.scores = torch.as_tensor(np.asarray(scores), dtype=torch.float64)
        self.name = name

    def bind(self, capacity: int, num_rows: int, device: torch.device) -> None:
        super().bind(capacity, num_rows, device)
        if len(self.scores) != num_rows:
            raise ValueError(f"{self.name} scores have {len(self.scores)} entries, the store "
                             f"{num_rows} rows; pass one score per row")

    def preload_ids(self) -> torch.Tensor:
        order = torch.sort(self.scores, descending=True, stable=True).indices
        return order[: self.capacity]

    def pinned_count(self) -> int:
        return min(self.capacity, len(self.scores))

    def slot_keys(self, id_of: torch.Tensor, step: int) -> torch.Tensor:
        return torch.full(id_of.shape, PINNED, dtype=torch.float64, device=id_of.device)

    def candidate_values(self, ids: torch.Tensor, step: int) -> torch.Tensor:
        return torch.full(ids.shape, NEVER, dtype=torch.float64, device=ids.device)


class LRUPolicy(EvictionPolicy):
    """Least recently used: rows touched in the current batch are never evicted by it."""

    name = "lru"

    def bind(self, capacity: int, num_rows: int, device: torch.device) -> None:
        super().bind(capacity, num_rows, device)
        self.stamp = torch.full((capacity,), -1, dtype=torch.float64, device=device)

    def touch(self, ids: torch.Tensor, slots: torch.Tensor, step: int,
              hits: int | None = None) -> None:
        # Misses (slot -1) scatter -inf into slot 0, which the max leaves as it is; steps
        # only grow, so the max is the new stamp. No mask, so no device sync.
        if self.capacity == 0:  # no slots: every id missed
            return
        value = torch.full(slots.shape, float(step), dtype=self.stamp.dtype,
                           device=slots.device).masked_fill_(slots < 0, -math.inf)
        self.stamp.scatter_reduce_(0, slots.clamp(min=0), value, "amax")

    def slot_keys(self, id_of: torch.Tensor, step: int) -> torch.Tensor:
        return self.stamp.clone()

    def candidate_values(self, ids: torch.Tensor, step: int) -> torch.Tensor:
        return torch.full(ids.shape, float(step), dtype=torch.float64, device=ids.device)

    def admitted(self, ids: torch.Tensor, slots: torch.Tensor, step: int) -> None:
        self.stamp.index_fill_(0, slots, float(step))


class ClockPolicy(EvictionPolicy):
    """Second-chance CLOCK: the hand evicts the first unvisited slots, clearing bits it passes.

    As keys: a slot ranks by ``visited * capacity + distance from the hand``, so the
    slots evicted are the unvisited ones in hand order, then (second pass) the rest.
    """

    name = "clock"

    def bind(self, capacity: int, num_rows: int, device: torch.device) -> None:
        super().bind(capacity, num_rows, device)
        # uint8, not bool: touch sets bits with a scatter max, which bool lacks
        self.visited = torch.zeros(capacity, dtype=torch.uint8, device=device)
        self.hand = 0
        self._arange = torch.arange(capacity, device=device)

    def _distance(self) -> torch.Tensor:
        return (self._arange - self.hand) % max(self.capacity, 1)

    def touch(self, ids: torch.Tensor, slots: torch.Tensor, step: int,
              hits: int | None = None) -> None:
        if self.capacity == 0:  # no slots: every id missed
            return
        # misses scatter 0 into slot 0, which the max leaves as it is: no mask, no sync
        self.visited.scatter_reduce_(0, slots.clamp(min=0), (slots >= 0).to(torch.uint8),
                                     "amax")

    def slot_keys(self, id_of: torch.Tensor, step: int) -> torch.Tensor:
        return (self.visited.double() * self.capacity + self._distance().double())

    def candidate_values(self, ids: torch.Tensor, step: int) -> torch.Tensor:
        # Above every slot key (CLOCK always admits), yet finite, so rows a prefetch
        # window protects still outrank a new row.
        return torch.full(ids.shape, 2.0 * self.capacity, dtype=torch.float64,
                          device=ids.device)

    def admitted(self, ids: torch.Tensor, slots: torch.Tensor, step: int) -> None:
        self.visited.index_fill_(0, slots, 0)

    def evicted(self, slots: torch.Tensor, keys: torch.Tensor) -> None:
        if slots.numel() == 0:
            return
        last = float(keys.max())
        distance = self._distance()
        if last >= self.capacity:  # the hand went round once: every bit was cleared
            self.visited.zero_()
            last -= self.capacity
        else:
            self.visited.masked_fill_(distance <= last, 0)
        self.hand = (self.hand + int(last) + 1) % self.capacity


def confident_static_fraction(counts: Any, capacity: int, z: float = 2.0) -> float:
    """Share of ``capacity`` whose rows are in the top ``capacity`` beyond sampling noise.

    A row counted ``c`` times in the presample is confidently hot when
    ``c - z * sqrt(c)`` still exceeds the count at rank ``capacity`` (Poisson noise);
    those rows are pinned, the uncertain rest of the slots stays dynamic.
    """
    counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    if capacity <= 0 or counts.numel() == 0:
        return 0.0
    capacity = min(capacity, counts.numel())
    top = torch.topk(counts, capacity).values
    threshold = float(top[-1])
    sure = int((top - z * top.sqrt() > threshold).sum())
    return sure / capacity


class HybridPolicy(EvictionPolicy):
    """Static hot set plus a dynamic part ranked by an estimate that sharpens online.

    The cache starts as the presample's top rows (as ``frequency``); the
    ``static_fraction`` of slots whose rows are surely hot are pinned. Every other slot
    and every fetched row is ranked by its estimated accesses per batch:

    - while the stream matches the presample, the presample counts plus every access
      seen since, over all batches so far. A one-epoch presample counts the rows at the
      margin of the cache only a few times (Poisson noise decides who is in), so
      admitting by the growing count lets the cache converge on the true top rows:
      on the papers-like bench it removes a tenth of frequency's misses.
    - while the stream drifts (the recent hit rate is more than ``tolerance`` below
      what the presample predicts), an exponentially decayed count with a half-life of
      ``half_life`` batches, which follows the new hot set within a few batches, and the
      pinned rows may be evicted too (a pin that the stream no longer asks for is waste).

    Args:
        counts: pre-sampled access count of every row (from offline sampling).
        presample_batches: how many batches ``counts`` were gathered over.
        static_fraction: share of slots pinned; ``None`` picks it from the presample
            (:func:`confident_static_fraction`).
        half_life: batches after which an access counts half as much in the drift
            estimate (and in the recent hit rate).
        tolerance: relative drop of the hit rate below the prediction that counts as
            drift.
    """

    name = "hybrid"
    #: Rescale scores before the growing increment leaves float32's exact range.
    _RESCALE_AT = 1e12

    def __init__(self, counts: Any, presample_batches: int, *,
                 static_fraction: float | None = None, half_life: float = 16.0,
                 tolerance: float = 0.1) -> None:
        if static_fraction is not None and not 0 <= static_fraction <= 1:
            raise ValueError(f"static_fraction must be in [0, 1], got {static_fraction}")
        if presample_batches < 1:
            raise ValueError(f"presample_batches must be >= 1, got {presample_batches}")
        if half_life <= 0:
            raise ValueError(f"half_life must be > 0 batches, got {half_life}")
        if not 0 <= tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
        self.counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
        self.presample_batches = int(presample_batches)
        self.static_fraction = static_fraction
        self.half_life = float(half_life)
        self.tolerance = float(tolerance)
        self.decay = 0.5 ** (1.0 / self.half_life)

    def bind(self, capacity: int, num_rows: int, device: torch.device) -> None:
        super().bind(capacity, num_rows, device)
        if len(self.counts) != num_rows:
            raise ValueError(f"counts has {len(self.counts)} entries, the store {num_rows} "
                             "rows; pass one count per row")
        # Long estimate: presample plus online counts (float32 counts exactly to 2^24).
        self.total = self.counts.to(torch.float32).to(device)
        self.batches_seen = float(self.presample_batches)
        # Drift estimate: a row accessed with probability p per batch settles at
        # p / (1 - decay); start every row there, from the presample.
        rate = self.counts / self.presample_batches
        self.score = (rate / (1 - self.decay)).to(torch.float32).to(device)
        self.increment = 1.0
        if self.static_fraction is None:
            self.static_fraction = confident_static_fraction(self.counts, capacity)
        self.n_static = int(round(self.static_fraction * capacity))
        total = float(self.counts.sum())
        top = float(torch.topk(self.counts, min(capacity, num_rows)).values.sum())
        self.expected_hit_rate = top / total if total else 0.0
        self.recent_hits = self.expected_hit_rate  # decayed hits per decayed request
        self.recent_requests = 1.0
        self.drifting = False

    def preload_ids(self) -> torch.Tensor:
        order = torch.sort(self.counts, descending=True, stable=True).indices
        return order[: self.capacity]

    def pinned_count(self) -> int:
        return self.n_static

    def pins_hold(self) -> bool:
        return not self.drifting

    @property
    def recent_hit_rate(self) -> float:
        return self.recent_hits / self.recent_requests

    def touch(self, ids: torch.Tensor, slots: torch.Tensor, step: int,
              hits: int | None = None) -> None:
        self.total[ids] += 1
        self.batches_seen += 1
        # Growing the increment instead of decaying every score keeps this O(batch).
        self.increment /= self.decay
        if self.increment > self._RESCALE_AT:
            self.score /= self.increment
            self.increment = 1.0
        self.score[ids] += self.increment
        if ids.numel():
            if hits is None:
                hits = int((slots >= 0).sum())  # a device sync: callers pass it
            rate = hits / ids.numel()
            self.recent_hits = self.decay * self.recent_hits + (1 - self.decay) * rate
            self.recent_requests = self.decay * self.recent_requests + (1 - self.decay)
        self.drifting = self.recent_hit_rate < (1 - self.tolerance) * self.expected_hit_rate

    def rate(self, ids: torch.Tensor) -> torch.Tensor:
        """Estimated accesses per batch of each row (the drift estimate while drifting)."""
        if self.drifting:
            return self.score[ids].double() * ((1 - self.decay) / self.increment)
        return self.total[ids].double() / self.batches_seen

    def slot_keys(self, id_of: torch.Tensor, step: int) -> torch.Tensor:
        return self.rate(id_of.clamp(min=0))

    def candidate_values(self, ids: torch.Tensor, step: int) -> torch.Tensor:
        return self.rate(ids)

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "static_fraction": self.static_fraction,
                "half_life": self.half_life, "tolerance": self.tolerance,
                "expected_hit_rate": getattr(self, "expected_hit_rate", None)}


def make_policy(name: str, *, counts: Any = None, presample_batches: int = 1,
                degrees: Any = None, static_fraction: float | None = None,
                half_life: float = 16.0) -> EvictionPolicy:
    """The policy called ``name``; static and hybrid ones need ``counts`` or ``degrees``."""
    if name == "degree":
        if degrees is None:
            raise ValueError("policy 'degree' needs degrees (the graph's out-degrees)")
        return StaticPolicy(degrees, name="degree")
    if name in ("frequency", "hybrid") and counts is None:
        raise ValueError(f"policy {name!r} needs counts from a presample "
                         "(graphsys.train.feature_setup.access_counts)")
    if name == "frequency":
        return StaticPolicy(counts, name="frequency")
    if name == "hybrid":
        return HybridPolicy(counts, presample_batches, static_fraction=static_fraction,
                            half_life=half_life)
    if name == "lru":
        return LRUPolicy()
    if name == "clock":
        return ClockPolicy()
    raise ValueError(f"unknown cache policy {name!r}; pick one of {', '.join(POLICY_NAMES)}")
